"""Broadcast market changes (conflated, to market rooms) and fired alerts (personal, logged)."""

from django.db import transaction
from django.dispatch import receiver

from broadcast.conflation import conflate
from broadcast.messages import layer_event
from broadcast.outbox import publish_personal_many
from broadcast.rooms import market_room
from wire import dumps

from .events import historical_data_update, market_data_key, market_data_update, price_alert_event
from .signals import alerts_fired, market_changed


@receiver(market_changed)
def on_market_changed(sender, state, candles, version, **kwargs) -> None:
    symbol = state.instrument.symbol
    group = market_room(symbol).layer_group
    events = [(market_data_key(symbol), market_data_update(state))]
    for candle in candles:
        events.append(
            (
                f"hd:{symbol}:{candle.timeframe}",
                historical_data_update(symbol, candle.timeframe, [candle], state.timestamp),
            )
        )
    # the key conflates twice: per process before the layer, per connection in its send queue;
    # its version is the ingest's (market.services.ticks_record)
    items = [
        (key, group, layer_event(channel=event["channel"], seq=None, text=dumps(event), key=key, version=version))
        for key, event in events
    ]
    transaction.on_commit(lambda: conflate(items))


@receiver(alerts_fired)
def on_alerts_fired(sender, alerts, symbol, **kwargs) -> None:
    publish_personal_many([(a.user_id, price_alert_event(a, symbol)) for a in alerts])
