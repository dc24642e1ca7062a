"""REST for notifications: the inbox, read state, preferences, and staff sending."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from core.api import staff_with

from . import selectors, services
from .serializers import (
    NotificationCreateInput,
    NotificationFilterInput,
    NotificationOutput,
    PreferencesInput,
    PreferencesOutput,
)
from .throttles import WebhookUrlThrottle


class NewestFirst(CursorPagination):
    """Cursor pages by id: stable while new notifications arrive. At most 200 a page (or
    API_MAX_PAGE_SIZE if lower), a ``limit`` it cannot read included."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"

    @property
    def max_page_size(self) -> int:  # type: ignore[override]  # DRF's is a plain class attribute
        return min(200, settings.API_MAX_PAGE_SIZE)

    def get_page_size(self, request) -> int:
        return min(super().get_page_size(request) or self.max_page_size, self.max_page_size)


class NotificationViewSet(viewsets.GenericViewSet):
    serializer_class = NotificationOutput
    pagination_class = NewestFirst
    lookup_value_regex = r"[0-9]{1,18}"

    def get_throttles(self):
        if self.action == "preferences":
            return [*super().get_throttles(), WebhookUrlThrottle()]
        return super().get_throttles()

    def get_permissions(self):
        if self.action == "create":
            return [permissions.IsAuthenticated(), staff_with("notifications.add_notification", service_key=False)()]
        return [permissions.IsAuthenticated()]

    @extend_schema(parameters=[NotificationFilterInput], summary="Your notifications, newest first")
    def list(self, request):
        filters = NotificationFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        read = None if "status" not in f else f["status"] == "read"
        qs = selectors.notification_list(user=request.user, read=read, category=f.get("category"))
        page = self.paginate_queryset(qs.prefetch_related("deliveries"))
        return self.get_paginated_response(NotificationOutput(page, many=True).data)

    @extend_schema(
        request=NotificationCreateInput,
        responses={
            201: inline_serializer(
                "NotificationCreated",
                {"created": serializers.IntegerField(), "id": serializers.CharField(required=False)},
            )
        },
        summary="Send a notification to one user, a tier or everyone (staff with notifications.add_notification)",
    )
    def create(self, request):
        body = NotificationCreateInput(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        fields = {k: d[k] for k in ("title", "message", "type", "category", "data")}
        if "userId" in d:
            user = get_user_model().objects.filter(pk=d["userId"], is_active=True).first()
            if user is None:
                raise serializers.ValidationError({"userId": "no such active user"})
            n = services.notification_create(user=user, **fields)
            return Response({"created": 1, "id": str(n.pk)}, status=status.HTTP_201_CREATED)
        created = services.notification_broadcast(audience=d["audience"], **fields)
        return Response({"created": created}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=NotificationOutput, summary="Mark one read (idempotent)")
    @action(detail=True, methods=["post"])
    def read(self, request, pk: str):
        n = services.notification_mark_read(
            notification=selectors.notification_get(user=request.user, notification_id=int(pk))
        )
        return Response(NotificationOutput(n).data)

    @extend_schema(
        request=None,
        responses=inline_serializer("ReadAll", {"updated": serializers.IntegerField()}),
        summary="Mark all read",
    )
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request):
        return Response({"updated": services.notification_mark_all_read(user=request.user)})

    @extend_schema(
        responses=inline_serializer("UnreadCount", {"unread": serializers.IntegerField()}), summary="Unread count"
    )
    @action(detail=False, methods=["get"], url_path="unread-count")
    def unread_count(self, request):
        return Response({"unread": selectors.unread_count(user=request.user)})

    @extend_schema(methods=["GET"], responses=PreferencesOutput, summary="Delivery methods per category")
    @extend_schema(
        methods=["PUT"], request=PreferencesInput, responses=PreferencesOutput, summary="Set delivery methods"
    )
    @action(detail=False, methods=["get", "put"])
    def preferences(self, request):
        if request.method == "PUT":
            body = PreferencesInput(data=request.data)
            body.is_valid(raise_exception=True)
            d = body.validated_data
            webhook = None
            if "webhookUrl" in d:
                webhook = {"url": d["webhookUrl"], "secret": d.get("webhookSecret", "")} if d["webhookUrl"] else {}
            services.preferences_set(user=request.user, categories=d["categories"], webhook=webhook)
        return Response(selectors.preferences_get(user=request.user))
