"""daphne's command line, plus a census for tests that check what an open socket keeps (tests/
integration/test_socket_footprint.py): whoever connects to the Unix socket CENSUS_SOCKET gets, after
a full collection, how many objects of each type named in CENSUS_TYPES (or of a subclass) (``module:Class``,
comma-separated) the process holds, as JSON, and the connection closes. Run as ``python -m
tests.integration.daphne_census <daphne's arguments>``."""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys

from daphne.cli import CommandLineInterface  # imports daphne.server, which installs the asyncio reactor
from twisted.internet import protocol, reactor


def counts() -> dict[str, int]:
    gc.collect()
    wanted = {}
    for name in os.environ["CENSUS_TYPES"].split(","):
        module, _, cls = name.partition(":")
        wanted[name] = getattr(importlib.import_module(module), cls)
    found = dict.fromkeys(wanted, 0)
    for obj in gc.get_objects():
        for name, cls in wanted.items():
            if issubclass(type(obj), cls):  # not isinstance: that would evaluate Django's lazy objects
                found[name] += 1
    return found


class Census(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.write(json.dumps(counts()).encode())
        self.transport.loseConnection()


if __name__ == "__main__":
    reactor.callWhenRunning(reactor.listenUNIX, os.environ["CENSUS_SOCKET"], protocol.Factory.forProtocol(Census))
    CommandLineInterface().run(sys.argv[1:])
