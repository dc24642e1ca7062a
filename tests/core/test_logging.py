"""Credentials never reach a log line; an outage does not fill the log with tracebacks."""

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


def _failed_job(error: Exception):
    try:
        raise error
    except Exception:
        logging.getLogger("django_tasks").exception("Task id=%s path=%s state=%s", "t1", "a.b", "FAILED")


def test_a_job_failed_by_an_outage_is_one_warning_line(caplog):
    from django.db.utils import OperationalError

    with caplog.at_level(logging.WARNING, logger="django_tasks"):
        _failed_job(OperationalError("couldn't get a connection after 1.67 sec"))
    (record,) = caplog.records
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage() == (
        "Task id=t1 path=a.b state=FAILED (OperationalError: couldn't get a connection after 1.67 sec)"
    )


def test_a_job_failed_by_a_bug_keeps_its_traceback(caplog):
    with caplog.at_level(logging.WARNING, logger="django_tasks"):
        _failed_job(KeyError("missing"))
    (record,) = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is not None


def test_a_django_error_is_written_once_with_debug_on(capsys):
    """Outside probe (twelfth session): with DEBUG on (scripts/run) every 500 was logged twice,
    once by the handler Django's default logging gives its own logger, without a time."""
    from django.conf import settings
    from django.utils.log import configure_logging

    debug = settings.DEBUG
    settings.DEBUG = True  # Django's console handler writes only with DEBUG on
    try:
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
        logging.getLogger("django.request").error("Internal Server Error: /api/x")
        err = capsys.readouterr().err
    finally:
        settings.DEBUG = debug
        configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    lines = [line for line in err.splitlines() if "Internal Server Error: /api/x" in line]
    assert len(lines) == 1 and "ERROR django.request" in lines[0], err


def test_someone_elses_text_cannot_write_a_line_of_its_own():
    body = "oops\n2026-12-07 16:00:00,000 CRITICAL django.security FORGED\r\x1b[2J"
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "delivery 5 failed: %s", (body,), None)
    RedactSecrets().filter(record)
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert message == "delivery 5 failed: oops\\n2026-12-07 16:00:00,000 CRITICAL django.security FORGED\\r\\x1b[2J"


def test_a_disconnect_listener_left_by_a_stopping_server_is_not_an_error(caplog):
    """What asyncio logs for the task Django's ASGI handler leaves behind when daphne cancels it
    on stopping, and the client's disconnect then arrives: dropped. Any other such record stays."""
    import asyncio
    import gc

    from django.core.exceptions import RequestAborted

    async def listener():
        raise RequestAborted()

    async def bug():
        raise ValueError("a real one")

    async def leave_behind() -> None:
        left = [asyncio.ensure_future(coro) for coro in (listener(), bug())]  # and never retrieved
        await asyncio.sleep(0)
        left.clear()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(leave_behind())
        gc.collect()
    logged = [r for r in caplog.records if r.name == "asyncio"]
    assert [type(r.exc_info[1]) for r in logged] == [ValueError]


def test_unicode_line_breaks_are_escaped_too():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s", ("a\u2028b\x85c\u2029d",), None)
    RedactSecrets().filter(record)
    assert record.getMessage().splitlines() == [record.getMessage()]
