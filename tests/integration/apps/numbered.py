"""
A line service for the connection-handoff tests: every line C{N payload}
gets the reply C{N payload-reversed} plus padding, so replies pile up in
the server when a client reads slowly.  C{stats} answers with the
factory's counters, C{pid} with the pid of the process serving the
connection.  Its adapters live in L{registerAdapters}, beside the
application, not inside it.

Two lines let a test order events across connections without a delay:
C{mark NAME} (no reply) records that this connection's earlier lines have
all been answered (written to the transport); C{await NAME}, on any
connection, is answered C{marked NAME} once that mark exists.
"""

import os
import socket

from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import LineReceiver

PAD = b"." * int(os.environ.get("NUMBERED_PAD", "200"))


class NumberedLine(LineReceiver):
    def connectionMade(self):
        # A small kernel send buffer makes replies pile up in Twisted's
        # buffer when the client reads slowly: the takeover must carry them.
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.factory.made += 1
        self.factory.clients.append(self)
        self.lines = 0
        self.pids = [os.getpid()]

    def lineReceived(self, line):
        if os.getpid() != self.pids[-1]:
            self.pids.append(os.getpid())
        if line == b"pid":
            self.sendLine(b"pid %d" % os.getpid())
            return
        command, _, name = line.partition(b" ")
        if command == b"mark":
            self.factory.mark(name)
            return
        if command == b"await":
            self.factory.awaitMark(name, self)
            return
        if line == b"stats":
            self.sendLine(
                b"stats made=%d open=%d lines=%d hops=%d shared=%d"
                % (
                    self.factory.made,
                    len(self.factory.clients),
                    self.lines,
                    len(self.pids) - 1,
                    self.factory.shared["lines"],
                )
            )
            return
        self.lines += 1
        self.factory.shared["lines"] += 1
        number, _, payload = line.partition(b" ")
        self.sendLine(number + b" " + payload[::-1] + b" " + PAD)

    def connectionLost(self, reason):
        if self in self.factory.clients:
            self.factory.clients.remove(self)


class NumberedFactory(ServerFactory):
    protocol = NumberedLine

    def __init__(self):
        self.made = 0
        self.clients = []
        self.shared = {"lines": 0}
        self.marks = {}
        self.awaiting = []

    def mark(self, name):
        self.marks[name] = True
        waiting, self.awaiting = self.awaiting, []
        for waiter, wanted in waiting:
            if wanted == name:
                waiter.sendLine(b"marked " + name)
            else:
                self.awaiting.append((waiter, wanted))

    def awaitMark(self, name, protocol):
        if name in self.marks:
            protocol.sendLine(b"marked " + name)
        else:
            self.awaiting.append((protocol, name))


def registerAdapters(registry):
    registry.registerInstance(NumberedLine)
    registry.registerFactory(NumberedFactory)


def makeService(description):
    from twisted.application import strports

    return strports.service(description, NumberedFactory())
