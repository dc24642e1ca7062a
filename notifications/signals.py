"""Notification domain signals; receivers only broadcast (notifications/receivers.py)."""

from django.dispatch import Signal

# notifications=[Notification], in_app={ids with an in-app delivery}
notification_created = Signal()
# delivery=Delivery whose status just changed (sent, delivered, failed)
delivery_changed = Signal()
# user_id, notifications=[Notification] just marked read
notifications_read = Signal()
