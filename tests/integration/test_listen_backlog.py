"""A reconnect storm that arrives while the process is busy waits in the kernel's accept queue and is
served, rather than being dropped into SYN retransmits (1 s, 3 s, 7 s …): daphne started the way
scripts/run and these tests start it (``-b``/``-p``, which name no backlog) listens with
LISTEN_BACKLOG, not Twisted's 50 (core.internals.with_backlog)."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from django.conf import settings

STORM = 600  # more than Twisted's 50, within LISTEN_BACKLOG


def test_connects_made_while_the_process_cannot_accept_are_queued_and_then_served(daphne):
    assert int(Path("/proc/sys/net/core/somaxconn").read_text()) >= settings.LISTEN_BACKLOG >= STORM
    server = daphne(AXISOR_BACKGROUND="0")
    sockets: list[socket.socket] = []
    os.kill(server.proc.pid, signal.SIGSTOP)  # busy: nothing is accepted until it runs again
    try:
        for _ in range(STORM):
            # With a backlog of 50 the 52nd connect is not answered: its SYN is dropped, and the
            # retransmits (1 s, 3 s, 7 s) find the queue still full until this timeout.
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        for sock in sockets:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    try:
        for sock in sockets:
            sock.settimeout(60)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        for sock in sockets:
            sock.close()
