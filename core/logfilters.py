"""Log filters: credentials kept out of log lines (query-string tokens, sessions and bearer tokens
are masked) and a record's message kept to one line; a job that failed because the database or
Redis was down logged as one warning."""

from __future__ import annotations

import logging
import re

from core.errors import OUTAGES

_SECRET = re.compile(r"(?i)((?:[?&\s\"']|^)(?:token|session|access|refresh|password)=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


# Line breaks and other control characters but tab: what someone else's text (a webhook receiver's
# error body, a client's header) could use to write a line of its own into the log.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _SECRET.sub(r"\1[redacted]", text))


def one_line(text: str) -> str:
    """Control characters as escapes (``\\n``): a record's message is one line of the log. An outside
    review had a webhook receiver answer ``oops\\n2026-12-07 16:00:00,000 CRITICAL ...`` and the
    server's log showed the forged line as a record of its own. (A traceback is not the message:
    it keeps its lines.)"""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text) if _CONTROL.search(text) else text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = one_line(redact(message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class AbandonedDisconnectListeners(logging.Filter):
    """Django's ASGI handler runs each request beside a task that waits for the client's
    disconnect. When daphne stops, it cancels the handlers still running, and a listener so left
    behind later hears the disconnect, raises ``RequestAborted`` and asyncio logs "Task exception
    was never retrieved" with a traceback, an error from nothing wrong (an outside operator's
    graceful stops, 3 of 4 with a request in flight). Those records, and only those, are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        from django.core.exceptions import RequestAborted

        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, RequestAborted) and "never retrieved" in str(record.msg))


class OutagesAsWarnings(logging.Filter):
    """django-tasks logs every failed job with its traceback. A job that failed because the database
    or Redis was down is an outage the job's own state recovers from (notifications/tasks.py: its
    deliveries are swept and retried): one warning line, like the worker's own turns."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OUTAGES):
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args, record.exc_info, record.exc_text = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
