"""GET /api/events: the caller's personal event log, for resume over REST."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from broadcast import history


class EventsQuery(serializers.Serializer):
    since = serializers.IntegerField(min_value=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=200)


class EventsApi(APIView):
    @extend_schema(
        parameters=[EventsQuery],
        responses={
            200: inline_serializer(
                "EventPage",
                {
                    "events": serializers.ListField(child=serializers.DictField()),
                    "lastSeq": serializers.IntegerField(),
                    "hasMore": serializers.BooleanField(),
                },
            )
        },
        summary="Your events after seq N, in order (410 too_old when the log no longer holds them)",
    )
    def get(self, request):
        query = EventsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        since, limit = query.validated_data["since"], query.validated_data["limit"]
        try:
            current = history.check_resume(request.user.pk, since)
        except history.ResumeRefused as refused:
            body = {"code": refused.reason, "detail": "resume from a snapshot: the log no longer holds these events"}
            if refused.reason == "ahead":
                body["detail"] = "since is ahead of your latest event"
            return Response({**body, **refused.as_message()}, status=410 if refused.reason == "too_old" else 400)
        events = history.events_after(request.user.pk, since, limit=limit)
        return Response(
            {
                "events": [e.payload for e in events],
                "lastSeq": current,
                "hasMore": bool(events) and events[-1].seq < current,
            }
        )
