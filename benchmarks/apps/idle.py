"""
The benchmark's service: idle line connections with about 200 bytes of
state each.  C{ping} on a connection answers C{pong <pid> <index>}.

C{big KIND N} gives the connection a large state, answered with C{big
<pid> N}: KIND C{bytes} is one bytes object of N bytes, C{list} a list of
N // 100 strings of 100 bytes each, C{dicts} a list of N // 100
dictionaries with a 60-byte string each (N bytes of plain data, more
objects).

With C{IDLE_PROBE} set in the environment, a C{LoopingCall} runs every
millisecond and logs C{PROBE turn X ms at T} when it ran more than 5 ms
late (the reactor was busy for that long: one long turn), T being the
wall-clock time.
"""

import os
import time

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
        elif line.startswith(b"big "):
            _, kind, size = line.split()
            n = int(size)
            if kind == b"bytes":
                self.big = os.urandom(16) * (n // 16)
            elif kind == b"list":
                self.big = [f"{i:099d}x" for i in range(n // 100)]
            else:
                self.big = [{"i": i, "s": f"{i:059d}"} for i in range(n // 100)]
            self.sendLine(b"big %d %d" % (os.getpid(), n))


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


def probe(interval=0.001, threshold=0.005):
    """
    Log every reactor turn that delayed a call due every C{interval}
    seconds by more than C{threshold} (see the module docstring).
    """
    from twisted.internet import task
    from twisted.python import log

    last = [time.monotonic()]

    def tick():
        now = time.monotonic()
        late = now - last[0] - interval
        last[0] = now
        if late > threshold:
            log.msg(f"PROBE turn {late * 1000:.1f} ms at {time.time():.3f}")

    task.LoopingCall(tick).start(interval, now=False)


application = service.Application("idle")
if os.environ.get("IDLE_PROBE"):
    probe()
strports.service(
    os.environ.get("IDLE_LISTEN", "tcp:0:interface=127.0.0.1:backlog=4096"), IdleFactory()
).setServiceParent(application)
