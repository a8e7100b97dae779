"""
Version 1 of the counting line service of C{tests/integration/test_versions.py}
(version 2 is L{tests.integration.apps.counter_v2}, the new code that takes
over from it, and that it takes over from in a rollback).

Every line C{N payload} is answered with C{N COUNT v1 payload-reversed PAD}:
C{COUNT} is the connection's counter of lines, which must go on across
every takeover, whichever version counts.  The factory counts all lines in
a dictionary, C{totals}.  C{stats} answers with the counters.
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
        log.msg("counter v1 answered its first line")


class CounterLine(LineReceiver):
    def connectionMade(self):
        # Replies pile up in Twisted's buffer when the client reads slowly.
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.factory.clients.append(self)
        self.count = 0

    def lineReceived(self, line):
        if line == b"stats":
            self.sendLine(
                b"stats count=%d open=%d lines=%d"
                % (self.count, len(self.factory.clients), self.factory.totals["lines"])
            )
            return
        _answering()
        self.count += 1
        self.factory.totals["lines"] += 1
        number, _, payload = line.partition(b" ")
        self.sendLine(b"%s %d v1 %s %s" % (number, self.count, payload[::-1], PAD))

    def connectionLost(self, reason):
        if self in self.factory.clients:
            self.factory.clients.remove(self)


class CounterFactory(ServerFactory):
    protocol = CounterLine

    def __init__(self):
        self.clients = []
        self.totals = {"lines": 0}


def registerAdapters(registry):
    # The type names stay the same in every version of the code.
    registry.registerInstance(CounterLine, typeName="counter.Line")
    registry.registerFactory(CounterFactory, typeName="counter.Factory")


def makeService(description):
    from twisted.application import strports

    return strports.service(description, CounterFactory())
