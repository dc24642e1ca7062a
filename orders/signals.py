"""Order domain signals; receivers only broadcast (orders/receivers.py)."""

from django.dispatch import Signal

# Sent inside the transaction of every order change, with the OrderUpdate row it appended.
order_updated = Signal()
