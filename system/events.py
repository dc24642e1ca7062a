"""Payload builders for the seed's system events (channel ``system``)."""

from __future__ import annotations

from django.utils import timezone

from broadcast import stafffeed
from wire import envelope, iso

from .models import NoticeKind, ServiceStatus, SystemNotice

SERVER_MAINTENANCE = "server_maintenance"
SERVICE_STATUS_UPDATE = "service_status_update"
CHANNEL = "system"


def notice_event(notice: SystemNotice) -> dict:
    """The event for a notice as it stands now."""
    if notice.kind == NoticeKind.MAINTENANCE:
        # A maintenance notice has both times (the system_notice_shape check constraint).
        assert notice.start_time is not None and notice.end_time is not None
        now = timezone.now()
        if notice.ended_at is not None or notice.end_time <= now:
            state = "ended"
        elif notice.start_time > now:
            state = "scheduled"
        else:
            state = "in_progress"
        return envelope(
            SERVER_MAINTENANCE,
            CHANNEL,
            {
                "id": str(notice.pk),
                "scheduled": state == "scheduled",
                "startTime": iso(notice.start_time),
                "endTime": iso(
                    notice.ended_at if notice.ended_at and notice.ended_at < notice.end_time else notice.end_time
                ),
                "message": notice.message,
                "status": state,
            },
        )
    status = ServiceStatus.OPERATIONAL if notice.ended_at is not None else notice.status
    return envelope(
        SERVICE_STATUS_UPDATE,
        CHANNEL,
        {
            "id": str(notice.pk),
            "service": notice.service,
            "status": status,
            "message": notice.message,
            "estimatedRecovery": iso(notice.estimated_recovery),
            "updatedAt": iso(notice.ended_at or notice.updated_at),
        },
    )


stafffeed.show(SERVER_MAINTENANCE)
stafffeed.show(SERVICE_STATUS_UPDATE)
