"""Broadcast market changes (conflated, to market rooms) and fired alerts (personal, logged)."""

from django.db import transaction
from django.dispatch import receiver

from broadcast.conflation import conflate
from broadcast.outbox import layer_event, publish_personal_many
from broadcast.rooms import market_room
from wire import dumps

from .events import historical_data_update, market_data_update, price_alert_data
from .signals import alerts_fired, market_changed


@receiver(market_changed)
def on_market_changed(sender, state, candles, **kwargs) -> None:
    symbol = state.instrument.symbol
    group = market_room(symbol).group
    texts = [(f"md:{symbol}", "market_data", dumps(market_data_update(state)))]
    for candle in candles:
        text = dumps(historical_data_update(symbol, candle.timeframe, [candle], state.timestamp))
        texts.append((f"hd:{symbol}:{candle.timeframe}", "historical_data", text))
    # the key conflates twice: per process before the layer, per connection in its outbox
    items = [(key, group, layer_event(channel=ch, seq=None, text=text, key=key)) for key, ch, text in texts]
    transaction.on_commit(lambda: conflate(items))


@receiver(alerts_fired)
def on_alerts_fired(sender, alerts, symbol, **kwargs) -> None:
    publish_personal_many([(a.user_id, "price_alert", "alerts", price_alert_data(a, symbol)) for a in alerts])
