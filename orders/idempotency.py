"""Idempotency-Key handling for order placement: the same key and body within 24 h returns the
first answer and creates nothing; the same key with another body is refused (422).

The key row is inserted in the same transaction as the order. A concurrent request with the same
key blocks on the unique index until the first commits, then reads the stored answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import Unprocessable

from .models import IdempotencyKey

TTL = timedelta(hours=24)


def request_fingerprint(body: object) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _stored(user, key: str, fingerprint: str) -> tuple[int, dict]:
    record = IdempotencyKey.objects.get(user=user, key=key)
    if record.request_hash != fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was used with a different request body", code="idempotency_key_reused"
        )
    # Both are saved in the transaction that created the row: a committed row has them.
    assert record.response_status is not None and record.response_body is not None
    return record.response_status, record.response_body


def run_once(*, user, key: str, fingerprint: str, action: Callable[[], tuple[int, dict]]) -> tuple[int, dict, bool]:
    """Run ``action`` once per (user, key). Returns (status, body, replayed)."""
    with transaction.atomic():
        IdempotencyKey.objects.filter(user=user, key=key, created_at__lt=timezone.now() - TTL).delete()
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(user=user, key=key, request_hash=fingerprint)
        except IntegrityError:
            record = None
        if record is not None:
            status, body = action()
            record.response_status, record.response_body = status, body
            record.save(update_fields=["response_status", "response_body"])
            return status, body, False
    status, body = _stored(user, key, fingerprint)
    return status, body, True
