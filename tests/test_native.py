# -*- test-case-name: tests.test_native -*-
"""
Tests for a stream's batches in the native form
(L{migrator.state._nativewrite}, L{migrator.state._nativeread}): every
stream test again with batches in the native form where they can be; what
it writes is what the graph writer's batch restores to; what is not for
it is left to the graph writer, having frozen nothing; and its reader
admits nothing but the form's own calls.
"""

from __future__ import annotations

import gc
import io
import os
import pickle
import sys
from typing import Any

from twisted.internet import task

from migrator.state import _nativeform as form
from migrator.state import _nativewrite as nativewrite
from migrator.state._capture import captureConnections
from migrator.state._graph import GraphError, dumpsPlain, loadsPlain
from migrator.state._nativeform import VERSION
from migrator.state._nativewrite import captureNative
from migrator.state._owned import VALUES, Owned
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.state._restore import restoreConnections
from migrator.state._stream import Stream
from migrator.takeover._fields import MalformedMessage
from migrator.takeover._messages import Streaming
from migrator.tap import Options
from tests.test_connections import _KEY
from tests.test_stream import Private, Quiet, RoomTests, StreamTests, _Stream


class NativeStreamTests(StreamTests):
    """
    Every stream test, with the successor reading the native form.
    """

    def stream(self, maxBatch: int = 2, **kw: Any) -> Stream:
        return super().stream(maxBatch, native=True, **kw)

    def test_batchesAreNative(self) -> None:
        """
        Batches of plain connections are in the native form: one pickle,
        no graph nodes; the last batch (with the factories) is not.
        """
        self.accept(3)
        stream = self.stream(maxBatch=2)
        sent = self.batches(stream)
        self.assertEqual((len(sent), stream.nativeBatches), (2, 2))
        message = loadsPlain(sent[0].payload)
        self.assertEqual((message["roots"], type(message["native"])), ([], bytes))
        self.ports.pauseAccepting()
        last = stream.finish()
        self.assertNotIn("native", loadsPlain(last.payload))


class NativeRoomTests(RoomTests):
    def stream(self, maxBatch: int = 2, **kw: Any) -> Stream:
        return super().stream(maxBatch, native=True, **kw)


class _Native(_Stream):
    """
    L{captureNative} and its reader, one batch at a time.
    """

    def capture(self, protocols: list[Private], owned: Owned | None = None, **kw: Any) -> Any:
        return captureNative(
            self.reactor,
            self.ports,
            self.adapters,
            frozenset({_KEY}),
            frozenset(self.adapters2.typeNames()),
            None,
            None,
            [p.transport for p in protocols],
            owned,
            {"batch": 0, "last": False},
            **kw,
        )

    def restored(self, captured: Any) -> list[Any]:
        fds = [os.dup(fd) for fd in captured.fds]
        part = restoreConnections(
            self.reactor2, self.ports2, self.adapters2, captured.payload, fds, native=True
        )
        for t in part.transports:
            self.addCleanup(t.socket.close)
        return [t.protocol for t in part.transports]

    def assertLeftToTheGraphWriter(self, protocols: list[Private], **kw: Any) -> None:
        self.assertIsNone(self.capture(protocols, **kw))
        for p in protocols:
            self.assertTrue(self.reading(p))


class CaptureNativeTests(_Native):
    """
    What the native form takes, and what it leaves to the graph writer.
    """

    def test_sameObjects(self) -> None:
        """
        Restored from the native form, the protocols hold what they held:
        objects shared between them are one object, cycles are kept, the
        factory is the successor's, each transport is its own.
        """
        (a, _), (b, _) = self.accept(2)
        shared = {"topic": "x", "members": [1, 2]}
        a.room = b.room = shared
        a.peer, b.peer = b, a
        a.data = (bytearray(b"ab"), frozenset({1}), {3}, 1.5, None, True, -(2**70))
        captured = self.capture([a, b])
        self.assertIsNotNone(captured)
        self.assertFalse(self.reading(a) or self.reading(b))
        ra, rb = self.restored(captured)
        self.assertIs(ra.room, rb.room)
        self.assertEqual(ra.room, shared)
        self.assertIs(ra.peer, rb)
        self.assertIs(rb.peer, ra)
        self.assertEqual(ra.data, a.data)
        self.assertIs(ra.factory, self.factory2)
        self.assertIsNot(ra.transport, rb.transport)
        self.assertIs(ra.transport.protocol, ra)
        self.assertEqual(ra.transport.getPeer().port, a.transport.getPeer().port)

    def test_anchors(self) -> None:
        """
        Anchors (the port's factory, the reactor) move in the native form
        wherever they are, named; and so does a scheduled call of an
        anchor's method.
        """
        [(a, _)] = self.accept(1)
        a.timer = self.reactor.callLater(5, self.factory.doStop)
        a.factories = [self.factory, {"reactor": self.reactor}]
        [ra] = self.restored(self.capture([a]))
        self.assertIs(ra.factory, self.factory2)
        self.assertIs(ra.factories[0], self.factory2)
        self.assertIs(ra.factories[1]["reactor"], self.reactor2)
        self.assertIs(ra.timer.func.__migrator_gated__.__self__, self.factory2)

    def test_scheduledCall(self) -> None:
        """
        A scheduled call of a bound method moves in the native form: it is
        suspended here with the batch's freeze, and in the successor it is
        held until the commit, due when it was, calling the restored
        object's method; a cancelled one is restored cancelled; an abort
        resumes the original.
        """
        [(a, _)] = self.accept(1)
        a.timer = self.reactor.callLater(5, a.lineReceived, b"ring")
        a.done = self.reactor.callLater(1, a.lineReceived, b"x")
        a.done.cancel()
        captured = self.capture([a])
        self.assertIsNotNone(captured)
        self.assertGreater(a.timer.getTime(), 1000)
        [ra] = self.restored(captured)
        self.assertFalse(ra.done.active())
        self.assertTrue(ra.timer.active())
        self.assertEqual(ra.timer.getTime(), 5)
        self.assertEqual(ra.timer.args, (b"ring",))
        self.reactor2.advance(5)
        # Held until the commit (the successor's gate).
        self.assertEqual(ra.count, 0)
        captured.thaw()
        self.assertEqual(a.timer.getTime(), 5)

    def test_allowedFunction(self) -> None:
        """
        A scheduled call of a function the registries allow by name moves
        in the native form; one they do not, or a function held as a
        value, is left to the graph writer.
        """
        (a, _), (b, _), (c, _) = self.accept(3)
        self.adapters.allowFunction(_allowed, "tests.allowed")
        self.adapters2.allowFunction(_allowed, "tests.allowed")
        a.timer = self.reactor.callLater(5, _allowed)
        [ra] = self.restored(self.capture([a]))
        self.assertIs(ra.timer.func.__migrator_gated__, _allowed)
        b.timer = self.reactor.callLater(5, _notAllowed)
        self.assertLeftToTheGraphWriter([b])
        c.hook = _allowed
        self.assertLeftToTheGraphWriter([c])

    def test_methodHeld(self) -> None:
        """
        A bound method held as a value (not as a scheduled call's
        function): left to the graph writer, which writes it.
        """
        [(a, _)] = self.accept(1)
        a.timer = self.reactor.callLater(5, a.lineReceived, b"ring")
        a.stopTimer = a.timer.cancel
        self.assertLeftToTheGraphWriter([a])

    def test_objectsInContainers(self) -> None:
        """
        Objects inside containers, at any depth, move in the native form:
        the protocol itself in a list of its own, another in a dictionary's
        value and in a tuple, the transport in a set.
        """
        (a, _), (b, _) = self.accept(2)
        a.peers = [a, {"other": (b, b.transport)}]
        b.seen = {b.transport}
        ra, rb = self.restored(self.capture([a, b]))
        self.assertIs(ra.peers[0], ra)
        self.assertIs(ra.peers[1]["other"][0], rb)
        self.assertIs(ra.peers[1]["other"][1], rb.transport)
        self.assertEqual(rb.seen, {rb.transport})

    def test_pickleBuffer(self) -> None:
        """
        A pickle buffer (which the C pickler writes itself): left to the
        graph writer, which says it has no adapter.
        """
        [(a, _)] = self.accept(1)
        a.buf = pickle.PickleBuffer(bytearray(b"abc"))
        self.assertLeftToTheGraphWriter([a])

    def test_methodOfAValue(self) -> None:
        """
        A bound method of a plain value (a dictionary's): left to the graph
        writer.
        """
        [(a, _)] = self.accept(1)
        a.getter = {}.get
        self.assertLeftToTheGraphWriter([a])

    def test_loopingCall(self) -> None:
        """
        A looping call: left to the graph writer.
        """
        [(a, _)] = self.accept(1)
        loop = task.LoopingCall(lambda: None)
        loop.clock = self.reactor
        a.loop = loop
        self.assertLeftToTheGraphWriter([a])

    def test_noAdapter(self) -> None:
        """
        An object without an adapter: left to the graph writer, which says
        why it stays.
        """
        [(a, _)] = self.accept(1)
        a.thing = object()
        self.assertLeftToTheGraphWriter([a])

    def test_declining(self) -> None:
        """
        A connection whose adapter declines to move it now: the batch is
        left to the graph writer (which leaves that one for the last
        turn), having frozen nothing; its adapter is asked, unlike the
        default rule, which never declines.
        """
        self.adapters = AdapterRegistry()
        self.adapters.registerFactory(Quiet, keep=())
        self.adapters.register(_DecliningAdapter(Private))
        (a, _), (b, _) = self.accept(2)
        b.declines = "in the middle of a request"
        self.assertLeftToTheGraphWriter([a, b])
        self.assertEqual(self.restored(self.capture([a]))[0].count, a.count)

    def test_connectionOutsideTheBatch(self) -> None:
        """
        Another connection reached through the graph: left to the graph
        writer (which moves it along, or not).
        """
        (a, _), (b, _) = self.accept(2)
        a.peer = b
        self.assertLeftToTheGraphWriter([a])

    def test_sharedWithABatchSent(self) -> None:
        """
        An object a batch already sent holds: left to the graph writer,
        which leaves the root for the last batch.
        """
        (a, _), (b, _) = self.accept(2)
        a.room = b.room = ["shared"]
        owned = Owned()
        first = self.capture([a])
        owned.add(first.writer.written(), 0)
        self.assertLeftToTheGraphWriter([b], owned=owned)

    def test_tooLarge(self) -> None:
        """
        Past the cap of one connection's graph, or of the batch's, the
        pickling stops: left to the graph writer.
        """
        (a, _), (b, _) = self.accept(2)
        a.big = b"x" * 5000
        self.assertLeftToTheGraphWriter([a], rootCap=4096)
        a.big, b.big = b"y" * 3000, b"z" * 3000
        self.assertLeftToTheGraphWriter([a, b], cap=5000)
        self.assertIsNotNone(self.capture([a, b], rootCap=4096))

    def test_tooManyObjects(self) -> None:
        """
        A chain of objects longer than the units a connection's graph may
        hold in a batch (one per object, one more per state entry): left to
        the graph writer, which writes it in slices.
        """
        self.adapters.registerInstance(_Link)
        self.adapters2.registerInstance(_Link)
        [(a, _)] = self.accept(1)
        head = None
        for n in range(100, 0, -1):
            head = _Link(n, head)
        a.chain = head
        self.assertLeftToTheGraphWriter([a], units=250)
        [ra] = self.restored(self.capture([a], units=350))
        link, length = ra.chain, 0
        while link is not None:
            link, length = link.next, length + 1
        self.assertEqual(length, 100)

    def test_tooDeep(self) -> None:
        """
        A chain deeper than the bound: left to the graph writer (which
        does not recurse).
        """
        [(a, _)] = self.accept(1)
        chain: list[Any] = []
        for _ in range(5000):
            chain = [chain]
        a.chain = chain
        self.assertLeftToTheGraphWriter([a])

    def test_writtenIds(self) -> None:
        """
        The ids a batch owns are those of the objects it wrote (protocols,
        containers, transports), not the factory's (an anchor, which every
        batch refers to).
        """
        [(a, _)] = self.accept(1)
        a.things = [1, 2]
        captured = self.capture([a])
        ids = set(captured.writer.written())
        self.assertTrue({id(a), id(a.things), id(a.transport)} <= ids)
        self.assertNotIn(id(self.factory), ids)

    def test_sharedValuesAreNotShared(self) -> None:
        """
        Values two batches both hold (a string, a tuple) do not make the
        second one share with the first: it is native too.
        """
        (a, _), (b, _) = self.accept(2)
        name, pair = "a name long enough not to be a constant" * 2, (1, "x")
        a.name = b.name = name
        a.pair = b.pair = pair
        owned = Owned()
        first = self.capture([a])
        owned.add(first.writer.written(), 0)
        self.assertIsNotNone(self.capture([b], owned=owned))

    def test_ownedByANativeBatch(self) -> None:
        """
        What a native batch wrote is owned by it, as its memo: the graph
        writer's look at an object it holds finds that batch; at a value
        both hold (a string), or at the anchors every batch refers to, it
        finds none; a stream keeping only other batches forgets it.
        """
        (a, _), (b, _) = self.accept(2)
        name = "a name long enough not to be a constant" * 2
        a.name = b.name = name
        a.room = ["shared"]
        owned = Owned()
        self.assertFalse(owned)
        first = self.capture([a])
        owned.add(first.writer.written(), 3)
        self.assertTrue(owned)
        self.assertEqual(owned.owners([id(a.room)]), {3})
        self.assertEqual(owned.owners([id(a), id(a.transport)]), {3})
        self.assertEqual(owned.owners([id(name), id(self.factory), id(b)]), set())
        self.assertEqual(owned.keeping({3}).owners([id(a.room)]), {3})
        self.assertEqual(owned.keeping({1, 2}).owners([id(a.room)]), set())
        owned.clear()
        self.assertFalse(owned)
        self.assertEqual(owned.owners([id(a.room)]), set())

    def test_holdsAnyOfAcrossForms(self) -> None:
        """
        A native batch's objects (by id, no values) share with a graph
        writer's batch (its ids), a native batch's, or a connection written
        in slices (its writer) by an object both hold.
        """
        shared, other = ["x"], ["y"]
        owned = Owned()
        self.assertFalse(owned.holdsAnyOf({id(shared)}))
        owned.add([id(other)], 0)
        self.assertFalse(owned.holdsAnyOf({id(shared)}))
        owned.add([id(shared)], 1)
        self.assertTrue(owned.holdsAnyOf({id(shared)}))
        native = Owned()
        native.add({id(other)}, 0)
        self.assertFalse(native.holdsAnyOf({id(shared)}))
        self.assertTrue(native.holdsAnyOf({id(shared), id(other)}))

        class Writer:
            def wroteAny(self, ids: list[int]) -> bool:
                return id(shared) in ids

        layered = Owned()
        layered.addWriter(Writer(), 2)
        self.assertTrue(layered.holdsAnyOf({id(shared)}))
        self.assertFalse(layered.holdsAnyOf({id(other)}))

    def test_ownedIds(self) -> None:
        """
        The ids a native batch owns are those of the objects it wrote
        (protocols, containers, transports), not the values (a string),
        nor the factory's (an anchor) or the form's markers, which every
        batch refers to; the same whether they are taken from the
        collector's view of the pickler or from a copy of its memo.
        """
        [(a, _)] = self.accept(1)
        a.label = "a label long enough not to be a constant" * 2
        a.things = [1, 2]
        ids = self.capture([a]).writer.written()
        self.assertTrue({id(a), id(a.things), id(a.transport)} <= ids)
        self.assertNotIn(id(self.factory), ids)
        self.assertNotIn(id(a.label), ids)
        for name in form.MARKERS:
            self.assertNotIn(id(getattr(form, name)), ids)
        self.patch(nativewrite, "_referents", lambda pickler: [])
        captured = self.capture([a])
        self.assertTrue({id(a), id(a.things), id(a.transport)} <= captured.writer.written())
        self.assertNotIn(id(self.factory), captured.writer.written())
        self.assertNotIn(id(a.label), captured.writer.written())

    def test_ownedIdsAsTheMemo(self) -> None:
        """
        Taken from the collector's view of the pickler, the ids a native
        batch owns are exactly its memo's (less the values, anchors and
        markers); where the interpreter does not traverse the memo
        (before 3.11), the memo's copy gives them.
        """
        (a, _), (b, _) = self.accept(2)
        a.things, b.things = [1, [2]], {"k": [3]}
        writer = self.capture([a, b]).writer
        pickler = writer._pickler
        expected = {
            i for i, (_, o) in pickler.memo.copy().items() if type(o) not in VALUES
        } - pickler.anchorsMet - nativewrite._MARKER_IDS
        self.assertEqual(writer.written(), expected)
        traversed = id(a) in set(map(id, gc.get_referents(pickler)))
        self.assertEqual(traversed, sys.version_info >= (3, 11))


_ORDER: list[str] = []


class _DecliningAdapter(InstanceAdapter):
    def movable(self, obj: Any) -> str | None:
        return getattr(obj, "declines", None)


class _Node:
    def __init__(self, name: str) -> None:
        self.name = name

    def touch(self) -> None:
        pass


class _OrderAdapter(InstanceAdapter):
    """
    The default rule, noting the order of populating.
    """

    def populate(self, obj: Any, state: Any, context: Any) -> None:
        _ORDER.append(state.get("name", type(obj).__name__))
        super().populate(obj, state, context)


class _Holder:
    def __init__(self, data: Any) -> None:
        self.data = data


class _HolderAdapter(InstanceAdapter):
    """
    A state of its own: the dictionary the object holds, as it is.
    """

    def capture(self, obj: Any) -> Any:
        return obj.data

    def populate(self, obj: Any, state: Any, context: Any) -> None:
        obj.data = state


class _Pair:
    def __init__(self, left: Any) -> None:
        self.left = left


class _PairAdapter(InstanceAdapter):
    """
    A state of its own, made for each capture.
    """

    def capture(self, obj: Any) -> Any:
        return {getattr(obj, "key", "left"): obj.left}

    def populate(self, obj: Any, state: Any, context: Any) -> None:
        [obj.left] = state.values()


class EquivalenceTests(_Native):
    """
    What a batch in the native form restores is what the graph writer's
    restores: the order of states' entries and of populating, a state of
    an adapter's own, shared.
    """

    def setUp(self) -> None:
        super().setUp()
        for registry in (self.adapters, self.adapters2):
            registry.register(_OrderAdapter(_Node))
            registry.register(_HolderAdapter(_Holder))
            registry.register(_PairAdapter(_Pair))
        del _ORDER[:]

    def graph(self, protocols: list[Private], owned: Owned | None = None) -> Any:
        return captureConnections(
            self.reactor, self.ports, self.adapters, frozenset({_KEY}),
            frozenset(self.adapters2.typeNames()), None, None,
            connections=[p.transport for p in protocols], owned=owned,
            withFactories=False, header={"batch": 0, "last": False},
        )

    def both(self, protocols: list[Private]) -> list[tuple[list[Any], list[str]]]:
        """
        The protocols restored from each form in turn, with the order
        their objects were populated in.
        """
        found = []
        for capture in (self.capture, self.graph):
            captured = capture(protocols)
            del _ORDER[:]
            restored = self.restored(captured)
            found.append((restored, list(_ORDER)))
            captured.thaw()
        return found

    def test_orders(self) -> None:
        """
        A state's entries keep their order, objects referred to among
        them; objects are populated after those they refer to, in their
        entries' order.
        """
        [(a, _)] = self.accept(1)
        a.zz = _Node("first")
        a.zz.child = _Node("child")
        a.aa = 1
        a.second = _Node("second")
        (([native], nativeOrder), ([graph], graphOrder)) = self.both([a])
        self.assertEqual(list(vars(native)), list(vars(graph)))
        self.assertEqual(nativeOrder, graphOrder)
        self.assertEqual(nativeOrder, ["child", "first", "second"])

    def test_orderThroughTransportsAndCalls(self) -> None:
        """
        An object met first as a transport's producer, or as the object of
        a scheduled call's method, is populated where the graph reader
        would: where the transport or the call is.
        """
        [(a, _)] = self.accept(1)
        a.timer = self.reactor.callLater(5, _Node("called").touch)
        a.wrapped = _Node("wrapped")
        membrane = _Node("membrane")
        a.membrane = membrane
        a.transport.registerProducer(membrane, True)
        (([native], nativeOrder), ([graph], graphOrder)) = self.both([a])
        self.assertEqual(nativeOrder, graphOrder)
        self.assertEqual(nativeOrder, ["membrane", "called", "wrapped"])

    def test_keyNotAString(self) -> None:
        """
        An object under a key that is not a string in an adapter's own
        state (a float NaN, not even equal to itself) moves in the native
        form too.
        """
        [(a, _)] = self.accept(1)
        a.pair = _Pair(_Node("left"))
        a.pair.key = float("nan")
        [ra] = self.restored(self.capture([a]))
        self.assertEqual(ra.pair.left.name, "left")

    def test_containersOrder(self) -> None:
        """
        Objects inside containers are populated where the graph reader
        would populate them, and the containers hold the same.
        """
        [(a, _)] = self.accept(1)
        a.items = [_Node("x"), {"k": _Node("y"), "t": (_Node("z"),)}]
        a.after = _Node("after")
        (([native], nativeOrder), ([graph], graphOrder)) = self.both([a])
        self.assertEqual(nativeOrder, graphOrder)
        self.assertEqual(nativeOrder, ["x", "y", "z", "after"])
        self.assertEqual(
            [native.items[0].name, native.items[1]["k"].name, native.items[1]["t"][0].name],
            [graph.items[0].name, graph.items[1]["k"].name, graph.items[1]["t"][0].name],
        )

    def test_noneState(self) -> None:
        """
        An adapter's own state of C{None} (which pickle writes as no state
        at all) is populated, as the graph reader would.
        """
        [(a, _)] = self.accept(1)
        a.holder = _Holder(None)
        a.after = _Node("after")
        (([native], nativeOrder), ([graph], graphOrder)) = self.both([a])
        self.assertIsNone(native.holder.data)
        self.assertEqual(nativeOrder, graphOrder)

    def test_ownStateShared(self) -> None:
        """
        An adapter's own state shared with another object stays one object,
        in one batch; and in another batch, it is seen as shared.
        """
        (a, _), (b, _) = self.accept(2)
        session = {"user": "alice"}
        a.holder = _Holder(session)
        b.session = session
        both = self.capture([a, b])
        [ra, rb] = self.restored(both)
        self.assertIs(ra.holder.data, rb.session)
        both.thaw()
        owned = Owned()
        first = self.capture([a])
        owned.add(first.writer.written(), 0)
        self.assertLeftToTheGraphWriter([b], owned=owned)

    def test_ownFreshState(self) -> None:
        """
        An adapter's own state that it made for the capture (a dictionary
        nothing else holds) may refer to objects, as an instance
        dictionary: it moves in the native form.
        """
        [(a, _)] = self.accept(1)
        a.pair = _Pair(_Node("left"))
        [ra] = self.restored(self.capture([a]))
        self.assertEqual(ra.pair.left.name, "left")

    def test_producer(self) -> None:
        """
        A transport's producer (an object of the batch) moves in the
        native form, registered again in the successor at the commit.
        """
        [(a, _)] = self.accept(1)
        producer = _Node("producer")
        a.producer = producer
        a.transport.registerProducer(producer, True)
        captured = self.capture([a])
        self.assertIsNotNone(captured)
        fds = [os.dup(fd) for fd in captured.fds]
        part = restoreConnections(
            self.reactor2, self.ports2, self.adapters2, captured.payload, fds, native=True
        )
        self.addCleanup(part.transports[0].socket.close)
        [restored] = part.producers
        self.assertIs(restored, part.transports[0].protocol.producer)
        self.assertEqual(restored.name, "producer")

    def test_callReachedThroughItsArguments(self) -> None:
        """
        A scheduled call whose method's object refers back to it, met
        before that object: left to the graph writer (else it would be
        written, and held in the successor, twice).
        """
        [(a, _)] = self.accept(1)
        node = _Node("n")
        call = self.reactor.callLater(5, node.touch)
        node.pending = call
        a.timer = call
        a.node = node
        self.assertLeftToTheGraphWriter([a])

    def test_callOfACall(self) -> None:
        """
        A scheduled call of another call's method: left to the graph
        writer.
        """
        [(a, _)] = self.accept(1)
        inner = self.reactor.callLater(10, a.lineReceived, b"x")
        a.guard = self.reactor.callLater(5, inner.cancel)
        self.assertLeftToTheGraphWriter([a])


def _message(native: bytes, count: int = 0) -> bytes:
    return dumpsPlain({"roots": [], "factories": [], "count": count, "native": native})


class ReadNativeTests(_Stream):
    """
    The native reader decodes plain data only, and makes nothing that the
    records do not name rightly.
    """

    def restore(self, native: bytes, count: int = 0, fds: list[int] | None = None) -> Any:
        return restoreConnections(
            self.reactor2, self.ports2, self.adapters2, _message(native, count), fds or [], native=True
        )

    def pickled(self, *values: Any) -> bytes:
        """
        One pickle per value, one memo, as a batch is written.
        """
        f = io.BytesIO()
        pickler = pickle.Pickler(f, protocol=5)
        for value in values:
            pickler.dump(value)
        return f.getvalue()

    def test_notAskedFor(self) -> None:
        """
        A batch in the native form is refused by a successor that did not
        ask for it (C{--graph-batches}).
        """
        native = self.pickled()
        restoreConnections(self.reactor2, self.ports2, self.adapters2, _message(native), [], native=True)
        error = self.assertRaises(
            GraphError,
            restoreConnections,
            self.reactor2,
            self.ports2,
            self.adapters2,
            _message(native),
            [],
        )
        self.assertIn("did not ask for", str(error))

    def test_otherGlobal(self) -> None:
        """
        A pickle that names anything (here C{os.system}) is refused before
        anything is called: records are plain data.
        """
        evil = pickle.dumps([_System()], protocol=5)
        error = self.assertRaises(GraphError, self.restore, evil)
        self.assertIn("refusing to load", str(error))

    def test_persistentId(self) -> None:
        """
        A persistent id is refused.
        """

        class Persistent(pickle.Pickler):
            # (A method: the attribute is read-only from Python 3.13 on.)
            def persistent_id(self, obj: Any) -> Any:
                return "x" if obj == "p" else None

        f = io.BytesIO()
        Persistent(f, protocol=5).dump(["p"])
        self.assertRaises(GraphError, self.restore, f.getvalue())

    def test_otherNames(self) -> None:
        """
        A name of the form's own module that is not a marker, or a marker's
        name in another module, is refused.
        """
        for module, name in [(form.__name__, "VERSION"), (form.__name__, "_marker"), ("os", "OBJECT")]:
            evil = b"\x80\x05\x8c" + bytes([len(module)]) + module.encode()
            evil += b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93."
            error = self.assertRaises(GraphError, self.restore, evil)
            self.assertIn("refusing to load", str(error))

    def test_unknownType(self) -> None:
        """
        An object of a type this process has no adapter for is refused.
        """
        error = self.assertRaises(
            GraphError, self.restore, self.pickled(_Obj("no.such.Type", {}))
        )
        self.assertIn("no.such.Type", str(error))

    def test_malformed(self) -> None:
        """
        Markers called with the wrong arguments, an object left without
        its state or populated twice or not made by the batch, a reference
        to no anchor, a transport without its description or its protocol,
        and calls of what is not allowed, are refused.
        """
        private = _privateName()
        meta = dict.fromkeys(_META_KEYS, 0)
        made = _Obj(private, {})
        for values in [
            [_Call(form.OBJECT, (private, "1"))],
            [_Call(form.OBJECT, (private, 1, "yes"))],
            [_Call(form.OBJECT, (private, 1, False, 4))],
            [_Call(form.OBJECT, (private, 1))],
            [_Call(form.POPULATE, ({}, {}))],
            [made, _Call(form.POPULATE, (made, {}))],
            [_Call(form.ANCHOR, ("no such anchor",))],
            [_Call(form.ANCHOR, (5,))],
            [_Call(form.TRANSPORT, ({"fd": 0},))],
            [_Call(form.TRANSPORT, (meta,))],
            [_Call(form.ATTACH, (made, (made, None)))],
            [made, _Call(form.CALL, (1.0, ("f", "no.such.function"), (), {}))],
            [made, _Call(form.CALL, (1.0, ("m", {}, "clear"), (), {}))],
            [made, _Call(form.CALL, (1.0, ("m", made, "no_such_method"), (), {}))],
            [made, _Call(form.CALL, (1.0, ("m", made, "lineReceived"), [], {}))],
            [made, _Call(form.CALL, (1.0, ("m", made, "lineReceived"), (), {1: 2}))],
            [made, _Call(form.CALL, (1.0, ("m", made, "busy"), (), {}))],
            [made, _Call(form.CALL, (1.0, ("x", made, "lineReceived"), (), {}))],
        ]:
            self.assertRaises(GraphError, self.restore, self.pickled(*values))

    def test_anchorChanged(self) -> None:
        """
        A batch whose opcodes change an anchor (pickle's C{BUILD} on the
        reactor: an attribute added, or one replaced) is refused, and the
        anchor is put back as it was; whether the rest of the batch is
        well formed or not.
        """
        reactor = self.reactor2
        before = dict(vars(reactor))
        name = next(iter(before))
        for state, tail in [({"hacked": 1}, b"."), ({name: "replaced"}, b"."), ({"hacked": 1}, b"\x93")]:
            f = io.BytesIO()
            pickle.Pickler(f, protocol=5).dump(_Call(form.ANCHOR, ("reactor",)))
            body = f.getvalue()[:-1]
            f = io.BytesIO()
            pickle.Pickler(f, protocol=5).dump(state)
            # (The anchor, then BUILD with that state, then the end.)
            evil = body + f.getvalue()[2:-1] + b"b" + tail
            error = self.assertRaises(GraphError, self.restore, evil)
            self.assertIn("changed an object of this process's own", str(error))
            self.assertEqual(vars(reactor).keys(), before.keys())
            self.assertTrue(all(vars(reactor)[k] is v for k, v in before.items()))

    def test_cancelledCallsLeaveTheReactor(self) -> None:
        """
        Calls restored cancelled are cancelled once the batch is read: a
        reactor that rebinds its attributes as calls are cancelled (a real
        one compacts its list of calls) is not taken for one the batch
        changed.
        """
        reactor = _RebindingClock()
        private = _privateName()
        made = _Obj(private, {"reactor": _Call(form.ANCHOR, ("reactor",))})
        calls = [_Call(form.CALL, (None, None, (), {})) for _ in range(3)]
        restored = restoreConnections(
            reactor, self.ports2, self.adapters2,
            _message(self.pickled(made, *calls)), [], native=True,
        )
        self.assertEqual(restored.count, 0)
        self.assertEqual(reactor.rebound, 3)

    def test_transportWithoutProtocol(self) -> None:
        """
        A transport built on a descriptor that arrived, but never given
        its protocol, is refused (and its descriptor closed).
        """
        [(a, _)] = self.accept(1)
        meta = {
            "fd": 0, "family": 2, "unix": False, "port": _KEY,
            "peer": [a.transport.getPeer().host, a.transport.getPeer().port], "pending": b"", "reading": True,
            "producerPaused": False, "streaming": False,
        }
        error = self.assertRaises(
            GraphError, self.restore, self.pickled(_Call(form.TRANSPORT, (meta,))), 1,
            [os.dup(a.transport.fileno())],
        )
        self.assertIn("without its protocol", str(error))

    def test_undecodable(self) -> None:
        """
        Bytes that are not a pickle are refused.
        """
        self.assertRaises(GraphError, self.restore, b"\x80\x05not a pickle")


_META_KEYS = ("fd", "family", "unix", "port", "peer", "pending", "reading", "producerPaused", "streaming")


def _privateName() -> str:
    from migrator.state._nodes import typeName

    return typeName(Private)


class _Link:
    def __init__(self, n: int, next: _Link | None) -> None:
        self.n = n
        self.next = next


def _allowed() -> None:
    pass


def _notAllowed() -> None:
    pass


class _System:
    def __reduce__(self) -> Any:
        return (os.system, ("true",))


class _RebindingClock(task.Clock):
    """
    A clock that rebinds an attribute whenever a call is cancelled.
    """

    rebound = 0

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        call = super().callLater(delay, f, *args, **kw)
        cancel = call.canceller

        def canceller(c: Any) -> None:
            self.calls = list(self.calls)
            self.rebound += 1
            cancel(c)

        call.canceller = canceller
        return call


class _Call:
    """
    Pickled as a call of C{function} with C{args}.
    """

    def __init__(self, function: Any, args: tuple[Any, ...]) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> Any:
        return (self.function, self.args)


class _Obj:
    """
    Pickled as an object of the native form: made, then populated.
    """

    def __init__(self, typeName: str, state: Any) -> None:
        self.typeName, self.state = typeName, state

    def __reduce__(self) -> Any:
        return (form.OBJECT, (self.typeName, 1), self.state, None, None, form.POPULATE)


class NegotiationTests(_Stream):
    def test_olderSuccessor(self) -> None:
        """
        A successor that does not say it reads the native form (an older
        one) gets none.
        """
        self.assertEqual(Streaming.fromWire({"max_batch": 4}).native, 0)
        self.assertEqual(Streaming.fromWire(Streaming().toWire()).native, VERSION)

    def test_otherVersion(self) -> None:
        """
        A successor that reads another version of the native form gets
        graph batches only.
        """
        self.assertEqual(Streaming.fromWire({"native_form": VERSION + 1}).native, VERSION + 1)
        self.assertRaises(MalformedMessage, Streaming.fromWire, {"native_form": True})

    def test_graphBatchesOption(self) -> None:
        """
        C{--graph-batches} has the successor ask for batches by the graph
        writer only.
        """
        tac = self.mktemp()
        with open(tac, "w"):
            pass
        options = Options()
        options.parseOptions(["--control", "/c", "--graph-batches", "--tac", tac])
        self.assertTrue(options["graph-batches"])

    def test_streamWithoutNative(self) -> None:
        """
        A stream whose successor does not read the native form writes every
        batch with the graph writer.
        """
        self.accept(2)
        stream = self.stream(maxBatch=1)
        self.assertEqual(len(self.batches(stream)), 2)
        self.assertEqual(stream.nativeBatches, 0)

