"""Keep credentials out of log lines: query-string tokens, sessions and bearer tokens are masked."""

from __future__ import annotations

import logging
import re

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
