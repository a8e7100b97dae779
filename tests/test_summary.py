# -*- test-case-name: tests.test_summary -*-
"""
Tests for L{migrator.state._summary} and L{migrator.state._report}: the
object graph behind the connections as an operator may see it (components,
shapes and never values, anchors, bounds) and the plan of a takeover per
port and class, with a policy and a selection.  Connections are
L{FakeConnection}s; adapters are the default rule over small classes.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from migrator.state._graph import typeName
from migrator.state._plan import CLOSE, DRAIN, NOT_SELECTED, REFUSE
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.state._report import (
    graphReport,
    outcomeOf,
    planReport,
    previewCapture,
    safePath,
)
from migrator.state._summary import (
    ANCHOR,
    CONNECTION,
    CONTAINER,
    SHARED,
    connectionId,
    describeConnection,
    shapeOf,
    stateShape,
    summarizeGraph,
)
from tests._fakes import FakeConnection


class Room:
    """
    An application object several connections may share.
    """

    def __init__(self) -> None:
        self.members: list[Any] = []
        self.topic = "secret topic"


class Talker:
    """
    A protocol of the application's own.
    """

    def __init__(self, room: Room | None = None, factory: Any = None) -> None:
        self.room = room
        self.factory = factory
        self.password = "hunter2"
        self.token = b"s3cr3t-bytes"


class Chatty:
    """
    A protocol no adapter covers (the documentation's chat: a shared users
    dictionary).
    """

    def __init__(self, users: dict[bytes, Any]) -> None:
        self.users = users
        self.name = b"alice"


class Helper:
    """
    An object with no adapter, held by an adapted protocol.
    """

    def __init__(self, other: Any) -> None:
        self.other = other


class Factory:
    """
    A port's factory (an anchor).
    """

    def __init__(self) -> None:
        self.clients: list[Any] = []


@attrs.frozen
class HarmlessAdapter(InstanceAdapter):
    """
    The default rule, for connections that may stay harmlessly.
    """

    drainsHarmlessly: bool = True


@attrs.define(eq=False)
class Port:
    """
    Stands for a listening port (C{transport.server}).
    """

    key: str


@attrs.define(eq=False)
class Transport:
    """
    A connection with a listening port and a peer.
    """

    protocol: Any
    server: Any = None
    connected: bool = True
    disconnecting: bool = False
    peer: Any = None

    def getPeer(self) -> Any:
        return self.peer


@attrs.frozen
class Address:
    host: str
    port: int


def registry(*classes: type, harmless: tuple[type, ...] = ()) -> AdapterRegistry:
    adapters = AdapterRegistry()
    for cls in classes:
        adapters.registerInstance(cls)
    for cls in harmless:
        adapters.register(HarmlessAdapter(cls))
    return adapters


def connect(protocol: Any, **kw: Any) -> FakeConnection:
    transport = FakeConnection(protocol=protocol, **kw)
    protocol.transport = transport
    return transport


class ShapeTests(SynchronousTestCase):
    """
    Shapes say types and sizes, never values.
    """

    def test_shapeOf(self) -> None:
        """
        Atoms give their type, sized values their size, objects their
        class.
        """
        self.assertEqual(
            [shapeOf(v) for v in (None, True, 3, 2.5, "abc", b"xy", [1], (1, 2), {1: 2}, Room())],
            ["None", "bool", "int", "float", "str[3]", "bytes[2]", "list[1]", "tuple[2]",
             "dict[1]", typeName(Room)],
        )  # fmt: skip

    def test_safePath(self) -> None:
        """
        A capture's path keeps class names, attribute names and list
        positions, never a dictionary's keys (user names, session ids).
        """
        self.assertEqual(
            safePath("factory:tcp:0:127.0.0.1#0['users'][b'bob']<Chat>['transport']"),
            "factory:tcp:0:127.0.0.1#0['users'][...]<Chat>['transport']",
        )
        self.assertEqual(
            safePath("Site<Site>['sessions']['s3cr3t']<Session>['x'][3]"),
            "Site<Site>['sessions'][...]<Session>['x'][3]",
        )
        self.assertEqual(safePath("X<X>[('k', 'v')]<Y>"), "X<X>[...]<Y>")

    def test_stateShape(self) -> None:
        """
        A state keyed by attribute names lists each name with its value's
        shape; other keys (not identifiers: user data) are only counted.
        """
        self.assertEqual(
            stateShape({"name": b"alice", "count": 3, "not a name": 1, 5: 2}),
            {"count": "int", "name": "bytes[5]", "...": "2 more"},
        )
        self.assertEqual(stateShape([1, 2]), "list[2]")


class SummaryTests(SynchronousTestCase):
    """
    L{summarizeGraph}: components of connections that share objects.
    """

    def test_components(self) -> None:
        """
        Two connections whose protocols share an adapted object are one
        component; a third is another.  The port's factory, reached by
        all, is an anchor and joins nothing; each component names it.
        """
        factory, room = Factory(), Room()
        a, b, c = Talker(room, factory), Talker(room, factory), Talker(None, factory)
        transports = [connect(p) for p in (a, b, c)]
        graph = summarizeGraph(
            transports,
            registry(Talker, Room, Factory),
            {id(factory): ("factory:tcp:1", factory)},
        )
        self.assertEqual(sorted(len(comp.connections) for comp in graph.components), [1, 2])
        big = graph.components[0]
        self.assertEqual(sorted(big.connections), [0, 1])
        self.assertEqual(big.ident, "k" + min(graph.connectionIds[0:2])[1:])
        self.assertEqual(big.anchors, ("factory:tcp:1",))
        self.assertEqual(graph.components[1].anchors, ("factory:tcp:1",))
        [anchor] = [n for n in graph.nodes if n.kind == ANCHOR]
        self.assertEqual((anchor.cls, anchor.adapter), (typeName(Factory), typeName(Factory)))
        self.assertEqual(graph.componentOf[2], graph.components[1])
        self.assertFalse(graph.truncated)

    def test_sharedContainerWithoutAdapters(self) -> None:
        """
        Protocols with no adapter are looked into (their instance
        dictionary): two that hold one users dictionary are one component,
        and the dictionary is drawn as a shared node.
        """
        users: dict[bytes, Any] = {}
        alice, bob = Chatty(users), Chatty(users)
        users.update({b"alice": alice, b"bob": bob})
        transports = [connect(alice), connect(bob)]
        graph = summarizeGraph(transports, registry(), {})
        [component] = graph.components
        self.assertEqual(sorted(component.connections), [0, 1])
        shared = [n.asDict() for n in graph.nodes if n.shared and n.kind == CONTAINER]
        self.assertEqual(
            [(n["kind"], n["class"], n["shape"], n["referrers"]) for n in shared],
            [(SHARED, "dict", "dict[2]", 2)],
        )
        protocols = [n for n in graph.nodes if n.cls == typeName(Chatty) and n.kind != CONNECTION]
        self.assertEqual({n.note for n in protocols}, {"no adapter"})
        self.assertEqual(
            protocols[0].shape,
            {"name": "bytes[5]", "transport": typeName(FakeConnection), "users": "dict[2]"},
        )

    def test_noValues(self) -> None:
        """
        Nothing of a value reaches the report: secrets held by protocols
        appear as their types and sizes only.
        """
        room = Room()
        transports = [connect(Talker(room)), connect(Talker(room))]
        adapters = registry(Talker, Room)
        graph = summarizeGraph(transports, adapters, {})
        text = json.dumps(graphReport(graph, {}))
        text += json.dumps(planReport(graph, adapters, DRAIN, lambda port: None, ["nothing"]))
        for secret in ("hunter2", "s3cr3t", "secret topic"):
            self.assertNotIn(secret, text)
        self.assertIn('"password": "str[7]"', text)

    def test_unadaptedNotEntered(self) -> None:
        """
        An object with no adapter held by an adapted protocol is a leaf:
        what it references does not join components.
        """
        b = Talker()
        a = Talker()
        a.room = Helper(b)  # type: ignore[assignment]
        graph = summarizeGraph([connect(a), connect(b)], registry(Talker), {})
        self.assertEqual(len(graph.components), 2)
        helper = [n for n in graph.nodes if n.cls == typeName(Helper)]
        self.assertEqual([n.note for n in helper], ["no adapter"])

    def test_scheduledCalls(self) -> None:
        """
        Scheduled calls and bound methods are looked through: a protocol
        whose pending call targets another connection's protocol joins it.
        """
        clock = Clock()
        a, b = Talker(), Talker()
        a.room = clock.callLater(5, b.__init__)  # type: ignore[assignment]
        graph = summarizeGraph([connect(a), connect(b)], registry(Talker), {})
        self.assertEqual(len(graph.components), 1)

    def test_budget(self) -> None:
        """
        The walk stops after C{budget} values and says so.
        """
        room = Room()
        room.members = list(range(1000))
        graph = summarizeGraph([connect(Talker(room))], registry(Talker, Room), {}, budget=50)
        self.assertTrue(graph.truncated)
        self.assertEqual(graph.visits, 50)
        self.assertTrue(graphReport(graph, {})["truncated"])

    def test_resolve(self) -> None:
        """
        A selection names connections by id or whole components by id;
        names of nothing open are returned.
        """
        room = Room()
        transports = [connect(Talker(room)), connect(Talker(room)), connect(Talker())]
        graph = summarizeGraph(transports, registry(Talker, Room), {})
        big, small = graph.components
        chosen, unknown = graph.resolve([big.ident, "c-gone"])
        self.assertEqual((chosen, unknown), ({0, 1}, ["c-gone"]))
        chosen, _ = graph.resolve([graph.connectionIds[2]])
        self.assertEqual(chosen, {2})

    def test_splitPoints(self) -> None:
        """
        Selecting one of two connections that share a room makes the room
        a split point; selecting both, or a whole other component, makes
        none.
        """
        room = Room()
        transports = [connect(Talker(room)), connect(Talker(room)), connect(Talker())]
        graph = summarizeGraph(transports, registry(Talker, Room), {})
        points = [graph.nodes[i] for i in graph.splitPoints({0})]
        self.assertEqual([n.cls for n in points], [typeName(Room)])
        self.assertEqual(graph.splitPoints({0, 1}), [])
        self.assertEqual(graph.splitPoints({2}), [])


class ConnectionTests(SynchronousTestCase):
    """
    What is said of one connection.
    """

    def test_describe(self) -> None:
        """
        A connection's port key, peer address, age and unsent bytes.
        """
        port = Port("tcp:0:#0")
        t = Transport(Talker(), server=port, peer=Address("127.0.0.1", 5555))
        record = describeConnection(t, lambda p: p.key, lambda t: 10.0, 12.5, lambda t: 7)
        self.assertEqual(
            record,
            {"id": connectionId(t), "port": "tcp:0:#0", "peer": "127.0.0.1:5555",
             "age": 2.5, "pending": 7},
        )  # fmt: skip

    def test_describeUnknowns(self) -> None:
        """
        A connection without a port, a peer, an age or a readable buffer
        says so with C{None}s.
        """

        def broken(t: Any) -> int:
            raise AttributeError("dataBuffer")

        record = describeConnection(Transport(Talker()), lambda p: None, lambda t: None, 1, broken)
        self.assertEqual(
            (record["port"], record["peer"], record["age"], record["pending"]),
            (None, None, None, None),
        )

    def test_ids(self) -> None:
        """
        A connection with a descriptor is named by it and its peer's port.
        """

        @attrs.define(eq=False)
        class WithFd(Transport):
            def fileno(self) -> int:
                return 12

        t = WithFd(Talker(), peer=Address("::1", 4000))
        self.assertEqual(connectionId(t), "c12.4000")
        self.assertEqual(
            describeConnection(t, lambda p: None, lambda t: None, 0, len)["peer"], "[::1]:4000"
        )


class PlanReportTests(SynchronousTestCase):
    """
    L{planReport}: what a takeover would do, per port and class, under a
    policy and a selection.
    """

    def setUp(self) -> None:
        self.web, self.chat = Port("tcp:80"), Port("tcp:23")
        self.room = Room()
        self.talkers = [Talker(self.room), Talker(self.room)]
        self.lone = Talker()
        self.stranger = Chatty({})
        self.transports = [
            Transport(self.talkers[0], self.chat),
            Transport(self.talkers[1], self.chat),
            Transport(self.lone, self.web),
            Transport(self.stranger, self.web),
        ]
        for t in self.transports:
            t.protocol.transport = t
        self.adapters = registry(Talker, Room)
        self.graph = summarizeGraph(self.transports, self.adapters, {})

    def report(self, policy: str, selection: list[str] | None = None, **kw: Any) -> dict[str, Any]:
        return planReport(self.graph, self.adapters, policy, lambda p: p.key, selection, **kw)

    def classes(self, report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(p["key"], c["class"]): c for p in report["ports"] for c in p["classes"]}

    def test_outcomes(self) -> None:
        """
        Each kind of connection has one outcome per policy.
        """
        self.assertEqual(
            [outcomeOf(k, p) for k in ("moves", "harmless", "declined") for p in (REFUSE, DRAIN)],
            ["move", "move", "drain", "drain", "drain", "drain"],
        )
        self.assertEqual(
            [outcomeOf("unknown", p) for p in (REFUSE, DRAIN, CLOSE)], ["refused", "drain", "close"]
        )

    def test_byPortAndClass(self) -> None:
        """
        Without a selection: per port and class, how many move and how
        many refuse the takeover (no adapter), with the reason; the
        takeover as a whole would be refused.
        """
        report = self.report(REFUSE)
        classes = self.classes(report)
        self.assertEqual(classes[("tcp:23", typeName(Talker))]["move"], 2)
        stranger = classes[("tcp:80", typeName(Chatty))]
        self.assertEqual((stranger["total"], stranger["refused"]), (1, 1))
        self.assertEqual(stranger["reasons"], [["refused: no adapter", 1]])
        self.assertEqual(
            (report["move"], report["refused"], report["takeover_refused"]), (3, 1, True)
        )
        self.assertIn("would be refused", report["message"])
        self.assertNotIn("selection", report)

    def test_policyClose(self) -> None:
        """
        With C{close}, the connections no adapter can move are closed and
        the takeover goes ahead.
        """
        report = self.report(CLOSE)
        self.assertEqual((report["close"], report["takeover_refused"]), (1, False))
        self.assertNotIn("message", report)

    def test_selectComponent(self) -> None:
        """
        Selecting the component of the two talkers: the lone talker is not
        selected, so it follows the policy (here: drain); the split points
        are empty (the whole component moves).
        """
        component = self.graph.componentOf[0].ident
        report = self.report(DRAIN, [component])
        lone = self.classes(report)[("tcp:80", typeName(Talker))]
        self.assertEqual((lone["drain"], lone["reasons"]), (1, [[f"drain: {NOT_SELECTED}", 1]]))
        self.assertEqual(report["move"], 2)
        selection = report["selection"]
        self.assertEqual((selection["selected"], selection["kept_back"]), (2, 0))
        self.assertEqual(selection["split_points"], [])
        self.assertEqual(
            report["connections"][self.graph.connectionIds[2]],
            {"outcome": "drain", "reason": NOT_SELECTED, "kind": "unknown"},
        )

    def test_selectionRefused(self) -> None:
        """
        With C{refuse}, a selection that leaves a movable connection out
        refuses the takeover.
        """
        report = self.report(REFUSE, [self.graph.connectionIds[2]])
        self.assertTrue(report["takeover_refused"])

    def test_harmlessWhenNotSelected(self) -> None:
        """
        A connection whose adapter says staying is harmless drains when not
        selected, whatever the policy.
        """
        adapters = registry(Room, harmless=(Talker,))
        graph = summarizeGraph(self.transports[:3], adapters, {})
        report = planReport(graph, adapters, REFUSE, lambda p: p.key, [graph.connectionIds[0]])
        self.assertFalse(report["takeover_refused"])
        self.assertEqual(report["connections"][graph.connectionIds[2]]["outcome"], "drain")

    def test_keptBack(self) -> None:
        """
        Selecting one of two talkers that share a room: the selected one's
        graph reaches the other (the room's members), so the capture would
        keep it back too: it drains, saying why; the room is a split point.
        """
        self.room.members = list(self.talkers)
        self.graph = summarizeGraph(self.transports, self.adapters, {})
        report = self.report(DRAIN, [self.graph.connectionIds[0]])
        first = report["connections"][self.graph.connectionIds[0]]
        self.assertEqual(first["outcome"], "drain")
        self.assertIn(f"connection {self.graph.connectionIds[1]}, which stays", first["reason"])
        selection = report["selection"]
        self.assertEqual(selection["kept_back"], 1)
        self.assertIn(typeName(Room), [p["class"] for p in selection["split_points"]])

    def test_factoryBlocks(self) -> None:
        """
        A port's factory whose state reaches a connection that stays keeps
        everything back.
        """
        factory = Factory()
        factory.clients = [self.lone]
        anchors = {id(factory): ("factory:tcp:80", factory)}
        adapters = registry(Talker, Room, Factory)
        graph = summarizeGraph(self.transports, adapters, anchors)
        component = graph.componentOf[0].ident
        report = planReport(graph, adapters, DRAIN, lambda p: p.key, [component], anchors)
        self.assertEqual(report["move"], 0)
        self.assertIn("the state of factory:tcp:80 reaches", report["selection"]["blocked"])

    def test_previewUnadapted(self) -> None:
        """
        A connection planned to move whose graph reaches an object no
        adapter covers is kept back, as the capture would.
        """
        self.lone.room = Helper(None)  # type: ignore[assignment]
        kept, blocked = previewCapture(self.graph, [2], {}, self.adapters, {})
        self.assertIn(f"no adapter for {typeName(Helper)}", kept[2])
        self.assertIsNone(blocked)


class GraphReportTests(SynchronousTestCase):
    """
    L{graphReport}: bounded for large services, expanded on demand.
    """

    def setUp(self) -> None:
        self.adapters = registry(Talker, Room)
        room = Room()
        self.transports = [connect(Talker(room)) for _ in range(3)]
        self.transports += [connect(Talker()) for _ in range(300)]
        self.graph = summarizeGraph(self.transports, self.adapters, {})

    def test_summarised(self) -> None:
        """
        The largest components are listed one by one (the first expanded
        while they fit), the rest grouped by their classes of connection.
        """
        report = graphReport(self.graph, {}, maxNodes=8, maxComponents=5)
        self.assertEqual(report["connections"], 303)
        self.assertEqual(len(report["components"]), 5)
        first = report["components"][0]
        self.assertEqual((first["connections"], first["expanded"]), (3, True))
        self.assertFalse(report["components"][1]["expanded"])
        [group] = report["groups"]
        self.assertEqual(
            (group["components"], group["connections"], group["classes"]),
            (296, 296, {typeName(Talker): 1}),
        )
        self.assertEqual(len(group["examples"]), 10)
        self.assertLessEqual(len(report["nodes"]), 8)
        ids = {n["id"] for n in report["nodes"]}
        self.assertTrue(all(a in ids and b in ids for a, b in report["edges"]))
        self.assertEqual(report["classes"][0]["class"], typeName(Talker))

    def test_expand(self) -> None:
        """
        Naming a component expands it (and lists it), even beyond the
        largest ones; connection nodes carry what was said of them.
        """
        last = self.graph.components[-1].ident
        connectionId = self.graph.components[-1].connections[0]
        info = {self.graph.connectionIds[connectionId]: {"peer": "127.0.0.1:1"}}
        report = graphReport(self.graph, info, expand=[last], maxComponents=5)
        self.assertEqual([c["id"] for c in report["components"] if c["expanded"]], [last])
        [conn] = [n for n in report["nodes"] if n["kind"] == CONNECTION]
        self.assertEqual(conn["connection"], {"peer": "127.0.0.1:1"})
        self.assertEqual(conn["component"], last)

    def test_plainData(self) -> None:
        """
        The report is plain data: JSON round-trips it unchanged.
        """
        report = graphReport(self.graph, {})
        self.assertEqual(json.loads(json.dumps(report)), report)

    def test_connectionsBounded(self) -> None:
        """
        At most C{maxConnections} connections are listed one by one, those
        that would not move first; the others are counted.
        """
        graph = summarizeGraph(self.transports, self.adapters, {})
        report = planReport(
            graph, self.adapters, DRAIN, lambda p: None, [graph.connectionIds[5]], maxConnections=3
        )
        self.assertEqual(report["connections_left_out"], 300)
        self.assertEqual(
            sorted(r["outcome"] for r in report["connections"].values()),
            ["drain", "drain", "drain"],
        )
