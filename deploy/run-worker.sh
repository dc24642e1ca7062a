#!/usr/bin/env bash
# Start the background workers (production settings from the environment): queued jobs
# (notification deliveries and their retries) and the periodic jobs (paper venue and feed when
# AXISOR_SIMULATE is set, relay of unsent events, delivery sweep, retention), each single job in
# one process at a time under a Redis lease. Run as many as you like, on any machine that reaches
# the database and Redis; SIGTERM lets each finish the steps under way.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AXISOR_ENV:=production}"
export AXISOR_ENV
for _ in $(seq 1 "${WORKERS:-2}"); do
  .venv/bin/python manage.py worker &
done
trap 'kill -TERM $(jobs -p) 2>/dev/null' TERM INT
wait
