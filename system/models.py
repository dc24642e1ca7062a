"""System notices: maintenance windows and service status, broadcast to every connection."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class NoticeKind(models.TextChoices):
    MAINTENANCE = "maintenance", "Maintenance window"
    SERVICE_STATUS = "service_status", "Service status"


class ServiceStatus(models.TextChoices):
    OPERATIONAL = "operational", "Operational"
    DEGRADED = "degraded", "Degraded"
    DOWN = "down", "Down"


class SystemNotice(models.Model):
    kind = models.CharField(max_length=16, choices=NoticeKind.choices)
    message = models.CharField(max_length=500)
    # maintenance
    start_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    # service status
    service = models.SlugField(max_length=64, blank=True, default="", validators=[])
    status = models.CharField(max_length=16, choices=ServiceStatus.choices, blank=True, default="")
    estimated_recovery = models.DateTimeField(null=True, blank=True)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                name="system_notice_shape",
                condition=(
                    Q(
                        kind="maintenance",
                        start_time__isnull=False,
                        end_time__isnull=False,
                        end_time__gt=models.F("start_time"),
                    )
                    | Q(kind="service_status", status__in=["operational", "degraded", "down"]) & ~Q(service="")
                ),
            )
        ]

    def __str__(self) -> str:
        if self.kind == NoticeKind.MAINTENANCE:
            return f"maintenance {self.start_time:%Y-%m-%d %H:%M}–{self.end_time:%H:%M}: {self.message}"
        return f"{self.service} {self.status}: {self.message}"

    def clean(self) -> None:
        errors = {}
        if self.kind == NoticeKind.MAINTENANCE:
            if self.start_time is None:
                errors["start_time"] = "a maintenance window needs a start time"
            if self.end_time is None:
                errors["end_time"] = "a maintenance window needs an end time"
            elif self.start_time is not None and self.end_time <= self.start_time:
                errors["end_time"] = "the end time must be after the start time"
        elif self.kind == NoticeKind.SERVICE_STATUS:
            if not self.service:
                errors["service"] = "name the service"
            if self.status not in ServiceStatus.values:
                errors["status"] = f"status must be one of {', '.join(ServiceStatus.values)}"
        if errors:
            raise ValidationError(errors)
