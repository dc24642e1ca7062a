"""Margin domain signals; receivers only broadcast (margin/receivers.py)."""

from django.dispatch import Signal

# positions=[Position] whose values changed outside a tick (a fill, a close): send their values now
positions_changed = Signal()
# symbols=[str] whose prices moved: send connected holders their positions' values (throttled)
prices_moved = Signal()
# executions=[MarginGuardExecution] just recorded (one tick's guard runs)
guard_executed = Signal()
# execution=MarginGuardExecution whose auto-close order filled, position=Position it closed
auto_closed = Signal()
