"""Origin check for sockets: a browser Origin must match ALLOWED_HOSTS or be one of
CORS_ALLOWED_ORIGINS (a browser app on another origin that may call the API may open the sockets
too); no Origin is allowed.

Browsers always send Origin, so a foreign page cannot ride a user's cookies; non-browser clients
(the seed's Python client, services) send none and authenticate with a token instead. Channels'
AllowedHostsOriginValidator refuses a missing Origin, which would lock those clients out.
"""

from urllib.parse import urlparse

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """channels' origin rules (hosts, wildcards, schemes and ports), asked by the socket router
    (gateway.routing.SocketRouter) rather than wrapped around the application: a wrapper is a
    coroutine awaiting the application for the whole life of every socket."""

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)

    def allows(self, scope) -> bool:
        """Whether the handshake's Origin may open a socket, read as channels' validator reads it
        (the last Origin header counts)."""
        parsed_origin = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                parsed_origin = urlparse(value.decode("latin1"))  # every byte is Latin-1
        return self.valid_origin(parsed_origin)


def origin_validator() -> BrowserOriginValidator:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(None, allowed + list(settings.CORS_ALLOWED_ORIGINS))
