"""The framework-internals check: the server refuses to start on a release or an attribute our
patches were not written for, and names what changed."""

import pytest
from daphne.ws_protocol import WebSocketProtocol

from core import internals


def test_the_installed_frameworks_pass_the_check():
    internals.check()


def test_a_missing_attribute_fails_loudly_and_names_it(monkeypatch):
    monkeypatch.delattr(WebSocketProtocol, "handle_reply")
    with pytest.raises(internals.InternalsChanged) as raised:
        internals.check()
    assert "daphne.ws_protocol.WebSocketProtocol.handle_reply is gone" in str(raised.value)


def test_a_missing_module_fails_loudly(monkeypatch):
    monkeypatch.setattr(internals, "NEEDS", (*internals.NEEDS, ("daphne.no_such_module", None, "x")))
    with pytest.raises(internals.InternalsChanged, match=r"daphne.no_such_module is gone"):
        internals.check()


def test_another_release_fails_loudly(monkeypatch):
    monkeypatch.setitem(internals.VERSIONS, "daphne", "0.0.1")
    with pytest.raises(internals.InternalsChanged) as raised:
        internals.check()
    assert "daphne is 4.2.3, core/internals.py was written against 0.0.1" in str(raised.value)


def test_every_patched_framework_is_pinned_to_the_checked_release():
    """requirements.txt (the hash-locked set) pins exactly the releases the check expects."""
    from pathlib import Path

    lock = Path(__file__).resolve().parents[2].joinpath("requirements.txt").read_text().lower()
    for dist, version in internals.VERSIONS.items():
        names = {dist.lower(), dist.lower().replace("-", "_")}
        assert any(f"{name}=={version}" in lock for name in names), f"{dist}=={version} is not pinned"


def test_an_attribute_init_no_longer_sets_fails_loudly(monkeypatch):
    from twisted.internet.abstract import FileDescriptor

    def __init__(self, reactor=None):  # a release whose FileDescriptor keeps no _tempDataLen
        self.reactor = reactor

    monkeypatch.setattr(FileDescriptor, "__init__", __init__)
    with pytest.raises(internals.InternalsChanged, match=r"FileDescriptor._tempDataLen is gone"):
        internals.check()
