from rest_framework import serializers

from .events import notice_event
from .models import NoticeKind, ServiceStatus, SystemNotice


class NoticeInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=NoticeKind.values)
    message = serializers.CharField(max_length=500)
    startTime = serializers.DateTimeField(required=False)
    endTime = serializers.DateTimeField(required=False)
    service = serializers.SlugField(max_length=64, required=False)
    status = serializers.ChoiceField(choices=ServiceStatus.values, required=False)
    estimatedRecovery = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, attrs):
        if attrs["kind"] == NoticeKind.MAINTENANCE:
            missing = [f for f in ("startTime", "endTime") if f not in attrs]
            if missing:
                raise serializers.ValidationError({f: "required for a maintenance notice" for f in missing})
            if attrs["endTime"] <= attrs["startTime"]:
                raise serializers.ValidationError({"endTime": "must be after startTime"})
        else:
            missing = [f for f in ("service", "status") if f not in attrs]
            if missing:
                raise serializers.ValidationError({f: "required for a service_status notice" for f in missing})
        return attrs


class NoticeOutput(serializers.Serializer):
    """The notice as its wire event's data, plus ``kind`` and ``event`` (the event type)."""

    id = serializers.CharField()
    kind = serializers.ChoiceField(choices=NoticeKind.values)
    event = serializers.ChoiceField(choices=["server_maintenance", "service_status_update"])
    message = serializers.CharField()
    status = serializers.CharField()
    scheduled = serializers.BooleanField(required=False)
    startTime = serializers.DateTimeField(required=False)
    endTime = serializers.DateTimeField(required=False)
    service = serializers.CharField(required=False)
    estimatedRecovery = serializers.DateTimeField(required=False, allow_null=True)
    updatedAt = serializers.DateTimeField(required=False)

    def to_representation(self, notice: SystemNotice) -> dict:
        event = notice_event(notice)
        return {"kind": notice.kind, "event": event["type"], **event["data"]}
