"""Broadcast market changes (conflated, to market rooms) and fired alerts (personal, logged)."""

from django.db import transaction
from django.dispatch import receiver

from axisor.realtime.publish import dumps, layer_event, publish_personal_many
from axisor.realtime.rooms import market_room

from .events import historical_data_update, market_data_update, price_alert_data
from .fanout import conflate
from .signals import alerts_fired, market_changed


@receiver(market_changed)
def on_market_changed(sender, state, candles, **kwargs) -> None:
    symbol = state.instrument.symbol
    group = market_room(symbol).group
    items = [
        (f"md:{symbol}", group, layer_event(channel="market_data", seq=None, text=dumps(market_data_update(state))))
    ]
    for candle in candles:
        text = dumps(historical_data_update(symbol, candle.timeframe, [candle], state.timestamp))
        items.append(
            (f"hd:{symbol}:{candle.timeframe}", group, layer_event(channel="historical_data", seq=None, text=text))
        )
    transaction.on_commit(lambda: conflate(items))


@receiver(alerts_fired)
def on_alerts_fired(sender, alerts, symbol, **kwargs) -> None:
    publish_personal_many([(a.user_id, "price_alert", "alerts", price_alert_data(a, symbol)) for a in alerts])
