# -*- test-case-name: tests.test_connections -*-
"""
Tests for L{migrator.state._capture} and L{migrator.state._restore}: capturing established connections and
their object graph in the incumbent, restoring them in the successor.

Both sides run in this process, each on its own L{MemoryReactorClock}
(fd sets and a clock, no I/O loop: the tests call C{doRead}/C{doWrite}
themselves).  The connections are real: loopback TCP connections accepted
by a real listening C{tcp.Port}, or C{tcp.Server} transports over one end
of a UNIX socket pair.  The successor's transports are built on duplicates
of the incumbent's descriptors, as they would be after passing them.
"""

from __future__ import annotations

import errno
import gc
import itertools
import os
import select
import socket
from typing import Any

from twisted.internet import task, tcp, udp, unix
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import releaseConnection, releasePort
from migrator.state._capture import Captured, captureConnections
from migrator.state._capturehooks import ungated
from migrator.state._graph import GraphError, dumpsPlain
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.state._restore import Restored, _Gate, _RestoreHooks, restoreConnections
from migrator.takeover._ports import ListenerRegistry

#: The key the test ports are declared under, in both processes.
_KEY = "tcp:0:127.0.0.1#0"

#: How long to wait for the kernel to make a socket ready (never reached
#: when things work: loopback and socket pairs are ready at once).
_READY = 5.0

#: Every C{connectionMade} call, in order.
_made: list[Any] = []

#: What protocols did, as C{(what, protocol, when)}.
_events: list[tuple[str, Any, float]] = []

_sessions = itertools.count(1)


def ring(protocol: Any) -> None:
    """
    A plain function as the target of a scheduled call.
    """
    _events.append(("ring", protocol, protocol.clock.seconds()))


class Numbered(LineReceiver):
    """
    Answers each line with its number; joins its factory's room.
    """

    def connectionMade(self) -> None:
        _made.append(self)
        self.count = 0
        self.factory.clients.append(self)

    def lineReceived(self, line: bytes) -> None:
        self.count += 1
        self.sendLine(b"%d:%s" % (self.count, line))

    def connectionLost(self, reason: Any = None) -> None:
        _events.append(("lost", self, 0.0))


class Room(ServerFactory):
    """
    A factory with configuration (C{greeting}) and state shared by its
    protocols (C{clients}, C{shared}).
    """

    protocol = Numbered

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting
        self.clients: list[Numbered] = []
        self.shared: dict[str, Any] = {"hits": 0}


class Loner(LineReceiver):
    """
    A protocol on its own (no factory), with a timer and a loop on a clock.
    """

    def connectionMade(self) -> None:
        _made.append(self)
        self.count = 0

    def lineReceived(self, line: bytes) -> None:
        self.count += 1
        self.sendLine(b"%d:%s" % (self.count, line))

    def schedule(self, clock: Any, timeout: float, interval: float) -> Deferred[Any]:
        """
        Time out after C{timeout} and tick every C{interval} seconds.

        @return: the loop's L{Deferred} (which is not part of the state).
        """
        self.clock = clock
        self.timer = clock.callLater(timeout, self.timedOut)
        self.loop = task.LoopingCall(self.tick)
        self.loop.clock = clock
        return self.loop.start(interval, now=False)

    def timedOut(self) -> None:
        _events.append(("timeout", self, self.clock.seconds()))

    def tick(self) -> None:
        _events.append(("tick", self, self.clock.seconds()))

    def connectionLost(self, reason: Any = None) -> None:
        _events.append(("lost", self, 0.0))


class Stranger(Loner):
    """
    A protocol no registry has an adapter for.
    """


class Newcomer(Loner):
    """
    A protocol only the incumbent has an adapter for.
    """


class _Reactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose C{listenTCP} makes a real listening
    C{tcp.Port} (registered in the fake fd set; connections are accepted by
    calling its C{doRead}).
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = tcp.Port(port, factory, backlog, interface, self)
        listening.startListening()
        return listening

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        listening = udp.Port(port, protocol, interface, maxPacketSize, self)
        listening.startListening()
        return listening


def _registry(*classes: type) -> AdapterRegistry:
    registry = AdapterRegistry()
    registry.registerFactory(Room, keep=("greeting",))
    for cls in classes:
        registry.registerInstance(cls)
    return registry


def _waitReadable(fd: int) -> None:
    readable, _, _ = select.select([fd], [], [], _READY)
    if not readable:
        raise AssertionError(f"descriptor {fd} did not become readable")


def _recvExactly(skt: socket.socket, n: int) -> bytes:
    """
    Read exactly C{n} bytes, waiting for each chunk (not sleeping).
    """
    chunks = []
    while n > 0:
        _waitReadable(skt.fileno())
        chunk = skt.recv(n)
        if not chunk:
            raise AssertionError("unexpected end of stream")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _assertNothingToRead(test: SynchronousTestCase, skt: socket.socket) -> None:
    """
    Nothing (in particular, no end of stream) is waiting on C{skt}.
    """
    skt.setblocking(False)
    try:
        test.assertRaises(BlockingIOError, skt.recv, 1)
    finally:
        skt.setblocking(True)


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def _restoredFor(restored: Restored, client: socket.socket) -> Any:
    """
    The restored protocol of the connection whose client is C{client}.
    """
    [protocol] = [
        t.protocol for t in restored.transports if t.getPeer().port == client.getsockname()[1]
    ]
    return protocol


def _openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class _Sides(SynchronousTestCase):
    """
    An incumbent and a successor, each with its reactor, port registry,
    adapter registry and a listening port declared as L{_KEY}.
    """

    def setUp(self) -> None:
        del _made[:], _events[:]
        self.reactor = _Reactor()
        self.ports = ListenerRegistry(self.reactor)
        self.ports.install()
        self.factory = Room("old")
        self.port = self.reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(releasePort, self.port)
        self.adapters = _registry(Numbered, Loner, Newcomer)

        self.reactor2 = _Reactor()
        self.ports2 = ListenerRegistry(self.reactor2)
        self.ports2.install()
        self.factory2 = Room("new")
        self.port2 = self.reactor2.listenTCP(0, self.factory2, interface="127.0.0.1")
        self.addCleanup(releasePort, self.port2)
        self.adapters2 = _registry(Numbered, Loner)

    # -- the incumbent's connections ----------------------------------------

    def accept(self) -> tuple[Numbered, socket.socket]:
        """
        Connect a client to the incumbent's port and accept it.

        @return: the server's protocol and the client's socket.
        """
        client = socket.create_connection(self.port.socket.getsockname(), timeout=_READY)
        self.addCleanup(client.close)
        count = len(self.factory.clients)
        _waitReadable(self.port.fileno())
        self.port.doRead()
        self.assertEqual(len(self.factory.clients), count + 1)
        protocol = self.factory.clients[-1]
        self.addCleanup(releaseConnection, protocol.transport)
        return protocol, client

    def pair(self, protocol: Any) -> socket.socket:
        """
        Connect C{protocol} to a C{tcp.Server} over one end of a UNIX
        socket pair (no port: like an outgoing connection).

        @return: the other end.
        """
        mine, peer = socket.socketpair(socket.AF_UNIX)
        self.addCleanup(mine.close)
        self.addCleanup(peer.close)
        peer.settimeout(_READY)
        mine.setblocking(False)
        transport = tcp.Server(mine, protocol, ("pair", 0), None, next(_sessions), self.reactor)
        transport.repstr = f"<pair {transport.sessionno}>"
        self.addCleanup(releaseConnection, transport)
        protocol.makeConnection(transport)
        self.ports.trackConnection(transport)
        return peer

    def feed(self, transport: Any, client: socket.socket, data: bytes) -> None:
        """
        Send C{data} from the client and let C{transport} read it.
        """
        client.sendall(data)
        _waitReadable(transport.fileno())
        self.assertIsNone(transport.doRead())

    def flush(self, transport: Any) -> None:
        """
        Write what C{transport} has queued, as the reactor would.
        """
        while transport in transport.reactor.getWriters():
            self.assertIsNone(transport.doWrite())

    # -- the takeover --------------------------------------------------------

    def capture(self, claimed: frozenset[str] = frozenset({_KEY})) -> Captured:
        """
        Capture in the incumbent what the successor (L{adapters2}) can
        restore, for the declared ports C{claimed}.
        """
        return captureConnections(
            self.reactor,
            self.ports,
            self.adapters,
            claimed,
            frozenset(self.adapters2.typeNames()),
        )

    def restore(self, captured: Captured) -> Restored:
        """
        Restore in the successor from duplicates of the captured
        descriptors (the incumbent keeps its own, as after C{sendmsg}).
        """
        fds = [os.dup(fd) for fd in captured.fds]
        restored = restoreConnections(
            self.reactor2, self.ports2, self.adapters2, captured.payload, fds
        )
        for transport in restored.transports:
            self.addCleanup(releaseConnection, transport)
        return restored


class CaptureRestoreTests(_Sides):
    """
    A connection moves with its protocol's state, its unparsed input and
    its unsent output, without a second C{connectionMade}.
    """

    def test_stateTravels(self) -> None:
        """
        The restored protocol is a new instance of the successor's class,
        with the incumbent's unparsed bytes (C{_buffer}) and counters,
        attached to a new transport on another descriptor, to the
        successor's factory.
        """
        p, client = self.accept()
        self.feed(p.transport, client, b"one\r\ntw")
        self.assertEqual((p.count, p._buffer), (1, b"tw"))
        captured = self.capture()
        self.assertEqual((captured.count, captured.moved), (1, {Numbered.__module__ + ".Numbered": 1}))
        self.assertEqual(captured.staying, {})
        restored = self.restore(captured)
        self.assertEqual(restored.count, 1)
        [t] = restored.transports
        r = t.protocol
        self.assertIsNot(r, p)
        self.assertIs(type(r), Numbered)
        self.assertEqual((r.count, r._buffer), (1, b"tw"))
        self.assertIs(r.transport, t)
        self.assertIsNot(t, p.transport)
        self.assertIsInstance(t, tcp.Server)
        self.assertNotEqual(t.fileno(), p.transport.fileno())
        self.assertEqual(t.getPeer().port, client.getsockname()[1])
        self.assertIs(r.factory, self.factory2)
        self.assertIs(t.server, self.port2)
        self.assertIn(t, list(self.ports2.openConnections()))

    def test_besideUDPPorts(self) -> None:
        """
        A UDP port (it has a protocol, no factory) among the ports of either
        side, declared by both, does not disturb the capture or the
        restore: the stream port's connections move.
        """
        for reactor in (self.reactor, self.reactor2):
            udpPort = reactor.listenUDP(0, DatagramProtocol(), "127.0.0.1")
            self.addCleanup(releasePort, udpPort)
        p, client = self.accept()
        captured = self.capture(frozenset({_KEY, "udp:0:127.0.0.1#0"}))
        self.assertEqual(captured.count, 1)
        restored = self.restore(captured)
        self.assertEqual(restored.count, 1)
        [t] = restored.transports
        self.assertIs(t.protocol.factory, self.factory2)

    def test_noConnectionMade(self) -> None:
        """
        C{connectionMade} ran once per connection, in the incumbent, over
        capture, restore and activation.
        """
        p1, _ = self.accept()
        p2, _ = self.accept()
        restored = self.restore(self.capture())
        restored.activate()
        self.assertEqual(_made, [p1, p2])

    def test_frozenAndNotReading(self) -> None:
        """
        After the capture, the incumbent's transport neither reads nor
        writes; the successor's does neither until L{Restored.activate},
        then both (it has the incumbent's unsent bytes to write).
        """
        p, client = self.accept()
        self.feed(p.transport, client, b"one\r\n")
        self.assertIn(p.transport, self.reactor.getWriters())
        captured = self.capture()
        self.assertTrue(captured.frozen)
        self.assertNotIn(p.transport, self.reactor.getReaders())
        self.assertNotIn(p.transport, self.reactor.getWriters())
        restored = self.restore(captured)
        [t] = restored.transports
        self.assertNotIn(t, self.reactor2.getReaders())
        self.assertNotIn(t, self.reactor2.getWriters())
        restored.activate()
        self.assertIn(t, self.reactor2.getReaders())
        self.assertIn(t, self.reactor2.getWriters())

    def test_pendingWrittenFirst(self) -> None:
        """
        The incumbent's unsent bytes are written by the successor before
        anything the successor writes itself, even when it reads (and
        answers) before its first write; the input the client sent during
        the takeover is read by the successor, which finishes the line the
        incumbent had started.
        """
        p, client = self.accept()
        self.feed(p.transport, client, b"one\r\ntw")
        captured = self.capture()
        client.sendall(b"o\r\nthree\r\n")
        restored = self.restore(captured)
        captured.release()
        restored.activate()
        [t] = restored.transports
        _waitReadable(t.fileno())
        self.assertIsNone(t.doRead())
        self.flush(t)
        expected = b"1:one\r\n2:two\r\n3:three\r\n"
        self.assertEqual(_recvExactly(client, len(expected)), expected)
        _assertNothingToRead(self, client)

    def test_severalOnOnePort(self) -> None:
        """
        Several connections of one port (the successor builds the second
        and later transports of a port as copies of the first) each get
        their own transport, peer and buffers, and each answers its own
        client after the commit.
        """
        accepted = [self.accept() for _ in range(3)]
        for i, (p, client) in enumerate(accepted):
            self.feed(p.transport, client, b"x" * i + b"\r\n")
        restored = self.restore(self.capture())
        restored.activate()
        self.assertEqual(len({t.fileno() for t in restored.transports}), 3)
        self.assertEqual(len({id(t._tempDataBuffer) for t in restored.transports}), 3)
        self.assertEqual(len({t.sessionno for t in restored.transports}), 3)
        for i, (_, client) in enumerate(accepted):
            r = _restoredFor(restored, client)
            t = r.transport
            self.assertIs(t.protocol, r)
            self.assertIs(t.server, self.port2)
            self.assertEqual(t.getPeer().port, client.getsockname()[1])
            self.assertIn(f"#{t.sessionno} on ", repr(t))
            self.feed(t, client, b"next\r\n")
            self.flush(t)
            expected = b"1:" + b"x" * i + b"\r\n2:next\r\n"
            self.assertEqual(_recvExactly(client, len(expected)), expected)

    def test_collectorPaused(self) -> None:
        """
        The garbage collector does not run while connections are captured
        or restored, and runs again afterwards.
        """
        seen: list[tuple[str, bool]] = []

        class Spy(InstanceAdapter):
            def capture(self, obj: Any) -> dict[str, Any]:
                seen.append(("capture", gc.isenabled()))
                return InstanceAdapter.capture(self, obj)

            def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
                seen.append(("populate", gc.isenabled()))
                InstanceAdapter.populate(self, obj, state, context)

        self.adapters.register(Spy(Loner))
        self.adapters2.register(Spy(Loner))
        self.addCleanup(gc.enable if gc.isenabled() else gc.disable)
        gc.enable()
        self.pair(Loner())
        captured = self.capture()
        self.assertTrue(gc.isenabled())
        self.restore(captured)
        self.assertTrue(gc.isenabled())
        self.assertEqual(seen, [("capture", False), ("populate", False)])

    def test_partlyWrittenOutput(self) -> None:
        """
        Output the incumbent had partly written (an offset into its
        C{dataBuffer}, more in C{_tempDataBuffer}) arrives complete and in
        order, the successor writing exactly the part the incumbent had
        not.
        """
        p, client = self.accept()
        # More than one doWrite sends (SEND_LIMIT), so some stays behind.
        body = b"".join(b"%08d\n" % i for i in range(100000))
        p.transport.write(body)
        self.assertIsNone(p.transport.doWrite())
        self.assertGreater(p.transport.offset, 0)
        self.assertLess(p.transport.offset, len(body))
        p.transport.write(b"tail")
        captured = self.capture()
        restored = self.restore(captured)
        captured.release()
        restored.activate()
        [t] = restored.transports
        received = []
        total = 0
        while total < len(body) + 4:
            if t in self.reactor2.getWriters():
                self.assertIsNone(t.doWrite())
            _waitReadable(client.fileno())
            chunk = client.recv(65536)
            self.assertTrue(chunk)
            received.append(chunk)
            total += len(chunk)
        self.assertEqual(b"".join(received), body + b"tail")

    def test_sharedObjectsStayShared(self) -> None:
        """
        Two protocols sharing a dict and a list still share them after the
        move (new objects, equal to the old), and the successor's factory
        holds the same dict and the restored protocols.
        """
        p1, c1 = self.accept()
        p2, c2 = self.accept()
        log: list[Any] = ["x"]
        p1.box = p2.box = self.factory.shared
        p1.log = p2.log = log
        self.factory.shared["hits"] = 7
        restored = self.restore(self.capture())
        r1, r2 = _restoredFor(restored, c1), _restoredFor(restored, c2)
        self.assertIs(r1.box, r2.box)
        self.assertIs(r1.log, r2.log)
        self.assertIsNot(r1.log, log)
        self.assertEqual(r1.log, ["x"])
        self.assertIs(r1.box, self.factory2.shared)
        self.assertEqual(self.factory2.shared, {"hits": 7})
        self.assertEqual(len(self.factory2.clients), 2)
        self.assertIs(self.factory2.clients[0], r1)
        self.assertIs(self.factory2.clients[1], r2)

    def test_factoryConfigurationKept(self) -> None:
        """
        The successor's factory keeps what its adapter keeps (its new
        configuration) and its own port count, and takes the rest of the
        incumbent's factory's state; the incumbent's factory is unchanged.
        """
        p, _ = self.accept()
        self.restore(self.capture())
        self.assertEqual(self.factory2.greeting, "new")
        self.assertEqual(self.factory2.numPorts, 1)
        self.assertEqual(len(self.factory2.clients), 1)
        self.assertEqual(self.factory.clients, [p])
        self.assertEqual(self.factory.greeting, "old")

    def test_unixPair(self) -> None:
        """
        A connection over a UNIX socket (here with no port) moves too, as a
        UNIX transport of the successor's reactor, which can describe
        itself.
        """
        p = Loner()
        peer = self.pair(p)
        peer.sendall(b"a\r\nb")
        _waitReadable(p.transport.fileno())
        p.transport.doRead()
        captured = self.capture()
        restored = self.restore(captured)
        captured.release()
        [t] = restored.transports
        self.assertIsInstance(t, unix.Server)
        self.assertIs(t.reactor, self.reactor2)
        self.assertIn("Loner", repr(t))
        self.assertEqual((t.protocol.count, t.protocol._buffer), (1, b"b"))
        restored.activate()
        peer.sendall(b"\r\n")
        _waitReadable(t.fileno())
        t.doRead()
        self.flush(t)
        self.assertEqual(_recvExactly(peer, 10), b"1:a\r\n2:b\r\n")


class StayingTests(_Sides):
    """
    What cannot move stays with the incumbent (reported, per class, with a
    reason), and does not stop the others.
    """

    def test_staying(self) -> None:
        """
        A protocol with no adapter, one with no adapter in the successor
        and one with an object without adapter in its state all stay,
        unfrozen, each with its reason; the one that can move moves.
        """
        mover, stranger, newcomer, burdened = Loner(), Stranger(), Newcomer(), Loner()
        for protocol in (mover, stranger, newcomer, burdened):
            self.pair(protocol)
        burdened.friend = Stranger()
        captured = self.capture()
        module = Loner.__module__
        self.assertEqual(captured.moved, {f"{module}.Loner": 1})
        self.assertEqual(captured.transports, [mover.transport])
        staying = dict(captured.staying)
        self.assertEqual(staying.pop(f"{module}.Stranger: no adapter"), 1)
        self.assertEqual(staying.pop(f"{module}.Newcomer: no adapter in the successor"), 1)
        [(reason, n)] = staying.items()
        self.assertEqual(n, 1)
        self.assertTrue(reason.startswith(f"{module}.Loner: "), reason)
        self.assertIn("['friend']", reason)
        self.assertIn(f"no adapter for {module}.Stranger", reason)
        for protocol in (stranger, newcomer, burdened):
            self.assertIn(protocol.transport, self.reactor.getReaders())
        self.assertNotIn(mover.transport, self.reactor.getReaders())
        restored = self.restore(captured)
        self.assertEqual([type(t.protocol) for t in restored.transports], [Loner])

    def test_undeclaredPort(self) -> None:
        """
        A connection accepted by a port the successor does not declare
        stays, saying so.
        """
        p, _ = self.accept()
        captured = self.capture(claimed=frozenset())
        self.assertEqual(captured.count, 0)
        self.assertEqual(captured.moved, {})
        [(reason, n)] = captured.staying.items()
        self.assertEqual(n, 1)
        self.assertTrue(reason.startswith(f"{Numbered.__module__}.Numbered: "), reason)
        self.assertIn("a connection of a port the successor does not declare", reason)
        self.assertIn(p.transport, self.reactor.getReaders())

    def test_nothingToMove(self) -> None:
        """
        A capture with nothing to move restores to nothing.
        """
        captured = self.capture()
        self.assertEqual((captured.count, captured.fds), (0, []))
        restored = self.restore(captured)
        self.assertEqual(restored.count, 0)
        restored.activate()


class ThawTests(_Sides):
    """
    L{Captured.thaw}: the takeover was abandoned, the incumbent carries on.
    """

    def test_resumesReadingAndWriting(self) -> None:
        """
        After thawing, the transport reads and writes again: its unsent
        bytes go out, new input is answered.
        """
        p, client = self.accept()
        self.feed(p.transport, client, b"one\r\n")
        captured = self.capture()
        client.sendall(b"two\r\n")
        captured.thaw()
        self.assertFalse(captured.frozen)
        self.assertIn(p.transport, self.reactor.getReaders())
        self.assertIn(p.transport, self.reactor.getWriters())
        _waitReadable(p.transport.fileno())
        p.transport.doRead()
        self.flush(p.transport)
        self.assertEqual(_recvExactly(client, 14), b"1:one\r\n2:two\r\n")

    def test_notReadingStaysNotReading(self) -> None:
        """
        A transport that was not reading before the freeze (paused) is not
        made to read by the thaw.
        """
        p, client = self.accept()
        p.transport.pauseProducing()
        captured = self.capture()
        captured.thaw()
        self.assertNotIn(p.transport, self.reactor.getReaders())

    def test_callsAtOriginalTime(self) -> None:
        """
        A timer and a loop suspended by the freeze fire at their original
        times after the thaw, and not while frozen.
        """
        p = Loner()
        self.pair(p)
        done = p.schedule(self.reactor, 10, 4)
        self.reactor.advance(1)
        captured = self.capture()
        self.assertEqual(captured.count, 1)
        self.reactor.advance(1)
        captured.thaw()
        self.reactor.advance(1)
        self.assertEqual(_events, [])
        for _ in range(9):
            self.reactor.advance(1)
        self.assertEqual(
            [(what, when) for what, _, when in _events],
            [("tick", 4.0), ("tick", 8.0), ("timeout", 10.0), ("tick", 12.0)],
        )
        self.assertNoResult(done)

    def test_dueWhileFrozen(self) -> None:
        """
        A timer that came due while frozen fires once, right after the
        thaw; the loop then keeps its cadence.
        """
        p = Loner()
        self.pair(p)
        p.schedule(self.reactor, 3, 4)
        captured = self.capture()
        self.reactor.advance(5)
        self.assertEqual(_events, [])
        captured.thaw()
        self.reactor.advance(0)
        self.reactor.advance(3)
        self.reactor.advance(4)
        self.assertEqual(
            sorted((when, what) for what, _, when in _events),
            [(5.0, "tick"), (5.0, "timeout"), (8.0, "tick"), (12.0, "tick")],
        )

    def test_thawTwice(self) -> None:
        """
        Thawing what is not frozen does nothing.
        """
        p = Loner()
        self.pair(p)
        captured = self.capture()
        captured.thaw()
        p.transport.stopReading()
        captured.thaw()
        self.assertNotIn(p.transport, self.reactor.getReaders())


class ReleaseTests(_Sides):
    """
    L{Captured.release}: the successor owns the connections now.
    """

    def test_closesWithoutShutdown(self) -> None:
        """
        Releasing closes the incumbent's handle only: the client sees no
        end of stream, and another descriptor of the same socket (the
        successor's) still talks to it both ways.  The protocol's
        C{connectionLost} does not run.
        """
        p, client = self.accept()
        captured = self.capture()
        other = socket.socket(fileno=os.dup(captured.fds[0]))
        self.addCleanup(other.close)
        captured.release()
        self.assertFalse(p.transport.connected)
        self.assertEqual(p.transport.fileno(), -1)
        self.assertEqual(p.transport.socket.fileno(), -1)
        _assertNothingToRead(self, client)
        other.sendall(b"still here")
        self.assertEqual(_recvExactly(client, 10), b"still here")
        client.sendall(b"me too")
        self.assertEqual(_recvExactly(other, 6), b"me too")
        self.assertEqual(_events, [])

    def test_cancelsCalls(self) -> None:
        """
        Releasing cancels the captured timers and stops the captured loops
        without firing their L{Deferred}: nothing runs in the incumbent any
        more.
        """
        p = Loner()
        self.pair(p)
        done = p.schedule(self.reactor, 10, 4)
        self.reactor.advance(1)
        captured = self.capture()
        captured.release()
        self.assertTrue(p.timer.cancelled)
        self.assertFalse(p.loop.running)
        self.assertNoResult(done)
        self.reactor.advance(100)
        self.assertEqual(_events, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class RestoredCallsTests(_Sides):
    """
    Scheduled work restored in the successor: held until the commit, then
    at the original times, exactly once.
    """

    def test_originalTimes(self) -> None:
        """
        A timer and a loop due after the activation fire at the times the
        incumbent had scheduled them for, on the successor's clock.
        """
        p = Loner()
        self.pair(p)
        p.schedule(self.reactor, 5, 4)
        self.reactor.advance(1)
        self.reactor2.advance(2)
        captured = self.capture()
        restored = self.restore(captured)
        captured.release()
        restored.activate()
        [t] = restored.transports
        r = t.protocol
        self.assertIs(r.clock, self.reactor2)
        for _ in range(8):
            self.reactor2.advance(1)
        self.assertEqual(
            [(what, who, when) for what, who, when in _events],
            [("tick", r, 4.0), ("timeout", r, 5.0), ("tick", r, 8.0)],
        )
        self.assertTrue(r.loop.running)
        self.assertIs(r.loop.clock, self.reactor2)

    def test_pastDeadlineHeld(self) -> None:
        """
        A timer whose deadline passed before the activation is held (also
        when the successor's clock runs) and fires once, at the activation;
        a loop that came due fires once too and then keeps its cadence.
        """
        p = Loner()
        self.pair(p)
        p.schedule(self.reactor, 5, 4)
        self.reactor.advance(1)
        captured = self.capture()
        self.reactor2.advance(10)
        restored = self.restore(captured)
        self.reactor2.advance(0)
        self.reactor2.advance(1)
        self.assertEqual(_events, [])
        captured.release()
        restored.activate()
        self.assertEqual(
            sorted((what, when) for what, _, when in _events),
            [("tick", 11.0), ("timeout", 11.0)],
        )
        del _events[:]
        self.reactor2.advance(1)
        self.reactor2.advance(4)
        self.assertEqual([(what, when) for what, _, when in _events], [("tick", 12.0), ("tick", 16.0)])

    def test_cancelledTimer(self) -> None:
        """
        A timer cancelled before the capture is restored as a cancelled
        call, and never fires.
        """
        p = Loner()
        self.pair(p)
        p.schedule(self.reactor, 5, 4)
        p.timer.cancel()
        p.loop.stop()
        restored = self.restore(self.capture())
        restored.activate()
        r = restored.transports[0].protocol
        self.assertFalse(r.timer.active())
        self.assertFalse(r.loop.running)
        self.reactor2.advance(100)
        self.assertEqual(_events, [])

    def test_rollback(self) -> None:
        """
        L{Restored.rollback} cancels the held calls (due or not), releases
        the successor's transports without touching the connection, and
        the thawed incumbent carries on serving it.
        """
        p = Loner()
        peer = self.pair(p)
        p.schedule(self.reactor, 5, 4)
        peer.sendall(b"one\r\n")
        _waitReadable(p.transport.fileno())
        p.transport.doRead()
        captured = self.capture()
        self.reactor2.advance(4.5)
        restored = self.restore(captured)
        self.reactor2.advance(0)
        [t] = restored.transports
        restored.rollback()
        self.assertFalse(t.connected)
        self.assertEqual(list(self.ports2.openConnections()), [])
        self.reactor2.advance(100)
        self.assertEqual(_events, [])
        self.assertFalse(t.protocol.loop.running)

        captured.thaw()
        self.flush(p.transport)
        self.assertEqual(_recvExactly(peer, 7), b"1:one\r\n")
        peer.sendall(b"two\r\n")
        _waitReadable(p.transport.fileno())
        p.transport.doRead()
        self.flush(p.transport)
        self.assertEqual(_recvExactly(peer, 7), b"2:two\r\n")
        self.reactor.advance(5)
        self.assertEqual([(what, who) for what, who, _ in _events], [("tick", p), ("timeout", p)])


class SpecialValueTests(_Sides):
    """
    Plain functions, and scheduled work the successor could not run the
    same way.
    """

    def test_allowedFunction(self) -> None:
        """
        A scheduled call of an allowed plain function moves, with its
        arguments (here the protocol itself, restored).
        """
        self.adapters.allowFunction(ring)
        self.adapters2.allowFunction(ring)
        p = Loner()
        self.pair(p)
        p.clock = self.reactor
        p.timer = self.reactor.callLater(3, ring, p)
        restored = self.restore(self.capture())
        restored.activate()
        r = restored.transports[0].protocol
        self.reactor2.advance(3)
        self.assertEqual(_events, [("ring", r, 3.0)])

    def test_callReachedThroughItsOwnArguments(self) -> None:
        """
        A scheduled call reached again through its own arguments (their
        object keeps the call, and the call is met first) moves: restored
        once, that object's reference being the restored call itself,
        which runs when due.
        """
        self.adapters.allowFunction(ring)
        self.adapters2.allowFunction(ring)
        p = Loner()
        self.pair(p)
        holder = Loner()
        holder.clock = self.reactor
        p.timer = self.reactor.callLater(3, ring, holder)
        holder.pending = p.timer
        p.holder = holder
        restored = self.restore(self.capture())
        restored.activate()
        r = restored.transports[0].protocol
        self.assertIs(r.holder.pending, r.timer)
        self.assertEqual(r.timer.args, (r.holder,))
        self.assertEqual(len(self.reactor2.getDelayedCalls()), 1)
        self.reactor2.advance(3)
        self.assertEqual(_events, [("ring", r.holder, 3.0)])

    def test_callArgumentsChecked(self) -> None:
        """
        A scheduled call's arguments that are not a tuple, or keywords that
        are not a dictionary of names, fail the restore (as C{callLater}
        would), not the call once it runs: and the call made for them is
        cancelled with the restore's others.
        """

        class Reader:
            def read(self, node: Any) -> Any:
                return node

            def remember(self, ident: int, value: Any) -> None:
                pass

        hooks = _RestoreHooks(self.reactor2, self.adapters2, self.ports2, [])
        for args, kw in [([1], {}), ((1,), [("a", 1)]), ((1,), {1: 2})]:
            self.assertRaises(GraphError, hooks, "call", [1, 5.0, ring, args, kw], Reader())
        call = hooks("call", [1, 5.0, ring, (1,), {"b": 2}], Reader())
        self.assertEqual((call.args, call.kw), ((1,), {"b": 2}))
        hooks.gate.close()
        self.assertEqual(self.reactor2.getDelayedCalls(), [])

    def test_functionNotAllowedHere(self) -> None:
        """
        A connection whose state holds a plain function the incumbent has
        not allowed stays.
        """
        p = Loner()
        self.pair(p)
        p.clock = self.reactor
        p.timer = self.reactor.callLater(3, ring, p)
        captured = self.capture()
        self.assertEqual(captured.count, 0)
        [reason] = captured.staying
        self.assertIn("['timer'].func: no adapter for builtins.function", reason)

    def test_functionNotAllowedThere(self) -> None:
        """
        A function the successor has not allowed fails the restore.
        """
        self.adapters.allowFunction(ring)
        p = Loner()
        self.pair(p)
        p.clock = self.reactor
        p.timer = self.reactor.callLater(3, ring, p)
        captured = self.capture()
        fds = [os.dup(fd) for fd in captured.fds]
        e = self.assertRaises(
            GraphError,
            restoreConnections,
            self.reactor2,
            self.ports2,
            self.adapters2,
            captured.payload,
            fds,
        )
        self.assertIn("tests.test_connections.ring", str(e))
        self.assertTrue(all(_closed(fd) for fd in fds))

    def test_loopOnAnotherClock(self) -> None:
        """
        A loop running on another clock than the reactor stays: the
        successor could not restore it.
        """
        p = Loner()
        self.pair(p)
        p.schedule(self.reactor, 5, 4)
        p.loop.stop()
        p.loop = task.LoopingCall(p.tick)
        p.loop.clock = task.Clock()
        p.loop.start(4, now=False)
        captured = self.capture()
        self.assertEqual(captured.count, 0)
        [reason] = captured.staying
        self.assertIn("a LoopingCall on another clock", reason)
        self.assertIn(p.transport, self.reactor.getReaders())

    def test_methodOfUnadaptedObject(self) -> None:
        """
        A call of a bound method of an object without adapter stays.
        """
        p = Loner()
        self.pair(p)
        p.clock = self.reactor
        p.timer = self.reactor.callLater(3, Stranger().tick)
        captured = self.capture()
        self.assertEqual(captured.count, 0)
        [reason] = captured.staying
        self.assertIn("no adapter for tests.test_connections.Stranger", reason)


class RestoreFailureTests(_Sides):
    """
    A restore that fails raises L{GraphError}, closes every descriptor it
    was given and releases what it had built.
    """

    def restoreFails(self, payload: bytes, count: int) -> GraphError:
        """
        Restore C{payload} with C{count} fresh descriptors (of sockets this
        test keeps), check that it fails and leaves no descriptor open.
        """
        sockets = []
        for _ in range(count):
            a, b = socket.socketpair(socket.AF_UNIX)
            self.addCleanup(a.close)
            self.addCleanup(b.close)
            sockets.append(a)
        before = _openDescriptors()
        fds = [os.dup(s.fileno()) for s in sockets]
        e = self.assertRaises(
            GraphError,
            restoreConnections,
            self.reactor2,
            self.ports2,
            self.adapters2,
            payload,
            fds,
        )
        for fd in fds:
            self.assertTrue(_closed(fd), f"descriptor {fd} left open")
        self.assertEqual(_openDescriptors(), before)
        self.assertEqual(list(self.ports2.openConnections()), [])
        self.assertEqual(self.reactor2.getReaders(), [self.port2])
        return e

    def test_garbage(self) -> None:
        """
        Bytes that are not a plain pickle.
        """
        self.restoreFails(b"garbage", 2)

    def test_notARecord(self) -> None:
        """
        A pickle of something other than the capture's record, or of a
        record lacking its fields.
        """
        self.restoreFails(dumpsPlain([1, 2]), 1)
        self.restoreFails(dumpsPlain({}), 1)
        self.restoreFails(dumpsPlain({"roots": 5, "factories": [], "count": 0}), 1)
        self.restoreFails(dumpsPlain({"roots": [], "factories": []}), 1)

    def test_namesAClass(self) -> None:
        """
        A pickle naming a class.
        """
        import datetime
        import pickle

        e = self.restoreFails(pickle.dumps(datetime.date(2020, 1, 1)), 1)
        self.assertIn("datetime", str(e))

    def test_unknownType(self) -> None:
        """
        A capture of connections one of which has a type the successor has
        no adapter for (although it said it had): any already built is
        released.
        """
        for _ in range(3):
            self.pair(Loner())
        self.pair(Newcomer())
        captured = captureConnections(
            self.reactor, self.ports, self.adapters, frozenset(),
            frozenset(self.adapters.typeNames()),
        )
        self.assertEqual(captured.count, 4)
        e = self.restoreCaptured(captured, len(captured.fds))
        self.assertIn("Newcomer", str(e))

    def test_syscallSeams(self) -> None:
        """
        The descriptors go through C{adoptSocket} and C{closeFd}: one whose
        socket object cannot be made is closed, and so are those not yet
        taken over.
        """
        self.accept()
        self.accept()
        captured = self.capture()
        fds = [os.dup(fd) for fd in captured.fds]
        closed: list[int] = []

        def close(fd: int) -> None:
            closed.append(fd)
            os.close(fd)

        def refuse(fd: int, family: int) -> socket.socket:
            raise OSError(errno.EMFILE, "out of descriptors")

        self.assertRaises(
            OSError,
            restoreConnections,
            self.reactor2,
            self.ports2,
            self.adapters2,
            captured.payload,
            fds,
            adoptSocket=refuse,
            closeFd=close,
        )
        self.assertEqual(sorted(closed), sorted(fds))
        self.assertEqual(list(self.ports2.openConnections()), [])

    def restoreCaptured(self, captured: Captured, count: int) -> GraphError:
        """
        Restore C{captured} with C{count} duplicates of its descriptors
        (the first C{count}, or all of them and some more), and check that
        it fails, leaving no descriptor open.
        """
        before = _openDescriptors()
        fds = [os.dup(fd) for fd in captured.fds[:count]]
        while len(fds) < count:
            fds.append(os.dup(captured.fds[0]))
        e = self.assertRaises(
            GraphError,
            restoreConnections,
            self.reactor2,
            self.ports2,
            self.adapters2,
            captured.payload,
            fds,
        )
        for fd in fds:
            self.assertTrue(_closed(fd), f"descriptor {fd} left open")
        self.assertEqual(_openDescriptors(), before)
        self.assertEqual(list(self.ports2.openConnections()), [])
        self.assertEqual(self.reactor2.getReaders(), [self.port2])
        self.assertEqual(self.reactor2.getDelayedCalls(), [])
        return e

    def test_fewerDescriptors(self) -> None:
        """
        Fewer descriptors than the capture sent: the missing one is named.
        """
        self.accept()
        self.accept()
        captured = self.capture()
        e = self.restoreCaptured(captured, 1)
        self.assertIn("did not arrive", str(e))

    def test_moreDescriptors(self) -> None:
        """
        More descriptors than the capture sent: the counts are named.
        """
        p = Loner()
        self.pair(p)
        p.schedule(self.reactor, 5, 4)
        self.accept()
        captured = self.capture()
        e = self.restoreCaptured(captured, 3)
        self.assertIn("2 connections restored", str(e))
        self.assertIn("3 descriptors received", str(e))


class GatedCallTests(SynchronousTestCase):
    """
    A scheduled call restored by one takeover can move again at the next:
    a capture writes the function the commit gate wraps, not the wrapper.
    """

    def test_ungatedIsTheWrappedFunction(self) -> None:
        """
        L{ungated} gives back the function L{_Gate.wrap} wrapped, and
        leaves any other function alone.
        """

        def ring() -> None:
            pass

        gate = _Gate()
        wrapped = gate.wrap(ring)
        self.assertIsNot(wrapped, ring)
        self.assertIs(ungated(wrapped), ring)
        self.assertIs(ungated(ring), ring)

    def test_openGateCallsThrough(self) -> None:
        """
        Once the gate is open, the wrapper and the function it wraps do the
        same, so writing the function instead changes nothing.
        """
        calls: list[int] = []
        gate = _Gate()
        wrapped = gate.wrap(calls.append)
        wrapped(1)
        self.assertEqual(calls, [])
        gate.open()
        self.assertEqual(calls, [1])
        wrapped(2)
        ungated(wrapped)(3)
        self.assertEqual(calls, [1, 2, 3])
