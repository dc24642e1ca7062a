"""``python -m axisor_client tail`` as a subprocess against a real server: events printed as JSON lines;
stopped, events published, restarted: it prints exactly the ones it missed, then live ones."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from broadcast.models import EventLog
from tests.client.support import PASSWORD, QUIET, logged, notify, set_login_password
from tests.orders.factories import execute, place

ROOT = Path(__file__).resolve().parents[2]


class Tail:
    """The CLI in a subprocess; stdout and stderr lines arrive on queues."""

    def __init__(self, server, user: str, state: Path, *extra: str, password: str = PASSWORD) -> None:
        command = [sys.executable, "-m", "axisor_client", "tail", "--url", server.http, "--user", user]
        self.proc = subprocess.Popen(
            [*command, "--state", str(state), "--initial-delay", "0.1", *extra],
            cwd=ROOT,
            env={**os.environ, "AXISOR_PASSWORD": password},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.notes: list[str] = []
        self.pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def events(self, n: int, timeout: float = 20) -> list[dict]:
        return [json.loads(self.out.get(timeout=timeout)) for _ in range(n)]

    def note(self, text: str, timeout: float = 20) -> str:
        """Wait for a stderr line containing ``text``."""
        while True:
            line = self.err.get(timeout=timeout)
            self.notes.append(line)
            if text in line:
                return line

    def stop(self) -> list[str]:
        """Ctrl-C; returns whatever else it printed on stdout before exiting (expected: nothing)."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(15) == 0
        for pump in self.pumps:
            pump.join(10)
        rest = []
        while not self.out.empty():
            rest.append(self.out.get())
        return rest


def test_tail_resumes_across_restarts_with_nothing_lost_or_repeated(daphne, make_user, tmp_path):
    server = daphne(**QUIET)
    user = make_user("tailer")
    set_login_password(user)
    state = tmp_path / "tail.json"

    with Tail(server, "tailer", state) as tail:
        tail.note("# connected")
        notify(user.pk, 5, tag="first")
        printed = tail.events(5)
        assert tail.stop() == []
    assert json.loads(state.read_text())["events"] == {"lastSeq": 5}

    notify(user.pk, 4, tag="while-stopped")
    with Tail(server, "tailer", state) as tail:
        printed += tail.events(4)  # the four it missed, replayed
        tail.note("resumed after seq 5, now at 9")
        notify(user.pk, 2, tag="live")
        printed += tail.events(2)
        assert tail.stop() == []

    assert printed == logged(user.pk)
    assert [e["seq"] for e in printed] == list(range(1, 12))
    assert json.loads(state.read_text())["events"] == {"lastSeq": 11}

    # Retention dropped what the next run would need: it says so on stdout, then goes on live.
    notify(user.pk, 3, tag="pruned")
    EventLog.objects.filter(user_id=user.pk, seq__lte=13).delete()
    with Tail(server, "tailer", state) as tail:
        failed = tail.events(1)[0]
        assert (failed["type"], failed["reason"], failed["lastSeq"], failed["oldestSeq"]) == (
            "resume_failed",
            "too_old",
            14,
            14,
        )
        assert "re-fetch your state" in tail.note("resume failed (too_old)")
        notify(user.pk, 1, tag="after-prune")
        assert tail.events(1)[0]["data"]["id"] == "after-prune-0"
        assert tail.stop() == []
    assert json.loads(state.read_text())["events"] == {"lastSeq": 15}


def test_tail_orders_prints_order_updates_and_resumes(daphne, make_user, tmp_path, instruments):
    server = daphne(**QUIET)
    user = make_user("ordertail")
    set_login_password(user)
    state = tmp_path / "orders.json"
    place(user)  # seq 1, before the first run: not printed

    with Tail(server, "ordertail", state, "--orders") as tail:
        tail.note("# connected")
        order = place(user)  # seq 2
        execute(order, "fill", quantity=10, price="625.50")  # 3, 4 (5: the notification, not on this socket)
        printed = tail.events(3)
        assert tail.stop() == []

    second = place(user, quantity="5")  # 6
    with Tail(server, "ordertail", state, "--orders") as tail:
        printed += tail.events(1)
        tail.note("resumed after seq")
        third = place(user, quantity="2")  # 7
        printed += tail.events(1)
        assert tail.stop() == []

    orders_log = [{**e["data"], "seq": e["seq"]} for e in logged(user.pk, "orders")]
    assert printed == orders_log[1:]
    assert [(u["orderId"], u["updateType"]) for u in printed] == [
        (order.order_id, "ORDER_PLACED"),
        (order.order_id, "TRADE_UPDATE"),
        (order.order_id, "ORDER_EXECUTED"),
        (second.order_id, "ORDER_PLACED"),
        (third.order_id, "ORDER_PLACED"),
    ]
    assert json.loads(state.read_text())["orders"] == {"lastSeq": 7}


def test_tail_with_a_wrong_password_exits_with_an_error(daphne, make_user, tmp_path):
    server = daphne(**QUIET)
    make_user("wrongpw")
    with Tail(server, "wrongpw", tmp_path / "s.json", password="not-it") as tail:
        assert tail.proc.wait(30) == 2
        assert "cannot log in" in tail.note("error")
        assert tail.out.empty()
