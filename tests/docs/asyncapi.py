"""Reading docs/asyncapi.yaml in tests: its channels by address, the messages the server sends
and receives on each, a JSON-schema validator per message, the close codes of each channel."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
BASE = "urn:axisor:asyncapi"


@cache
def load() -> dict:
    return yaml.safe_load(DOCUMENT.read_text())


def resolve(document: dict, ref: str) -> Any:
    """A local ``$ref`` (``#/a/b``) of the document."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def channel_id(document: dict, address: str) -> str:
    (found,) = [cid for cid, ch in document["channels"].items() if ch["address"] == address]
    return found


def _messages(document: dict, address: str, action: str) -> list[str]:
    """Names (keys in components/messages) of the messages of ``action`` operations on the channel."""
    cid = channel_id(document, address)
    names = []
    for op in document["operations"].values():
        if op["action"] != action or op["channel"]["$ref"] != f"#/channels/{cid}":
            continue
        for ref in op["messages"]:
            channel_message = resolve(document, ref["$ref"])
            names.append(channel_message["$ref"].rsplit("/", 1)[1])
    return names


def server_messages(document: dict, address: str) -> list[str]:
    """What the server sends on the channel (``send`` operations: the document is the server's)."""
    return _messages(document, address, "send")


def client_messages(document: dict, address: str) -> list[str]:
    return _messages(document, address, "receive")


def payload(document: dict, name: str) -> dict:
    schema = document["components"]["messages"][name]["payload"]
    return resolve(document, schema["$ref"]) if "$ref" in schema else schema


def type_of(document: dict, name: str) -> str | None:
    """The ``type`` constant of a message's payload (``None`` for the flat order update)."""
    return payload(document, name).get("properties", {}).get("type", {}).get("const")


def message_of(document: dict, address: str, frame: dict) -> str | None:
    """The server message of the channel a received frame is: by ``type``, or the message with no
    ``type`` for a flat order update."""
    for name in server_messages(document, address):
        if type_of(document, name) == frame.get("type"):
            return name
    return None


def client_message_of(document: dict, address: str, message: dict | str) -> str | None:
    """The client message of the channel a sent message is (the text ``PONG`` is a plain string)."""
    for name in client_messages(document, address):
        schema = payload(document, name)
        if isinstance(message, str) and schema.get("type") == "string":
            return name
        if isinstance(message, dict) and type_of(document, name) == message.get("type"):
            return name
    return None


@cache
def _registry() -> Registry:
    return Registry().with_resource(BASE, Resource(contents=load(), specification=DRAFT7))


def validator_for(document: dict, name: str) -> Draft7Validator:
    """A validator of the message's payload; ``$ref``s resolve inside the document."""
    assert document is load()
    return Draft7Validator({"$ref": f"{BASE}#/components/messages/{name}/payload"}, registry=_registry())


def close_codes(document: dict, address: str) -> dict[int, str]:
    cid = channel_id(document, address)
    return {int(code): text for code, text in document["channels"][cid]["x-close-codes"].items()}
