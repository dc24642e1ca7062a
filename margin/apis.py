"""REST for positions, the Margin Guard, the account (balance, margin, ledger), order entry behind the
pre-trade check, executions and ticks. Thin: validate, call one service, shape the answer."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.caps import OrderRateThrottle
from accounts.models import User
from core import tier
from core.api import DecimalField, Page, acts_as_staff_with, staff_with
from core.errors import NotFound
from ledger.selectors import ledger_entries
from orders import apis as orders_apis
from orders.serializers import ExecutionInput, OrderOutput, SymbolScopeInput
from wire import iso, num

from . import selectors, services
from .account import account_adjust, account_figures, order_amend, order_submit
from .events import guard_execution_data
from .executions import execution_apply
from .models import GuardAction, PositionStatus
from .positions import MAX_COOLDOWN_SECONDS, guard_config
from .ticks import ticks_ingest


class PositionOutput(serializers.Serializer):
    """The seed's position object (as in position_status_update) plus quantity, liquidationPrice,
    realizedPnl/unrealizedPnl, status and close details."""

    id = serializers.CharField()
    symbol = serializers.CharField()
    side = serializers.ChoiceField(choices=["long", "short"])
    quantity = serializers.FloatField()
    size = serializers.FloatField()
    entryPrice = serializers.FloatField()
    currentPrice = serializers.FloatField()
    margin = serializers.FloatField()
    leverage = serializers.FloatField()
    liquidationPrice = serializers.FloatField()
    pnl = serializers.FloatField()
    realizedPnl = serializers.FloatField()
    unrealizedPnl = serializers.FloatField()
    distanceToLiquidation = serializers.FloatField()
    isAtRisk = serializers.BooleanField()
    status = serializers.ChoiceField(choices=PositionStatus.values)
    openedAt = serializers.DateTimeField()
    closedAt = serializers.DateTimeField(allow_null=True)
    closeReason = serializers.CharField(allow_null=True)
    updatedAt = serializers.DateTimeField()


class PositionFilterInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=PositionStatus.values, required=False, default=PositionStatus.OPEN)
    symbol = serializers.CharField(required=False, max_length=32)


class PositionViewSet(viewsets.GenericViewSet):
    lookup_field = "position_id"
    lookup_value_regex = r"(pos_)?[0-9]{1,18}"
    serializer_class = PositionOutput

    @extend_schema(parameters=[PositionFilterInput], responses=PositionOutput(many=True), summary="Your positions")
    def list(self, request):
        filters = PositionFilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        f = filters.validated_data
        page = self.paginate_queryset(
            selectors.position_list(user=request.user, status=f["status"], symbol=f.get("symbol"))
        )
        assert page is not None  # LimitOffsetPagination with a PAGE_SIZE always pages
        return self.get_paginated_response(selectors.positions_values(page))

    @extend_schema(responses=PositionOutput, summary="One of your positions")
    def retrieve(self, request, position_id: str):
        position = selectors.position_get(user=request.user, position_id=position_id)
        return Response(selectors.positions_values([position])[0])

    @extend_schema(
        request=SymbolScopeInput,
        responses={
            202: inline_serializer(
                "PositionsCloseAll",
                {
                    "closing": serializers.ListField(child=serializers.DictField()),
                    "failed": serializers.ListField(child=serializers.DictField()),
                },
            )
        },
        summary="Close all your open positions (of one symbol with {symbol}), each with a reduce-only MARKET order",
    )
    @action(detail=False, methods=["post"], url_path="close-all")
    def close_all(self, request):
        body = SymbolScopeInput(data=request.data)
        body.is_valid(raise_exception=True)
        closing, failed = services.positions_close_all(user=request.user, symbol=body.validated_data.get("symbol"))
        return Response(
            {
                "closing": [{"positionId": p.public_id, "order": OrderOutput(o).data} for p, o in closing],
                "failed": [{"positionId": pid, "code": code, "detail": detail} for pid, code, detail in failed],
            },
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        request=None,
        responses={202: inline_serializer("PositionClose", {"position": PositionOutput(), "order": OrderOutput()})},
        summary="Close with a reduce-only MARKET order (the position closes when it fills)",
    )
    @action(detail=True, methods=["post"])
    def close(self, request, position_id: str):
        position = selectors.position_get(user=request.user, position_id=position_id)
        order = services.position_close(position=position)
        position.refresh_from_db()
        return Response(
            {"position": selectors.positions_values([position])[0], "order": OrderOutput(order).data},
            status=status.HTTP_202_ACCEPTED,
        )


class StrictBoolean(serializers.BooleanField):
    """true/false only (DRF's BooleanField also takes "yes", 1, "on", ...)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictInteger(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictDecimal(DecimalField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float | str):
            self.fail("invalid")
        return super().to_internal_value(data)


class MarginGuardInput(serializers.Serializer):
    enabled = StrictBoolean(required=False)
    threshold = StrictDecimal(required=False, max_digits=12, decimal_places=10, coerce_to_string=False)
    action = serializers.ChoiceField(choices=GuardAction.values, required=False)
    cooldownSeconds = StrictInteger(required=False, min_value=0, max_value=MAX_COOLDOWN_SECONDS)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        if not attrs:
            raise serializers.ValidationError("give at least one of enabled, threshold, action, cooldownSeconds")
        return attrs


class MarginGuardOutput(serializers.Serializer):
    enabled = serializers.BooleanField()
    threshold = serializers.FloatField()
    action = serializers.ChoiceField(choices=GuardAction.values)
    cooldownSeconds = serializers.IntegerField()

    def to_representation(self, c) -> dict:
        return {
            "enabled": c.enabled,
            "threshold": num(Decimal(c.threshold).normalize()),
            "action": c.action,
            "cooldownSeconds": c.cooldown_seconds,
        }


class MarginGuardApi(APIView):
    @extend_schema(responses=MarginGuardOutput, summary="Your Margin Guard settings")
    def get(self, request):
        return Response(MarginGuardOutput(guard_config(request.user.pk)).data)

    @extend_schema(
        request=MarginGuardInput,
        responses=MarginGuardOutput,
        summary="Change your Margin Guard settings (fields left out keep their values)",
    )
    def put(self, request):
        body = MarginGuardInput(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        config = services.margin_guard_config_set(
            user=request.user,
            enabled=d.get("enabled"),
            threshold=d.get("threshold"),
            action=d.get("action"),
            cooldown_seconds=d.get("cooldownSeconds"),
        )
        return Response(MarginGuardOutput(config).data)


class ExecutionOutput(serializers.Serializer):
    executionId = serializers.CharField()
    userId = serializers.CharField()
    action = serializers.CharField()
    positions = serializers.ListField(child=serializers.DictField())
    summary = serializers.DictField()
    threshold = serializers.FloatField()
    trigger = serializers.CharField()
    autoCloses = serializers.ListField(child=serializers.DictField())
    executedAt = serializers.DateTimeField()

    def to_representation(self, e) -> dict:
        return {**guard_execution_data(e), "autoCloses": e.auto_closes}


class MarginGuardExecutionsApi(APIView):
    cursor_ordering = ("-executed_at", "-id")  # ?cursor= pages (core.api.Page), as the list orders them

    @extend_schema(
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses=ExecutionOutput(many=True),
        summary="Your Margin Guard executions, newest first",
    )
    def get(self, request):
        paginator = Page()
        page = paginator.paginate_queryset(selectors.execution_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(ExecutionOutput(page, many=True).data)


class TicksApi(APIView):
    permission_classes = [staff_with("market.add_tick")]

    @extend_schema(
        request=inline_serializer(
            "Tick",
            {
                "symbol": serializers.CharField(),
                "price": serializers.FloatField(),
                "volume": serializers.FloatField(),
                "timestamp": serializers.DateTimeField(required=False),
            },
            many=True,
        ),
        responses={202: inline_serializer("Ingested", {"applied": serializers.IntegerField()})},
        summary="Ingest ticks (staff with market.add_tick, or the service key); all or nothing",
    )
    def post(self, request):
        if tier.TIER == "wsgi":
            # The market and position fan-out after a tick paces itself with timers on the server's
            # event loop; a WSGI worker has none that outlives the request, so they would never fire.
            return Response(
                {
                    "code": "wrong_tier",
                    "detail": "ticks are ingested by the daphne processes (deploy/nginx.conf sends "
                    "/api/internal/ticks there); this is the REST tier",
                },
                status=status.HTTP_421_MISDIRECTED_REQUEST,
            )
        body = (
            request.data
            if isinstance(request.data, list)
            else request.data.get("ticks")
            if isinstance(request.data, dict)
            else None
        )
        try:
            ticks_ingest(body)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        assert isinstance(body, list)  # ticks_ingest refuses anything else
        return Response({"applied": len(body)}, status=status.HTTP_202_ACCEPTED)


class ExecutionApi(APIView):
    permission_classes = [staff_with("orders.add_executionreport")]

    @extend_schema(
        request=ExecutionInput,
        responses=OrderOutput,
        summary="A venue's execution report (staff with orders.add_executionreport, or the service key)",
    )
    def post(self, request):
        body = ExecutionInput(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        order, applied = execution_apply(
            order_id=d["orderId"],
            exec_id=d["execId"],
            kind=d["type"],
            quantity=d.get("quantity"),
            price=d.get("price"),
            reason=d.get("reason", ""),
            executed_at=d.get("executedAt"),
            outside=True,
        )
        return Response({"applied": applied, "order": OrderOutput(order).data})


# ---- orders, behind the pre-trade margin check ------------------------------------------------------


class OrderViewSet(orders_apis.OrderViewSet):
    """/api/orders as in ``orders.apis``, placing through ``margin.account.order_submit``: an order
    that needs more margin than is available is recorded and rejected ("Insufficient funds")."""

    place_order = staticmethod(order_submit)
    modify_order = staticmethod(order_amend)

    def get_throttles(self):
        # Placements and modifications, per user and tier: CAP_ORDERS_PER_MINUTE_<TIER> (429 with
        # Retry-After). Never a cancel: taking risk off is always allowed.
        throttles = super().get_throttles()
        limited = self.action in ("create", "partial_update", "update")
        return [*throttles, OrderRateThrottle()] if limited else throttles


# ---- the account --------------------------------------------------------------------------------------


def _money(source: str | None = None) -> serializers.DecimalField:
    """Money as a string with 8 decimals (as stored), never a float."""
    if source is None:
        return serializers.DecimalField(max_digits=30, decimal_places=8, coerce_to_string=True)
    return serializers.DecimalField(max_digits=30, decimal_places=8, coerce_to_string=True, source=source)


class AccountOutput(serializers.Serializer):
    userId = serializers.CharField()
    currency = serializers.CharField()
    balance = _money()
    positionMargin = _money()
    orderMargin = _money()
    reserved = _money()
    available = _money()
    unrealizedPnl = _money()
    equity = _money()


def account_output(user_id: int) -> dict:
    f = account_figures(user_id=user_id)
    return AccountOutput(
        {
            "userId": str(user_id),
            "currency": f.currency,
            "balance": f.balance,
            "positionMargin": f.position_margin,
            "orderMargin": f.order_margin,
            "reserved": f.reserved,
            "available": f.available,
            "unrealizedPnl": f.unrealized_pnl,
            "equity": f.equity,
        }
    ).data


class AccountApi(APIView):
    @extend_schema(responses=AccountOutput, summary="Your balance, margin held, available margin and equity")
    def get(self, request):
        return Response(account_output(request.user.pk))


class LedgerEntryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    amount = _money()
    balanceAfter = serializers.DecimalField(
        source="balance_after", max_digits=30, decimal_places=8, coerce_to_string=True
    )
    reference = serializers.CharField()
    note = serializers.CharField()
    createdAt = serializers.SerializerMethodField()

    def get_createdAt(self, entry) -> str | None:
        return iso(entry.created_at)


class LedgerPagination(Page):
    """At most API_MAX_PAGE_SIZE (500) entries a page, as every list."""


class LedgerApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses=LedgerEntryOutput(many=True),
        summary="Your ledger: every money movement, newest first",
    )
    def get(self, request):
        paginator = LedgerPagination()
        page = paginator.paginate_queryset(ledger_entries(user_id=request.user.pk), request, view=self)
        return paginator.get_paginated_response(LedgerEntryOutput(page, many=True).data)


class AdjustInput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["deposit", "withdrawal", "adjustment"])
    amount = DecimalField(max_digits=21, decimal_places=8)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class AccountAdjustApi(APIView):
    # Moving money is a granted power (a superuser has it), not any staff member's.
    permission_classes = [staff_with("ledger.add_ledgerentry")]

    @extend_schema(
        request=AdjustInput,
        responses={201: AccountOutput},
        summary="Deposit, withdraw or adjust a user's balance (staff with ledger.add_ledgerentry, or the service key)",
    )
    def post(self, request, user_id: int):
        body = AdjustInput(data=request.data)
        body.is_valid(raise_exception=True)
        if not User.objects.filter(pk=user_id).exists():
            raise NotFound(f"no user {user_id}")
        d = body.validated_data
        # The staff member who moves it, or None: the service key's caller (whatever token it carries:
        # a customer's token beside the key is not the actor, the second review found it recorded)
        actor = request.user.pk if acts_as_staff_with(request, "ledger.add_ledgerentry") else None
        if actor == user_id:  # an outside review: any staff account credited itself 1,000,000
            raise PermissionDenied("no one moves money on their own account: another staff member or a service does")
        try:
            account_adjust(user_id=user_id, kind=d["kind"], amount=d["amount"], note=d["note"], actor_id=actor)
        except ValueError as exc:
            raise serializers.ValidationError({"amount": [str(exc)]}) from None
        return Response(account_output(user_id), status=status.HTTP_201_CREATED)
