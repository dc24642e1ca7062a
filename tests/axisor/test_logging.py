"""Credentials never reach a log line."""

import logging

from core.logfilters import RedactSecrets, redact


def test_query_string_and_bearer_tokens_are_redacted():
    line = "GET /ws/orders?session=sess_abc&token=s3cr3t-T0ken&since=4 Authorization: Bearer eyJh.eyJ.sig"
    cleaned = redact(line)
    assert "s3cr3t-T0ken" not in cleaned and "sess_abc" not in cleaned and "eyJh.eyJ.sig" not in cleaned
    assert "since=4" in cleaned and "token=[redacted]" in cleaned


def test_filter_rewrites_formatted_record():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "connect %s", ("/ws/orders?token=abc123",), None)
    RedactSecrets().filter(record)
    assert record.getMessage() == "connect /ws/orders?token=[redacted]"
