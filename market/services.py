"""Every write to market state: ticks fold into candles and the snapshot, and fire price alerts.

The ingest API, the ``market_feed`` command and the in-process simulator all call
``margin.ticks.ticks_ingest``, which records the ticks here (``ticks_record``), runs the Margin
Guard, then announces them (``ticks_announce``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Max, Min, Q, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.caps import cap_check
from accounts.models import User
from broadcast.messages import db_clock
from core.errors import Conflict
from notifications.services import notification_create_each
from wire import plain_number

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


def _decimal(value: object, field: str, errors: dict, index: int) -> Decimal | None:
    if isinstance(value, bool) or (isinstance(value, str) and not plain_number(value)):
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
    oldest = timedelta(days=settings.AXISOR_MARKET["BACKFILL_DAYS"])
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            errors[str(i)] = "each tick is an object"
            continue
        symbol = item.get("symbol")
        instrument = instruments.get(symbol) if isinstance(symbol, str) else None
        if instrument is None:
            errors[f"{i}.symbol"] = f"unknown symbol {item.get('symbol')!r}"
        price = _decimal(item.get("price"), "price", errors, i)
        if price is not None and price <= 0:
            errors[f"{i}.price"] = "must be positive"
        elif price is not None and instrument is not None and price < instrument.tick_size:
            # below one tick it prints as 0 and makes a candle whose low is 0
            errors[f"{i}.price"] = f"must be at least the tick size {instrument.tick_size.normalize():f}"
        volume = _decimal(item.get("volume", 0), "volume", errors, i)
        if volume is not None and volume < 0:
            errors[f"{i}.volume"] = "must not be negative"
        ts = now
        if item.get("timestamp") is not None:
            try:  # parse_datetime raises on a well-formed but impossible time (12:99)
                parsed = parse_datetime(item["timestamp"]) if isinstance(item["timestamp"], str) else None
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                errors[f"{i}.timestamp"] = "ISO-8601 with a timezone, e.g. 2025-01-06T10:30:00Z"
            elif parsed > now + timedelta(seconds=60):
                errors[f"{i}.timestamp"] = "is in the future"
            elif parsed < now - oldest:
                days = settings.AXISOR_MARKET["BACKFILL_DAYS"]
                errors[f"{i}.timestamp"] = f"is older than {days:g} days: too late to record"
            else:
                ts = parsed
        if instrument is not None and price is not None and volume is not None and str(i) not in errors:
            out.append(TickIn(instrument, price, volume, ts))
    if errors:
        raise ValidationError(errors)
    return out


def _fold_candles(tick: TickIn) -> list[Candle]:
    """Fold one tick into its bucket of every timeframe, row by row through the ORM (the SQLite
    default; PostgreSQL takes the one-statement path in _fold_candles_many)."""
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
                "open_at": tick.timestamp,
                "close_at": tick.timestamp,
            },
        )
        if not created:
            candle.high = max(candle.high, tick.price)
            candle.low = min(candle.low, tick.price)
            if candle.open_at is not None and tick.timestamp < candle.open_at:
                candle.open, candle.open_at = tick.price, tick.timestamp
            if candle.close_at is None or tick.timestamp >= candle.close_at:
                candle.close, candle.close_at = tick.price, tick.timestamp
            candle.volume += tick.volume
            candle.save(update_fields=["open", "open_at", "high", "low", "close", "close_at", "volume"])
        changed.append(candle)
    return changed


def _fold_candles_many(ticks: list[TickIn]) -> dict[int, list[Candle]]:
    """All the call's ticks into their buckets: per instrument, the candles that changed."""
    if connection.vendor != "postgresql":
        changed: dict[int, dict[tuple, Candle]] = {}
        for tick in ticks:
            for candle in _fold_candles(tick):
                changed.setdefault(tick.instrument.pk, {})[(candle.timeframe, candle.start)] = candle
        return {k: list(v.values()) for k, v in changed.items()}
    # Pre-aggregate each bucket in tick order, then one upsert for everything.
    buckets: dict[tuple, list] = {}
    for tick in ticks:
        for timeframe in TIMEFRAME_SECONDS:
            key = (tick.instrument.pk, timeframe, bucket_start(tick.timestamp, timeframe))
            b = buckets.get(key)
            if b is None:  # open, high, low, close, volume, open_at, close_at (ticks come in time order)
                buckets[key] = [
                    tick.price,
                    tick.price,
                    tick.price,
                    tick.price,
                    tick.volume,
                    tick.timestamp,
                    tick.timestamp,
                ]
            else:
                b[1], b[2], b[3], b[4] = max(b[1], tick.price), min(b[2], tick.price), tick.price, b[4] + tick.volume
                b[6] = tick.timestamp
    table = Candle._meta.db_table
    rows, params = [], []
    for (instrument_id, timeframe, start), (o, h, lo, c, v, o_at, c_at) in buckets.items():
        rows.append("(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
        params += [instrument_id, timeframe, start, o, h, lo, c, v, o_at, c_at]
    # A late tick (backfill) takes the open only if earlier than the open's, the close only if not
    # earlier than the close's; a candle without those times (older rows) keeps its open.
    t = table
    sql = (
        f"INSERT INTO {t} (instrument_id, timeframe, start, open, high, low, close, volume, open_at, close_at)"
        f" VALUES {', '.join(rows)}"
        f" ON CONFLICT (instrument_id, timeframe, start) DO UPDATE SET"
        f" high = GREATEST({t}.high, EXCLUDED.high), low = LEAST({t}.low, EXCLUDED.low),"
        f" open = CASE WHEN EXCLUDED.open_at < {t}.open_at THEN EXCLUDED.open ELSE {t}.open END,"
        f" open_at = CASE WHEN EXCLUDED.open_at < {t}.open_at THEN EXCLUDED.open_at ELSE {t}.open_at END,"
        f" close = CASE WHEN {t}.close_at IS NULL OR EXCLUDED.close_at >= {t}.close_at"
        f" THEN EXCLUDED.close ELSE {t}.close END,"
        f" close_at = GREATEST({t}.close_at, EXCLUDED.close_at),"
        f" volume = {t}.volume + EXCLUDED.volume"
        f" RETURNING id, instrument_id, timeframe, start, open, high, low, close, volume"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    instruments = {t.instrument.pk: t.instrument for t in ticks}
    out: dict[int, list[Candle]] = {}
    for i, inst, tf, st, o, h, lo, c, v in sorted(fetched, key=lambda r: (r[1], r[3])):
        out.setdefault(inst, []).append(
            Candle(
                id=i, instrument=instruments[inst], timeframe=tf, start=st, open=o, high=h, low=lo, close=c, volume=v
            )
        )
    return out


def _rolling_24h_many(until: dict[int, datetime]) -> dict[int, dict]:
    """Per instrument: high, low, volume and opening price over the 24 h up to its latest tick."""
    window = Q()
    for instrument_id, now in until.items():
        window |= Q(instrument_id=instrument_id, start__gt=bucket_start(now - timedelta(hours=24), "1m"))
    m1 = Candle.objects.filter(window, timeframe="1m")
    stats: dict[int, dict[str, Any]] = {
        row["instrument_id"]: dict(row)
        for row in m1.values("instrument_id").annotate(
            high=Max("high"), low=Min("low"), volume=Sum("volume"), first=Min("start")
        )
    }
    opening = Q()
    for instrument_id, row in stats.items():
        opening |= Q(instrument_id=instrument_id, start=row["first"])
    if stats:
        for instrument_id, price in Candle.objects.filter(opening, timeframe="1m").values_list("instrument_id", "open"):
            stats[instrument_id]["open"] = price
    return stats


def _meets(alert: PriceAlert, previous: Decimal | None, price: Decimal) -> bool:
    if alert.condition == AlertCondition.ABOVE:
        return price >= alert.price
    if alert.condition == AlertCondition.BELOW:
        return price <= alert.price
    # crosses: the threshold lies between the previous and the new price (the old side excluded)
    return (
        previous is not None and previous != alert.price and min(previous, price) <= alert.price <= max(previous, price)
    )


def _fire_alerts(paths: dict[int, list[TickIn]], previous: dict[int, Decimal | None]) -> dict[int, list[PriceAlert]]:
    """Alerts the call's ticks meet, found through the (instrument, condition, price) index of active
    alerts: one range read per symbol and condition. Each fires at the first tick that meets it.
    Rows locked by a concurrent ingest are skipped: each alert fires once."""
    met = Q(pk__in=[])
    for instrument_id, path in paths.items():
        prices = [t.price for t in path]
        before = previous[instrument_id]
        span = prices + ([before] if before is not None else [])
        met |= Q(instrument_id=instrument_id) & (
            Q(condition=AlertCondition.ABOVE, price__lte=max(prices))
            | Q(condition=AlertCondition.BELOW, price__gte=min(prices))
            | Q(condition=AlertCondition.CROSSES, price__gte=min(span), price__lte=max(span))
        )
    fired: dict[int, list[PriceAlert]] = {}
    for alert in PriceAlert.objects.select_for_update(skip_locked=True).filter(met, active=True):
        before = previous[alert.instrument_id]
        for tick in paths[alert.instrument_id]:
            if _meets(alert, before, tick.price):
                alert.active, alert.triggered_at, alert.triggered_price = False, tick.timestamp, tick.price
                fired.setdefault(alert.instrument_id, []).append(alert)
                break
            before = tick.price
    every = [a for alerts in fired.values() for a in alerts]
    if every:
        PriceAlert.objects.bulk_update(every, ["active", "triggered_at", "triggered_price"])
        instruments = {t.instrument.pk: t.instrument for path in paths.values() for t in path}
        symbols = {pk: instrument.symbol for pk, instrument in instruments.items()}

        def price_text(alert: PriceAlert, value: Decimal) -> str:
            return instruments[alert.instrument_id].price_text(value)

        def notification(a: PriceAlert) -> dict[str, Any]:
            assert a.triggered_price is not None  # set above, when it fired
            return {
                "user_id": a.user_id,
                "title": f"{symbols[a.instrument_id]} {a.condition} {price_text(a, a.price)}",
                "message": f"{symbols[a.instrument_id]} is at {price_text(a, a.triggered_price)}"
                + (f": {a.note}" if a.note else ""),
                "type": "info",
                "category": "price_alert",
                "data": {
                    "alertId": str(a.pk),
                    "symbol": symbols[a.instrument_id],
                    "currentPrice": float(a.triggered_price),
                },
            }

        notification_create_each([notification(a) for a in every])
    return fired


@dataclass
class Recorded:
    """What ``ticks_record`` changed, for the caller to act on and then ``ticks_announce``."""

    changed: list[MarketState]
    paths: dict[int, list[TickIn]]
    fired: dict[int, list[PriceAlert]]
    candles: dict[int, list[Candle]]
    marks: dict[int, list[Decimal]]
    version: float  # the database's clock once the states are written (and locked until commit)

    def price_paths(self) -> dict[int, list[Decimal]]:
        return {i: [t.price for t in path] for i, path in self.paths.items()}


@transaction.atomic
def ticks_record(raw: object) -> Recorded:
    """Validate every tick, then apply them together: raw ticks, candles, snapshots, alerts.
    A call costs a fixed handful of statements however many ticks and symbols it carries.
    Sends nothing: ``margin.ticks.ticks_ingest`` runs the guard, then ``ticks_announce``."""
    ticks = sorted(ticks_validate(raw), key=lambda t: t.timestamp)  # applied in time order
    # The state rows, locked in instrument order, serialise ingests of a symbol (no deadlocks).
    states = {
        s.instrument_id: s
        for s in MarketState.objects.select_for_update()
        .filter(instrument_id__in=sorted({t.instrument.pk for t in ticks}))
        .order_by("instrument_id")
    }
    # A tick older than the live state is backfill: it goes into the raw ticks and the candles, never
    # into the live price, the alerts or the positions.
    paths: dict[int, list[TickIn]] = {}
    for tick in ticks:
        state = states.get(tick.instrument.pk)
        if state is None or state.timestamp is None or tick.timestamp >= state.timestamp:
            paths.setdefault(tick.instrument.pk, []).append(tick)
    # The market data's version: ingests of a symbol take its state row's lock in turn (on SQLite,
    # the database's), so stamps taken under it, before commit, follow the commits' order. The row
    # keeps it, and its live update carries it: a snapshot and a live update compare.
    version = db_clock()
    first = any(i not in states for i in paths)  # a symbol with no state row yet: nothing was locked
    previous = {i: states[i].price if i in states else None for i in paths}
    marks = _mark_paths(paths, {i: states[i].mark if i in states else None for i in paths})
    Tick.objects.bulk_create(
        [Tick(instrument=t.instrument, price=t.price, volume=t.volume, timestamp=t.timestamp) for t in ticks],
        batch_size=2000,
    )
    candles = _fold_candles_many(ticks)
    days = _rolling_24h_many({i: path[-1].timestamp for i, path in paths.items()})
    for instrument_id, path in paths.items():
        last = path[-1]
        day = days.get(instrument_id, {})
        opening = day.get("open") or last.price
        state = states.get(instrument_id) or MarketState(instrument=last.instrument)
        state.instrument = last.instrument
        state.price = last.price
        state.change = last.price - opening
        state.change_percent = (state.change / opening * 100).quantize(Decimal("0.0001"))
        state.volume = day.get("volume") or Decimal(0)
        state.high24h = day.get("high") or last.price
        state.low24h = day.get("low") or last.price
        state.timestamp = last.timestamp
        state.mark = marks[instrument_id][-1]
        state.version = version
        states[instrument_id] = state
    changed = [states[i] for i in paths]
    MarketState.objects.bulk_create(
        changed,
        update_conflicts=True,
        unique_fields=["instrument"],
        update_fields=[
            "price",
            "change",
            "change_percent",
            "volume",
            "high24h",
            "low24h",
            "timestamp",
            "mark",
            "version",
        ],
    )
    if first:
        # A symbol's first tick: two ingests of it can run alongside, each with a stamp taken
        # before the other's upsert. The upsert holds the new rows now (until commit): stamp again.
        version = db_clock()
        MarketState.objects.filter(instrument_id__in=list(paths)).update(version=version)
        for state in changed:
            state.version = version
    fired = _fire_alerts(paths, previous)
    return Recorded(changed=changed, paths=paths, fired=fired, candles=candles, marks=marks, version=version)


def _mark_paths(paths: dict[int, list[TickIn]], previous: dict[int, Decimal | None]) -> dict[int, list[Decimal]]:
    """The mark price after each tick: the trade price, but at most RISK_MARK_BAND away from the
    mark before it. A real move reaches the mark over a few ticks; a single bad print from a feed
    moves it by the band at most (and back with the next good tick)."""
    band = Decimal(str(settings.AXISOR_RISK["MARK_BAND"]))
    marks: dict[int, list[Decimal]] = {}
    for instrument_id, path in paths.items():
        mark, out = previous.get(instrument_id), []
        for tick in path:
            mark = tick.price if mark is None else min(max(tick.price, mark * (1 - band)), mark * (1 + band))
            out.append(mark)
        marks[instrument_id] = out
    return marks


def ticks_announce(recorded: Recorded) -> None:
    """The domain signals of recorded ticks: alerts that fired, and each symbol's new state."""
    for state, (instrument_id, path) in zip(recorded.changed, recorded.paths.items(), strict=True):
        if instrument_id in recorded.fired:
            alerts_fired.send(
                sender=PriceAlert, alerts=recorded.fired[instrument_id], symbol=path[-1].instrument.symbol
            )
        market_changed.send(
            sender=MarketState,
            state=state,
            candles=recorded.candles.get(instrument_id, []),
            version=recorded.version,
        )


@transaction.atomic
def price_alert_create(*, user: User, symbol: str, condition: str, price: Decimal, note: str = "") -> PriceAlert:
    """A one-shot alert; refused (409 ``limit_exceeded``) past the tier's CAP_PRICE_ALERTS active ones."""
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
    assert instrument is not None  # else errors["symbol"] was raised
    active = PriceAlert.objects.filter(user=user, active=True)
    cap_check(user=user, name="PRICE_ALERTS", what="active price alerts", count=active.count)
    return PriceAlert.objects.create(user=user, instrument=instrument, condition=condition, price=price, note=note)


@transaction.atomic
def price_alert_update(*, alert: PriceAlert, **fields: Any) -> PriceAlert:
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
