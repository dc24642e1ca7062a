"""The seed's own AxisorWebSocketClient (seed 000, run by Node) against a real daphne process:
its ``margin_guard`` and ``positions`` subscriptions receive position_status_update,
margin_guard_execution and auto_close_execution as the seed's handlers expect them. Everything
the test does goes through the server's REST API (orders, venue executions, ticks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from queue import Queue

import pytest

from tests.conftest import jwt_for
from tests.integration.http import call

HERE = Path(__file__).parent


def node_command(script: Path, *args: str) -> list[str]:
    node = shutil.which("node")
    assert node, "Node.js is needed for the seed-client test (CI installs it)"
    flag = subprocess.run([node, "--experimental-websocket", "-e", ""], capture_output=True).returncode == 0
    return [node, *(["--experimental-websocket"] if flag else []), "--no-warnings", str(script), *args]


@pytest.mark.django_db(transaction=True)
def test_seed_client_margin_guard_and_positions_subscriptions(daphne, make_user, instruments):
    server = daphne(AXISOR_SIMULATE="")
    user, ops = make_user("seedmargin"), make_user("venue", superuser=True)
    token, staff = jwt_for(user), jwt_for(ops)
    proc = subprocess.Popen(
        node_command(HERE / "seed_events_client.mjs", f"{server.ws}/ws", token), stdout=subprocess.PIPE, text=True
    )
    lines: Queue = Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def wait_for(handler: str, pred=lambda m: True) -> dict:
        while True:
            line = lines.get(timeout=20)
            item = json.loads(line) if line.startswith("{") else {"log": line}
            if item.get("handler") == handler and pred(item):
                return item

    try:
        subscribed = {wait_for("room_subscription")["message"]["channel"] for _ in range(2)}
        assert subscribed == {"margin_guard", "positions"}

        def http(method, path, body=None, as_=token):
            status, data = call(method, f"{server.http}{path}", body, token=as_)
            assert status < 300, (path, status, data)
            return data

        http("PUT", "/api/margin-guard", {"threshold": 0.85, "action": "close_position", "cooldownSeconds": 60})
        # the market at 100 first: a venue's MARKET fill is refused beyond RISK_FILL_BAND of the last price
        http("POST", "/api/internal/ticks", [{"symbol": "BTC_USD", "price": 100, "volume": 1}], as_=staff)
        order = http(
            "POST",
            "/api/orders",
            {
                "tradingSymbol": "BTC_USD",
                "orderType": "MARKET",
                "transactionType": "BUY",
                "quantity": 1,
                "leverage": 10,
            },
        )
        http(
            "POST",
            "/api/internal/executions",
            {"orderId": order["orderId"], "execId": "seed-1", "type": "fill", "quantity": 1, "price": 100},
            as_=staff,
        )
        opened = wait_for("position_status_update")["position"]
        assert opened["symbol"] == "BTC_USD" and opened["side"] == "long" and opened["entryPrice"] == 100

        http("POST", "/api/internal/ticks", [{"symbol": "BTC_USD", "price": 101, "volume": 1}], as_=staff)
        moved = wait_for("position_status_update", lambda m: m["position"]["currentPrice"] == 101)
        assert moved["position"]["pnl"] == 1 and moved["position"]["isAtRisk"] is False
        assert moved["message"]["channel"] == "positions" and moved["message"]["data"]["userId"] == str(user.pk)

        http("POST", "/api/internal/ticks", [{"symbol": "BTC_USD", "price": 98, "volume": 1}], as_=staff)
        execution = wait_for("margin_guard_execution")
        assert execution["action"] == "close_position"
        data = execution["message"]["data"]
        assert execution["message"]["channel"] == "margin_guard"
        assert data["summary"]["positionsAtRisk"] == 1 and data["positions"][0]["id"] == opened["id"]

        (close,) = http("GET", "/api/orders?status=PENDING")["results"]
        assert close["transactionType"] == "SELL" and close["quantity"] == 1
        http(
            "POST",
            "/api/internal/executions",
            {"orderId": close["orderId"], "execId": "seed-2", "type": "fill", "quantity": 1, "price": 98},
            as_=staff,
        )
        closed = wait_for("auto_close_execution")["position"]
        assert closed["id"] == opened["id"] and closed["reason"] == "margin_guard_auto_close" and closed["pnl"] == -2
        assert proc.wait(timeout=20) == 0
        assert http("GET", "/api/positions?status=closed")["results"][0]["realizedPnl"] == -2
    finally:
        if proc.poll() is None:
            proc.kill()
