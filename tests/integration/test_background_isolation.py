"""Background work cannot hurt socket work: webhook deliveries hanging on a drip server (one byte
every 2 s) run on the worker's own threads, so a server process running the worker in-process
(AXISOR_BACKGROUND=1) keeps its handshakes, REST reads and market feed at their pace. And the
single jobs are single: kill the worker holding the venue's lease, and exactly one successor fills."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import statistics
import threading
import time

import websockets
from channels.db import database_sync_to_async
from django.db.models import Count, Sum

from notifications.models import Delivery
from notifications.services import notification_create, preferences_set
from orders.models import Order, Trade
from tests.conftest import jwt_for
from tests.integration.http import call

DRIP_EVERY = 2.0


class DripServer:
    """Accepts every connection and answers one byte every 2 s, never a whole response; each
    connection's thread ends when the client gives up or after a bound."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        self.sock.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    def drip(self, conn: socket.socket) -> None:
        try:
            with conn:
                for _ in range(60):  # bounded: 2 minutes at most
                    conn.sendall(b"H")
                    if self.stopping.wait(DRIP_EVERY):
                        return
        except OSError:
            pass  # the client gave up: its deadline
        finally:
            with self.lock:
                self.open -= 1

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


async def first_message(url: str, headers: dict | None = None) -> float:
    """Seconds from opening a socket to its first message (the handshake and the server's hello)."""
    start = time.perf_counter()
    async with websockets.connect(url, additional_headers=headers or {}, open_timeout=10) as sock:
        if "/ws/orders" in url:
            return time.perf_counter() - start  # the handshake itself: /ws/orders says nothing first
        await asyncio.wait_for(sock.recv(), 10)
        return time.perf_counter() - start


async def test_hanging_webhooks_do_not_slow_sockets_rest_or_the_feed(daphne, make_user, instruments, settings):
    drip = DripServer()
    hook = f"127.0.0.1:{drip.port}"
    server = await asyncio.to_thread(
        daphne,
        AXISOR_SIMULATE="all",
        MARKET_FEED_INTERVAL_SECONDS="0.5",
        NOTIFY_WEBHOOK_ALLOW_HOSTS=hook,
        OUTBOUND_TIMEOUT_SECONDS="10",
        NOTIFY_BACKOFF_BASE_SECONDS="0",
        WORKER_POLL_SECONDS="0.1",
        # The worst an operator can configure: every job thread may hang on a webhook (by default
        # only half of them may, WORKER_OUTBOUND_THREADS).
        WORKER_OUTBOUND_THREADS="4",
    )
    settings.AXISOR_OUTBOUND = {**settings.AXISOR_OUTBOUND, "ALLOW_HOSTS": {hook}}
    watcher = await database_sync_to_async(make_user)("watcher", tier="enterprise")

    def hang_twenty() -> None:
        for i in range(20):  # twenty users, each with a webhook that drips
            user = make_user(f"dripped{i}")
            preferences_set(
                user=user,
                categories={"account": {"in_app": False, "webhook": True}},
                webhook={"url": f"http://{hook}/hook", "secret": "s" * 20},
            )
            notification_create(user=user, title="t", message="m", category="account")

    try:
        _, creds = await asyncio.to_thread(call, "POST", f"{server.http}/api/auth/sessions", token=jwt_for(watcher))
        orders_url = f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}"
        bearer = {"Authorization": f"Bearer {jwt_for(watcher)}"}
        async with websockets.connect(f"{server.ws}/ws", additional_headers=bearer) as feed:
            await asyncio.wait_for(feed.recv(), 10)  # connection
            await feed.send(json.dumps({"type": "subscribe", "channel": "market:BTC_USD"}))
            ticks: list[float] = []

            async def read_feed() -> None:
                while True:
                    msg = json.loads(await feed.recv())
                    if msg["type"] == "market_data_update":
                        ticks.append(time.perf_counter())

            reader = asyncio.ensure_future(read_feed())
            await database_sync_to_async(hang_twenty)()
            # Wait until the worker's threads are all hanging on the drip server.
            for _ in range(200):
                if drip.open >= 4:
                    break
                await asyncio.sleep(0.05)
            assert drip.open >= 4, f"the deliveries never reached the drip server ({drip.accepted} connections)"

            handshakes, order_handshakes, reads = [], [], []
            until = time.perf_counter() + 20  # two rounds of 10 s deadlines
            while time.perf_counter() < until:
                handshakes.append(await first_message(f"{server.ws}/ws", bearer))
                order_handshakes.append(await first_message(orders_url))
                start = time.perf_counter()
                status, _ = await asyncio.to_thread(
                    call, "GET", f"{server.http}/api/market/instruments", token=jwt_for(watcher)
                )
                assert status == 200
                reads.append(time.perf_counter() - start)
                await asyncio.sleep(0.2)
            reader.cancel()
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        hung = drip.most_open
    finally:
        drip.close()

    print(  # the figures the closing note quotes
        f"\ndrip: {drip.accepted} connections, {hung} hanging at once; "
        f"/ws first message p50 {statistics.median(handshakes) * 1000:.1f} ms, worst {max(handshakes) * 1000:.1f} ms "
        f"({len(handshakes)}); /ws/orders handshake p50 {statistics.median(order_handshakes) * 1000:.1f} ms, "
        f"worst {max(order_handshakes) * 1000:.1f} ms; REST read worst {max(reads) * 1000:.1f} ms; "
        f"{len(ticks)} market updates, largest gap {max(gaps):.2f} s"
    )
    assert hung >= 4  # the worker's four job threads were held by drips throughout
    assert max(handshakes) < 1.0 and max(order_handshakes) < 1.0, (handshakes, order_handshakes)
    assert max(reads) < 1.0, reads
    assert len(ticks) > 20 and max(gaps) < 3.0, gaps
    # The attempts ended by their deadline, with a code the user may see and nothing remote in it.
    errors = await database_sync_to_async(
        lambda: set(Delivery.objects.exclude(last_error="").values_list("last_error", flat=True))
    )()
    assert errors == {"timeout"}


async def test_killed_venue_holder_has_exactly_one_successor_and_no_double_fill(worker, daphne, make_user, instruments):
    env = {"AXISOR_SIMULATE": "venue", "WORKER_LEASE_SECONDS": "4", "WORKER_POLL_SECONDS": "0.1"}
    server = await asyncio.to_thread(daphne, AXISOR_BACKGROUND="0", AXISOR_SIMULATE="")
    workers = [await asyncio.to_thread(worker, **env) for _ in range(3)]
    trader = await database_sync_to_async(make_user)("trader", tier="enterprise")
    token = jwt_for(trader)

    def holders() -> list:
        return [w for w in workers if "lease simulator taken" in w.log()]

    keys = itertools.count()

    async def place(n: int) -> list[str]:
        ids = []
        for _ in range(n):
            body = {"tradingSymbol": "BTC_USD", "transactionType": "BUY", "orderType": "MARKET", "quantity": 1}
            status, placed = await asyncio.to_thread(
                call,
                "POST",
                f"{server.http}/api/orders",
                body,
                token=token,
                headers={"Idempotency-Key": f"k{next(keys)}"},
            )
            assert status == 201, placed
            ids.append(placed["orderId"])
        return ids

    async def all_filled() -> None:
        for _ in range(300):
            if not await database_sync_to_async(Order.objects.exclude(order_status="COMPLETE").exists)():
                return
            await asyncio.sleep(0.1)
        raise AssertionError("orders were not filled")

    await place(5)
    await all_filled()
    [first] = holders()  # exactly one worker ran the venue
    first.stop(kill=True)  # SIGKILL: its lease lapses, nothing released
    await place(5)
    await all_filled()
    successors = [w for w in holders() if w is not first]
    assert len(successors) == 1, [w.log()[-2000:] for w in successors]

    def fills() -> tuple[list, dict]:
        by_order = Order.objects.annotate(n=Count("trades"), q=Sum("trades__quantity")).values_list(
            "order_status", "quantity", "filled_quantity", "q"
        )
        dup = Trade.objects.values("exec_id").annotate(n=Count("id")).filter(n__gt=1).count()
        return list(by_order), {"duplicate exec ids": dup}

    rows, dup = await database_sync_to_async(fills)()
    assert len(rows) == 10 and dup == {"duplicate exec ids": 0}
    for status, quantity, filled, traded in rows:  # no double fill: trades add up to the order
        assert status == "COMPLETE" and quantity == filled == traded
