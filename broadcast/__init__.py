"""The event log and everything that carries an event to the socket tier: rooms, the transactional
outbox and its relay, the channel layer, conflated value streams, presence and the staff feed."""
