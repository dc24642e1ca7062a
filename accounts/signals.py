"""Account domain signals; receivers only broadcast (accounts/receivers.py)."""

from django.dispatch import Signal

# Sent inside the transaction that deactivated, demoted or re-keyed (password) a user.
account_access_changed = Signal()

# Sent when staff disconnect a user's sockets (endpoints=["/ws", "/ws/orders"] or a subset).
account_disconnect_requested = Signal()

# Sent inside the transaction that set a user's password (not on creation), made it unusable, or
# deactivated the user: credentials issued before it end (accounts/receivers.py raises the
# credentials counter and tells the sockets; orders/receivers.py revokes the order-socket sessions).
account_password_changed = Signal()
