#!/usr/bin/env bash
# Start one daphne process per core (PROCESSES) on ports BASE_PORT+1.. (8001..; production settings
# from the environment). List the same ports in deploy/nginx.conf's axisor_daphne upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AXISOR_ENV:=production}"
export AXISOR_ENV
# Socket work only: background work runs in the worker processes (deploy/run-worker.sh).
export AXISOR_BACKGROUND=0
# Every socket is a file descriptor; leave room for 10,000+ per process.
ulimit -n 65536 || echo "could not raise the open-files limit (ulimit -n); the hard limit is $(ulimit -Hn)" >&2
# Stopping this script stops its daphne processes (they finish their requests, then exit).
trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' TERM INT
for i in $(seq 1 "${PROCESSES:-$(nproc)}"); do
  # The listen backlog is LISTEN_BACKLOG's (4096; Twisted's 50 overflows in a reconnect storm).
  # websocket_connect_timeout: daphne refuses (403) a handshake the app has not accepted in 5 s,
  # which under a storm of thousands of handshakes at once is every one of them.
  # ping: a peer that vanished without a FIN is found within ~20 s (daphne's defaults: ~50 s), and
  # its tier slot and presence lease are freed.
  .venv/bin/python -m daphne -e "tcp:port=$((${BASE_PORT:-8000} + i)):interface=127.0.0.1" \
    --websocket_connect_timeout 30 --ping-interval 10 --ping-timeout 10 \
    --proxy-headers axisor.asgi:application &
done
wait
