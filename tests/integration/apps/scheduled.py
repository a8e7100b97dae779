"""
A line service for the object-graph tests: connections share one L{Room}
(also held by the factory), and the factory owns scheduled work, a
C{DelayedCall} and a C{LoopingCall}, so that a test can watch all three
across a takeover.  Every reply names the pid that served it, and times
are wall-clock (C{time.time()}, which is also the real reactor's clock).

Commands, one per line, each answered with one line:

  - C{add WORD}: add WORD to the room; C{added WORD PID}.
  - C{room}: the room as this connection's protocol sees it,
    C{room PID ROOMID ITEMS} (ROOMID is the object's id() in the serving
    process, ITEMS comma-separated); C{froom}: the same through the factory.
  - C{schedule SECONDS}: the factory calls L{ScheduledFactory.fire} once,
    SECONDS from now, which sends C{fired PID TIME DEADLINE} to this
    connection and logs C{SCHEDULED FIRED}; answered with
    C{scheduled PID DEADLINE}.
  - C{when}: the pending call's deadline in this process,
    C{when PID DEADLINE}, or C{when PID inactive} if it has fired or was
    cancelled (or none was scheduled).
  - C{due}: make the pending call come due now (C{DelayedCall.reset(0)}):
    the test's gate for "the deadline has come", so that no delay has to
    outlast a takeover; C{due PID DEADLINE} (the deadline it had), or
    C{due PID inactive} (and nothing fires).
  - C{loop SECONDS}: start the factory's loop, which sends
    C{tick N TIME PID} to every connection each SECONDS; C{looping PID}.
  - C{loopinfo}: the loop's schedule in this process,
    C{loopinfo PID STARTTIME INTERVAL NEXT} (C{NEXT}: when its next call
    is due, or C{none}), all as C{repr} of the floats.
  - C{ballast N}: give the factory N small dictionaries to carry (a
    bigger graph, so a longer freeze); C{ballast PID N}.
  - C{stay}: this connection declines to move in a takeover (it stays,
    and keeps the old process alive while it drains); it leaves the
    factory's client list for its list of watchers, which see every tick
    and every C{fired} line too; C{staying PID}.
  - C{decline}: this connection declines to move, but stays in the
    factory's client list (so the factory's graph reaches it);
    C{declining PID}.
  - C{private}: this connection leaves the room and the factory's client
    list, so that nothing it holds is shared (it can move in a batch, or
    in slices, of its own); C{private PID}.
  - C{stats}: C{stats PID made=M open=O}.
  - C{chain N}: this connection holds a linked list of N L{Link} objects
    (the first refers to the next...); C{chained PID N}.  C{walk}: follows
    it, C{walked PID LENGTH FIRST LAST} (the numbers in the first and the
    last link).

Its adapters live in L{registerAdapters}, beside the application.
"""

import os
import time

from twisted.internet import task
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from migrator.interfaces import IAdapter

_log = Logger()


class Room:
    """
    The object the connections share.
    """

    def __init__(self):
        self.items = []


class ScheduledLine(LineReceiver):
    def connectionMade(self):
        self.factory.made += 1
        self.factory.clients.append(self)
        self.room = self.factory.room

    def connectionLost(self, reason):
        for clients in (self.factory.clients, self.factory.watchers):
            if self in clients:
                clients.remove(self)

    def _room(self, room):
        return b"room %d %d %s" % (os.getpid(), id(room), ",".join(room.items).encode())

    def lineReceived(self, line):
        command, _, argument = line.partition(b" ")
        pid = os.getpid()
        if command == b"add":
            self.room.items.append(argument.decode())
            self.sendLine(b"added %s %d" % (argument, pid))
        elif command == b"room":
            self.sendLine(self._room(self.room))
        elif command == b"froom":
            self.sendLine(self._room(self.factory.room))
        elif command == b"schedule":
            deadline = self.factory.schedule(float(argument), self)
            self.sendLine(b"scheduled %d %r" % (pid, deadline))
        elif command == b"when":
            self.sendLine(b"when %d %s" % (pid, self.factory.when()))
        elif command == b"due":
            self.sendLine(b"due %d %s" % (pid, self.factory.due()))
        elif command == b"loop":
            self.factory.startLoop(float(argument))
            self.sendLine(b"looping %d" % (pid,))
        elif command == b"loopinfo":
            self.sendLine(b"loopinfo %d %s" % (pid, self.factory.loopInfo()))
        elif command == b"ballast":
            self.factory.ballast = [{"n": n} for n in range(int(argument))]
            self.sendLine(b"ballast %d %s" % (pid, argument))
        elif command == b"stay":
            self.factory.clients.remove(self)
            self.factory.watchers.append(self)
            self.staying = True
            self.sendLine(b"staying %d" % (pid,))
        elif command == b"decline":
            self.staying = True
            self.sendLine(b"declining %d" % (pid,))
        elif command == b"private":
            self.factory.clients.remove(self)
            self.room = None
            self.sendLine(b"private %d" % (pid,))
        elif command == b"chain":
            head = None
            for n in range(int(argument), 0, -1):
                head = Link(n, head)
            self.chain = head
            self.sendLine(b"chained %d %s" % (pid, argument))
        elif command == b"walk":
            link, length, first, last = self.chain, 0, self.chain.n, 0
            while link is not None:
                length, last, link = length + 1, link.n, link.next
            self.sendLine(b"walked %d %d %d %d" % (pid, length, first, last))
        elif command == b"stats":
            self.sendLine(
                b"stats %d made=%d open=%d" % (pid, self.factory.made, len(self.factory.clients))
            )
        else:
            self.sendLine(b"unknown " + command)


class ScheduledFactory(ServerFactory):
    protocol = ScheduledLine

    def __init__(self):
        self.made = 0
        self.clients = []
        # Connections that stay in this process; never carried.
        self.watchers = []
        self.room = Room()
        self.pending = None
        self.loop = None
        self.ticks = 0

    def schedule(self, delay, protocol):
        """
        Call L{fire} once, C{delay} seconds from now.

        @return: the deadline (wall clock).
        """
        from twisted.internet import reactor

        self.pending = reactor.callLater(delay, self.fire, protocol)
        return self.pending.getTime()

    def _active(self):
        return self.pending is not None and self.pending.active()

    def when(self):
        """
        @return: the pending call's deadline, or C{b"inactive"}.
        """
        if not self._active():
            return b"inactive"
        return b"%r" % (self.pending.getTime(),)

    def due(self):
        """
        Make the pending call come due now, if it is still pending.

        @return: the deadline it had, or C{b"inactive"}.
        """
        if not self._active():
            return b"inactive"
        deadline = self.pending.getTime()
        self.pending.reset(0)
        return b"%r" % (deadline,)

    def loopInfo(self):
        """
        @return: C{STARTTIME INTERVAL NEXT} of the loop.
        """
        loop = self.loop
        if loop is None:
            return b"none none none"
        call = loop.call
        following = b"%r" % (call.getTime(),) if call is not None and call.active() else b"none"
        return b"%r %r %s" % (loop.starttime, loop.interval, following)

    def fire(self, protocol):
        now = time.time()
        deadline = self.pending.getTime()
        _log.info(
            "SCHEDULED FIRED pid={pid} at={now!r} deadline={deadline!r}",
            pid=os.getpid(),
            now=now,
            deadline=deadline,
        )
        line = b"fired %d %r %r" % (os.getpid(), now, deadline)
        for client in [protocol, *self.watchers]:
            client.sendLine(line)

    def startLoop(self, interval):
        if self.loop is not None and self.loop.running:
            return
        # Started on request, never in startFactory: the successor's own
        # factory starts too, and must not run a second loop.
        self.loop = task.LoopingCall(self.tick)
        self.loop.start(interval, now=False)

    def tick(self):
        self.ticks += 1
        line = b"tick %d %r %d" % (self.ticks, time.time(), os.getpid())
        for client in self.clients + self.watchers:
            client.sendLine(line)


@implementer(IAdapter)
class _LineAdapter:
    """
    The default rule for L{ScheduledLine}, except that a connection asked
    to stay declines to move.
    """

    def __init__(self, default):
        self._default = default
        self.cls = default.cls
        self.typeName = default.typeName
        self.version = default.version

    def capture(self, obj):
        return self._default.capture(obj)

    def create(self, context):
        return self._default.create(context)

    def populate(self, obj, state, context):
        self._default.populate(obj, state, context)

    def movable(self, obj):
        return "asked to stay" if getattr(obj, "staying", False) else None


class Link:
    """
    One link of a (long) linked list a connection holds.
    """

    def __init__(self, n, next):
        self.n = n
        self.next = next


def registerAdapters(registry):
    registry.registerInstance(Room)
    registry.registerInstance(Link)
    registry.register(_LineAdapter(registry.registerInstance(ScheduledLine)))
    registry.registerFactory(ScheduledFactory, exclude=("watchers",))


def makeService(description):
    from twisted.application import strports

    return strports.service(description, ScheduledFactory())
