# -*- test-case-name: tests.test_stream -*-
"""
Tests for L{migrator.state._stream} (the incumbent's capture in batches)
and L{migrator.takeover._batches} (the successor's side): batches arrive
and roll back in order, nothing is lost, a busy connection that turns idle
moves later, a connection that talks goes last, and what is shared with a
batch already sent (or written to while frozen) is sent again in the last
batch while the successor drops its copy.

Both sides run in this process on L{MemoryReactorClock}s, with real
loopback connections (as in L{tests.test_connections}).
"""

from __future__ import annotations

import gc
import os
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

from migrator._twistedinternals import releaseConnection, releasePort
from migrator.interfaces import IBusyAware
from migrator.state._capture import Captured, captureConnections
from migrator.state._graph import loadsPlain
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.state._restore import restoreConnections
from migrator.state._stream import Stream
from migrator.takeover._batches import Batches
from migrator.takeover._incumbent import TakeoverRefused
from migrator.takeover._messages import (
    BeginRequest,
    CaptureRequest,
    PreparedReport,
    ReceivedReport,
    Streaming,
)
from migrator.takeover._ports import ListenerRegistry
from tests.test_connections import _KEY, _READY, _Reactor, _recvExactly, _waitReadable
from tests.test_incumbent import SUCCESSOR, ChannelReader, IncumbentWithListenerRegistryTests


class Private(LineReceiver):
    """
    Answers each line with its number; shares nothing unless told to.
    """

    busy = False

    def connectionMade(self) -> None:
        self.count = 0
        self.factory.clients.append(self)

    def lineReceived(self, line: bytes) -> None:
        self.count += 1
        self.sendLine(b"%d:%s" % (self.count, line))


class Quiet(ServerFactory):
    """
    Keeps its protocols in a list that is not part of its state (a class
    attribute: the tests' handle on them).
    """

    protocol = Private
    clients: list[Private] = []


class Room(Quiet):
    """
    Keeps its protocols in its state (a chat room).
    """

    def __init__(self) -> None:
        self.clients = []


@implementer(IBusyAware)
class BusyAdapter(InstanceAdapter):
    """
    The default rule, with a C{busy} the tests set.
    """

    def busy(self, obj: Any) -> bool:
        return bool(obj.busy)


def _adapters() -> AdapterRegistry:
    registry = AdapterRegistry()
    registry.registerFactory(Quiet, keep=())
    registry.registerFactory(Room, keep=())
    registry.register(BusyAdapter(Private))
    return registry


class _Stream(SynchronousTestCase):
    """
    An incumbent and a successor with a port each, declared as L{_KEY}.
    """

    factoryClass: type[Quiet] = Quiet

    def setUp(self) -> None:
        Quiet.clients = []
        self.reactor = _Reactor()
        self.ports = ListenerRegistry(self.reactor)
        self.ports.install()
        self.factory = self.factoryClass()
        self.port = self.reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(releasePort, self.port)
        self.adapters = _adapters()
        self.reactor2 = _Reactor()
        self.ports2 = ListenerRegistry(self.reactor2)
        self.ports2.install()
        self.factory2 = self.factoryClass()
        self.port2 = self.reactor2.listenTCP(0, self.factory2, interface="127.0.0.1")
        self.addCleanup(releasePort, self.port2)
        self.adapters2 = _adapters()

    def accept(self, n: int) -> list[tuple[Private, socket.socket]]:
        accepted = []
        for _ in range(n):
            client = socket.create_connection(self.port.socket.getsockname(), timeout=_READY)
            self.addCleanup(client.close)
            _waitReadable(self.port.fileno())
            self.port.doRead()
            protocol = self.factory.clients[-1]
            self.addCleanup(releaseConnection, protocol.transport)
            accepted.append((protocol, client))
        return accepted

    def stream(self, maxBatch: int = 2, **kw: Any) -> Stream:
        stream = Stream(
            self.reactor,
            self.ports,
            self.adapters,
            frozenset({_KEY}),
            frozenset(self.adapters2.typeNames()),
            maxBatch=maxBatch,
            **{"timer": lambda: 0.0, **kw},
        )
        stream.start()
        return stream

    def batches(self, stream: Stream) -> list[Captured]:
        sent = []
        for _ in range(100):
            batch = stream.next()
            if batch is None:
                return sent
            sent.append(batch)
        raise AssertionError("the stream did not end")

    def restore(self, batches: Batches, captured: Captured) -> None:
        fds = [os.dup(fd) for fd in captured.fds]
        part = restoreConnections(
            self.reactor2, self.ports2, self.adapters2, captured.payload, fds, native=True
        )
        for t in part.transports:
            self.addCleanup(releaseConnection, t)
        batches.add(part, len(captured.payload), 0.0)

    def reading(self, protocol: Any) -> bool:
        return protocol.transport in self.reactor.getReaders()

    def talk(self, protocol: Any, client: socket.socket, line: bytes) -> None:
        """
        The client sends a line and the incumbent reads it.
        """
        client.sendall(line + b"\r\n")
        _waitReadable(protocol.transport.fileno())
        protocol.transport.doRead()
        while protocol.transport in self.reactor.getWriters():
            protocol.transport.doWrite()


class StreamTests(_Stream):
    def test_batchesInOrder(self) -> None:
        """
        Five private connections move in batches of at most two, numbered
        in order, each frozen when captured while the others are still
        served; the one that talked meanwhile is in the last batch (after
        accepting stops), which drops nothing; the successor restores them all and, once active,
        serves each with its state.
        """
        accepted = self.accept(5)
        stream = self.stream(maxBatch=2)
        first = stream.next()
        assert first is not None
        self.assertEqual(first.count, 2)
        frozen = [p for p, _ in accepted if not self.reading(p)]
        self.assertEqual(len(frozen), 2)
        # The others are still served meanwhile.
        live, client = next((p, c) for p, c in accepted if self.reading(p))
        self.talk(live, client, b"meanwhile")
        self.assertEqual(_recvExactly(client, 13), b"1:meanwhile\r\n")
        rest = self.batches(stream)
        # The one that talked meanwhile goes last.
        self.assertEqual([b.count for b in rest], [2])
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertEqual((last.transports, stream.count, stream.dropped), ([live.transport], 5, []))
        self.assertFalse(any(self.reading(p) for p, _ in accepted))

        batches = Batches()
        for captured in [first, *rest, last]:
            self.restore(batches, captured)
        self.assertEqual([p.batch for p in batches.parts], [0, 1, 2])
        self.assertEqual([p.last for p in batches.parts], [False, False, True])
        self.assertTrue(batches.done)
        self.assertEqual(batches.count, 5)
        freezes = self.successResultOf(batches.activate(frozenAt=0.0))
        self.assertEqual(len(freezes), 5)
        stream.release()
        restored = {t.getPeer().port: t for p in batches.parts for t in p.transports}
        for protocol, client in accepted:
            client.sendall(b"after\r\n")
            transport = restored[client.getsockname()[1]]
            _waitReadable(transport.fileno())
            transport.doRead()
            while transport in self.reactor2.getWriters():
                transport.doWrite()
            expected = b"2:after\r\n" if protocol is live else b"1:after\r\n"
            self.assertEqual(_recvExactly(client, len(expected)), expected)

    def test_rollbackThawsEveryBatch(self) -> None:
        """
        Abandoned after three batches: every batch is thawed (reading
        again, in the order sent), and what the clients sent during the
        freeze is read by the incumbent, nothing lost.
        """
        accepted = self.accept(5)
        stream = self.stream(maxBatch=2)
        sent = self.batches(stream)
        self.assertEqual([b.count for b in sent], [2, 2, 1])
        for _, client in accepted:
            client.sendall(b"during\r\n")
        thawed: list[int] = []
        reactor = self.reactor
        original = reactor.addReader

        def addReader(reader: Any) -> None:
            thawed.append(next(i for i, b in enumerate(sent) if reader in b.transports))
            original(reader)

        reactor.addReader = addReader  # type: ignore[method-assign]
        stream.thaw()
        reactor.addReader = original  # type: ignore[method-assign]
        self.assertEqual(thawed, [0, 0, 1, 1, 2])
        for protocol, client in accepted:
            self.assertTrue(self.reading(protocol))
            _waitReadable(protocol.transport.fileno())
            protocol.transport.doRead()
            while protocol.transport in self.reactor.getWriters():
                protocol.transport.doWrite()
            self.assertEqual(_recvExactly(client, 10), b"1:during\r\n")
        self.assertEqual(protocol.transport.__dict__.keys() & {"write", "doRead"}, set())

    def test_busyTurnedIdleMovesLater(self) -> None:
        """
        A busy connection is not in the first batch and is still served; it
        is counted as waiting; once idle it moves in a later batch.
        """
        (busy, _), (idle, _) = self.accept(2)
        busy.busy = True
        stream = self.stream(maxBatch=10)
        first = stream.next()
        assert first is not None
        self.assertEqual(first.transports, [idle.transport])
        self.assertIsNone(stream.next())
        self.assertEqual(stream.waiting(), 1)
        self.assertTrue(self.reading(busy))
        busy.busy = False
        second = stream.next()
        assert second is not None
        self.assertEqual(second.transports, [busy.transport])
        self.assertEqual(stream.waiting(), 0)
        self.assertEqual(stream.finish().count, 0)
        self.assertEqual(stream.count, 2)

    def test_busyReadingTurnedIdleMovesLater(self) -> None:
        """
        What a busy connection reads while busy (a request's body) does not
        make it one in conversation: once idle it moves in a later batch,
        not last.
        """
        (busy, client), (idle, _) = self.accept(2)
        busy.busy = True
        stream = self.stream(maxBatch=10)
        first = stream.next()
        assert first is not None
        self.assertEqual(first.transports, [idle.transport])
        self.talk(busy, client, b"body")
        self.assertEqual(_recvExactly(client, 8), b"1:body\r\n")
        busy.busy = False
        second = stream.next()
        assert second is not None
        self.assertEqual(second.transports, [busy.transport])
        self.assertEqual(stream.finish().count, 0)

    def test_talkedThenBusyGoesLast(self) -> None:
        """
        A connection that read since the stream started, then is busy when
        picked, is still one in conversation once idle: it goes last.
        """
        (talker, client), (idle, _) = self.accept(2)
        stream = self.stream(maxBatch=10)
        self.talk(talker, client, b"hello")
        self.assertEqual(_recvExactly(client, 9), b"1:hello\r\n")
        talker.busy = True
        first = stream.next()
        assert first is not None
        self.assertEqual(first.transports, [idle.transport])
        talker.busy = False
        self.assertIsNone(stream.next())
        self.assertEqual(stream.finish().transports, [talker.transport])

    def test_busyThenSentThroughAnotherIsNotLookedAtAgain(self) -> None:
        """
        A connection busy at the first look that then goes in a batch,
        reached through another connection's graph, is not looked at again
        once idle (its watch for writes is not replaced by one for reads):
        abandoned, it reads again, with its own class.
        """
        (a, _), (b, _) = self.accept(2)
        own = type(b.transport)
        b.busy = True
        a.peer = b
        stream = self.stream(maxBatch=10)
        first = stream.next()
        assert first is not None
        self.assertEqual(set(first.transports), {a.transport, b.transport})
        b.busy = False
        self.assertIsNone(stream.next())
        self.assertIs(type(b.transport), type(a.transport))
        self.assertEqual(stream.waiting(), 0)
        stream.thaw()
        self.assertIs(type(b.transport), own)
        self.assertTrue(self.reading(a))
        self.assertTrue(self.reading(b))

    def test_talkingConnectionGoesLast(self) -> None:
        """
        A connection that read since the stream started is left for the
        last turn (within C{finalLimit}); the quiet ones go in batches.
        """
        (talker, client), (quiet, _), (other, _) = self.accept(3)
        stream = self.stream(maxBatch=10)
        self.talk(talker, client, b"hi")
        self.assertEqual(_recvExactly(client, 6), b"1:hi\r\n")
        batch = stream.next()
        assert batch is not None
        self.assertEqual(set(batch.transports), {quiet.transport, other.transport})
        self.assertIsNone(stream.next())
        self.assertEqual(stream.finish().transports, [talker.transport])

    def test_sharedStateGoesInTheLastBatch(self) -> None:
        """
        A connection whose graph reaches an object a batch already sent
        holds is left for the last batch, and that batch is sent again in
        it: the successor drops its copy, and restores both connections
        sharing one object.
        """
        (a, _), (b, _) = self.accept(2)
        a.room = b.room = {"topic": "old"}
        stream = self.stream(maxBatch=1)
        first = stream.next()
        assert first is not None
        self.assertEqual(len(first.transports), 1)
        self.assertIn(first.transports[0], {a.transport, b.transport})
        self.assertIsNone(stream.next())
        a.room["topic"] = "new"
        last = stream.finish()
        self.assertEqual(stream.dropped, [0])
        self.assertEqual(set(last.transports), {a.transport, b.transport})
        self.assertEqual(stream.count, 2)
        batches = Batches()
        self.restore(batches, first)
        self.restore(batches, last)
        self.assertEqual((batches.count, batches.dropped), (2, 1))
        [part] = batches.parts
        ra, rb = (t.protocol for t in part.transports)
        self.assertIs(ra.room, rb.room)
        self.assertEqual(ra.room, {"topic": "new"})

    def test_writtenWhileFrozenIsSentAgain(self) -> None:
        """
        A write to a connection of a batch sent (a broadcast from one still
        served) is not written by the incumbent; the batch is sent again in
        the last one, with the bytes, which the successor writes first.
        """
        accepted = self.accept(2)
        stream = self.stream(maxBatch=1)
        first = stream.next()
        assert first is not None
        [a] = [t.protocol for t in first.transports]
        [client] = [c for p, c in accepted if p is a]
        a.transport.write(b"news\r\n")
        self.assertNotIn(a.transport, self.reactor.getWriters())
        self.batches(stream)
        last = stream.finish()
        self.assertEqual(stream.dropped, [0])
        self.assertIn(a.transport, last.transports)
        batches = Batches()
        for captured in [first, *[x.captured for x in stream.batches[1:]], last]:
            self.restore(batches, captured)
        self.assertEqual(batches.count, 2)
        self.successResultOf(batches.activate())
        stream.release()
        [restored] = [
            t for p in batches.parts for t in p.transports
            if t.getPeer().port == client.getsockname()[1]
        ]
        while restored in self.reactor2.getWriters():
            restored.doWrite()
        self.assertEqual(_recvExactly(client, 6), b"news\r\n")

    def test_lastBatchNotWrittenHere(self) -> None:
        """
        Between the last batch and the commit, nothing here writes to its
        connections (a broadcast from one that stays, say) or makes them
        read: the successor has their state as captured.  Abandoned, they
        write what was queued and read, as before.
        """
        [(a, client)] = self.accept(1)
        stream = self.stream(maxBatch=0)
        last = stream.finish()
        self.assertEqual(last.transports, [a.transport])
        a.transport.write(b"late\r\n")
        a.transport.resumeProducing()
        self.assertNotIn(a.transport, self.reactor.getWriters())
        self.assertFalse(self.reading(a))
        stream.thaw()
        self.assertTrue(self.reading(a))
        while a.transport in self.reactor.getWriters():
            a.transport.doWrite()
        self.assertEqual(_recvExactly(client, 6), b"late\r\n")

    def test_closedWhileFrozenClosesThawed(self) -> None:
        """
        A connection of a batch sent that something closes (or half-closes)
        while frozen does not close here then (nothing writes to it: not
        even the close); abandoned, it closes, as asked.
        """
        [(a, clientA), (b, clientB)] = self.accept(2)
        stream = self.stream(maxBatch=2)
        first = stream.next()
        assert first is not None
        a.transport.loseConnection()
        b.transport.loseWriteConnection()
        self.assertNotIn(a.transport, self.reactor.getWriters())
        self.assertNotIn(b.transport, self.reactor.getWriters())
        self.assertFalse(self.reading(a))
        stream.finish()
        stream.thaw()
        self.assertFalse(self.reading(a))
        for t in (a.transport, b.transport):
            # (What the reactor does with a writer.)
            while t in self.reactor.getWriters():
                why = t.doWrite()
                if why:
                    t.connectionLost(Failure(why))
        clientA.settimeout(_READY)
        clientB.settimeout(_READY)
        self.assertEqual(clientA.recv(10), b"")
        self.assertEqual(clientB.recv(10), b"")

    def test_resumedWhileFrozenReadsOnlyThawed(self) -> None:
        """
        A connection of a batch sent that something asks to read again
        (C{resumeProducing}: a peer's flow control, say) does not read in
        the incumbent, where what it read would never reach the successor:
        its batch is sent again in the last one, reading; thawed instead
        (the takeover abandoned), it reads, as asked.  Asked to stop
        reading again meanwhile, it stays paused.
        """
        [(a, clientA), (b, clientB)] = self.accept(2)
        a.transport.pauseProducing()
        b.transport.pauseProducing()
        stream = self.stream(maxBatch=2)
        first = stream.next()
        assert first is not None
        self.assertEqual(set(first.transports), {a.transport, b.transport})
        a.transport.resumeProducing()
        b.transport.resumeProducing()
        b.transport.pauseProducing()
        self.assertFalse(self.reading(a))
        self.assertFalse(self.reading(b))
        last = stream.finish()
        self.assertEqual(stream.dropped, [0])
        self.assertEqual(set(last.transports), {a.transport, b.transport})
        # The successor starts a reading (it was when captured again), not b.
        batches = Batches()
        self.restore(batches, last)
        self.successResultOf(batches.activate())
        readers = self.reactor2.getReaders()
        reads = {
            t.getPeer().port: t in readers for p in batches.parts for t in p.transports
        }
        self.assertEqual(
            reads, {clientA.getsockname()[1]: True, clientB.getsockname()[1]: False}
        )
        # Abandoned instead: a reads here, as asked; b does not.
        stream.thaw()
        self.assertTrue(self.reading(a))
        self.assertFalse(self.reading(b))

    def streamOwningTheCollector(self) -> Stream:
        """
        Two connections streamed to the last batch, one batch per turn,
        the collector paused by the caller and handed to the stream.
        """
        self.addCleanup(gc.enable)
        self.accept(2)
        gc.disable()
        ticks = iter(range(1000))
        # (A clock a second on at each look: a batch per turn.)
        stream = self.stream(maxBatch=1, timer=lambda: float(next(ticks)))
        stream.ownCollector()
        self.batches(stream)
        self.ports.pauseAccepting()
        stream.finish()
        return stream

    def test_collectorResumedAfterTheRelease(self) -> None:
        """
        A collector paused by the caller and handed to the stream is
        resumed once every batch is released, not before.
        """
        stream = self.streamOwningTheCollector()
        self.assertFalse(gc.isenabled())
        turns: list[Any] = []
        stream.release(turns.append)
        self.assertFalse(gc.isenabled())
        while turns:
            turns.pop(0)()
        self.assertTrue(gc.isenabled())

    def test_collectorResumedFrozenForTheExit(self) -> None:
        """
        Hurried for the exit (the handles left to it), the release resumes
        the collector with what is allocated frozen: its first collection
        would scan all that the takeover wrote, in the exit's last turn.
        """
        frozen: list[bool] = []
        self.patch(gc, "freeze", lambda: frozen.append(gc.isenabled()))
        stream = self.streamOwningTheCollector()
        turns: list[Any] = []
        hurry = stream.release(turns.append)
        self.assertEqual((frozen, gc.isenabled()), ([], False))
        hurry(False)
        self.assertEqual((frozen, gc.isenabled()), ([False], True))

    def test_classChangedWhileWatched(self) -> None:
        """
        A transport whose class something else changed while the stream
        watched its first read keeps that class under the watch of
        writes once in a batch, and has it back when thawed.
        """
        [(protocol, _)] = self.accept(1)
        stream = self.stream(maxBatch=1)
        t = protocol.transport
        own = type(type(t).__mro__[1].__name__ + "Elsewhere", (type(t).__mro__[1],), {})
        t.__class__ = own
        [batch] = self.batches(stream)
        self.assertIsInstance(t, own)
        self.assertIsNot(type(t), own)
        stream.thaw()
        self.assertIs(type(t), own)

    def test_releaseWithoutTheReactor(self) -> None:
        """
        At the commit, the transports of a stream's batches, frozen and
        watched since, are let go of without asking the reactor to stop
        reading or writing them (nothing did since their freeze, not even
        a write to one while frozen): none is left with it, and none
        writes here.  Left for the exit (not closed), they are not even
        looked at: still watched, what is asked of them then (a write, a
        close: a shutdown's goodbye) does nothing.
        """
        accepted = self.accept(3)
        stream = self.stream(maxBatch=1)
        self.assertEqual(len(self.batches(stream)), 3)
        accepted[1][0].transport.write(b"late\r\n")
        self.ports.pauseAccepting()
        stream.finish()
        asked: list[Any] = []
        self.patch(self.reactor, "removeReader", asked.append)
        self.patch(self.reactor, "removeWriter", asked.append)
        turns: list[Any] = []
        stream.release(turns.append, close=False)(False)
        transports = [p.transport for p, _ in accepted]
        self.assertEqual(asked, [])
        self.assertEqual(
            [t for t in transports if t in self.reactor.getReaders() + self.reactor.getWriters()],
            [],
        )
        for t in transports:
            t.write(b"bye\r\n")
            t.loseConnection()
        self.assertEqual(
            [t for t in transports if t in self.reactor.getReaders() + self.reactor.getWriters()],
            [],
        )
        for (_, client), t in zip(accepted, transports, strict=True):
            # (Nothing sent, nothing closed: the client waits for more.)
            client.setblocking(False)
            self.assertRaises(BlockingIOError, client.recv, 100)
            self.assertNotEqual(t.socket.fileno(), -1)

    def test_releaseStopsWhatTheReactorReadsAnyway(self) -> None:
        """
        A batch's transport that the reactor reads although it is frozen
        (registered with the reactor itself, past every watch) is asked to
        stop at the release: none is left with the reactor, whether the
        handles are closed or left to the exit.
        """
        for close in (False, True):
            accepted = self.accept(2)
            t = accepted[0][0].transport
            stream = self.stream(maxBatch=1)
            self.assertEqual(len(self.batches(stream)), 2)
            self.reactor.addReader(t)
            self.ports.pauseAccepting()
            stream.finish()
            turns: list[Any] = []
            stream.release(turns.append, close=close)(close)
            self.assertEqual(
                [p.transport for p, _ in accepted if p.transport in self.reactor.getReaders()], []
            )
            self.ports.resumeAccepting()
            for p, _ in accepted:
                # (Left for the exit: gone before the next round.)
                releaseConnection(p.transport)

    def test_ported(self) -> None:
        """
        The stream says how many of the connections it moves have a port
        (the registry counts those: see openConnectionsBesides), over the
        batches kept and the last one.
        """
        self.accept(3)
        stream = self.stream(maxBatch=1)
        self.assertEqual(len(self.batches(stream)), 3)
        self.ports.pauseAccepting()
        stream.finish()
        self.assertEqual(stream.ported, 3)
        self.assertEqual([b.captured.ported for b in stream.batches], [1, 1, 1])

    def test_registeredWithTheRealReactor(self) -> None:
        """
        A frozen batch's transport registered with the real reactor itself
        (past the stand-in) reads and writes nothing when the reactor asks
        it to: its client's bytes stay for the successor, it is taken off
        the reactor, and its batch goes again in the last one.
        """
        [(p, client), _] = self.accept(2)
        t = p.transport
        stream = self.stream(maxBatch=1)
        self.assertEqual(len(self.batches(stream)), 2)
        self.reactor.addReader(t)
        self.reactor.addWriter(t)
        client.sendall(b"ping\r\n")
        _waitReadable(t.fileno())
        count = p.count
        t.doRead()
        t.doWrite()
        self.assertEqual(p.count, count)
        self.assertNotIn(t, self.reactor.getReaders() + self.reactor.getWriters())
        self.ports.pauseAccepting()
        stream.finish()
        self.assertEqual([b.tainted for b in stream.batches].count(True), 1)
        self.assertEqual(_recvExactly(t.socket, 6), b"ping\r\n")

    def test_boundBeforeTheWatch(self) -> None:
        """
        A frozen batch's transport asked to read or write through methods
        bound before the stream watched it (a call scheduled earlier,
        which the capture does not meet) neither reads nor writes: its
        batch goes again in the last one, and, thawed, it reads again.
        """
        accepted = self.accept(3)
        reader, writer = accepted[0][0].transport, accepted[1][0].transport
        startReading, startWriting = reader.startReading, writer.startWriting
        stream = self.stream(maxBatch=1)
        self.assertEqual(len(self.batches(stream)), 3)
        startReading()
        startWriting()
        registered = self.reactor.getReaders() + self.reactor.getWriters()
        self.assertEqual([t for t in (reader, writer) if t in registered], [])
        self.ports.pauseAccepting()
        final = stream.finish()
        tainted = {t for b in stream.batches if b.tainted for t in b.captured.transports}
        self.assertEqual((tainted, set(final.transports)), ({reader, writer}, {reader, writer}))
        stream.thaw()
        self.assertTrue(self.reading(accepted[0][0]))
        self.assertIs(reader.reactor, self.reactor)

    def sealed(self) -> tuple[Stream, list[Any]]:
        """
        Stream every connection, one a batch, to the last batch sent.

        @return: the stream, and the protocols whose C{connectionLost}
            runs here from now on (noted).
        """
        lost: list[Any] = []
        self.patch(Private, "connectionLost", lambda self, reason: lost.append(self))
        stream = self.stream(maxBatch=1)
        self.batches(stream)
        self.ports.pauseAccepting()
        stream.finish()
        return stream, lost

    def closedAfterTheLastBatch(self) -> tuple[Stream, list[Any], list[Any], list[Any]]:
        """
        Three connections in a stream, its last batch sent; then one is
        aborted here, one closed, one half-closed then closed.

        @return: the stream, the transports, their protocols, and the
            protocols whose C{connectionLost} ran (noted).
        """
        accepted = self.accept(3)
        stream, lost = self.sealed()
        aborted, closed, halfClosed = (p.transport for p, _ in accepted)
        aborted.abortConnection()
        closed.loseConnection()
        halfClosed.loseWriteConnection()
        halfClosed.loseConnection()
        self.reactor.advance(1)
        return stream, [aborted, closed, halfClosed], [p for p, _ in accepted], lost

    def test_closedAfterTheLastBatchNotHere(self) -> None:
        """
        Once the last batch is sent, a moved connection asked here to
        close (an abort, a close, a close after a half-close) is not closed
        on the socket the successor shares, and its protocol's
        C{connectionLost} does not run here, then or after the commit.
        """
        stream, transports, _, lost = self.closedAfterTheLastBatch()
        self.assertEqual((lost, [t.disconnected for t in transports]), ([], [False] * 3))
        stream.release(None, close=True)(True)
        self.reactor.advance(1)
        self.assertEqual(lost, [])

    def test_closedAfterTheLastBatchThenAbandoned(self) -> None:
        """
        If the takeover is then abandoned, the closes asked meanwhile are
        done here, once thawed: the aborted one is lost at once, the
        others close once written.
        """
        stream, (_, closed, halfClosed), protocols, lost = self.closedAfterTheLastBatch()
        stream.thaw()
        self.reactor.advance(1)
        self.assertEqual(
            (lost, bool(closed.disconnecting), bool(halfClosed.disconnecting)),
            ([protocols[0]], True, True),
        )

    def test_closedThroughABoundMethodAfterTheLastBatch(self) -> None:
        """
        An abort through a method bound before the stream (its scheduled
        C{connectionLost}, which the class's watch on C{abortConnection}
        cannot see) is held too once the last batch is sent: nothing runs
        here through the commit; abandoned instead, it is done.
        """
        for abandon in (False, True):
            [(protocol, _)] = self.accept(1)
            t = protocol.transport
            abort = t.abortConnection
            stream, lost = self.sealed()
            abort()
            self.reactor.advance(1)
            self.assertEqual((lost, t.disconnected), ([], False))
            if abandon:
                stream.thaw()
            else:
                stream.release(None, close=True)(True)
            self.reactor.advance(1)
            self.assertEqual(lost, [protocol] if abandon else [])
            self.ports.resumeAccepting()

    def test_abortedInTheLastTurnStays(self) -> None:
        """
        A connection aborted earlier in the turn that captures the last
        batch (its C{connectionLost} not run yet) is closing: it does not
        move, and closes here.
        """
        accepted = self.accept(2)
        stream = self.stream(maxBatch=1)
        self.batches(stream)
        aborted = accepted[0][0].transport
        aborted.abortConnection()
        self.ports.pauseAccepting()
        final = stream.finish()
        self.assertNotIn(aborted, final.transports)
        self.assertNotIn(aborted, [t for part in stream._parts() for t in part.transports])

    def test_readAndStoppedThroughBoundMethods(self) -> None:
        """
        A frozen transport that was not reading, asked to read and then to
        stop again through methods bound before the stream, does not read
        once thawed.
        """
        [(protocol, _)] = self.accept(1)
        t = protocol.transport
        t.stopReading()
        startReading, stopReading = t.startReading, t.stopReading
        stream = self.stream(maxBatch=1)
        self.assertEqual(len(self.batches(stream)), 1)
        startReading()
        stopReading()
        stream.thaw()
        self.assertFalse(self.reading(protocol))

    def test_captureInOneMessageReleasedThroughTheReactor(self) -> None:
        """
        A capture in one message has no watch: at its release, the reactor
        is asked to stop reading and writing each transport (something may
        have made one write since the freeze).
        """
        accepted = self.accept(2)
        captured = captureConnections(
            self.reactor, self.ports, self.adapters, frozenset({_KEY}),
            frozenset(self.adapters2.typeNames()),
        )
        accepted[0][0].transport.write(b"late\r\n")
        self.assertIn(accepted[0][0].transport, self.reactor.getWriters())
        captured.release(close=False)
        self.assertEqual(
            [p.transport for p, _ in accepted if p.transport in self.reactor.getWriters()], []
        )

    def test_noBatches(self) -> None:
        """
        With C{maxBatch} 0, everything is in the last batch.
        """
        self.accept(2)
        stream = self.stream(maxBatch=0)
        self.assertIsNone(stream.next())
        self.assertEqual(stream.finish().count, 2)


class _PollLikeReactor(_Reactor):
    """
    A L{_Reactor} that dispatches reads as the epoll and poll reactors do
    (through C{_doReadOrWrite}), so that a stream notes them with one hook
    (L{migrator._reactorinternals.noteReads}) instead of a watch on each
    connection.
    """

    _POLL_IN = 1

    def __init__(self) -> None:
        super().__init__()
        self._selectables: dict[int, Any] = {}

    def _doReadOrWrite(self, selectable: Any, fd: int, event: int) -> None:
        if event & self._POLL_IN:
            selectable.doRead()

    # (Those registered, by descriptor, as those reactors keep them.)

    def addReader(self, reader: Any) -> None:
        super().addReader(reader)
        self._selectables[reader.fileno()] = reader

    def addWriter(self, writer: Any) -> None:
        super().addWriter(writer)
        self._selectables[writer.fileno()] = writer

    def removeReader(self, reader: Any) -> None:
        super().removeReader(reader)
        self._forget(reader)

    def removeWriter(self, writer: Any) -> None:
        super().removeWriter(writer)
        self._forget(writer)

    def _forget(self, selectable: Any) -> None:
        if selectable not in self.readers and selectable not in self.writers:
            for fd, known in list(self._selectables.items()):
                if known is selectable:
                    del self._selectables[fd]


class NotedReadsStreamTests(StreamTests):
    """
    L{StreamTests} again, with a reactor whose reads one hook notes: the
    first look changes no connection's class, and the hook is gone once
    the stream's looks are over.
    """

    def setUp(self) -> None:
        super().setUp()
        releasePort(self.port)
        self.reactor = _PollLikeReactor()
        self.ports = ListenerRegistry(self.reactor)
        self.ports.install()
        self.port = self.reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(releasePort, self.port)

    def talk(self, protocol: Any, client: socket.socket, line: bytes) -> None:
        client.sendall(line + b"\r\n")
        _waitReadable(protocol.transport.fileno())
        self.reactor._doReadOrWrite(protocol.transport, protocol.transport.fileno(), 1)
        while protocol.transport in self.reactor.getWriters():
            protocol.transport.doWrite()

    def test_classChangedWhileWatched(self) -> None:
        raise SkipTest("no connection's class is changed to watch its reads here")

    def test_hookedOnceForAll(self) -> None:
        """
        The first look hooks the reactor and leaves each connection's class
        alone; the last turn undoes the hook.
        """
        accepted = self.accept(3)
        classes = [type(p.transport) for p, _ in accepted]
        stream = self.stream(maxBatch=10)
        self.assertIn("_doReadOrWrite", vars(self.reactor))
        self.assertEqual([type(p.transport) for p, _ in accepted], classes)
        self.assertEqual(stream.next().count, 3)  # type: ignore[union-attr]
        stream.finish()
        self.assertNotIn("_doReadOrWrite", vars(self.reactor))
        stream.thaw()
        self.assertEqual([type(p.transport) for p, _ in accepted], classes)


    def test_abandonedBeforeTheLastTurn(self) -> None:
        """
        A stream abandoned (thawed) before its last turn undoes the hook
        too; a stream after it hooks the reactor again, and notes reads.
        """
        (protocol, client), (other, _) = self.accept(2)
        stream = self.stream(maxBatch=1)
        self.assertIsNotNone(stream.next())
        stream.thaw()
        self.assertNotIn("_doReadOrWrite", vars(self.reactor))
        again = self.stream(maxBatch=10)
        self.assertIn("_doReadOrWrite", vars(self.reactor))
        self.talk(protocol, client, b"hi")
        self.assertEqual(_recvExactly(client, 6), b"1:hi\r\n")
        batch = again.next()
        assert batch is not None
        self.assertEqual(batch.transports, [other.transport])
        self.assertEqual(again.finish().transports, [protocol.transport])
        self.assertNotIn("_doReadOrWrite", vars(self.reactor))


class RoomTests(_Stream):
    factoryClass = Room

    def test_factoryReachingProtocolsTaints(self) -> None:
        """
        A factory whose state holds its protocols (a chat room) reaches the
        batches' objects when it is written, in the last turn: they are all
        sent again with it, so that the successor's room and connections
        are one graph.
        """
        self.accept(3)
        stream = self.stream(maxBatch=1)
        self.assertEqual(len(self.batches(stream)), 3)
        last = stream.finish()
        self.assertEqual(stream.dropped, [0, 1, 2])
        self.assertEqual((last.count, stream.count), (3, 3))
        batches = Batches()
        for captured in [b.captured for b in stream.batches] + [last]:
            self.restore(batches, captured)
        self.assertEqual((batches.count, batches.dropped), (3, 3))
        self.assertEqual(
            {id(p) for p in self.factory2.clients},
            {id(t.protocol) for t in batches.parts[0].transports},
        )


class _Stranger:
    """
    A protocol no adapter covers.
    """


class _NoAdapter:
    """
    An object no adapter knows.
    """


class IncumbentStreamTests(SynchronousTestCase):
    """
    The incumbent's C{capture} for a successor that asks for a stream
    (L{migrator.takeover._capturing}): batches on the channel while it
    serves, the last one once the successor has caught up, and an abort in
    the middle thaws every batch sent.
    """

    setUp = IncumbentWithListenerRegistryTests.setUp
    closeSuccessorFds = IncumbentWithListenerRegistryTests.closeSuccessorFds
    begin = IncumbentWithListenerRegistryTests.begin

    def acceptMany(self, n: int) -> list[tuple[Any, socket.socket]]:
        accepted = []
        for _ in range(n):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(client.close)
            client.connect(self.path)
            known = set(map(id, self.registry.openConnections()))
            self.port.doRead()
            [transport] = [t for t in self.registry.openConnections() if id(t) not in known]
            self.addCleanup(releaseConnection, transport)
            accepted.append((transport.protocol, client))
        return accepted

    def startStream(self, n: int) -> tuple[Any, Any, list[tuple[Any, socket.socket]]]:
        accepted = self.acceptMany(n)
        _, reader = self.begin()
        self.incumbent.received(self.session, ReceivedReport(1))
        self.incumbent.prepared(self.session, PreparedReport(1))
        request = CaptureRequest(tuple(self.adapters.typeNames()), stream=Streaming(maxBatch=1))
        d = self.incumbent.capture(self.session, request)
        self.assertIsInstance(d, Deferred)
        return d, reader, accepted

    def countListings(self) -> list[int]:
        """
        @return: a list that grows by one each time the registry lists its
            open connections.
        """
        listed: list[int] = []
        real = type(self.registry).openConnections

        def openConnections(registry: Any) -> Any:
            listed.append(1)
            return real(registry)

        self.patch(type(self.registry), "openConnections", openConnections)
        return listed

    def message(self, reader: Any) -> dict[str, Any]:
        payload, fds = reader.next()
        self.successorFds.extend(fds)
        data = loadsPlain(payload)
        self.assertEqual(len(fds), data["count"])
        return data

    def test_lastBatchWaitsForTheSuccessor(self) -> None:
        """
        Three connections go in three batches, one per turn, while accepting
        goes on; the last batch (none left) comes only once the successor
        has said it restored all three, and then C{capture} is answered.
        """
        d, reader, accepted = self.startStream(3)
        for _ in range(5):
            self.reactor.advance(0)
        self.assertEqual([self.message(reader)["batch"] for _ in range(3)], [0, 1, 2])
        self.assertNoResult(d)
        self.assertIn(self.port, self.reactor.getReaders())
        self.incumbent.batchRestored(self.session, 0)
        self.incumbent.batchRestored(self.session, 1)
        self.reactor.advance(0.01)
        self.assertNoResult(d)
        self.incumbent.batchRestored(self.session, 2)
        self.reactor.advance(0.01)
        last = self.message(reader)
        self.assertEqual((last["last"], last["count"], last["dropped"]), (True, 0, []))
        report = self.successResultOf(d)
        self.assertEqual((report.connections, report.held), (3, 3))
        self.assertNotIn(self.port, self.reactor.getReaders())
        for protocol, _ in accepted:
            self.assertNotIn(protocol.transport, self.reactor.getReaders())

    def test_lastAcknowledgementEndsTheWaitAtOnce(self) -> None:
        """
        The last turn, waiting for the successor to catch up, goes on as
        soon as the acknowledgement of the last batch comes, not at its
        next look a while later; and, every open connection being in a
        batch nothing touched, it does not list them (with thousands held,
        a listing is milliseconds of the turn that freezes the last
        connections).
        """
        d, reader, accepted = self.startStream(2)
        for _ in range(4):
            self.reactor.advance(0)
        self.assertEqual([self.message(reader)["batch"] for _ in range(2)], [0, 1])
        self.incumbent.batchRestored(self.session, 0)
        self.reactor.advance(0)
        self.assertNoResult(d)
        listed = self.countListings()
        self.incumbent.batchRestored(self.session, 1)
        # No time passes: the turn runs in the next reactor iteration.
        self.reactor.advance(0)
        last = self.message(reader)
        self.assertEqual((last["last"], last["count"]), (True, 0))
        self.assertEqual(self.successResultOf(d).held, 2)
        self.assertEqual(len(listed), 0)
        self.assertEqual(len(self.registry._connections.notes), 0)

    def test_lastTurnListsWhenABatchWasTouched(self) -> None:
        """
        If something wrote to the connections of the batches since they were
        sent, the last turn lists the open connections: those batches go
        again in the last one, and every connection open is counted.
        """
        d, reader, accepted = self.startStream(2)
        for _ in range(4):
            self.reactor.advance(0)
        self.assertEqual([self.message(reader)["batch"] for _ in range(2)], [0, 1])
        for protocol, _ in accepted:
            protocol.transport.write(b"meanwhile\r\n")
        listed = self.countListings()
        self.incumbent.batchRestored(self.session, 0)
        self.incumbent.batchRestored(self.session, 1)
        self.reactor.advance(0)
        last = self.message(reader)
        self.assertEqual((last["last"], last["count"], last["dropped"]), (True, 2, [0, 1]))
        report = self.successResultOf(d)
        self.assertEqual((report.connections, report.held), (2, 2))
        self.assertTrue(listed)

    def test_lastTurnFindsAConnectionLeftOutOfABatch(self) -> None:
        """
        A connection its batch left out after meeting its transport
        (something further in its graph has no adapter) is in no batch,
        and does not count as one: the last turn finds it, it stays (and
        is said to), and every connection open is counted.
        """
        accepted = self.acceptMany(2)
        # (Met after the transport: the protocol's last attribute.)
        accepted[0][0].stranger = _NoAdapter()
        _, reader = self.begin()
        self.incumbent.received(self.session, ReceivedReport(1))
        self.incumbent.prepared(self.session, PreparedReport(1))
        request = CaptureRequest(tuple(self.adapters.typeNames()), stream=Streaming(maxBatch=10))
        d = self.incumbent.capture(self.session, request)
        for _ in range(4):
            self.reactor.advance(0)
        self.assertEqual(self.message(reader)["count"], 1)
        self.incumbent.batchRestored(self.session, 0)
        self.reactor.advance(0)
        self.reactor.advance(1)
        self.assertEqual(self.message(reader)["count"], 0)
        report = self.successResultOf(d)
        self.assertEqual((report.held, report.connections), (2, 1))
        self.assertEqual(list(report.staying.values()), [1])
        self.assertIn("no adapter", next(iter(report.staying)))

    def test_abortThawsEveryBatch(self) -> None:
        """
        Abandoned after the batches were sent, before the last turn: every
        connection reads again, accepting never stopped, and the capture
        fails.
        """
        d, reader, accepted = self.startStream(3)
        for _ in range(5):
            self.reactor.advance(0)
        self.assertEqual([self.message(reader)["batch"] for _ in range(3)], [0, 1, 2])
        self.incumbent.abort("the successor gave up", self.session)
        for protocol, _ in accepted:
            self.assertIn(protocol.transport, self.reactor.getReaders())
        self.assertIn(self.port, self.reactor.getReaders())
        self.reactor.advance(0.01)
        self.failureResultOf(d)
        # The stream no longer notes the connections accepted.
        self.assertEqual(len(self.registry._connections.notes), 0)

    def test_collectorPausedFromBegin(self) -> None:
        """
        The garbage collector is paused from C{begin} (a full collection
        of a large heap is one long turn) until the takeover is abandoned,
        or, streamed and committed, until every batch is released.
        """
        self.addCleanup(gc.enable)
        gc.enable()
        d, reader, _ = self.startStream(2)
        self.assertFalse(gc.isenabled())
        for _ in range(5):
            self.reactor.advance(0)
        self.incumbent.abort("the successor gave up", self.session)
        self.assertTrue(gc.isenabled())
        self.reactor.advance(0.01)
        self.failureResultOf(d)

    def test_arrivedBeforeTheFirstLook(self) -> None:
        """
        The connections listed at C{capture} (for the never-two check) are
        those of the stream's first look, in the next turn: one accepted
        in between is noted (and goes last, as one in conversation); one
        closed in between stays out.
        """
        d, reader, [(early, _), (closing, client)] = self.startStream(2)
        [(late, _)] = self.acceptMany(1)
        closing.transport.loseConnection()
        client.close()
        for _ in range(3):
            self.reactor.advance(0)
        self.assertEqual(self.message(reader)["count"], 1)
        self.incumbent.batchRestored(self.session, 0)
        self.reactor.advance(0.01)
        last = self.message(reader)
        self.assertEqual((last["batch"], last["last"], last["count"]), (1, True, 1))
        self.assertEqual(self.successResultOf(d).connections, 2)

    def test_arrivedBetweenBeginAndCapture(self) -> None:
        """
        The connections listed at C{begin} (for the plan) serve C{capture}
        too, with those accepted in between (noted, and moved as the
        others); one closed in between stays out.
        """
        [(early, _), (closing, client)] = self.acceptMany(2)
        _, reader = self.begin()
        [(late, _)] = self.acceptMany(1)
        closing.transport.loseConnection()
        client.close()
        self.incumbent.received(self.session, ReceivedReport(1))
        self.incumbent.prepared(self.session, PreparedReport(1))
        request = CaptureRequest(tuple(self.adapters.typeNames()), stream=Streaming(maxBatch=1))
        d = self.incumbent.capture(self.session, request)
        for _ in range(3):
            self.reactor.advance(0)
        self.assertEqual([self.message(reader)["count"] for _ in range(2)], [1, 1])
        self.incumbent.batchRestored(self.session, 0)
        self.incumbent.batchRestored(self.session, 1)
        self.reactor.advance(0.01)
        last = self.message(reader)
        self.assertEqual((last["batch"], last["last"], last["count"]), (2, True, 0))
        self.assertEqual(self.successResultOf(d).connections, 2)

    def test_refusedAtTheFirstLook(self) -> None:
        """
        With C{--unmovable refuse}, a connection no adapter can move that
        came after C{begin} is refused at C{capture} by the look of never
        two folded into the stream's first look (which freezes nothing):
        the takeover is abandoned with the reason, no batch is sent, and
        no connection stays watched.
        """
        [(echo, _), (other, _)] = self.acceptMany(2)
        self.incumbent.begin(
            self.session, BeginRequest.fromWire({**SUCCESSOR, "unmovable": "refuse"})
        )
        [channelFd] = self.session.takeSent()
        reader = ChannelReader(self.reactor, channelFd)
        self.addCleanup(reader.close)
        self.successorFds.extend(reader.next()[1])
        self.incumbent.received(self.session, ReceivedReport(1))
        self.incumbent.prepared(self.session, PreparedReport(1))
        classes = [type(echo.transport), type(other.transport)]
        other.transport.protocol = _Stranger()
        request = CaptureRequest(tuple(self.adapters.typeNames()), stream=Streaming(maxBatch=1))
        d = self.incumbent.capture(self.session, request)
        self.assertNoResult(d)
        self.reactor.advance(0)
        f = self.failureResultOf(d, TakeoverRefused)
        self.assertIn("seen at step capture", str(f.value))
        self.assertIsNone(self.incumbent.current)
        self.assertEqual([type(echo.transport), type(other.transport)], classes)
        self.assertIn(echo.transport, self.reactor.getReaders())

    def test_arrivedDuringTheStreamGoesLast(self) -> None:
        """
        A connection accepted while the stream runs is taken for one in
        conversation: it goes in the last batch, not in a batch of its own.
        """
        d, reader, _ = self.startStream(1)
        self.reactor.advance(0)
        self.assertEqual(self.message(reader)["batch"], 0)
        [(late, _)] = self.acceptMany(1)
        for _ in range(3):
            self.reactor.advance(0)
        self.incumbent.batchRestored(self.session, 0)
        self.reactor.advance(0.01)
        last = self.message(reader)
        self.assertEqual((last["batch"], last["last"], last["count"]), (1, True, 1))
        self.assertEqual(self.successResultOf(d).connections, 2)
