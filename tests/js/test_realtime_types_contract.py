"""The `@axisor/realtime` types (clients/js/src/types.ts) against the AsyncAPI document
(docs/asyncapi.yaml): every message the server sends has a TypeScript interface with the same
fields, optional exactly where the document does not require them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())["components"]["schemas"]
TYPES = (ROOT / "clients" / "js" / "src" / "types.ts").read_text()

# AsyncAPI schema (a dotted path into its properties) → the TypeScript interface.
INTERFACES = {
    "Connection": "ConnectionMessage",
    "Error": "ErrorMessage",
    "AuthExpiring": "AuthExpiringMessage",
    "RoomSubscription": "RoomSubscriptionMessage",
    "RoomList": "RoomListMessage",
    "Pong": "PongMessage",
    "Resumed": "ResumedMessage",
    "OrdersResumed": "OrdersResumedMessage",
    "ResumeFailed": "ResumeFailedMessage",
    "Heartbeat": "HeartbeatMessage",
    "OrderUpdate": "OrderUpdate",
    "OrderUpdateFrame": "OrderUpdateFrame",
    "GuardPosition": "GuardPosition",
    "MarketData": "MarketData",
    "PriceAlertEvent.data": "PriceAlert",
    "MarginGuardExecutionEvent.data": "MarginGuardExecution",
    "AutoCloseExecutionEvent.data": "AutoCloseExecution",
    "InAppNotificationEvent.data": "InAppNotification",
    "NotificationStatusEvent.data": "NotificationStatus",
    "HistoricalDataEvent.data": "HistoricalData",
    "PositionStatusEvent.data": "PositionStatus",
    "PositionStatusEvent.data.position": "Position",
    "ServerMaintenanceEvent.data": "ServerMaintenance",
    "ServiceStatusEvent.data": "ServiceStatus",
    "AdminEventsEvent.data": "AdminEvents",
    "AdminStatsEvent.data": "AdminStats",
}
# Fields the TypeScript adds on purpose: `OrderUpdate` is also the element type the clients'
# order handlers get on both sockets, where /ws/orders frames carry these.
EXTRA = {"OrderUpdate": {"seq", "snapshot"}}
CLIENT_MESSAGES = {"Auth", "Subscribe", "Unsubscribe", "ListRooms", "Resume", "Ping"}


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def fields_of_schema(schema: dict) -> tuple[dict, set[str]]:
    schema = resolve(schema)
    props: dict = {}
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        more, more_required = fields_of_schema(part)
        props.update(more)
        required |= more_required
    props.update(schema.get("properties", {}))
    return props, required


def fields_of_interface(name: str) -> dict[str, bool]:
    """Field → required, for `export interface name [extends base] {…}` (the base's fields too)."""
    m = re.search(rf"export interface {name}(?: extends (\w+))? \{{\n(.*?)\n\}}", TYPES, re.S)
    assert m, f"types.ts has no interface {name}"
    fields = fields_of_interface(m.group(1)) if m.group(1) else {}
    for line in m.group(2).splitlines():
        if f := re.match(r"  (\w+)(\?)?:", line):
            fields[f.group(1)] = not f.group(2)
    return fields


def schema_at(path: str) -> dict:
    name, *inside = path.split(".")
    schema = SCHEMAS[name]
    for key in inside:
        schema = fields_of_schema(schema)[0][key]
    return schema


@pytest.mark.parametrize("path", sorted(INTERFACES))
def test_interface_has_the_documented_fields(path):
    name = INTERFACES[path]
    props, required = fields_of_schema(schema_at(path))
    fields = fields_of_interface(name)
    extra = EXTRA.get(name, set())
    assert set(fields) - extra == set(props), (
        f"{name}: TS only {set(fields) - set(props) - extra}, AsyncAPI only {set(props) - set(fields)}"
    )
    wrong = {k for k in props if fields[k] != (k in required)}
    assert not wrong, f"{name}: required in one and optional in the other: {sorted(wrong)}"


def test_every_server_message_schema_is_typed():
    typed = {path.split(".")[0] for path in INTERFACES}
    with_type = {n for n, s in SCHEMAS.items() if "type" in fields_of_schema(s)[0] or n.endswith("Event")}
    untyped = with_type - typed - CLIENT_MESSAGES - {"OrderUpdateEvent", "MarketDataEvent"}
    assert not untyped, f"AsyncAPI messages without a TypeScript interface: {sorted(untyped)}"
    # OrderUpdateEvent's data is OrderUpdate and MarketDataEvent's is MarketData, both checked above.
    for event, data in (("OrderUpdateEvent", "OrderUpdate"), ("MarketDataEvent", "MarketData")):
        assert resolve(fields_of_schema(SCHEMAS[event])[0]["data"]) is SCHEMAS[data]
