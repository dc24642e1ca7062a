"""docs/asyncapi.yaml as a document: a valid AsyncAPI 3.0 document to the AsyncAPI Initiative's own
parser (the official JSON schema, every ``$ref``, its rules) with every payload a valid JSON schema,
and complete: a message for every ``type`` of the event catalogue and of the apps' event modules,
the error codes and close codes of ``wire``, the close codes of docs/reference/close-codes.md, the
order statuses and update types of the order model. The frames of a real server are checked against
it in tests/integration/test_wire_contract.py."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import yaml
from jsonschema import Draft7Validator

from tests.docs.asyncapi import (
    client_messages,
    close_codes,
    load,
    payload,
    server_messages,
    type_of,
)

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tests" / "docs" / "asyncapi_validator"


def official_diagnostics(document: dict, tmp_path: Path) -> dict[str, list[dict]]:
    """What the AsyncAPI Initiative's own parser (@asyncapi/parser from npm, installed by
    scripts/bootstrap from its lock) finds in a document: the official AsyncAPI 3.0 JSON schema,
    every ``$ref``, and its rules (an operation's messages belong to its channel, ...)."""
    source = tmp_path / "asyncapi.yaml"
    source.write_text(yaml.safe_dump(document, sort_keys=False))
    done = subprocess.run(
        ["node", str(VALIDATOR / "validate.mjs"), str(source)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def catalogue_types(*sections: str) -> set[str]:
    """The backquoted ``type`` of each row of the tables under the given headings of events.md."""
    text = (ROOT / "docs" / "reference" / "events.md").read_text()
    found = set()
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        if heading.strip() in sections:
            found |= set(re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.M))
    return found


def test_the_official_parser_finds_no_error_and_no_warning(tmp_path):
    document = load()
    assert official_diagnostics(document, tmp_path) == {"errors": [], "warnings": []}
    # payloads are JSON schemas (the parser does not check a payload's own keywords)
    for schema in document["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)
    for name in document["components"]["messages"]:
        Draft7Validator.check_schema(document["components"]["messages"][name]["payload"])


def test_the_official_parser_catches_a_broken_copy(tmp_path):
    """The check above can fail: a field the specification does not have, a reference to nothing, an
    operation sending another channel's message are each reported at their place."""
    document = copy.deepcopy(load())
    other = next(iter(document["channels"]["orderUpdates"]["messages"]))
    document["info"]["colour"] = "red"
    document["operations"]["sendEvents"]["messages"] += [
        {"$ref": "#/channels/events/messages/nothing"},
        {"$ref": f"#/channels/orderUpdates/messages/{other}"},
    ]
    found = {(e["path"], e["code"]) for e in official_diagnostics(document, tmp_path)["errors"]}
    n = len(load()["operations"]["sendEvents"]["messages"])
    assert {
        ("info/colour", "asyncapi-document-resolved"),
        (f"operations/sendEvents/messages/{n}/$ref", "invalid-ref"),
        (f"operations/sendEvents/messages/{n + 1}", "asyncapi3-operation-messages-from-referred-channel"),
    } <= found, found


def test_every_type_of_the_catalogue_has_a_message():
    document = load()
    sent = {type_of(document, n) for a in ("/ws", "/ws/orders") for n in server_messages(document, a)}
    received = {type_of(document, n) for a in ("/ws", "/ws/orders") for n in client_messages(document, a)}
    server_types = catalogue_types(
        "Personal events", "Room events and values", "Staff feed", "Protocol messages on `/ws`",
        "Messages on `/ws/orders`",
    )  # fmt: skip
    assert len(server_types) >= 20, server_types
    assert server_types - sent == set()
    assert catalogue_types("Client messages") - received == set()
    assert None in sent, "the flat order update on /ws/orders"
    assert {"connection", "error"} <= sent  # wire's builders


def test_every_event_type_constant_of_the_apps_has_a_message():
    import broadcast.stafffeed
    import margin.events
    import market.events
    import notifications.events
    import orders.events
    import system.events

    constants = {
        value
        for module in (margin.events, market.events, notifications.events, orders.events, system.events)
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and "CHANNEL" not in name and re.fullmatch(r"[a-z_]+", value)
    } | {broadcast.stafffeed.FEED_TYPE, broadcast.stafffeed.STATS_TYPE}
    document = load()
    sent = {type_of(document, n) for n in server_messages(document, "/ws")}
    assert len(constants) >= 13 and constants - sent == set(), sorted(constants - sent)


def test_error_codes_close_codes_and_order_enums_are_those_of_the_code():
    from orders.models import OrderStatus, UpdateType
    from wire import Close, Code

    document = load()
    schemas = document["components"]["schemas"]
    codes = {v for k, v in vars(Code).items() if k.isupper()}
    assert set(schemas["Error"]["properties"]["code"]["enum"]) == codes

    closes = {v for k, v in vars(Close).items() if k.isupper()}
    documented = set(close_codes(document, "/ws")) | set(close_codes(document, "/ws/orders"))
    table = (ROOT / "docs" / "reference" / "close-codes.md").read_text().split("## Error codes")[0]
    in_prose = {int(c) for c in re.findall(r"^\| (\d{4}) \|", table, flags=re.M)}
    assert closes <= documented and in_prose == documented, (closes - documented, in_prose ^ documented)
    orders_only = {Close.TOO_MANY_ATTEMPTS, Close.IDLE_TIMEOUT}
    assert not orders_only & set(close_codes(document, "/ws"))

    order = schemas["OrderUpdate"]["properties"]
    assert set(order["updateType"]["enum"]) == set(UpdateType.values)
    assert set(order["orderStatus"]["enum"]) == set(OrderStatus.values)
    assert payload(document, "orderUpdateFrame")["properties"]["updateType"] == order["updateType"]
