"""``python -m axisor_client tail``: print live events as JSON lines, resuming across restarts.

stdout carries one JSON object per line: each event (``/ws``) or order update (``--orders``), and a
``{"type":"resume_failed",...}`` line when the server could no longer replay what the last run
missed (events were lost: re-fetch your state over REST). Status notices go to stderr as ``# ...``.
The last seq printed is kept in a state file, written after each printed event, so a restarted tail
continues exactly after it (stopped by Ctrl-C / SIGTERM: nothing lost or repeated; killed hard
between printing an event and saving it: that one event is printed again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .base import NORECONNECT, ConnectionStatus
from .events import AxisorClient
from .orders import OrderUpdatesClient
from .rest import ApiError, Login


class StateFile:
    """``{"server", "events": {"lastSeq"}, "orders": {"lastSeq"}}``: each mode keeps its own position."""

    def __init__(self, path: Path, mode: str, server: str) -> None:
        self.path = path
        self.mode = mode
        self.server = server
        self.saved: int | None = None
        self.frozen = False  # stdout is gone: what was not printed must not count as seen

    def load(self) -> int | None:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise SystemExit(f"state file {self.path} is not JSON ({exc}); move it away to start afresh") from None
        seq = (state.get(self.mode) or {}).get("lastSeq")
        self.saved = seq if isinstance(seq, int) else None
        return self.saved

    def save(self, seq: int | None) -> None:
        if seq is None or seq == self.saved or self.frozen:
            return
        try:
            state = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            state = {}
        state.update({"server": self.server, self.mode: {"lastSeq": seq}})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old state or the new, never half
        self.saved = seq


def _note(text: str) -> None:
    sys.stderr.write(f"# {text}\n")
    sys.stderr.flush()


def _describe(status: ConnectionStatus) -> str:
    parts = [str(status)]
    if status.url:
        parts.append(status.url.split("?")[0])
    if status.attempt is not None:
        parts.append(f"attempt {status.attempt} in {status.delay:.2f}s")
    if status.code is not None:
        parts.append(f"code {status.code}")
    if status.reason:
        parts.append(status.reason)
    return " ".join(parts)


async def tail(args: argparse.Namespace) -> int:
    password = args.password or os.environ.get("AXISOR_PASSWORD")
    if not password:
        _note("error: give --password or set AXISOR_PASSWORD")
        return 2
    mode = "orders" if args.orders else "events"
    state = StateFile(Path(args.state or Path.home() / f".axisor_tail_{args.user}.json"), mode, args.url)
    last = state.load()
    login = Login(args.url, args.user, password)
    try:
        await asyncio.to_thread(login.jwt)  # wrong password or unreachable server: say so at once
    except (ApiError, OSError) as exc:
        _note(f"error: cannot log in to {login.server} as {args.user}: {exc}")
        return 2
    common: dict[str, Any] = {
        "last_seq": last,
        "read_timeout": args.read_timeout,
        "initial_delay": args.initial_delay,
        "max_delay": args.max_delay,
        "max_tries": args.max_tries,
    }
    if args.heartbeat is not None:
        common["heartbeat_interval"] = args.heartbeat
    client: AxisorClient | OrderUpdatesClient
    stopping: list[asyncio.Future] = []

    def stop_soon() -> None:
        stopping.append(asyncio.ensure_future(client.stop()))

    def out(message: dict) -> None:
        try:
            sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the reader is gone: stop, and keep the position of the last line it got
            state.frozen = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            stop_soon()

    if args.orders:
        client = OrderUpdatesClient(
            args.url, login.order_session, baseline=login.last_seq if last is None else None, **common
        )
        client.on_all_orders(out)
    else:
        client = AxisorClient(args.url, login.jwt, subscriptions=args.subscribe, **common)
        client.on_event("*", out)

    def resume_failed(message: dict) -> None:
        out(message)
        _note(
            f"resume failed ({message.get('reason')}): the server cannot replay what this tail missed (its log"
            f" holds seqs {message.get('oldestSeq')}..{message.get('lastSeq')}); re-fetch your state over REST."
            " Continuing live."
        )

    client.on_resume_failed(resume_failed)
    client.on_last_seq(state.save)
    client.on_resumed(lambda m: _note(f"resumed after seq {m.get('since')}, now at {m.get('lastSeq')}"))
    if not args.quiet:
        client.on_connection_status(lambda s: _note(_describe(s)))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_soon)
    result = await client.run()
    state.save(client.resume_from)
    return 1 if result == NORECONNECT else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m axisor_client", description="Axisor Realtime client")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("tail", help="print live events as JSON lines, resuming across restarts")
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--user", required=True, help="username (a JWT is obtained from POST /api/auth/token)")
    p.add_argument("--password", help="password (default: the AXISOR_PASSWORD environment variable)")
    p.add_argument("--orders", action="store_true", help="tail /ws/orders (order updates) instead of /ws")
    p.add_argument("--state", help="state file (default ~/.axisor_tail_<user>.json)")
    p.add_argument(
        "--subscribe", action="append", default=[], metavar="ROOM", help="also join a room, e.g. market:BTC_USD"
    )
    p.add_argument("--read-timeout", type=float, default=30.0, help="reconnect after this long without a message")
    p.add_argument("--heartbeat", type=float, help="seconds between heartbeats (default: 10 on /ws, 30 on orders)")
    p.add_argument("--initial-delay", type=float, default=1.0, help="first reconnect delay (doubles, capped)")
    p.add_argument("--max-delay", type=float, default=10.0, help="longest reconnect delay")
    p.add_argument("--max-tries", type=int, default=300, help="reconnect attempts before giving up")
    p.add_argument("--quiet", action="store_true", help="no connection-status lines on stderr")
    p.add_argument("--verbose", action="store_true", help="log the client's internals to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    return asyncio.run(tail(args))
