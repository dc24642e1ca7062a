"""The docs cover the code: every message type the server sends has a row in the event catalogue,
and nothing in the repository points outside it."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("wire", "core", "broadcast", "accounts", "system", "notifications", "market", "orders", "margin", "gateway")


def _strings(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.Attribute):
        return constants.get(node.attr)
    return None


def wire_types() -> set[str]:
    """Type strings in the server's code: ``envelope(TYPE, ...)`` calls, ``{"type": ...}`` dicts
    and ``*_TYPE`` constants (module constants resolved across the code base)."""
    trees = [
        ast.parse(path.read_text())
        for package in SOURCES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    ]
    constants = {
        target.id: node.value.value
        for tree in trees
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.isupper()
    }
    found: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "envelope":
                found.add(_strings(node.args[0], constants))
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "type":
                        found.add(_strings(value, constants))
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith("_TYPE") for t in node.targets
            ):
                found.add(_strings(node.value, constants))
    # identifiers only: not layer-message types ("event.message"), not error texts keyed "type"
    return {t for t in found if t and t.replace("_", "").isalnum()}


def test_every_type_on_the_wire_is_in_the_event_catalogue():
    catalogue = (ROOT / "docs" / "reference" / "events.md").read_text()
    types = wire_types()
    assert {"order_update", "market_data_update", "in_app_notification", "connection", "error"} <= types
    missing = sorted(t for t in types if f"`{t}`" not in catalogue)
    assert not missing, f"not in docs/reference/events.md: {missing}"


# The workspace folders beside the repository (spelled in pieces, so this file does not match itself).
OUTSIDE = ("../" + "shared", "/work/" + "shared")


def test_nothing_in_the_repository_points_outside_it():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    offenders = []
    for name in tracked.split():
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".ico", ".lock"}:
            continue
        text = path.read_text(errors="ignore")
        if any(outside in text for outside in OUTSIDE):
            offenders.append(name)
    assert not offenders, offenders
