"""The socket tier: the /ws and /ws/orders consumers, the per-process hub and each socket's send
queue, authentication, limits, the connect-time read, and the framework internals we patch."""
