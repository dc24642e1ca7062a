"""System-notice domain signals; receivers only broadcast (system/receivers.py)."""

from django.dispatch import Signal

# Sent inside the transaction that created, changed or ended a notice.
notice_changed = Signal()
