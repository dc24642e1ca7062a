"""The event log and everything that carries an event to the socket tier: rooms, the transactional
outbox and its relay, the channel-layer message shapes, conflated value streams, presence and the
staff feed. The channel layer itself is in core/internals.py."""
