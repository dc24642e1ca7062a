"""Every write to system notices: API, Django admin and commands call these."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from .models import NoticeKind, SystemNotice
from .signals import notice_changed

if TYPE_CHECKING:
    # The stubs' name for the AUTH_USER_MODEL class (accounts is a sibling layer: no import).
    from django.contrib.auth.models import _User


@transaction.atomic
def system_notice_create(
    *,
    kind: str,
    message: str,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    service: str = "",
    status: str = "",
    estimated_recovery: datetime | None = None,
    actor: _User | None = None,
) -> SystemNotice:
    notice = SystemNotice(
        kind=kind,
        message=message,
        start_time=start_time,
        end_time=end_time,
        service=service,
        status=status,
        estimated_recovery=estimated_recovery,
        created_by=actor,
    )
    return system_notice_save(notice=notice)


@transaction.atomic
def system_notice_save(*, notice: SystemNotice) -> SystemNotice:
    """Validate and save a new or edited notice, then broadcast it.

    A service-status notice supersedes the earlier one for the same service.
    """
    notice.full_clean(exclude=["created_by"])
    notice.save()
    if notice.kind == NoticeKind.SERVICE_STATUS:
        SystemNotice.objects.filter(
            kind=NoticeKind.SERVICE_STATUS, service=notice.service, ended_at__isnull=True
        ).exclude(pk=notice.pk).update(ended_at=timezone.now())
    notice_changed.send(sender=SystemNotice, notice=notice)
    return notice


@transaction.atomic
def system_notice_end(*, notice: SystemNotice) -> SystemNotice:
    """End a notice now: a maintenance window closes early, a service is back to operational."""
    notice = SystemNotice.objects.select_for_update().get(pk=notice.pk)
    if notice.ended_at is None:
        notice.ended_at = timezone.now()
        notice.save(update_fields=["ended_at", "updated_at"])
        notice_changed.send(sender=SystemNotice, notice=notice)
    return notice
