"""
Version 2 of the counting line service of C{tests/integration/test_versions.py}
(version 1 is L{tests.integration.apps.counter_v1}).

What changed since version 1: the connection's counter C{count} is now
called C{seen}; a connection remembers the number of the first line version
2 answered on it (C{firstSeen}, new); the factory counts the lines version
2 answered (C{v2Lines}, new).  Replies are tagged C{v2}.  The adapters
translate version-1 state up and version-2 state down.
"""

import os
import socket

from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import LineReceiver
from twisted.python import log

PAD = b"." * int(os.environ.get("NUMBERED_PAD", "200"))
#: Whether this process has answered a line yet (the test waits for the
#: log line saying so before the next takeover).
_answered = []


def _answering():
    if not _answered:
        _answered.append(True)
        log.msg("counter v2 answered its first line")


class CounterLine(LineReceiver):
    def connectionMade(self):
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.factory.clients.append(self)
        self.seen = 0
        self.firstSeen = None

    def lineReceived(self, line):
        if line == b"stats":
            self.sendLine(
                b"stats seen=%d first=%d open=%d lines=%d v2lines=%d"
                % (
                    self.seen,
                    -1 if self.firstSeen is None else self.firstSeen,
                    len(self.factory.clients),
                    self.factory.totals["lines"],
                    self.factory.v2Lines,
                )
            )
            return
        _answering()
        number, _, payload = line.partition(b" ")
        self.seen += 1
        if self.firstSeen is None:
            self.firstSeen = int(number)
            log.msg(f"counter v2 set firstSeen={self.firstSeen}")
        self.factory.totals["lines"] += 1
        self.factory.v2Lines += 1
        self.sendLine(b"%s %d v2 %s %s" % (number, self.seen, payload[::-1], PAD))

    def connectionLost(self, reason):
        if self in self.factory.clients:
            self.factory.clients.remove(self)


class CounterFactory(ServerFactory):
    protocol = CounterLine

    def __init__(self):
        self.clients = []
        self.totals = {"lines": 0}
        self.v2Lines = 0


# Each step gets a copy of the state dictionary, changes it and returns it.


def upgradeLine(state):
    """
    A version-1 connection's state, made version 2.
    """
    state["seen"] = state.pop("count")
    state["firstSeen"] = None
    return state


def downgradeLine(state):
    """
    A version-2 connection's state, made version 1 (C{firstSeen} is kept
    aside by migrator, and comes back with the next upgrade).
    """
    state["count"] = state.pop("seen")
    del state["firstSeen"]
    return state


def upgradeFactory(state):
    state["v2Lines"] = 0
    return state


def downgradeFactory(state):
    del state["v2Lines"]
    return state


def registerAdapters(registry):
    registry.registerInstance(
        CounterLine,
        typeName="counter.Line",
        version=2,
        upgrades={1: upgradeLine},
        downgrades={1: downgradeLine},
    )
    registry.registerFactory(
        CounterFactory,
        typeName="counter.Factory",
        version=2,
        upgrades={1: upgradeFactory},
        downgrades={1: downgradeFactory},
    )


def makeService(description):
    from twisted.application import strports

    return strports.service(description, CounterFactory())
