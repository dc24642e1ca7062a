"""Hardening case 4: schemathesis over the served OpenAPI schema, against a live daphne process, as
a staff user (so every authenticated endpoint is exercised) and anonymously: no input makes a 500."""

from __future__ import annotations

import asyncio
import os

import pytest
import schemathesis
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from tests.conftest import jwt_for
from tests.hardening.conftest import rest

EXAMPLES = int(os.environ.get("HARDENING_SCHEMA_EXAMPLES", "20"))


def fuzz_operation(operation, mode: GenerationMode, headers: dict[str, str], statuses: dict[int, int]) -> None:
    label = operation.label

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(headers=headers, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, f"{label} {mode.value}: {response.status_code}: {case.as_curl_command()}"
        content_type = "".join(response.headers.get("content-type") or [])
        if content_type.startswith("application/json") and response.status_code >= 400:
            body = response.json()
            assert isinstance(body, dict) and "code" in body and "detail" in body, (label, body)

    run()


def fuzz_operations(schema_url: str, headers: dict[str, str]) -> dict[str, dict[int, int]]:
    """Status counts per operation; hypothesis shrinks and re-raises the first failure."""
    schema = schemathesis.openapi.from_url(schema_url)
    seen: dict[str, dict[int, int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        statuses = seen.setdefault(operation.label, {})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, headers, statuses)
    return seen


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_every_rest_operation_under_generated_input_never_answers_500(daphne, make_user, instruments):
    server = await asyncio.to_thread(daphne, AXISOR_SIMULATE="")
    admin = await database_sync_to_async(make_user)("fuzzadmin", superuser=True, tier="enterprise")
    token = jwt_for(admin)
    # Something for the owner-scoped endpoints to find.
    body = {"tradingSymbol": "SBIN-EQ", "orderType": "LIMIT", "transactionType": "BUY", "quantity": 1, "price": 625.5}
    status, _ = await rest("POST", f"{server.http}/api/orders", body, token=token)
    assert status == 201

    schema_url = f"{server.http}/api/schema?format=json"
    staff = await asyncio.to_thread(fuzz_operations, schema_url, {"Authorization": f"Bearer {token}"})
    anonymous = await asyncio.to_thread(fuzz_operations, schema_url, {})
    calls = sum(n for statuses in staff.values() for n in statuses.values())
    calls += sum(n for statuses in anonymous.values() for n in statuses.values())
    print(f"\ncase 4: {len(staff)} operations, {calls} calls, statuses (staff) ", end="")
    totals: dict[int, int] = {}
    for statuses in staff.values():
        for code, n in statuses.items():
            totals[code] = totals.get(code, 0) + n
    print(dict(sorted(totals.items())))
    assert len(staff) >= 20, sorted(staff)
    log = "".join(server.lines)
    assert "Traceback" not in log, log[-4000:]
