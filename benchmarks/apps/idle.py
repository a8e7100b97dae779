"""
The benchmark's service: idle line connections with about 200 bytes of
state each.  C{ping} on a connection answers C{pong <pid> <index>}.
"""

import os

from twisted.application import service, strports
from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import LineReceiver


class IdleLine(LineReceiver):
    def connectionMade(self):
        self.factory.made += 1
        self.index = self.factory.made
        # About 200 bytes of per-connection state.
        self.nickname = f"user-{self.index:06d}"
        self.profile = {"joined": 1700000000 + self.index, "flags": ["a", "b"], "note": "x" * 120}
        self.history = [b"hello", b"world"]

    def lineReceived(self, line):
        if line == b"ping":
            self.sendLine(b"pong %d %d %d" % (os.getpid(), self.index, self.factory.made))


class IdleFactory(ServerFactory):
    protocol = IdleLine

    def __init__(self):
        self.made = 0


def registerAdapters(registry):
    registry.registerInstance(IdleLine)
    registry.registerFactory(IdleFactory)


def state(index):
    """
    Plain state equivalent to one connection's, for the floor measurement.
    """
    return {
        "nickname": f"user-{index:06d}",
        "profile": {"joined": 1700000000 + index, "flags": ["a", "b"], "note": "x" * 120},
        "history": [b"hello", b"world"],
        "index": index,
        "_buffer": b"",
        "line_mode": 1,
        "connected": 1,
    }


application = service.Application("idle")
strports.service(
    os.environ.get("IDLE_LISTEN", "tcp:0:interface=127.0.0.1:backlog=4096"), IdleFactory()
).setServiceParent(application)
