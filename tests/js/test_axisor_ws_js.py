"""static/axisor-ws.js against a real daphne process, run by Node: resume after a dropped
connection delivers every event exactly once, in order."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from queue import Queue

import pytest

from broadcast.outbox import publish_personal_many
from tests.conftest import jwt_for
from wire import envelope

HERE = Path(__file__).parent


def emit(user_id: int, n: int) -> None:
    for i in range(n):
        publish_personal_many([(user_id, envelope("test_event", "notifications", {"i": i}))])[0]


@pytest.mark.django_db(transaction=True)
def test_browser_client_resumes_after_drop(daphne, make_user):
    node = shutil.which("node")
    assert node, "Node.js is needed for the browser-client test (CI installs it)"
    server = daphne()
    user = make_user("js")
    script = HERE / "axisor_ws_drop.mjs"
    # Node 20 needs the flag for its WebSocket; Node 18 lacks both and uses the `ws` package.
    flag = subprocess.run([node, "--experimental-websocket", "-e", ""], capture_output=True).returncode == 0
    proc = subprocess.Popen(
        [
            node,
            *(["--experimental-websocket"] if flag else []),
            "--no-warnings",
            str(script),
            f"{server.ws}/ws",
            jwt_for(user),
            "2",
            "6",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: Queue = Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in proc.stdout], daemon=True).start()
    seqs: list[int] = []

    def wait_for(pred):
        while True:
            item = lines.get(timeout=20)
            if "seq" in item:
                seqs.append(item["seq"])
            if pred(item):
                return item

    wait_for(lambda m: m.get("status") == "connected")
    emit(user.pk, 2)  # seq 1, 2 → the client drops its connection after the second
    wait_for(lambda m: m.get("status") == "disconnected")
    emit(user.pk, 2)  # seq 3, 4 happen while it is away
    wait_for(lambda m: m.get("status") == "connected")
    emit(user.pk, 2)  # seq 5, 6 live
    wait_for(lambda m: m.get("seq") == 6)
    assert proc.wait(timeout=30) == 0
    assert seqs == [1, 2, 3, 4, 5, 6]
