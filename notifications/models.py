"""In-app notifications, their deliveries per method, and per-user preferences."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class NotificationType(models.TextChoices):
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


class Category(models.TextChoices):
    MARGIN_GUARD = "margin_guard"
    ORDERS = "orders"
    PRICE_ALERT = "price_alert"
    SYSTEM = "system"
    ACCOUNT = "account"


class Method(models.TextChoices):
    IN_APP = "in_app"
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class Notification(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    title = models.CharField(max_length=200)
    message = models.TextField(max_length=2000)
    type = models.CharField(max_length=8, choices=NotificationType.choices, default=NotificationType.INFO)
    category = models.CharField(max_length=16, choices=Category.choices)
    data = models.JSONField(default=dict, blank=True)
    read = models.BooleanField(default=False)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "read", "-id"], name="notif_user_read_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(read=False, read_at__isnull=True) | Q(read=True, read_at__isnull=False),
                name="notif_read_at_iff_read",
            ),
            models.CheckConstraint(condition=Q(type__in=NotificationType.values), name="notif_type_valid"),
            models.CheckConstraint(condition=Q(category__in=Category.values), name="notif_category_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.title} → {self.user_id}"


class Delivery(models.Model):
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    method = models.CharField(max_length=8, choices=Method.choices)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    # What the user sees of a failure: a short generic code (``timeout``, ``http_500``,
    # ``blocked_address``), never the remote's text. The detail is for staff (admin, panel).
    last_error = models.CharField(max_length=40, blank=True, default="")
    error_detail = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the next attempt is due (a retry waits out its backoff).
    next_attempt_at = models.DateTimeField(db_index=True)
    # The worker making an attempt holds the delivery until then; a worker that died mid-attempt
    # lets it go then, and the delivery sweep hands it to another.
    claimed_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["notification", "method"], name="delivery_one_per_method")]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx"),
            # The attempts in flight (claimed), which every outbound pick counts (tasks.rank_outbound):
            # a few rows, however many deliveries are pending.
            models.Index(
                fields=["claimed_until"],
                name="delivery_claimed_idx",
                condition=Q(status="pending", claimed_until__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.status} ({self.notification_id})"


class NotificationPreference(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    category = models.CharField(max_length=16, choices=Category.choices)
    in_app = models.BooleanField(default=True)
    email = models.BooleanField(default=False)
    webhook = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "category"], name="notif_pref_unique"),
            models.CheckConstraint(
                condition=~Q(category="margin_guard", in_app=False), name="notif_pref_margin_guard_in_app"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.category}"


class WebhookEndpoint(models.Model):
    """Where a user's webhook deliveries go, and the secret that signs them (Standard Webhooks)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    # The endpoint's circuit breaker (notifications/tasks.py): attempts in a row that got no answer
    # (timeout, refused, connection, TLS or DNS error), and until when the user's other deliveries
    # wait rather than try. Any answer closes it.
    failures = models.PositiveIntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True)
    # The last attempt answered, but slowly (after NOTIFY_WEBHOOK_SLOW_SECONDS): one attempt at a
    # time until one answers fast. And when the last attempt began: the outbound threads go first
    # to the users served least recently (notifications/tasks.py, rank_outbound).
    slow = models.BooleanField(default=False)
    last_attempt_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id} → {self.url}"
