"""Origin check for sockets: a browser Origin must match ALLOWED_HOSTS or be one of
CORS_ALLOWED_ORIGINS (a browser app on another origin that may call the API may open the sockets
too); no Origin is allowed.

Browsers always send Origin, so a foreign page cannot ride a user's cookies; non-browser clients
(the seed's Python client, services) send none and authenticate with a token instead. Channels'
AllowedHostsOriginValidator refuses a missing Origin, which would lock those clients out.
"""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def allowed_hosts_origin_validator(application):
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed + list(settings.CORS_ALLOWED_ORIGINS))
