#!/usr/bin/env bash
# Start the REST tier: gunicorn workers (2 × cores + 1) on 127.0.0.1:8100, production settings from
# the environment. It needs Redis (REDIS_URL): what it commits reaches the daphne processes' sockets
# through the channel layer.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AXISOR_ENV:=production}"
export AXISOR_ENV
exec .venv/bin/gunicorn -c deploy/gunicorn.conf.py
