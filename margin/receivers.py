"""Broadcast margin events. Guard executions and auto-closes are personal and logged (seq, resume);
position values are a conflated value stream on the user's room (not logged): see sweeps.py."""

from asgiref.sync import async_to_sync
from django.db import transaction
from django.db.models.functions import Now
from django.dispatch import receiver

from broadcast.conflation import conflate
from broadcast.outbox import publish_personal_many
from margin.sweeps import request_sweeps

from .events import auto_close_event, guard_execution_event
from .models import Position
from .selectors import position_update_items, read_at
from .signals import auto_closed, guard_executed, positions_changed, prices_moved


@receiver(positions_changed)
def on_positions_changed(sender, positions, **kwargs) -> None:
    ids = [p.pk for p in positions]

    def send() -> None:
        fresh = list(Position.objects.select_related("instrument").filter(pk__in=ids).annotate(read_at=Now()))
        conflate(position_update_items(fresh, version=read_at(fresh)))

    transaction.on_commit(send)


@receiver(prices_moved)
def on_prices_moved(sender, instrument_ids, **kwargs) -> None:
    transaction.on_commit(lambda: async_to_sync(request_sweeps)(instrument_ids))


@receiver(guard_executed)
def on_guard_executed(sender, executions, **kwargs) -> None:
    publish_personal_many([(e.user_id, guard_execution_event(e)) for e in executions])


@receiver(auto_closed)
def on_auto_closed(sender, execution, position, record, **kwargs) -> None:
    publish_personal_many([(position.user_id, auto_close_event(execution, position, record))])
