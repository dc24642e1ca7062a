"""Publish ticks: a simulated random walk (default) or a CSV replay, through the same ingest service
as POST /api/internal/ticks. Events reach every server process through the channel layer."""

import asyncio

from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from margin.ticks import ticks_ingest
from market.feed import RandomWalkFeed, csv_ticks


class Command(BaseCommand):
    help = "Feed ticks into the market: --simulate (random walk) or --csv FILE (replay)."

    def add_arguments(self, parser):
        parser.add_argument("--csv", help="replay this file: symbol,price,volume[,timestamp] per line")
        parser.add_argument(
            "--interval", type=float, default=0.5, help="seconds between ticks (per round for the walk)"
        )
        parser.add_argument("--count", type=int, default=0, help="stop after this many rounds/ticks (0: forever)")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args, csv, interval, count, seed, **options):
        # One event loop for the run: the ingest reaches the database from its thread pool.
        asyncio.run(self.run(csv, interval, count, seed))

    async def run(self, path, interval, count, seed):
        ingest = database_sync_to_async(ticks_ingest)
        n = 0
        if path:
            for tick in csv_ticks(path):
                await self._ingest(ingest, [tick])
                n += 1
                if count and n >= count:
                    break
                await asyncio.sleep(interval)
        else:
            feed = await database_sync_to_async(RandomWalkFeed)(seed)
            while not count or n < count:
                await self._ingest(ingest, feed.ticks())
                n += 1
                await asyncio.sleep(interval)
        await asyncio.sleep(1.5)  # let the last conflated updates go out
        self.stdout.write(f"fed {n} round(s)")

    async def _ingest(self, ingest, ticks):
        try:
            await ingest(ticks)
        except ValidationError as exc:
            raise CommandError(f"bad tick {ticks}: {exc.message_dict}") from None
