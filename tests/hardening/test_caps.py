"""Hardening cases 28-33 (issue 19, findings 2 and 3): what one user may multiply is capped per
account tier, across server processes, with clear errors — /ws sockets (close 4029, the open ones
untouched), active price alerts, live order sessions, order placements a minute (429 with
Retry-After), events replayed by resume a minute — and no list answers more than its maximum page."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import websockets
from channels.db import database_sync_to_async

from broadcast.outbox import publish_personal_many
from tests.conftest import jwt_for
from tests.hardening.conftest import close_code, open_ws, recv_json, recv_until, rest, server_is_clean
from tests.polling import until, window_room
from wire import envelope

ENV = {"AXISOR_SIMULATE": ""}
ORDER = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 625.5}


def call_with_headers(method: str, url: str, body: dict | None, token: str) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def notify_user(user_id: int, tag: str) -> int:
    return publish_personal_many([(user_id, envelope("in_app_notification", "notifications", {"id": tag}))])[0].seq


async def refused_socket(server, token: str) -> tuple[dict, int | None]:
    """Open /ws expecting a refusal: (the error it got, the close code)."""
    sock = await websockets.connect(f"{server.ws}/ws", additional_headers={"Authorization": f"Bearer {token}"})
    first = await recv_json(sock)
    return first, await close_code(sock)


# ---- case 28: /ws sockets per user ---------------------------------------------------------------


async def test_ws_sockets_over_the_tier_cap_are_refused_4029_and_the_open_ones_keep_working(daphne, make_user):
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **ENV) for _ in range(2)))
    user = await database_sync_to_async(make_user)("sockets-basic")  # basic: CAP_WS_SOCKETS_BASIC=10
    token = jwt_for(user)
    held = [(await open_ws((a, b)[i % 2], token))[0] for i in range(10)]  # across both processes

    started = time.monotonic()
    refusals = [await refused_socket((a, b)[i % 2], token) for i in range(4)]
    took = (time.monotonic() - started) / len(refusals)
    for first, code in refusals:
        assert first["type"] == "error" and first["code"] == "RATE_LIMIT_EXCEEDED", first
        assert first["closeCode"] == 4029 and "basic accounts may hold 10 /ws socket(s)" in first["message"], first
        assert code == 4029
    print(f"\ncase 28: 10 held over 2 processes; 11th-14th refused 4029 in {took * 1000:.0f} ms each")

    # the ten held sockets were not touched: each still gets the user's next event
    seq = await database_sync_to_async(notify_user)(user.pk, "after-refusals")
    for sock in held:
        assert (await recv_until(sock, lambda m: m.get("seq") == seq))["type"] == "in_app_notification"
        await sock.send(json.dumps({"type": "ping"}))
        assert (await recv_until(sock, lambda m: m["type"] == "pong"))["type"] == "pong"

    # a client that closes and opens again at once is not refused by its old socket's lease
    reopened = 0
    for i in range(10):
        await held[i].close()
        held[i], _ = await open_ws((b, a)[i % 2], token)  # on the other process, even
        reopened += 1
    assert reopened == 10
    first, code = await refused_socket(a, token)  # still exactly ten
    assert code == 4029, first

    # another user is not affected by this one's cap
    other = await database_sync_to_async(make_user)("sockets-other")
    sock, _ = await open_ws(a, jwt_for(other))
    await sock.close()
    for sock in held:
        await sock.close()
    server_is_clean(a)
    server_is_clean(b)


async def test_a_stopped_socket_process_gives_its_sockets_slots_back_at_once(daphne, make_user):
    """As deployed (AXISOR_BACKGROUND=0): on SIGTERM daphne cancels every socket's consumer without
    its disconnect. The process gives its sockets' tier slots and presence back as it stops, so a
    user at the cap who reconnects at once to another process is let in, not refused 4029 by their
    own old socket's lease for up to WS_LEASE_SECONDS (30 s)."""
    from broadcast import presence

    env = {**ENV, "AXISOR_BACKGROUND": "0", "CAP_WS_SOCKETS_BASIC": "1"}
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **env) for _ in range(2)))
    user = await database_sync_to_async(make_user)("sockets-stopped")  # basic: one /ws socket
    token = jwt_for(user)
    on_a, _ = await open_ws(a, token)
    first, code = await refused_socket(b, token)  # the cap holds across processes
    assert first["code"] == "RATE_LIMIT_EXCEEDED" and code == 4029, first

    await asyncio.to_thread(a.stop)  # SIGTERM, as systemd stops it
    on_b, hello = await open_ws(b, token)  # at once: a's lease went back as it stopped
    assert hello["userId"] == str(user.pk)
    counts = await asyncio.to_thread(presence.connections_by_user, [user.pk])
    assert counts[user.pk]["/ws"] == 1  # a's socket left presence too; b's is the one
    await on_b.close()
    await on_a.close()


async def test_ws_socket_cap_follows_the_tier_and_a_killed_process_frees_its_slots(daphne, make_user):
    env = {**ENV, "CAP_WS_SOCKETS_PREMIUM": "3", "WS_LEASE_SECONDS": "3"}
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **env) for _ in range(2)))
    user = await database_sync_to_async(make_user)("sockets-premium", tier="premium")
    token = jwt_for(user)
    on_a = [(await open_ws(a, token))[0] for _ in range(2)]
    on_b = [(await open_ws(b, token))[0]]
    first, code = await refused_socket(b, token)
    assert code == 4029 and "premium accounts may hold 3" in first["message"], first
    await asyncio.to_thread(a.stop, kill=True)  # its two leases are no longer renewed
    killed = time.monotonic()
    regained = []
    while len(regained) < 2:
        assert time.monotonic() - killed < 3 + 10, f"only {len(regained)} of 2 slots back after the lease"
        sock = await websockets.connect(f"{b.ws}/ws", additional_headers={"Authorization": f"Bearer {token}"})
        first = await recv_json(sock)
        if first["type"] == "connection":
            regained.append(sock)
        else:
            assert first["closeCode"] == 4029
            await close_code(sock)
            await asyncio.sleep(0.2)  # an external lease expiring in Redis: nothing to await
    print(f"case 28: kill -9 freed the dead process's 2 /ws slots in {time.monotonic() - killed:.1f} s (lease 3 s)")
    for sock in on_b + regained:
        await sock.close()
    del on_a


# ---- case 29: active price alerts -----------------------------------------------------------------


async def test_the_eleventh_price_alert_of_a_basic_user_is_refused_with_limit_exceeded(daphne, make_user, instruments):
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **ENV) for _ in range(2)))
    user = await database_sync_to_async(make_user)("alerts-basic")
    token = jwt_for(user)
    alert = {"symbol": "BTC_USD", "condition": "above", "price": "1000000"}
    # 16 at once over two processes: exactly 10 are created (the cap is checked under a row lock)
    answers = await asyncio.gather(
        *(rest("POST", f"{(a, b)[i % 2].http}/api/price-alerts", alert, token=token) for i in range(16))
    )
    statuses = sorted(status for status, _ in answers)
    print(f"\ncase 29: 16 parallel alert creations by a basic user → {statuses.count(201)} × 201, "
          f"{statuses.count(409)} × 409")  # fmt: skip
    assert statuses == [201] * 10 + [409] * 6, statuses
    refused = next(body for status, body in answers if status == 409)
    assert refused == {"code": "limit_exceeded", "detail": "basic accounts may hold at most 10 active price alerts"}
    status, page = await rest("GET", f"{a.http}/api/price-alerts?active=true", token=token)
    assert status == 200 and page["count"] == 10
    # deleting one frees its place
    status, _ = await rest("DELETE", f"{a.http}/api/price-alerts/{page['results'][0]['id']}", token=token)
    assert status == 204
    status, _ = await rest("POST", f"{b.http}/api/price-alerts", alert, token=token)
    assert status == 201
    status, body = await rest("POST", f"{b.http}/api/price-alerts", alert, token=token)
    assert (status, body["code"]) == (409, "limit_exceeded")


# ---- case 30: live order sessions ------------------------------------------------------------------


async def test_live_order_sessions_are_capped_and_revoked_ones_do_not_count(daphne, make_user):
    server = await asyncio.to_thread(daphne, **ENV)
    user = await database_sync_to_async(make_user)("sessions-basic")
    token = jwt_for(user)
    made = []
    for _ in range(5):  # CAP_ORDER_SESSIONS_BASIC
        status, creds = await rest("POST", f"{server.http}/api/auth/sessions", token=token)
        assert status == 201, creds
        made.append(creds)
    status, body = await rest("POST", f"{server.http}/api/auth/sessions", token=token)
    assert status == 409 and body == {
        "code": "limit_exceeded",
        "detail": "basic accounts may hold at most 5 live order-socket sessions",
    }, body
    status, _ = await rest("DELETE", f"{server.http}/api/auth/sessions/{made[0]['session']}", token=token)
    assert status == 204
    status, creds = await rest("POST", f"{server.http}/api/auth/sessions", token=token)
    assert status == 201, creds
    # the sessions still live still open the order socket
    url = f"{server.ws}/ws/orders?session={creds['session']}&token={creds['token']}"
    async with websockets.connect(url) as sock:
        await sock.send(json.dumps({"type": "ping"}))
        assert (await recv_json(sock))["type"] == "heartbeat"
    print("\ncase 30: 6th live session of a basic user → 409 limit_exceeded; a revoked one frees a place")


# ---- case 31: order placements a minute ------------------------------------------------------------


async def test_order_placement_over_the_tier_rate_is_429_with_retry_after_across_processes(
    daphne, make_user, instruments
):
    env = {**ENV, "CAP_ORDERS_PER_MINUTE_BASIC": "8"}
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **env) for _ in range(2)))
    user = await database_sync_to_async(make_user)("rate-basic")
    token = jwt_for(user)
    await asyncio.sleep(window_room())  # the burst inside one minute window of the cap (a clock wait)
    answers = await asyncio.gather(
        *(
            asyncio.to_thread(call_with_headers, "POST", f"{(a, b)[i % 2].http}/api/orders", ORDER, token)
            for i in range(20)
        )
    )
    placed = [body for status, body, _ in answers if status == 201]
    limited = [(body, headers) for status, body, headers in answers if status == 429]
    print(f"\ncase 31: 20 parallel placements at 8/min over two processes → {len(placed)} × 201, {len(limited)} × 429 "
          f"(Retry-After {sorted({h['Retry-After'] for _, h in limited})})")  # fmt: skip
    assert len(placed) == 8 and len(limited) == 12, [s for s, _, _ in answers]
    for body, headers in limited:
        assert body["code"] == "throttled", body
        assert body["detail"].startswith("basic accounts may make 8 order placements and modifications a minute."), body
        assert 1 <= int(headers["Retry-After"]) <= 60
    # reads are not placements: the list still answers, and another user still places
    status, page = await rest("GET", f"{a.http}/api/orders", token=token)
    assert status == 200 and page["count"] == 8
    other = await database_sync_to_async(make_user)("rate-other")
    status, _ = await rest("POST", f"{b.http}/api/orders", ORDER, token=jwt_for(other))
    assert status == 201


# ---- case 31b: working orders held at once -----------------------------------------------------------


async def test_parallel_placements_past_the_working_orders_cap_place_exactly_the_cap(daphne, make_user, instruments):
    """The cap is counted in the pre-trade check's read of the working orders, under the account's
    lock (no lock of the user's row of its own): placements at once over two processes still
    cannot both take the last place."""
    env = {**ENV, "CAP_WORKING_ORDERS_BASIC": "5"}
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **env) for _ in range(2)))
    user = await database_sync_to_async(make_user)("working-basic")
    token = jwt_for(user)
    answers = await asyncio.gather(
        *(
            asyncio.to_thread(call_with_headers, "POST", f"{(a, b)[i % 2].http}/api/orders", ORDER, token)
            for i in range(12)
        )
    )
    statuses = sorted(status for status, _, _ in answers)
    print(f"\ncase 31b: 12 parallel placements at a cap of 5 working orders over two processes → "
          f"{statuses.count(201)} × 201, {statuses.count(409)} × 409")  # fmt: skip
    assert statuses == [201] * 5 + [409] * 7, statuses
    assert all(body["orderStatus"] == "PENDING" for status, body, _ in answers if status == 201)
    refused = next(body for status, body, _ in answers if status == 409)
    assert refused == {"code": "limit_exceeded", "detail": "basic accounts may hold at most 5 working orders"}
    status, page = await rest("GET", f"{a.http}/api/orders", token=token)
    assert status == 200 and page["count"] == 5  # nothing recorded for the refused ones
    # a cancel frees a place
    status, _ = await rest("POST", f"{b.http}/api/orders/{page['results'][0]['orderId']}/cancel", token=token)
    assert status == 200
    status, body = await rest("POST", f"{a.http}/api/orders", ORDER, token=token)
    assert status == 201 and body["orderStatus"] == "PENDING", body


# ---- case 32: resume floods ------------------------------------------------------------------------


def push(user_id: int, n: int) -> None:
    for start in range(0, n, 500):
        publish_personal_many(
            [(user_id, envelope("in_app_notification", "notifications", {"n": i})) for i in range(start, start + 500)]
        )


async def replay(sock, since: int) -> tuple[int, dict]:
    """Send resume; (events replayed before the answer, the answer)."""
    await sock.send(json.dumps({"type": "resume", "since": since}))
    got = 0
    while True:
        msg = await recv_json(sock, 30)
        if msg["type"] in ("resumed", "resume_failed"):
            return got, msg
        if "seq" in msg:
            got += 1


async def test_resume_floods_are_refused_past_the_replay_budget_with_nothing_replayed(daphne, make_user):
    env = {**ENV, "CAP_RESUME_EVENTS_PER_MINUTE_BASIC": "5000"}
    a, b = await asyncio.gather(*(asyncio.to_thread(daphne, **env) for _ in range(2)))
    user = await database_sync_to_async(make_user)("resumer")
    await database_sync_to_async(push)(user.pk, 2000)
    token = jwt_for(user)
    socks = [(await open_ws(server, token))[0] for server in (a, b)]
    replayed, refusals = 0, []
    await asyncio.sleep(window_room(need=40))  # the flood inside one minute window of the budget (a clock wait)
    started = time.monotonic()
    for i in range(10):  # an attacker's loop: resume since=0 again and again, on two processes
        got, answer = await replay(socks[i % 2], 0)
        replayed += got
        if answer["type"] == "resumed":
            assert got == answer["replayed"] == 2000
        else:
            assert got == 0, got  # nothing replayed
            refusals.append(answer)
    took = time.monotonic() - started
    print(f"\ncase 32: 10 × resume since=0 (2,000 events each) → {replayed} events replayed, "
          f"{len(refusals)} refused, in {took:.1f} s")  # fmt: skip
    assert replayed == 4000 and len(refusals) == 8
    for answer in refusals:
        assert answer["reason"] == "rate_limited" and answer["code"] == "RATE_LIMIT_EXCEEDED", answer
        assert answer["snapshotRequired"] is False and 1 <= answer["retryAfter"] <= 60, answer
        assert "basic accounts may replay 5000 events per minute" in answer["message"], answer
    # the refused sockets stay open and live
    seq = await database_sync_to_async(notify_user)(user.pk, "live")
    for sock in socks:
        assert (await recv_until(sock, lambda m: m.get("seq") == seq))["seq"] == seq
    # a small catch-up still fits in what is left
    got, answer = await replay(socks[0], seq - 5)
    assert (got, answer["type"]) == (5, "resumed"), answer
    for sock in socks:
        await sock.close()


# ---- case 33: page sizes ---------------------------------------------------------------------------

LISTS = [
    "/api/orders",
    "/api/trades",
    "/api/positions",
    "/api/positions?status=closed",
    "/api/price-alerts",
    "/api/margin-guard/executions",
    "/api/account/ledger",
    "/api/notifications",
]


async def test_no_list_answers_more_than_its_maximum_page(daphne, make_user, instruments):
    # the paper venue fills the orders: trades, positions, fee entries in the ledger, notifications
    env = {"AXISOR_SIMULATE": "venue", "API_MAX_PAGE_SIZE": "20", "CAP_PRICE_ALERTS_BASIC": "40"}
    server = await asyncio.to_thread(daphne, **env)
    user = await database_sync_to_async(make_user)("reader")
    token = jwt_for(user)
    for i in range(30):
        side = "BUY" if i % 3 else "SELL"
        body = {"tradingSymbol": "SBIN-EQ", "orderType": "MARKET", "transactionType": side, "quantity": 1}
        assert (await rest("POST", f"{server.http}/api/orders", body, token=token))[0] == 201
        alert = {"symbol": "BTC_USD", "condition": "above", "price": "1000000"}
        assert (await rest("POST", f"{server.http}/api/price-alerts", alert, token=token))[0] == 201

    async def filled() -> bool:
        status, page = await rest("GET", f"{server.http}/api/trades", token=token)
        return status == 200 and page["count"] >= 30

    await until(filled, timeout=60, what="the venue filling 30 orders")
    for limit in ("1000000", "-1", "abc"):
        sizes = {}
        for path in LISTS:
            sep = "&" if "?" in path else "?"
            status, page = await rest("GET", f"{server.http}{path}{sep}limit={limit}", token=token)
            assert status == 200, (path, page)
            sizes[path] = (len(page["results"]), page.get("count"))
            assert len(page["results"]) == min(20, page.get("count", 20)), (path, limit, sizes[path])
        over = [p for p, (_, count) in sizes.items() if count is None or count > 20]
        assert {"/api/orders", "/api/trades", "/api/price-alerts", "/api/account/ledger"} <= set(over), sizes
        # the lists with their own documented limit refuse a larger one outright
        for path in ("/api/events?since=0", "/api/market/BTC_USD/candles?timeframe=1m"):
            status, body = await rest("GET", f"{server.http}{path}&limit={limit}", token=token)
            assert status == 400 and body["code"] == "validation_error", (path, body)
        print(f"\ncase 33: ?limit={limit} → (rows, count) {sizes} (API_MAX_PAGE_SIZE=20)")


async def test_cursor_pages_walk_a_growing_list_once_without_a_count(daphne, make_user, instruments):
    server = await asyncio.to_thread(daphne, **ENV)
    user = await database_sync_to_async(make_user)("walker")
    token = jwt_for(user)
    for _ in range(12):
        assert (await rest("POST", f"{server.http}/api/orders", ORDER, token=token))[0] == 201
    seen: list[str] = []
    status, page = await rest("GET", f"{server.http}/api/orders?cursor=&limit=5", token=token)
    pages = 0
    while True:
        assert status == 200 and "count" not in page and len(page["results"]) <= 5, page
        seen += [o["orderId"] for o in page["results"]]
        pages += 1
        if pages == 1:  # orders placed meanwhile do not shift the pages being walked
            assert (await rest("POST", f"{server.http}/api/orders", ORDER, token=token))[0] == 201
        if not page["next"]:
            break
        status, page = await rest("GET", page["next"], token=token)
    assert len(seen) == len(set(seen)) == 12 and pages == 3, (seen, pages)
    status, first = await rest("GET", f"{server.http}/api/orders?limit=5", token=token)
    assert first["count"] == 13  # without ?cursor, the documented limit/offset page as before
