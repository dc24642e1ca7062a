"""REST for market data, price alerts and tick ingest."""

from __future__ import annotations

from typing import cast

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from core.api import DecimalField
from core.errors import NotFound
from wire import num

from . import selectors, services
from .events import candle_data, price_alert_data, snapshot_data
from .models import AlertCondition, Instrument, PriceAlert, Timeframe


class InstrumentOutput(serializers.Serializer):
    symbol = serializers.CharField()
    exchange = serializers.CharField()
    tickSize = serializers.FloatField()
    lotSize = serializers.FloatField()
    maxLeverage = serializers.IntegerField()
    maintenanceMarginRate = serializers.FloatField()

    def to_representation(self, i) -> dict:
        return {
            "symbol": i.symbol,
            "exchange": i.exchange,
            "tickSize": num(i.tick_size),
            "lotSize": num(i.lot_size),
            "maxLeverage": i.max_leverage,
            "maintenanceMarginRate": num(i.maintenance_margin_rate),
        }


class InstrumentsApi(APIView):
    @extend_schema(responses=InstrumentOutput(many=True), summary="Tradable instruments")
    def get(self, request):
        return Response(InstrumentOutput(Instrument.objects.filter(active=True), many=True).data)


class SnapshotApi(APIView):
    @extend_schema(
        responses=inline_serializer("Snapshot", {"symbol": serializers.CharField(), "price": serializers.FloatField()}),
        summary="Latest snapshot",
    )
    def get(self, request, symbol: str):
        if not Instrument.objects.filter(symbol=symbol, active=True).exists():
            raise NotFound(f"unknown symbol {symbol}")
        state = selectors.snapshot_get(symbol=symbol)
        if state is None:
            raise NotFound(f"no ticks yet for {symbol}")
        return Response(snapshot_data(state))


class CandlesQuery(serializers.Serializer):
    timeframe = serializers.ChoiceField(choices=Timeframe.values)
    # "from"/"to" are Python keywords: mapped below
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=500)


class CandlesApi(APIView):
    @extend_schema(
        parameters=[CandlesQuery],
        responses=inline_serializer(
            "Candles",
            {
                "symbol": serializers.CharField(),
                "timeframe": serializers.CharField(),
                "candles": serializers.ListField(child=serializers.DictField()),
            },
        ),
        summary="OHLCV candles, oldest first",
    )
    def get(self, request, symbol: str):
        if not Instrument.objects.filter(symbol=symbol, active=True).exists():
            raise NotFound(f"unknown symbol {symbol}")
        query = CandlesQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        bounds = serializers.DateTimeField(allow_null=True)
        try:
            since = bounds.to_internal_value(request.query_params["from"]) if request.query_params.get("from") else None
            until = bounds.to_internal_value(request.query_params["to"]) if request.query_params.get("to") else None
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"from/to": exc.detail}) from None
        d = query.validated_data
        candles = selectors.candles_list(
            symbol=symbol, timeframe=d["timeframe"], since=since, until=until, limit=d["limit"]
        )
        return Response({"symbol": symbol, "timeframe": d["timeframe"], "candles": [candle_data(c) for c in candles]})


class PriceAlertInput(serializers.Serializer):
    symbol = serializers.CharField(max_length=32)
    condition = serializers.ChoiceField(choices=AlertCondition.values)
    price = DecimalField(max_digits=24, decimal_places=8, min_value=0)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class PriceAlertPatch(serializers.Serializer):
    condition = serializers.ChoiceField(choices=AlertCondition.values, required=False)
    price = DecimalField(max_digits=24, decimal_places=8, min_value=0, required=False)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True)


class PriceAlertOutput(serializers.Serializer):
    id = serializers.CharField()
    symbol = serializers.CharField()
    condition = serializers.ChoiceField(choices=AlertCondition.values)
    price = serializers.FloatField()
    note = serializers.CharField()
    active = serializers.BooleanField()
    triggeredAt = serializers.DateTimeField(allow_null=True)
    currentPrice = serializers.FloatField(allow_null=True)

    def to_representation(self, alert) -> dict:
        data = price_alert_data(alert, alert.instrument.symbol)
        return {**data, "active": alert.active, "currentPrice": data["currentPrice"] if alert.triggered_at else None}


class PriceAlertViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = PriceAlertOutput
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        user = cast(User, self.request.user)  # IsAuthenticated, the default permission: never anonymous
        qs = PriceAlert.objects.filter(user=user).select_related("instrument").order_by("-id")
        active = self.request.query_params.get("active")
        if active in ("true", "false"):
            qs = qs.filter(active=active == "true")
        return qs

    def _mine(self, pk: str) -> PriceAlert:
        alert = self.get_queryset().filter(pk=int(pk)).first()
        if alert is None:
            raise NotFound(f"no price alert {pk}")
        return alert

    @extend_schema(request=PriceAlertInput, responses={201: PriceAlertOutput}, summary="Create a one-shot price alert")
    def create(self, request):
        body = PriceAlertInput(data=request.data)
        body.is_valid(raise_exception=True)
        alert = services.price_alert_create(user=request.user, **body.validated_data)
        return Response(PriceAlertOutput(alert).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, pk: str):
        return Response(PriceAlertOutput(self._mine(pk)).data)

    @extend_schema(request=PriceAlertPatch, responses=PriceAlertOutput)
    def partial_update(self, request, pk: str):
        body = PriceAlertPatch(data=request.data)
        body.is_valid(raise_exception=True)
        alert = services.price_alert_update(alert=self._mine(pk), **body.validated_data)
        return Response(PriceAlertOutput(alert).data)

    def destroy(self, request, pk: str):
        services.price_alert_delete(alert=self._mine(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
