from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from core.api import DecimalField
from market.models import Instrument
from wire import iso, num

from .events import order_fields
from .models import ExecutionReport, OrderStatus, OrderType, Side, UpdateType, Validity

QTY: dict[str, Any] = {"max_digits": 24, "decimal_places": 8}


class OrderPlaceInput(serializers.Serializer):
    tradingSymbol = serializers.CharField(max_length=32)
    exchange = serializers.CharField(max_length=16, required=False)
    orderType = serializers.ChoiceField(choices=OrderType.values)
    transactionType = serializers.ChoiceField(choices=Side.values)
    quantity = DecimalField(**QTY)
    price = DecimalField(required=False, allow_null=True, **QTY)
    triggerPrice = DecimalField(required=False, allow_null=True, **QTY)
    leverage = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1000)
    amo = serializers.BooleanField(required=False, default=False)
    reduceOnly = serializers.BooleanField(required=False, default=False)
    validity = serializers.ChoiceField(choices=Validity.values, required=False)
    clientOrderId = serializers.RegexField(r"^[A-Za-z0-9._:-]{1,64}$", required=False, max_length=64)


class OrderModifyInput(serializers.Serializer):
    quantity = DecimalField(required=False, **QTY)
    price = DecimalField(required=False, **QTY)
    triggerPrice = DecimalField(required=False, **QTY)


class OrderFilterInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=OrderStatus.values, required=False)
    symbol = serializers.CharField(required=False, max_length=32)
    clientOrderId = serializers.CharField(required=False, max_length=64)
    dateFrom = serializers.DateTimeField(required=False)
    dateTo = serializers.DateTimeField(required=False)


class SymbolScopeInput(serializers.Serializer):
    """The body of cancel-all and close-all: ``{}`` for everything of yours, ``{"symbol"}`` for one
    instrument's. An unknown symbol is 400, never "nothing to do"; an unknown field is 400 too."""

    symbol = serializers.CharField(required=False, max_length=32)

    def validate_symbol(self, value: str) -> str:
        if not Instrument.objects.filter(symbol=value).exists():
            raise serializers.ValidationError(f"unknown instrument {value!r}")
        return value

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields) if isinstance(self.initial_data, dict) else set()
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in sorted(unknown)})
        return attrs


class OrderOutput(serializers.Serializer):
    orderId = serializers.CharField()
    orderStatus = serializers.ChoiceField(choices=OrderStatus.values)
    tradingSymbol = serializers.CharField()
    exchange = serializers.CharField()
    orderType = serializers.ChoiceField(choices=OrderType.values)
    transactionType = serializers.ChoiceField(choices=Side.values)
    quantity = serializers.FloatField()
    filledQuantity = serializers.FloatField()
    pendingQuantity = serializers.FloatField()
    price = serializers.FloatField()
    triggerPrice = serializers.FloatField()
    averagePrice = serializers.FloatField()
    rejectionReason = serializers.CharField()
    leverage = serializers.IntegerField()
    amo = serializers.BooleanField()
    reduceOnly = serializers.BooleanField()
    validity = serializers.ChoiceField(choices=Validity.values)
    clientOrderId = serializers.CharField(allow_null=True)
    version = serializers.IntegerField()
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()

    def to_representation(self, order) -> dict:
        return {**order_fields(order), "createdAt": iso(order.created_at), "updatedAt": iso(order.updated_at)}


class OrderUpdateOutput(serializers.Serializer):
    updateType = serializers.ChoiceField(choices=UpdateType.values)
    version = serializers.IntegerField()
    order = serializers.DictField(help_text="the order update exactly as it was sent")

    def to_representation(self, update) -> dict:
        return {"updateType": update.update_type, "version": update.version, "order": update.snapshot}


class TradeOutput(serializers.Serializer):
    tradeId = serializers.CharField()
    execId = serializers.CharField()
    orderId = serializers.CharField()
    tradingSymbol = serializers.CharField()
    transactionType = serializers.CharField()
    quantity = serializers.FloatField()
    price = serializers.FloatField()
    time = serializers.DateTimeField()
    liquidation = serializers.BooleanField()

    def to_representation(self, trade) -> dict:
        return {
            "tradeId": trade.trade_id,
            "execId": trade.exec_id,
            "orderId": trade.order.order_id,
            "tradingSymbol": trade.order.instrument.symbol,
            "transactionType": trade.order.transaction_type,
            "quantity": num(trade.quantity),
            "price": num(trade.price),
            "time": iso(trade.time),
            "liquidation": trade.liquidation,
        }


class ExecutionInput(serializers.Serializer):
    orderId = serializers.CharField(max_length=20)
    execId = serializers.CharField(max_length=64)
    type = serializers.ChoiceField(choices=ExecutionReport.Kind.values)
    quantity = DecimalField(required=False, allow_null=True, **QTY)
    price = DecimalField(required=False, allow_null=True, **QTY)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=255)
    executedAt = serializers.DateTimeField(required=False, help_text="when the venue executed it (fills)")

    def validate_executedAt(self, value):
        if value > timezone.now() + timedelta(seconds=5):
            raise serializers.ValidationError("is in the future")
        return value

    def validate(self, attrs):
        if attrs["type"] == "fill":
            errors = {f: "required for a fill" for f in ("quantity", "price") if attrs.get(f) is None}
            errors.update({f: "must be positive" for f in ("quantity", "price") if f not in errors and attrs[f] <= 0})
            if errors:
                raise serializers.ValidationError(errors)
        return attrs


class SessionOutput(serializers.Serializer):
    session = serializers.CharField()
    token = serializers.CharField()
    expiresAt = serializers.DateTimeField()
