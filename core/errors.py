"""Domain errors services raise; the REST layer maps them to status codes (core/api.py)."""


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
