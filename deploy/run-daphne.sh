#!/usr/bin/env bash
# Start one daphne process per core on ports 8001.. (production settings from the environment).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AXISOR_ENV:=production}"
export AXISOR_ENV
# Every socket is a file descriptor; leave room for 10,000+ per process.
ulimit -n 65536 || echo "could not raise the open-files limit (ulimit -n); the hard limit is $(ulimit -Hn)" >&2
for i in $(seq 1 "${PROCESSES:-$(nproc)}"); do
  .venv/bin/python -m daphne -b 127.0.0.1 -p $((8000 + i)) --proxy-headers axisor.asgi:application &
done
wait
