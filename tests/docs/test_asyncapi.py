"""docs/asyncapi.yaml as a document: a well-formed AsyncAPI 3.0 document (its structure checked with
a JSON schema of the parts it uses, every ``$ref`` resolving, every payload a valid JSON schema),
and complete: a message for every ``type`` of the event catalogue and of the apps' event modules,
the error codes and close codes of ``wire``, the close codes of docs/reference/close-codes.md, the
order statuses and update types of the order model. The frames of a real server are checked against
it in tests/integration/test_wire_contract.py."""

from __future__ import annotations

import re
from pathlib import Path

from jsonschema import Draft7Validator

from tests.docs.asyncapi import (
    client_messages,
    close_codes,
    load,
    payload,
    resolve,
    server_messages,
    type_of,
)

ROOT = Path(__file__).resolve().parents[2]
REF = {"type": "object", "required": ["$ref"], "properties": {"$ref": {"type": "string", "pattern": "^#/"}}}

# The parts of the AsyncAPI 3.0 specification this document uses, as a JSON schema (no PyPI package
# ships the official one; docs/reference/asyncapi.md says so).
STRUCTURE = {
    "type": "object",
    "required": ["asyncapi", "info", "channels", "operations", "components"],
    "additionalProperties": False,
    "properties": {
        "asyncapi": {"const": "3.0.0"},
        "id": {"type": "string"},
        "defaultContentType": {"type": "string"},
        "info": {
            "type": "object",
            "required": ["title", "version"],
            "properties": {
                "title": {"type": "string"},
                "version": {"type": "string"},
                "description": {"type": "string"},
            },
        },
        "servers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["host", "protocol"],
                "properties": {"host": {"type": "string"}, "protocol": {"enum": ["ws", "wss"]}},
            },
        },
        "channels": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["address", "messages"],
                "patternProperties": {"^x-": {}},
                "additionalProperties": False,
                "properties": {
                    "address": {"type": "string", "pattern": "^/"},
                    "title": {"type": "string"},
                    "summary": {"type": "string"},
                    "description": {"type": "string"},
                    "servers": {"type": "array", "items": REF},
                    "messages": {"type": "object", "additionalProperties": REF},
                    "bindings": {
                        "type": "object",
                        "properties": {
                            "ws": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "method": {"enum": ["GET", "POST"]},
                                    "query": {"type": "object"},
                                    "headers": {"type": "object"},
                                    "bindingVersion": {"const": "0.1.0"},
                                },
                            }
                        },
                    },
                },
            },
        },
        "operations": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["action", "channel"],
                "additionalProperties": False,
                "properties": {
                    "action": {"enum": ["send", "receive"]},
                    "channel": REF,
                    "title": {"type": "string"},
                    "summary": {"type": "string"},
                    "description": {"type": "string"},
                    "messages": {"type": "array", "items": REF},
                },
            },
        },
        "components": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "schemas": {"type": "object"},
                "messages": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["payload"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "title": {"type": "string"},
                            "summary": {"type": "string"},
                            "description": {"type": "string"},
                            "contentType": {"type": "string"},
                            "payload": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def catalogue_types(*sections: str) -> set[str]:
    """The backquoted ``type`` of each row of the tables under the given headings of events.md."""
    text = (ROOT / "docs" / "reference" / "events.md").read_text()
    found = set()
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        if heading.strip() in sections:
            found |= set(re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.M))
    return found


def test_the_document_is_well_formed_asyncapi_3():
    document = load()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in Draft7Validator(STRUCTURE).iter_errors(document)]
    assert not errors, errors
    for ref in refs(document):
        resolve(document, ref)  # KeyError if it points nowhere
    for schema in document["components"]["schemas"].values():
        Draft7Validator.check_schema(schema)
    # an operation's messages are messages of its own channel
    for op_id, op in document["operations"].items():
        for ref in op["messages"]:
            assert ref["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), (op_id, ref)


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
