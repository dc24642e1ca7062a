"""The socket tier: the /ws and /ws/orders consumers, the per-process hub and each socket's send
queue, authentication, limits and the connect-time read. The framework internals it relies on
(daphne, Twisted, autobahn, the channel layer) are patched in core/internals.py."""
