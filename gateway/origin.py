"""Origin and Host checks for sockets. A browser Origin must match ALLOWED_HOSTS or be one of
CORS_ALLOWED_ORIGINS (a browser app on another origin that may call the API may open the sockets
too); no Origin is allowed. The Host must be one ALLOWED_HOSTS allows, as Django asks of every HTTP
request (``HttpRequest.get_host``).

Browsers always send Origin, so a foreign page cannot ride a user's cookies; non-browser clients
(the seed's Python client, services) send none and authenticate with a token instead. Channels'
AllowedHostsOriginValidator refuses a missing Origin, which would lock those clients out.
"""

from urllib.parse import urlparse

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.http.request import split_domain_port, validate_host


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


def host_allowed(scope) -> bool:
    """Whether the handshake's Host is one ALLOWED_HOSTS allows, read as Django reads an HTTP
    request's (``ASGIRequest`` and ``HttpRequest.get_host``): X-Forwarded-Host first when
    USE_X_FORWARDED_HOST, then Host (repeated headers joined with commas, which no host matches),
    else the address the server listens on. A socket's handshake is an HTTP request: the Host an
    HTTP request with it would be refused for (400 DisallowedHost) does not open a socket."""
    headers: dict[str, list[str]] = {}
    for name, value in scope.get("headers", ()):
        if name in (b"host", b"x-forwarded-host"):
            headers.setdefault(name.decode("latin1"), []).append(value.decode("latin1"))
    if settings.USE_X_FORWARDED_HOST and "x-forwarded-host" in headers:
        host = ",".join(headers["x-forwarded-host"])
    elif "host" in headers:
        host = ",".join(headers["host"])
    else:
        server = scope.get("server") or ("unknown", "0")
        secure = scope.get("scheme") == "wss"
        host = str(server[0]) if str(server[1]) == ("443" if secure else "80") else f"{server[0]}:{server[1]}"
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)
