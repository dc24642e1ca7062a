"""The append-only event log (transactional outbox) and the per-user sequence counters."""

from django.conf import settings
from django.db import models


class UserSequence(models.Model):
    """The last `seq` handed out to a user. Locked per row so a user's seq is gap-free."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    last_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"user {self.user_id} at seq {self.last_seq}"


class EventLog(models.Model):
    """One row per event sent to clients, written in the same transaction as the change.

    Personal events (``user`` set) carry the user's gap-free ``seq``; room-wide events
    (system, market) have neither.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    seq = models.BigIntegerField(null=True, blank=True)
    room = models.CharField(max_length=120)
    type = models.CharField(max_length=64)
    channel = models.CharField(max_length=32)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Set once the event went to the channel layer; the relay sends what stays unset.
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["id"], name="realtime_eventlog_unpublished", condition=models.Q(published_at__isnull=True)
            )
        ]
        constraints = [
            models.UniqueConstraint(fields=["user", "seq"], name="realtime_eventlog_user_seq_unique"),
            models.CheckConstraint(
                condition=models.Q(user__isnull=True, seq__isnull=True) | models.Q(user__isnull=False, seq__gte=1),
                name="realtime_eventlog_seq_iff_user",
            ),
        ]

    def __str__(self) -> str:
        who = f"user {self.user_id} seq {self.seq}" if self.user_id else self.room
        return f"{self.type} → {who}"
