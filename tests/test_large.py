# -*- test-case-name: tests.test_large -*-
"""
Tests for a connection too large for a batch (L{migrator.state._large},
L{migrator.state._sliced}, L{migrator.state._walk}): its graph is written
over several slices, its containers cut into chunks, sent as part
messages before its own batch, and read back whole; what cannot be
sliced goes in the last batch; an abort in the middle thaws it.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import releaseConnection
from migrator.state import _sliced
from migrator.state._capture import Captured
from migrator.state._graph import GraphError, GraphReader, GraphWriter, dumpsPlain, loadsPlain
from migrator.state._large import LIMIT, LargeCapture, Part
from migrator.state._nodes import BIG_ATOM, CHUNK, TooLarge
from migrator.state._restore import Decoded, decodeMessage, partOf
from migrator.state._sliced import SlicedWriter
from migrator.state._stream import Stream
from migrator.takeover._batches import Batches, ReceivesBatches
from migrator.takeover._messages import Streaming
from tests.test_connections import _recvExactly, _waitReadable
from tests.test_stream import _Stream


def _writeSliced(value: Any, ticks: float = 1.0) -> tuple[Any, list[list[Any]], int]:
    """
    Write C{value} in slices as short as can be (the clock passes the
    deadline at every look).

    @return: its node, its chunks (decoded) and the number of slices.
    """
    writer = SlicedWriter(lambda cls: None)
    clock = itertools.count()
    writer.startSliced(value)
    slices = 0
    blobs: list[bytes] = []
    while True:
        slices += 1
        done = writer.proceed(0.0, lambda: next(clock) * ticks)
        blobs += writer.takeChunks()
        if done:
            break
        if slices > 100_000:
            raise AssertionError("never done")
    return writer.finishSliced(), [loadsPlain(b) for b in blobs], slices


def _read(node: Any, chunks: list[list[Any]]) -> Any:
    reader = GraphReader(lambda name: None)
    reader.chunks = chunks
    # (Through the codec, as on the wire.)
    return reader.read(loadsPlain(dumpsPlain(node)))


class SlicedWriterTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        A graph with large containers of each kind is written in many
        slices and chunks and read back equal, with its shared objects
        and its cycle once each.
        """
        shared = {"shared": True}
        items: list[Any] = [{"i": i, "s": str(i)} for i in range(3 * CHUNK)]
        items[5] = items[2 * CHUNK + 7] = shared
        loop: list[Any] = [1, 2]
        loop.append(loop)
        value = {
            "items": items,
            "set": set(range(2 * CHUNK)),
            "frozen": frozenset(range(2 * CHUNK)),
            "tuple": tuple(str(i) for i in range(2 * CHUNK)),
            "mapping": {str(i): [i] for i in range(2 * CHUNK)},
            "strings": [str(i) for i in range(5 * CHUNK)],
            "loop": loop,
            "small": [1, 2, 3],
        }
        node, chunks, slices = _writeSliced(value)
        self.assertGreater(slices, 10)
        self.assertGreater(len(chunks), 10)
        self.assertTrue(all(len(c) <= CHUNK for c in chunks))
        out = _read(node, chunks)
        self.assertEqual(set(out), set(value))
        for key in ("items", "set", "frozen", "tuple", "mapping", "strings", "small"):
            self.assertEqual(out[key], value[key], key)
        self.assertIs(out["items"][5], out["items"][2 * CHUNK + 7])
        self.assertIs(out["loop"][2], out["loop"])

    def test_deepChain(self) -> None:
        """
        A chain 10,000 lists deep is written in slices (and segments) and
        read back.
        """
        chain: Any = None
        for i in range(10_000):
            chain = [chain, i]
        node, chunks, slices = _writeSliced(chain)
        self.assertGreater(slices, 1)
        out = _read(node, chunks)
        depth = 0
        while out is not None:
            self.assertEqual(out[1], 9_999 - depth)
            out, depth = out[0], depth + 1
        self.assertEqual(depth, 10_000)

    def test_narrowGraphInChunks(self) -> None:
        """
        A graph whose containers are each small (a binary tree, a long
        chain of dictionaries) is cut into chunks too: what is left for
        the last message is a small part of it.
        """
        def tree(depth: int) -> Any:
            return [tree(depth - 1), tree(depth - 1)] if depth else [0]

        links: Any = None
        for i in range(20_000):
            links = {"next": links, "i": i}
        def numbers(chain: Any) -> list[int]:
            found = []
            while chain is not None:
                found.append(chain["i"])
                chain = chain["next"]
            return found

        for value, same in ((tree(14), lambda a, b: a == b), (links, lambda a, b: numbers(a) == numbers(b))):
            node, chunks, _ = _writeSliced(value)
            self.assertGreater(len(chunks), 10)
            last = len(dumpsPlain(node))
            self.assertLess(last * 10, sum(len(dumpsPlain(c)) for c in chunks))
            self.assertTrue(same(_read(node, chunks), value))

    def test_chunkTwiceOrMissing(self) -> None:
        """
        A container naming a chunk twice, or one there is not, is
        malformed.
        """
        node, chunks, _ = _writeSliced([str(i) for i in range(2 * CHUNK)])
        self.assertEqual(node[2][0], ("C", [0, 1]))
        bad = ("l", node[1], [("C", [0, 0])])
        self.assertRaises(GraphError, _read, bad, chunks)
        missing = ("l", node[1], [("C", [2])])
        self.assertRaises(GraphError, _read, missing, chunks)
        self.assertRaises(GraphError, _read, ("l", 0, [("C", "x")]), chunks)

    def test_shardedMemo(self) -> None:
        """
        The sliced writer's memo grows in shards, and finds what any of
        them holds.
        """
        self.patch(_sliced, "_SHARD", 4)
        memo = _sliced._ShardedMemo()
        for i in range(10):
            memo[i * 7] = i
        self.assertEqual(len(memo._shards), 3)
        self.assertEqual([memo.get(i * 7) for i in range(10)], list(range(10)))
        self.assertEqual(memo.get(1, "none"), "none")
        self.assertIn(63, memo)
        self.assertNotIn(64, memo)
        self.assertEqual(sorted(memo), [i * 7 for i in range(10)])
        self.assertEqual((memo.pop(14), memo.pop(14, None), len(memo)), (2, None, 9))

    def test_limitCountsEveryContainer(self) -> None:
        """
        A tuple, a frozenset or an object's attributes count towards the
        limit as they are written, though none of them is remembered.
        """
        for value in ({"a": [1], "x": tuple(range(1000))}, {"a": [1], "x": frozenset(range(1000))}):
            writer = GraphWriter(lambda cls: None)
            writer.limit(100)
            self.assertRaises(TooLarge, writer.write, value)

    def test_limit(self) -> None:
        """
        Past its limit, a writer raises L{TooLarge}; a checkpoint's
        rollback then leaves no trace, and without a limit the same value
        is written.
        """
        writer = GraphWriter(lambda cls: None)
        big = [str(i) for i in range(100)]
        writer.checkpoint()
        writer.limit(50)
        self.assertRaises(TooLarge, writer.write, {"big": big})
        writer.rollback()
        self.assertEqual(writer.written(), [])
        writer.limit(None)
        self.assertEqual(writer.write(big)[2], big)


class _Large(_Stream):
    """
    A stream whose clock passes 1 ms at each look, so that a large
    connection takes several slices.
    """

    def stream(self, maxBatch: int = 2, **kw: Any) -> Stream:
        clock = itertools.count()
        return super().stream(maxBatch, timer=lambda: next(clock) * 0.001, **kw)

    def firstSlice(self, stream: Stream) -> Part:
        """
        The first turn captures no batch (the one connection is too large),
        the next writes its first slice.
        """
        self.assertIsNone(stream.next())
        part = stream.next()
        assert isinstance(part, Part)
        return part

    def messages(self, stream: Stream) -> list[Captured | Part]:
        sent: list[Captured | Part] = []
        for _ in range(10_000):
            message = stream.next()
            if message is not None:
                sent.append(message)
            elif not stream.walking:
                return sent
        raise AssertionError("the stream did not end")

    def receive(self, messages: list[Captured | Part]) -> Batches:
        """
        The successor's side: restore each message as it comes.
        """
        receiver = _Receiver(self.reactor2, self.ports2, self.adapters2)
        for message in messages:
            fds = [os.dup(fd) for fd in message.fds]
            receiver.restore((message.payload, fds))
        assert receiver.restored is not None
        for part in receiver.restored.parts:
            for t in part.transports:
                self.addCleanup(releaseConnection, t)
        return receiver.restored

    def big(self, protocol: Any, n: int = 3 * LIMIT) -> list[str]:
        protocol.big = [f"{i:08d}" for i in range(n)]
        return protocol.big


class _Receiver(ReceivesBatches):
    def __init__(self, reactor: Any, registry: Any, adapters: Any) -> None:
        self._reactor = reactor
        self.registry = registry
        self.adapters = adapters
        self.clock = lambda: 0.0
        self.restored = None
        self.chunks = {}
        self.chunkBytes = 0
        self.captureReport = None


class LargeConnectionTests(_Large):
    def test_inSlices(self) -> None:
        """
        A connection over the limit is left out of its batch and written in
        slices, frozen meanwhile while the others are served; its chunks go
        in part messages before its own batch; the successor restores it
        whole and serves it.
        """
        accepted = self.accept(3)
        (large, largeClient) = accepted[0]
        big = self.big(large)
        stream = self.stream(maxBatch=2, slices=True)
        messages: list[Captured | Part] = []
        for _ in range(10_000):
            message = stream.next()
            if isinstance(message, Part) and not any(isinstance(m, Part) for m in messages):
                # Frozen from its first slice on.
                self.assertFalse(self.reading(large))
            if message is not None:
                messages.append(message)
            elif not stream.walking:
                break
        parts = [m for m in messages if isinstance(m, Part)]
        self.assertGreater(len(parts), 2)
        batches = [m for m in messages if isinstance(m, Captured)]
        self.assertEqual(sum(b.count for b in batches), 3)
        # Its batch is its own, after its last part.
        self.assertEqual(batches[-1].transports, [large.transport])
        self.assertIs(messages[-1], batches[-1])
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertEqual((last.count, stream.count, stream.dropped), (0, 3, []))
        self.assertEqual(stream.sentBytes, sum(len(m.payload) for m in messages) + len(last.payload))
        received = self.receive([*messages, last])
        self.assertEqual(received.count, 3)
        self.successResultOf(received.activate(frozenAt=0.0))
        stream.release()
        restored = {t.getPeer().port: t for p in received.parts for t in p.transports}
        moved = restored[largeClient.getsockname()[1]]
        self.assertEqual(moved.protocol.big, big)
        largeClient.sendall(b"after\r\n")
        _waitReadable(moved.fileno())
        moved.doRead()
        while moved in self.reactor2.getWriters():
            moved.doWrite()
        self.assertEqual(_recvExactly(largeClient, 9), b"1:after\r\n")

    def test_olderSuccessor(self) -> None:
        """
        Without slices (a successor that does not read parts), a large
        connection goes in a batch like the others.
        """
        accepted = self.accept(2)
        self.big(accepted[0][0])
        stream = self.stream(maxBatch=2)
        messages = self.messages(stream)
        self.assertEqual([type(m) for m in messages], [Captured])
        self.assertEqual(messages[0].count, 2)

    def test_timerMetIsSuspended(self) -> None:
        """
        A scheduled call the walk met does not run while the rest is
        written; an abort thaws the connection, which reads again, and the
        call runs when due.
        """
        [(large, client)] = self.accept(1)
        # (Met before the large list.)
        large.timer = self.reactor.callLater(1, large.lineReceived, b"tick")
        self.big(large)
        stream = self.stream(slices=True)
        self.firstSlice(stream)
        self.reactor.advance(2)
        self.assertEqual(large.count, 0)
        stream.thaw()
        self.assertTrue(self.reading(large))
        self.reactor.advance(0)
        self.assertEqual(large.count, 1)
        self.talk(large, client, b"back")
        self.assertEqual(_recvExactly(client, 16), b"1:tick\r\n2:back\r\n")

    def test_ownTimersNotMetYet(self) -> None:
        """
        The protocol's own scheduled calls are suspended before the walk
        begins: one the walk meets only late, and one no attribute holds,
        do not run while it is written; once thawed, both do.
        """
        [(large, client)] = self.accept(1)
        self.big(large)
        # (Met after the large list, or never.)
        large.later = self.reactor.callLater(1, large.lineReceived, b"tick")
        self.reactor.callLater(1, large.lineReceived, b"tock")
        stream = self.stream(slices=True)
        self.firstSlice(stream)
        self.reactor.advance(2)
        self.assertEqual(large.count, 0)
        stream.thaw()
        self.reactor.advance(0)
        self.assertEqual(large.count, 2)

    def test_writtenMeanwhileIsSentAgain(self) -> None:
        """
        Something written to the large connection while it is frozen (a
        broadcast) taints its batch: the last batch captures it again, and
        the successor drops its copy.
        """
        [(large, client)] = self.accept(1)
        self.big(large)
        stream = self.stream(slices=True)
        first = self.firstSlice(stream)
        large.transport.write(b"news\r\n")
        messages = [first, *self.messages(stream)]
        self.assertEqual(len([m for m in messages if isinstance(m, Captured)]), 1)
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertEqual((last.transports, stream.dropped), ([large.transport], [0]))
        received = self.receive([*messages, last])
        self.assertEqual((received.count, received.dropped), (1, 1))

    def test_sharedWithABatchGoesLast(self) -> None:
        """
        A large connection whose graph reaches an object a batch sent goes
        in the last batch, with that batch's connections.
        """
        (large, _), (small, _) = self.accept(2)
        shared: dict[str, Any] = {"shared": 1}
        large.__dict__ = {"big": self.big(large), "shared": shared, **large.__dict__}
        small.shared = shared
        stream = self.stream(slices=True)
        messages = self.messages(stream)
        self.assertEqual([m.transports for m in messages if isinstance(m, Captured)], [[small.transport]])
        self.assertTrue(self.reading(large))
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertEqual(set(last.transports), {small.transport, large.transport})
        self.assertEqual(stream.dropped, [0])

    def test_batchReachingTheWalkGoesLast(self) -> None:
        """
        A batch captured while a large connection is written, whose graph
        reaches an object the walk wrote already, leaves that connection
        for the last turn and stops the walk: both go in the last batch,
        each object once.
        """
        (large, _), (small, _) = self.accept(2)
        shared: dict[str, Any] = {"shared": 1}
        # (Written in the walk's first slice.)
        large.shared = shared
        self.big(large)
        small.shared = shared
        small.busy = True
        stream = self.stream(slices=True)
        self.firstSlice(stream)
        small.busy = False
        messages = self.messages(stream)
        self.assertFalse([m for m in messages if isinstance(m, Captured)])
        self.assertFalse(stream.walking)
        self.assertTrue(self.reading(large))
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertEqual(set(last.transports), {small.transport, large.transport})
        received = self.receive([last])
        [one, other] = [t.protocol for t in received.parts[0].transports]
        self.assertIs(one.shared, other.shared)

    def test_anotherConnectionGoesLast(self) -> None:
        """
        A large connection whose graph reaches another connection cannot
        wait for its slices: it goes in the last batch, with it.
        """
        (large, _), (peer, _) = self.accept(2)
        peer.busy = True
        self.big(large)
        large.peer = peer
        stream = self.stream(slices=True)
        messages = self.messages(stream)
        self.assertFalse([m for m in messages if isinstance(m, Captured)])
        self.assertTrue(self.reading(large))
        peer.busy = False
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertEqual(set(last.transports), {large.transport, peer.transport})

    def test_stillWritingAtTheLastTurn(self) -> None:
        """
        A large connection still being written when the last turn comes
        is captured in it, whole.
        """
        [(large, _)] = self.accept(1)
        big = self.big(large)
        stream = self.stream(slices=True)
        self.firstSlice(stream)
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertEqual(last.transports, [large.transport])
        received = self.receive([last])
        [moved] = received.parts[0].transports
        self.assertEqual(moved.protocol.big, big)


class LargeAtTheLastTurnTests(_Large):
    """
    A connection being written in slices when the last turn comes is in
    no batch: the last turn finds it, and it goes in the last batch.
    """

    def test_walkInProgress(self) -> None:
        """
        The batch that left the large connection out does not count it
        among the connections it holds (L{Stream.unsent} then lists it).
        """
        accepted = self.accept(3)
        large, _ = accepted[0]
        self.big(large)
        stream = self.stream(maxBatch=2, slices=True)
        for _ in range(3):
            stream.next()
        self.assertTrue(stream.walking)
        self.assertEqual(
            sum(b.captured.ported for b in stream.batches),
            sum(b.captured.count for b in stream.batches),
        )
        self.ports.pauseAccepting()
        found = stream.unsent()
        assert found is not None
        self.assertIn(large.transport, found[0])
        self.assertIn(large.transport, stream.finish(found[0]).transports)
        self.ports.resumeAccepting()


class LargeCaptureTests(_Large):
    def test_firstSliceGivesWhatTheStartWrote(self) -> None:
        """
        The objects the start writes (the protocol, and any state its
        adapter gives whole) are among those the first slice gives, so
        that the stream checks them against the batches sent.
        """
        [(large, _)] = self.accept(1)
        self.big(large)
        stream = self.stream(slices=True)
        walk = LargeCapture.start(large.transport, 0, stream._prepare)
        self.addCleanup(walk.abandon)
        new = walk.proceed(0.0, lambda: 1.0)
        self.assertIn(id(large), new)
        self.assertNotIn(id(large), walk.proceed(0.0, lambda: 1.0))


class PartMessageTests(SynchronousTestCase):
    def test_part(self) -> None:
        """
        A part message decodes to its number and chunks; a batch is not
        one; a malformed one is refused.
        """
        chunk = dumpsPlain([1, 2])
        self.assertEqual(partOf(decodeMessage(dumpsPlain({"part": 3, "chunks": [chunk]}))), (3, [[1, 2]]))
        self.assertIsNone(partOf(Decoded({"roots": []})))
        for bad in ({"part": "3", "chunks": []}, {"part": 1, "chunks": [b"x"]}, {"part": 1, "chunks": [dumpsPlain(1)]}):
            self.assertRaises(GraphError, partOf, Decoded(bad))

    def test_streamingParts(self) -> None:
        """
        A successor that does not say it reads parts does not get them.
        """
        self.assertTrue(Streaming.fromWire(Streaming().toWire()).parts)
        wire = Streaming().toWire()
        del wire["parts"]
        self.assertFalse(Streaming.fromWire(wire).parts)



class LongValueTests(SynchronousTestCase):
    def test_longValuesInPieces(self) -> None:
        """
        A bytes or string value longer than L{BIG_ATOM} is written in
        pieces, a chunk each, over several slices, and read back whole.
        """
        blob = os.urandom(256) * (BIG_ATOM // 256 * 3 + 1)
        text = "é" * (BIG_ATOM * 2 + 5)
        value = {"blob": blob, "text": text, "small": b"x", "list": [1]}
        node, chunks, slices = _writeSliced(value)
        self.assertEqual(len(chunks), 4 + 3)
        self.assertGreater(slices, 2)
        self.assertTrue(_read(node, chunks) == value)

    def test_mixedPieces(self) -> None:
        """
        Pieces of different types, or a chunk of more than one item, are
        malformed.
        """
        node, chunks, _ = _writeSliced([[1], b"y" * (BIG_ATOM + 1)])
        self.assertEqual(node[2][1][0], "B")
        self.assertRaises(GraphError, _read, node, [[b"a"], ["b"]])
        self.assertRaises(GraphError, _read, node, [[b"a", b"b"], [b"c"]])
        self.assertRaises(GraphError, _read, ("l", 0, [("B", [])]), chunks)

    def test_limitedWriterRefuses(self) -> None:
        """
        A writer with a limit raises L{TooLarge} at a long value among an
        object's attributes or a container's items (but in a container of
        atoms only, written at once).
        """
        writer = GraphWriter(lambda cls: None)
        writer.limit(LIMIT)
        long = b"z" * (BIG_ATOM + 1)
        self.assertRaises(TooLarge, writer.write, [[1], long])
        writer.limit(None)
        self.assertTrue(writer.write([[1], long])[2][1] == long)
