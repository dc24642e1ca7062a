"""Every write to market state: ticks fold into candles and the snapshot, and fire price alerts.

The ingest API, the ``market_feed`` command and the in-process simulator all call ``ticks_ingest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Max, Min, Q, Sum
from django.utils import timezone

from notifications.services import notification_create_each

from .models import TIMEFRAME_SECONDS, AlertCondition, Candle, Instrument, MarketState, PriceAlert, Tick
from .signals import alerts_fired, market_changed

MAX_TICKS_PER_CALL = 5000


@dataclass(frozen=True)
class TickIn:
    instrument: Instrument
    price: Decimal
    volume: Decimal
    timestamp: datetime


def bucket_start(ts: datetime, timeframe: str) -> datetime:
    seconds = TIMEFRAME_SECONDS[timeframe]
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def _decimal(value, field: str, errors: dict, index: int) -> Decimal | None:
    if isinstance(value, bool):
        errors[f"{index}.{field}"] = "must be a number"
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        errors[f"{index}.{field}"] = "must be a number"
        return None
    if not number.is_finite() or abs(number) >= Decimal("1e15"):
        errors[f"{index}.{field}"] = "must be a finite number below 1e15"
        return None
    return number


def ticks_validate(raw: object) -> list[TickIn]:
    """All or nothing: any bad tick raises ValidationError naming it by position."""
    if not isinstance(raw, list) or not raw:
        raise ValidationError({"ticks": "send a non-empty list of {symbol, price, volume, timestamp?}"})
    if len(raw) > MAX_TICKS_PER_CALL:
        raise ValidationError({"ticks": f"at most {MAX_TICKS_PER_CALL} ticks per call"})
    instruments = {i.symbol: i for i in Instrument.objects.filter(active=True)}
    errors: dict[str, str] = {}
    out = []
    now = timezone.now()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            errors[str(i)] = "each tick is an object"
            continue
        instrument = instruments.get(item.get("symbol")) if isinstance(item.get("symbol"), str) else None
        if instrument is None:
            errors[f"{i}.symbol"] = f"unknown symbol {item.get('symbol')!r}"
        price = _decimal(item.get("price"), "price", errors, i)
        if price is not None and price <= 0:
            errors[f"{i}.price"] = "must be positive"
        volume = _decimal(item.get("volume", 0), "volume", errors, i)
        if volume is not None and volume < 0:
            errors[f"{i}.volume"] = "must not be negative"
        ts = now
        if item.get("timestamp") is not None:
            from django.utils.dateparse import parse_datetime

            parsed = parse_datetime(item["timestamp"]) if isinstance(item["timestamp"], str) else None
            if parsed is None or parsed.tzinfo is None:
                errors[f"{i}.timestamp"] = "ISO-8601 with a timezone, e.g. 2025-01-06T10:30:00Z"
            elif parsed > now + timedelta(seconds=60):
                errors[f"{i}.timestamp"] = "is in the future"
            else:
                ts = parsed
        if f"{i}.symbol" not in errors and price is not None and volume is not None and str(i) not in errors:
            out.append(TickIn(instrument, price, volume, ts))
    if errors:
        raise ValidationError(errors)
    return out


def _fold_candles(tick: TickIn) -> list[Candle]:
    """Fold the tick into its bucket of every timeframe. On PostgreSQL one INSERT … ON CONFLICT
    statement does all six; elsewhere (the SQLite default) the ORM does it row by row."""
    if connection.vendor == "postgresql":
        return _fold_candles_upsert(tick)
    changed = []
    for timeframe in TIMEFRAME_SECONDS:
        start = bucket_start(tick.timestamp, timeframe)
        candle, created = Candle.objects.select_for_update().get_or_create(
            instrument=tick.instrument,
            timeframe=timeframe,
            start=start,
            defaults={
                "open": tick.price,
                "high": tick.price,
                "low": tick.price,
                "close": tick.price,
                "volume": tick.volume,
            },
        )
        if not created:
            candle.high = max(candle.high, tick.price)
            candle.low = min(candle.low, tick.price)
            candle.close = tick.price
            candle.volume += tick.volume
            candle.save(update_fields=["high", "low", "close", "volume"])
        changed.append(candle)
    return changed


def _fold_candles_upsert(tick: TickIn) -> list[Candle]:
    table = Candle._meta.db_table
    rows, params = [], []
    for timeframe in TIMEFRAME_SECONDS:
        rows.append("(%s, %s, %s, %s, %s, %s, %s, %s)")
        p, start = tick.price, bucket_start(tick.timestamp, timeframe)
        params += [tick.instrument.pk, timeframe, start, p, p, p, p, tick.volume]
    sql = (
        f"INSERT INTO {table} (instrument_id, timeframe, start, open, high, low, close, volume)"
        f" VALUES {', '.join(rows)}"
        f" ON CONFLICT (instrument_id, timeframe, start) DO UPDATE SET"
        f" high = GREATEST({table}.high, EXCLUDED.high), low = LEAST({table}.low, EXCLUDED.low),"
        f" close = EXCLUDED.close, volume = {table}.volume + EXCLUDED.volume"
        f" RETURNING id, timeframe, start, open, high, low, close, volume"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    return [
        Candle(id=i, instrument=tick.instrument, timeframe=tf, start=st, open=o, high=h, low=lo, close=c, volume=v)
        for i, tf, st, o, h, lo, c, v in fetched
    ]


def _rolling_24h(instrument: Instrument, now: datetime) -> dict:
    window = Candle.objects.filter(
        instrument=instrument, timeframe="1m", start__gt=bucket_start(now - timedelta(hours=24), "1m")
    )
    stats = window.aggregate(high=Max("high"), low=Min("low"), volume=Sum("volume"))
    first = window.order_by("start").values_list("open", flat=True).first()
    return {**stats, "open": first}


def _fire_alerts(tick: TickIn, previous: Decimal | None) -> list[PriceAlert]:
    """Alerts this tick meets, via the (instrument, condition, price) index of active alerts.
    Rows locked by a concurrent ingest are skipped: each alert fires once."""
    price = tick.price
    met = Q(condition=AlertCondition.ABOVE, price__lte=price) | Q(condition=AlertCondition.BELOW, price__gte=price)
    if previous is not None and previous != price:
        # crossing: the threshold lies between the previous and the new price (the old side excluded)
        met |= Q(condition=AlertCondition.CROSSES, price__gte=min(previous, price), price__lte=max(previous, price))
    candidates = PriceAlert.objects.select_for_update(skip_locked=True).filter(
        met, instrument=tick.instrument, active=True
    )
    fired = [a for a in candidates if not (a.condition == AlertCondition.CROSSES and a.price == previous)]
    if not fired:
        return []
    for alert in fired:
        alert.active = False
        alert.triggered_at = tick.timestamp
        alert.triggered_price = price
    PriceAlert.objects.bulk_update(fired, ["active", "triggered_at", "triggered_price"])
    notification_create_each(
        [
            {
                "user_id": alert.user_id,
                "title": f"{tick.instrument.symbol} {alert.condition} {alert.price.normalize()}",
                "message": f"{tick.instrument.symbol} is at {price.normalize()}"
                + (f": {alert.note}" if alert.note else ""),
                "type": "info",
                "category": "price_alert",
                "data": {"alertId": str(alert.pk), "symbol": tick.instrument.symbol, "currentPrice": float(price)},
            }
            for alert in fired
        ]
    )
    return fired


@transaction.atomic
def ticks_ingest(raw: object) -> list[MarketState]:
    """Validate every tick, then apply them in order: raw tick, candles, snapshot, alerts."""
    ticks = ticks_validate(raw)
    states: dict[int, MarketState] = {}
    for tick in ticks:
        # The state row lock serialises ingests of one symbol, so "previous price" is well defined.
        state = MarketState.objects.select_for_update().filter(instrument=tick.instrument).first()
        previous = state.price if state else None
        Tick.objects.create(instrument=tick.instrument, price=tick.price, volume=tick.volume, timestamp=tick.timestamp)
        candles = _fold_candles(tick)
        day = _rolling_24h(tick.instrument, tick.timestamp)
        opening = day["open"] or tick.price
        state = state or MarketState(instrument=tick.instrument)
        state.price = tick.price
        state.change = tick.price - opening
        state.change_percent = (state.change / opening * 100).quantize(Decimal("0.0001"))
        state.volume = day["volume"] or Decimal(0)
        state.high24h = day["high"] or tick.price
        state.low24h = day["low"] or tick.price
        state.timestamp = tick.timestamp
        state.save()
        states[tick.instrument.pk] = state
        fired = _fire_alerts(tick, previous)
        if fired:
            alerts_fired.send(sender=PriceAlert, alerts=fired, symbol=tick.instrument.symbol)
        market_changed.send(sender=MarketState, state=state, candles=candles)
    return list(states.values())


@transaction.atomic
def price_alert_create(*, user, symbol: str, condition: str, price: Decimal, note: str = "") -> PriceAlert:
    instrument = Instrument.objects.filter(symbol=symbol, active=True).first()
    errors = {}
    if instrument is None:
        errors["symbol"] = f"unknown symbol {symbol!r}"
    if condition not in AlertCondition.values:
        errors["condition"] = f"must be one of {', '.join(AlertCondition.values)}"
    if price is None or price <= 0:
        errors["price"] = "must be positive"
    if errors:
        raise ValidationError(errors)
    return PriceAlert.objects.create(user=user, instrument=instrument, condition=condition, price=price, note=note)


@transaction.atomic
def price_alert_update(*, alert: PriceAlert, **fields) -> PriceAlert:
    from axisor.errors import Conflict

    alert = PriceAlert.objects.select_for_update().get(pk=alert.pk)
    if not alert.active:
        raise Conflict("a triggered alert cannot be changed; create a new one", code="alert_triggered")
    for key in ("condition", "price", "note"):
        if fields.get(key) is not None:
            setattr(alert, key, fields[key])
    if alert.condition not in AlertCondition.values:
        raise ValidationError({"condition": f"must be one of {', '.join(AlertCondition.values)}"})
    if alert.price <= 0:
        raise ValidationError({"price": "must be positive"})
    alert.save()
    return alert


@transaction.atomic
def price_alert_delete(*, alert: PriceAlert) -> None:
    alert.delete()


def ticks_prune(*, now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(hours=settings.AXISOR_MARKET["TICK_RETENTION_HOURS"])
    deleted, _ = Tick.objects.filter(timestamp__lt=cutoff).delete()
    return deleted
