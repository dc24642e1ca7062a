"""Renewing many Redis leases in one command: the presence registry (broadcast.presence) and the
per-account socket caps (gateway.limits) both keep one lease per open socket, a member of a sorted
set scored by its expiry, and renew all of a process's every third of a lease.

As a pipeline of ``ZADD`` + ``EXPIRE`` per user, a renewal cost the server ~20 µs of Python a user
(each command built, packed and its reply parsed by redis-py): at 5,000 idle sockets, about half
the process's idle CPU, in stretches of ~10 ms a chunk of 500 users that held the event loop and
every socket's next event. ``RENEW`` does the same writes inside Redis for a whole chunk, from one
command whose arguments are the members themselves. A key Redis refuses (one of another type) is
skipped, as its own command in a pipeline would fail alone: the rest of the chunk is renewed, and
the caller logs how many were refused.

One script touches many keys: fine on one Redis and under Sentinel (what this project supports),
not on Redis Cluster, where the keys would have to share a hash slot.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

logger = logging.getLogger(__name__)

# KEYS: sorted sets of leases. ARGV[1]: the members' new score (their expiry), ARGV[2]: each key's
# time to live in whole seconds, ARGV[2 + i]: the members of KEYS[i], one per line (two arguments a
# user, not one per member and number: redis-py packs each argument in Python). ZADD takes the
# members in slices of 500 (Lua's unpack has a stack limit; an uncapped account may hold thousands
# of sockets). pcall: a key that fails (WRONGTYPE, or Redis out of memory) leaves the others
# renewed; every key gets its TTL, so none it touched outlives its lease. Returns the keys renewed:
# the callers log a shortfall.
RENEW = """
local score, ttl, renewed = ARGV[1], ARGV[2], 0
for i = 1, #KEYS do
  local args, n, ok = {}, 0, true
  for member in string.gmatch(ARGV[i + 2], '[^\\n]+') do
    n = n + 1
    args[2 * n - 1] = score
    args[2 * n] = member
    if n == 500 then
      ok = ok and type(redis.pcall('ZADD', KEYS[i], unpack(args))) == 'number'
      args, n = {}, 0
    end
  end
  if n > 0 then
    ok = ok and type(redis.pcall('ZADD', KEYS[i], unpack(args))) == 'number'
  end
  redis.pcall('EXPIRE', KEYS[i], ttl)
  if ok then renewed = renewed + 1 end
end
return renewed
"""


def renew_command(expires: float, ttl: int, leases: Iterable[tuple[str, Collection[str]]]) -> list[str | float | int]:
    """``EVAL`` arguments after the script (the key count, the keys, ARGV) renewing each
    ``(key, members)`` to ``expires`` with a ``ttl`` in seconds; a key without members is left out.
    Members are this server's own names (a process and a socket id): never a line break."""
    keys: list[str] = []
    lines: list[str] = []
    for key, members in leases:
        if members:
            text = "\n".join(members)
            if text.count("\n") != len(members) - 1:
                raise ValueError(f"a lease member of {key} holds a line break")
            keys.append(key)
            lines.append(text)
    return [len(keys), *keys, expires, ttl, *lines]


def log_refused(renewed: int, sent: int, what: str) -> None:
    """Log the keys of a ``RENEW`` Redis refused (its reply: the keys it renewed, of ``sent``)."""
    if renewed < sent:
        logger.warning("%s: Redis refused %d of %d lease keys", what, sent - renewed, sent)
