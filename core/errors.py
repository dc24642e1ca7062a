"""Domain errors services raise; the REST layer maps them to status codes (core/api.py). And
OUTAGES: what a dependency being down looks like."""

from django.db.utils import InterfaceError, OperationalError
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError

# A database or Redis outage is expected now and then: whoever meets one tries again later, and
# the log says so in one line, not a traceback (the worker's turns; jobs, see core/logfilters.py).
OUTAGES: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout, RedisError)


class CodedError(Exception):
    """An error with a stable machine-readable ``code``."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class BadRequest(CodedError):
    """The input is refused for a reason its ``code`` names (HTTP 400)."""

    code = "bad_request"


class Conflict(CodedError):
    """The request is valid but the current state refuses it (HTTP 409)."""

    code = "conflict"


class Unprocessable(CodedError):
    """Well-formed but cannot be processed as sent (HTTP 422)."""

    code = "unprocessable"


class NotFound(Exception):
    """No such object for this caller (HTTP 404)."""
