"""Log filters: credentials kept out of log lines (query-string tokens, sessions and bearer tokens
are masked); a job that failed because the database or Redis was down logged as one warning."""

from __future__ import annotations

import logging
import re

from core.errors import OUTAGES

_SECRET = re.compile(r"(?i)((?:[?&\s\"']|^)(?:token|session|access|refresh|password)=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    return _BEARER.sub(r"\1[redacted]", _SECRET.sub(r"\1[redacted]", text))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


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
