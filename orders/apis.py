"""REST for orders, trades, order-socket sessions and venue executions. Thin: validate, call one
service, shape the answer."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.throttles import SESSION_THROTTLES
from wire import iso

from . import selectors, services
from .idempotency import request_fingerprint, run_once
from .models import OrderSession
from .serializers import (
    OrderFilterInput,
    OrderModifyInput,
    OrderOutput,
    OrderPlaceInput,
    OrderUpdateOutput,
    SessionOutput,
    SymbolScopeInput,
    TradeOutput,
)

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, description="replays the first answer for 24 h"
)


class OrderViewSet(viewsets.GenericViewSet):
    # How an order is placed: the trading core's view (margin.apis) puts its pre-trade margin check
    # here, so placement is one service call whichever view routes it.
    place_order = staticmethod(services.order_place)
    modify_order = staticmethod(services.order_modify)
    lookup_field = "order_id"
    lookup_value_regex = r"[0-9]{6,20}"
    serializer_class = OrderOutput
    cursor_ordering = ("-created_at", "-id")  # ?cursor= pages (core.api.Page), as the list orders them

    @extend_schema(parameters=[OrderFilterInput], responses=OrderOutput(many=True), summary="List your orders")
    def list(self, request):
        filters = OrderFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        qs = selectors.order_list(
            user=request.user,
            status=f.get("status"),
            symbol=f.get("symbol"),
            since=f.get("dateFrom"),
            until=f.get("dateTo"),
            client_order_id=f.get("clientOrderId"),
        )
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(OrderOutput(page, many=True).data)

    @extend_schema(
        request=OrderPlaceInput, responses={201: OrderOutput}, parameters=[IDEMPOTENCY_HEADER], summary="Place an order"
    )
    def create(self, request):
        body = OrderPlaceInput(data=request.data)
        body.is_valid(raise_exception=True)

        def place() -> tuple[int, dict]:
            d = body.validated_data
            order = self.place_order(
                user=request.user,
                trading_symbol=d["tradingSymbol"],
                exchange=d.get("exchange"),
                order_type=d["orderType"],
                transaction_type=d["transactionType"],
                quantity=d["quantity"],
                price=d.get("price"),
                trigger_price=d.get("triggerPrice"),
                leverage=d["leverage"],
                amo=d["amo"],
                reduce_only=d["reduceOnly"],
                client_order_id=d.get("clientOrderId", ""),
                validity=d.get("validity"),
            )
            return status.HTTP_201_CREATED, OrderOutput(order).data

        key = request.headers.get("Idempotency-Key")
        if not key:
            code, data = place()
            return Response(data, status=code)
        if len(key) > 255:
            return Response({"code": "invalid_idempotency_key", "detail": "at most 255 characters"}, status=400)
        code, data, replayed = run_once(
            user=request.user, key=key, fingerprint=request_fingerprint(request.data), action=place
        )
        return Response(data, status=code, headers={"Idempotent-Replayed": "true"} if replayed else None)

    @extend_schema(responses=OrderOutput, summary="One of your orders")
    def retrieve(self, request, order_id: str):
        return Response(OrderOutput(selectors.order_get(user=request.user, order_id=order_id)).data)

    @extend_schema(request=OrderModifyInput, responses=OrderOutput, summary="Modify price, quantity or trigger price")
    def partial_update(self, request, order_id: str):
        order = selectors.order_get(user=request.user, order_id=order_id)
        body = OrderModifyInput(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        order = self.modify_order(
            order=order, quantity=d.get("quantity"), price=d.get("price"), trigger_price=d.get("triggerPrice")
        )
        return Response(OrderOutput(order).data)

    @extend_schema(request=None, responses=OrderOutput, summary="Cancel an order")
    @action(detail=True, methods=["post"])
    def cancel(self, request, order_id: str):
        order = services.order_cancel(order=selectors.order_get(user=request.user, order_id=order_id))
        return Response(OrderOutput(order).data)

    @extend_schema(
        request=SymbolScopeInput,
        responses=inline_serializer(
            "CancelAll",
            {"cancelled": OrderOutput(many=True), "failed": serializers.ListField(child=serializers.DictField())},
        ),
        summary="Cancel all your working orders (of one symbol with {symbol})",
    )
    @action(detail=False, methods=["post"], url_path="cancel-all")
    def cancel_all(self, request):
        body = SymbolScopeInput(data=request.data)
        body.is_valid(raise_exception=True)
        cancelled, failed = services.order_cancel_all(user=request.user, symbol=body.validated_data.get("symbol"))
        return Response(
            {
                "cancelled": OrderOutput(cancelled, many=True).data,
                "failed": [{"orderId": order_id, "code": code, "detail": detail} for order_id, code, detail in failed],
            }
        )

    @extend_schema(responses=OrderUpdateOutput(many=True), summary="The order's update history")
    @action(detail=True, methods=["get"])
    def updates(self, request, order_id: str):
        order = selectors.order_get(user=request.user, order_id=order_id)
        return Response(OrderUpdateOutput(order.updates.order_by("version"), many=True).data)


class TradeViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = TradeOutput
    cursor_ordering = ("-time", "-id")  # ?cursor= pages (core.api.Page), as the list orders them

    @extend_schema(
        parameters=[OpenApiParameter("symbol", str), OpenApiParameter("orderId", str)], summary="List your trades"
    )
    def list(self, request):
        qs = selectors.trade_list(
            user=request.user, symbol=request.query_params.get("symbol"), order_id=request.query_params.get("orderId")
        )
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(TradeOutput(page, many=True).data)


class SessionCreateApi(APIView):
    throttle_classes = SESSION_THROTTLES

    @extend_schema(request=None, responses={201: SessionOutput}, summary="Credentials for the /ws/orders socket")
    def post(self, request):
        session, token = services.order_session_create(user=request.user)

        return Response(
            {"session": session.session, "token": token, "expiresAt": iso(session.expires_at)},
            status=status.HTTP_201_CREATED,
        )


class SessionRevokeApi(APIView):
    @extend_schema(request=None, responses={204: None}, summary="Revoke (log out) an order-socket session")
    def delete(self, request, session: str):
        found = get_object_or_404(OrderSession, session=session, user=request.user)
        services.order_session_revoke(session=found)
        return Response(status=status.HTTP_204_NO_CONTENT)
