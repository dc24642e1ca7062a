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

from collections.abc import Collection, Iterable

# KEYS: sorted sets of leases. ARGV, for each key in order: the members' new score (their expiry),
# the key's time to live in whole seconds, the member count, the members. ZADD takes the members
# in slices (Lua's unpack has a stack limit; an uncapped account may hold thousands of sockets).
# pcall: a key that fails (WRONGTYPE, or Redis out of memory) leaves the others renewed; every key
# gets its TTL, so none it touched outlives its lease. Returns the keys renewed: the callers log a
# shortfall.
RENEW = """
local at, renewed = 1, 0
for i = 1, #KEYS do
  local score, ttl, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  at = at + 3
  local first, ok = 0, true
  while ok and first < n do
    local count = math.min(n - first, 500)
    local pairs = {}
    for j = 1, count do
      pairs[2 * j - 1] = score
      pairs[2 * j] = ARGV[at + first + j - 1]
    end
    ok = type(redis.pcall('ZADD', KEYS[i], unpack(pairs))) == 'number'
    first = first + count
  end
  redis.pcall('EXPIRE', KEYS[i], ttl)
  if ok then renewed = renewed + 1 end
  at = at + n
end
return renewed
"""


def renew_command(leases: Iterable[tuple[str, float, int, Collection[str]]]) -> list[str | float | int]:
    """``EVAL`` arguments after the script (the key count, the keys, ARGV) renewing each
    ``(key, expiry, ttl_seconds, members)``; a key without members is left out."""
    keys: list[str] = []
    argv: list[str | float | int] = []
    for key, expires, ttl, members in leases:
        if members:
            keys.append(key)
            argv += (expires, ttl, len(members), *members)
    return [len(keys), *keys, *argv]
