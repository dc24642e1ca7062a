"""The AsyncAPI document (docs/asyncapi.yaml) against a real daphne process: sockets on ``/ws`` (a
user, a staff member, a short-lived token, a bad token) and ``/ws/orders`` record every frame the
server sends them and every close code, while the test makes the server send every kind of message
a user and the staff can get: the replay and its end, the system notices, each room event and
value (ticks, a price alert, the Margin Guard firing and auto-closing, a fill), each answer to each
client message, the errors of bad messages and the closes (4001, 4002, 4004, 4029). Each frame must
match the schema of its message (by ``type``; a flat order update by ``updateType``); each close
code must be one the document lists for its channel; and every message the document describes for
the server must have been seen. (Close codes only a failure causes, 4008, 4009, 4013, 4030, 4040,
are not provoked here; tests/docs/test_asyncapi.py checks the document lists every one.)"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal as D

from django.utils import timezone
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from broadcast.outbox import signal_access_changed
from margin.models import Position
from margin.services import margin_guard_config_set
from market.services import price_alert_create
from notifications.services import notification_create, notification_mark_read
from orders.models import Order
from system.services import system_notice_create
from tests.client.support import QUIET
from tests.conftest import jwt_for
from tests.docs.asyncapi import client_message_of, close_codes, load, message_of, server_messages, validator_for
from tests.integration.http import call
from tests.margin.conftest import tick
from tests.orders.factories import execute, place
from tests.panel.grants import feed_reader


@dataclass
class Socket:
    """A socket whose frames a thread reads into ``frames`` and a queue; ``close_code`` at the end."""

    name: str
    path: str
    ws: object
    frames: list[dict] = field(default_factory=list)
    close_code: int | None = None
    closed: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    taken: set[int] = field(default_factory=set)
    sent: list[dict | str] = field(default_factory=list)

    def start(self) -> Socket:
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        try:
            for raw in self.ws:
                with self.arrived:
                    self.frames.append(json.loads(raw))
                    self.arrived.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            with self.arrived:
                self.closed.set()
                self.arrived.notify_all()

    def send(self, message: dict | str, *, valid: bool = True) -> None:
        """Send a message; ``valid`` ones are checked against the document's client messages."""
        if valid:
            self.sent.append(message)
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def wait(self, predicate, what: str, timeout: float = 15) -> dict:
        """The first frame not yet taken by a wait that matches (frames come in any order)."""

        def first() -> int | None:
            return next((i for i, f in enumerate(self.frames) if i not in self.taken and predicate(f)), None)

        with self.arrived:
            if not self.arrived.wait_for(lambda: first() is not None or self.closed.is_set(), timeout):
                raise AssertionError(f"{self.name}: no {what} within {timeout} s; last frames {self.frames[-5:]}")
            index = first()
            assert index is not None, f"{self.name}: closed ({self.close_code}) before {what}: {self.frames[-5:]}"
            self.taken.add(index)
            return self.frames[index]

    def wait_type(self, type_: str, timeout: float = 15, **fields) -> dict:
        return self.wait(
            lambda f: f.get("type") == type_ and all(f.get(k) == v for k, v in fields.items()), type_, timeout
        )

    def wait_closed(self, timeout: float = 15) -> int | None:
        assert self.closed.wait(timeout), f"{self.name}: still open"
        return self.close_code


def test_every_frame_matches_the_asyncapi_document(daphne, make_user, instruments):
    document = load()
    server = daphne(**QUIET, PRESENCE_STATS_SECONDS="0.5")
    user = make_user("wire", tier="basic")
    staff = feed_reader(make_user, "wire-staff")

    # Before any socket: events to replay, notices in force, a price, a position the guard watches.
    tick("BTC_USD", 100)
    margin_guard_config_set(user=user, threshold=D("0.85"), cooldown_seconds=300, action="close_position")
    opening = place(user, symbol="BTC_USD", order_type="MARKET", side="BUY", quantity="1", price=None, leverage=10)
    execute(opening, "fill", quantity="1", price="100")
    note = notification_create(user=user, title="Hello", message="wire contract", category="system")
    notification_mark_read(notification=note)
    price_alert_create(user=user, symbol="BTC_USD", condition="below", price=D("99"), note="dip")
    now = timezone.now()
    system_notice_create(
        kind="maintenance", message="upgrade", start_time=now + timedelta(hours=1), end_time=now + timedelta(hours=2)
    )
    system_notice_create(kind="service_status", service="venue", status="degraded", message="slow fills")

    sockets: list[Socket] = []

    def open_socket(name: str, path: str, **headers: str) -> Socket:
        s = Socket(name, path, connect(f"{server.ws}{path}", additional_headers=headers or None, open_timeout=10))
        sockets.append(s.start())
        return s

    try:
        # /ws: the user, resuming from 0 (the whole log replays), then every client message.
        events = open_socket("user /ws", "/ws")
        events.send({"type": "auth", "token": jwt_for(user), "since": 0})
        events.wait_type("connection")
        events.wait_type("resumed")
        events.send({"type": "subscribe", "channel": "market:BTC_USD"})
        events.wait_type("room_subscription", status="subscribed")
        events.wait_type("market_data_update")  # the snapshot on subscribe
        events.send({"type": "unsubscribe", "channel": "alerts"})
        events.wait_type("room_subscription", status="unsubscribed")
        events.send({"type": "subscribe", "channel": "alerts"})
        events.wait_type("room_subscription", channel="alerts")
        events.send({"type": "list_rooms"})
        events.wait_type("room_list")
        events.send({"type": "ping"})
        events.wait_type("pong")
        events.send({"type": "resume", "since": 10_000})
        events.wait_type("resume_failed")
        events.send({"type": "resume", "since": 1})
        events.wait_type("resumed")
        for bad, code in [
            ("not json", "INVALID_MESSAGE"),
            ({"type": "subscribe", "channel": "market:NOPE"}, "INVALID_ROOM"),
            ({"type": "subscribe", "channel": "admin:staff"}, "FORBIDDEN"),
            ({"type": "ping", "pad": "x" * 70_000}, "MESSAGE_TOO_LARGE"),
        ]:
            events.send(bad, valid=False)
            events.wait_type("error", code=code)

        # The staff feed, a short-lived token (auth_expiring, then 4002), a bad one (4001).
        desk = open_socket("staff /ws", "/ws", Authorization=f"Bearer {jwt_for(staff)}")
        desk.wait_type("connection")
        desk.wait_type("admin_stats")
        expiring = open_socket("expiring /ws", "/ws")
        expiring.send(
            {"type": "auth", "token": jwt_for(staff, exp=int((timezone.now() + timedelta(seconds=5)).timestamp()))}
        )
        expiring.wait_type("connection")
        refused = open_socket("bad token /ws", "/ws")
        refused.send({"type": "auth", "token": "not-a-jwt"})

        # /ws/orders: resume from 0 with the open orders' snapshot (a working limit order); a second
        # socket is over the basic tier's one connection (4029).
        place(user, symbol="BTC_USD", side="BUY", quantity="0.01", price="95")
        creds = session_for(server, user)
        orders = open_socket(
            "user /ws/orders", f"/ws/orders?session={creds['session']}&token={creds['token']}&since=0&snapshot=1"
        )
        orders.wait(lambda f: f.get("snapshot") is True, "a snapshot of the working order")
        orders.wait_type("resumed")
        orders.send({"type": "ping"})
        orders.wait_type("heartbeat")
        orders.send("PONG")
        orders.send("hello", valid=False)
        orders.wait_type("error", code="INVALID_MESSAGE")
        staff_creds = session_for(server, staff)
        ahead = open_socket(
            "ahead /ws/orders", f"/ws/orders?session={staff_creds['session']}&token={staff_creds['token']}&since=999"
        )
        ahead.wait_type("resume_failed", reason="ahead")
        creds2 = session_for(server, user)
        second = open_socket("second /ws/orders", f"/ws/orders?session={creds2['session']}&token={creds2['token']}")

        # Live: a dip fires the alert and the guard (which places a close order), the close fills.
        tick("BTC_USD", 98)
        events.wait_type("price_alert")
        events.wait_type("margin_guard_execution")
        events.wait_type("historical_data_update")
        position = Position.objects.get(user=user, status="open")
        close_order = Order.objects.get(pk=position.close_order_id)
        execute(close_order, "fill", quantity="1", price="98")
        events.wait_type("auto_close_execution")
        events.wait_type("position_status_update")  # the fill's
        orders.wait(lambda f: f.get("updateType") == "ORDER_EXECUTED" and f["orderId"] == close_order.order_id, "fill")
        desk.wait_type("admin_events")

        assert refused.wait_closed() == 4001
        assert second.wait_closed() == 4029
        expiring.wait_type("auth_expiring", timeout=10)
        assert expiring.wait_closed(timeout=10) == 4002
        signal_access_changed(user_id=user.pk, reason="staff", disconnect=["/ws", "/ws/orders"])
        assert events.wait_closed() == 4004 and orders.wait_closed() == 4004
    finally:
        for s in sockets:
            s.ws.close()

    # Every frame matches its message's schema; every close code is documented for its channel.
    seen: dict[str, set[str]] = {"/ws": set(), "/ws/orders": set()}
    failures = []
    for s in sockets:
        channel = s.path.split("?")[0]
        for frame in s.frames:
            name = message_of(document, channel, frame)
            if name is None:
                failures.append(f"{s.name}: no message in the document for {frame}")
                continue
            seen[channel].add(name)
            errors = sorted(validator_for(document, name).iter_errors(frame), key=str)
            failures += [f"{s.name}: {name}: {e.message} at {list(e.absolute_path)} in {frame}" for e in errors[:3]]
        for message in s.sent:
            name = client_message_of(document, channel, message)
            assert name is not None, f"{s.name}: sent {message!r}, which the document does not accept"
            failures += [
                f"{s.name}: sent {name}: {e.message}" for e in validator_for(document, name).iter_errors(message)
            ]
        if s.close_code is not None and s.close_code != 1000:
            assert s.close_code in close_codes(document, channel), f"{s.name}: close {s.close_code} undocumented"
    assert not failures, "\n".join(failures[:30])

    # Every message the document says the server sends on each channel was seen here.
    for channel, names in seen.items():
        documented = set(server_messages(document, channel))
        assert documented - names == set(), (channel, sorted(documented - names))


def session_for(server, user) -> dict:
    status, creds = call("POST", f"{server.http}/api/auth/sessions", token=jwt_for(user))
    assert status == 201, creds
    return creds
