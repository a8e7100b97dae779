# -*- test-case-name: tests.test_plan -*-
"""
Tests for L{migrator.state._plan}: what a takeover will do with each open
connection (moves, drains harmlessly, declined, no adapter), counted by
class, and the words and counts an operator gets from it.  Connections are
L{FakeConnection}s; adapters are small fakes and the built-in ones.
"""

from __future__ import annotations

import builtins
from typing import Any

import attrs
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.protocols import ftp, portforward
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from zope.interface import implementer
from zope.interface.verify import verifyObject

from migrator.adapters import defaultRegistry
from migrator.interfaces import IAdapter, IDrainable
from migrator.state._graph import GraphError, Unadaptable, typeName
from migrator.state._plan import (
    CLOSE,
    DECLINED,
    DRAIN,
    HARMLESS,
    MOVES,
    UNKNOWN,
    Classifier,
    ClassPlan,
    Plan,
    Verdict,
    classify,
    drainsHarmlessly,
    planConnections,
    refusalMessage,
    refusedCounts,
    settledCounts,
)
from migrator.state._quicklook import anyUnknown, suspectTest
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.state._versions import Readable, untranslatable
from tests._fakes import FakeConnection


class Room:
    """
    A protocol of an application's own, shared state and all.
    """

    busy = False


class Stranger:
    """
    A protocol no adapter covers.
    """


ROOM = typeName(Room)
STRANGER = typeName(Stranger)


@attrs.frozen
class RoomAdapter(InstanceAdapter):
    """
    The default rule, declining while the room is busy.
    """

    def movable(self, obj: Any) -> str | None:
        return "busy" if obj.busy else None


@attrs.frozen
class BrokenAdapter(InstanceAdapter):
    def movable(self, obj: Any) -> str | None:
        raise RuntimeError("oops")


def registry(*adapters: Any) -> AdapterRegistry:
    result = AdapterRegistry()
    for adapter in adapters:
        result.register(adapter)
    return result


def connection(protocol: Any, **kw: Any) -> FakeConnection:
    return FakeConnection(protocol=protocol, **kw)


class ClassifyTests(SynchronousTestCase):
    """
    L{classify}: one connection's fate.
    """

    def test_noAdapter(self) -> None:
        """
        A protocol whose class has no adapter is L{UNKNOWN}.
        """
        verdict = classify(connection(Stranger()), registry())
        self.assertEqual(verdict, Verdict(UNKNOWN, STRANGER, "no adapter"))

    def test_moves(self) -> None:
        """
        A protocol whose adapter says it can move, and which the successor
        reads at the same version, L{MOVES}, with no reason.
        """
        verdict = classify(connection(Room()), registry(RoomAdapter(Room)), {ROOM: 1})
        self.assertEqual((verdict.kind, verdict.reason), (MOVES, None))

    def test_declined(self) -> None:
        """
        A protocol whose adapter declines it now is L{DECLINED}, with the
        adapter's reason.
        """
        room = Room()
        room.busy = True
        verdict = classify(connection(room), registry(RoomAdapter(Room)))
        self.assertEqual((verdict.kind, verdict.reason), (DECLINED, "busy"))

    def test_declinedHarmlessly(self) -> None:
        """
        A declined protocol whose adapter says staying is harmless (a true
        C{drainsHarmlessly}) is L{HARMLESS}.
        """
        room = Room()
        room.busy = True
        verdict = classify(connection(room), registry(RoomAdapter(Room, drainsHarmlessly=True)))
        self.assertEqual((verdict.kind, verdict.reason), (HARMLESS, "busy"))

    def test_drainsHarmlesslyMethod(self) -> None:
        """
        C{drainsHarmlessly} may be a method of the protocol
        (L{migrator.interfaces.IDrainable}): it decides per connection, and
        one that raises says no.
        """

        @implementer(IAdapter, IDrainable)
        class Choosy:
            typeName = ROOM
            version = 1

            def capture(self, obj: Any) -> Any:
                raise NotImplementedError

            def create(self, context: Any) -> Any:
                raise NotImplementedError

            def populate(self, obj: Any, state: Any, context: Any) -> None:
                raise NotImplementedError

            def movable(self, obj: Any) -> str | None:
                return "busy"

            def drainsHarmlessly(self, obj: Any) -> bool:
                if obj.busy == "boom":
                    raise RuntimeError("no idea")
                return bool(obj.busy == "harmless")

        adapter = Choosy()
        verifyObject(IDrainable, adapter)
        rooms = [Room(), Room(), Room()]
        for room, state in zip(rooms, ["harmless", "harmful", "boom"], strict=True):
            room.busy = state  # type: ignore[assignment]
        self.assertEqual([drainsHarmlessly(adapter, room) for room in rooms], [True, False, False])
        adapters = AdapterRegistry()
        adapters.register(adapter, Room)
        self.assertEqual(
            [classify(connection(r), adapters).kind for r in rooms],
            [HARMLESS, DECLINED, DECLINED],
        )

    def test_closing(self) -> None:
        """
        A connection that is already closing stays, harmlessly, whatever
        its class.
        """

        @attrs.define
        class Closing:
            protocol: Any
            connected: bool = True
            disconnecting: bool = True

        closing = Closing(Stranger())
        verdict = classify(closing, registry())
        self.assertEqual((verdict.kind, verdict.reason), (HARMLESS, "closing"))

    def test_noAdapterInSuccessor(self) -> None:
        """
        A class the successor has no adapter for cannot move: L{UNKNOWN},
        not declined (nobody there can take its state).
        """
        verdict = classify(connection(Room()), registry(RoomAdapter(Room)), {})
        self.assertEqual((verdict.kind, verdict.reason), (UNKNOWN, "no adapter in the successor"))

    def test_otherVersionInSuccessor(self) -> None:
        """
        A class the successor reads at a version no chain of translation
        steps reaches cannot move either, and the reason says which
        versions and which step is missing.
        """
        verdict = classify(connection(Room()), registry(RoomAdapter(Room)), {ROOM: 2})
        self.assertEqual(verdict.kind, UNKNOWN)
        self.assertEqual(verdict.reason, "version 1 -> 2: no upgrade from 1 in the successor")
        adapter = RoomAdapter(Room, version=3, downgrades={2: dict})
        verdict = classify(connection(Room()), registry(adapter), {ROOM: 1})
        self.assertEqual((verdict.kind, verdict.reason), (UNKNOWN, "version 3 -> 1: no downgrade from 2"))

    def test_translatableVersionMoves(self) -> None:
        """
        A class the successor reads at another version moves when the
        newer side has the steps: this process's downgrades, or the
        upgrades the successor says it has (the same question the capture
        asks, L{writeRoute}).
        """
        older = RoomAdapter(Room, version=2, downgrades={1: dict})
        verdict = classify(connection(Room()), registry(older), {ROOM: 1})
        self.assertEqual((verdict.kind, verdict.reason), (MOVES, None))
        theirs = Readable(3, frozenset({1, 2}))
        verdict = classify(connection(Room()), registry(RoomAdapter(Room)), {ROOM: theirs})
        self.assertEqual((verdict.kind, verdict.reason), (MOVES, None))
        self.assertIsNone(untranslatable(older, 1))

    def test_harmlessWhateverTheSuccessor(self) -> None:
        """
        A connection whose adapter says staying is harmless is
        L{HARMLESS} also when the successor could not restore it.
        """
        adapter = RoomAdapter(Room, drainsHarmlessly=True)
        verdict = classify(connection(Room()), registry(adapter), {})
        self.assertEqual((verdict.kind, verdict.reason), (HARMLESS, "no adapter in the successor"))

    def test_adapterRaises(self) -> None:
        """
        An adapter whose C{movable} raises declines, with the error.
        """
        verdict = classify(connection(Room()), registry(BrokenAdapter(Room)))
        self.assertEqual(
            (verdict.kind, verdict.reason), (DECLINED, "its adapter failed: RuntimeError: oops")
        )

    def test_wrapperLookedThrough(self) -> None:
        """
        A protocol wrapper with no adapter of its own (TLS, say) is looked
        through: the connection is named after both, harmless if the
        wrapped protocol's adapter says staying is, else L{UNKNOWN} (the
        wrapper cannot move), and L{UNKNOWN} if the wrapped protocol has
        no adapter either.
        """
        harmless = registry(RoomAdapter(Room, drainsHarmlessly=True))
        harmful = registry(RoomAdapter(Room))
        wrapped = ProtocolWrapper(None, Room())  # type: ignore[arg-type]
        name = f"{typeName(ProtocolWrapper)}({ROOM})"
        why = f"inside a {typeName(ProtocolWrapper)}, which has no adapter"
        self.assertEqual(
            [
                classify(connection(wrapped), harmless),
                classify(connection(wrapped), harmful),
                classify(connection(ProtocolWrapper(None, Stranger())), harmful),  # type: ignore[arg-type]
            ],
            [
                Verdict(HARMLESS, name, why),
                Verdict(UNKNOWN, name, why),
                Verdict(UNKNOWN, f"{typeName(ProtocolWrapper)}({STRANGER})", "no adapter"),
            ],
        )


class _Wrap:
    """
    A protocol that wraps another (as TLS does).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner


@attrs.frozen
class _WrapAdapter(InstanceAdapter):
    def wrapped(self, obj: Any) -> Any:
        return obj.inner


class QuickLookTests(SynchronousTestCase):
    """
    L{anyUnknown}: whether any connection is L{UNKNOWN}, without asking
    adapters whether their connections can move now.
    """

    def test_quick(self) -> None:
        """
        No adapter's C{movable} is asked; connections whose classes can
        move, or which stay harmlessly, are not L{UNKNOWN}; one with no
        adapter, or none in the successor, is.
        """

        @attrs.frozen
        class Untouchable(RoomAdapter):
            def movable(self, obj: Any) -> str | None:
                raise AssertionError("asked")

        adapters = registry(Untouchable(Room))
        adapters.registerDraining(Stranger, "harmless")
        rooms = [connection(Room()) for _ in range(3)]
        self.assertFalse(anyUnknown(rooms + [connection(Stranger())], adapters, {ROOM: 1}))
        self.assertTrue(anyUnknown(rooms, adapters, {}))
        self.assertTrue(anyUnknown(rooms + [connection(object())], adapters, {ROOM: 1}))

    def test_byInstanceThroughWrappers(self) -> None:
        """
        A class that wraps other protocols (its adapter has C{wrapped})
        does not say by itself whether its connections are L{UNKNOWN}:
        each is looked at, whatever the others of its class are; the
        connections of a class that wraps nothing are looked at once, by
        their class.
        """

        adapters = registry(RoomAdapter(Room), _WrapAdapter(_Wrap))
        versions = {ROOM: 1, typeName(_Wrap): 1}
        rooms = [connection(_Wrap(Room())) for _ in range(3)] + [connection(Room())]
        self.assertFalse(anyUnknown(rooms, adapters, versions))
        self.assertTrue(anyUnknown(rooms + [connection(_Wrap(Stranger()))], adapters, versions))
        self.assertTrue(anyUnknown([connection(_Wrap(Stranger()))] + rooms, adapters, versions))
        self.assertTrue(anyUnknown(rooms, adapters, {typeName(_Wrap): 1}))

    def test_closingNotLookedInside(self) -> None:
        """
        A connection that is closing is not looked inside (its adapter's
        C{wrapped} is not asked), even when it is the first of its class.
        """

        class Wrap:
            pass

        @attrs.frozen
        class Failing(InstanceAdapter):
            def wrapped(self, obj: Any) -> Any:
                raise RuntimeError("asked")

        adapters = registry(Failing(Wrap))
        closing = connection(Wrap(), connected=False)
        self.assertFalse(anyUnknown([closing], adapters, {typeName(Wrap): 1}))


class SuspectTestTests(SynchronousTestCase):
    """
    L{suspectTest}: which connections a stream's first look hands to
    never two's check, one by one or all at once (L{SuspectTest.among}).
    """

    def test_amongAsOneByOne(self) -> None:
        """
        C{among} gives, in order, exactly the connections the test says
        yes of one by one: those of a class that wraps others, of a class
        with no adapter, or with no protocol; not those whose class alone
        says they can move.
        """

        adapters = registry(RoomAdapter(Room), _WrapAdapter(_Wrap))
        versions = {ROOM: 1, typeName(_Wrap): 1}
        bare = connection(Room())
        del bare.protocol
        transports = [
            connection(Room()),
            connection(_Wrap(Room())),
            connection(Room()),
            connection(Stranger()),
            bare,
            connection(_Wrap(Stranger())),
        ]
        test = suspectTest(adapters, versions)
        expected = [t for t in transports if test(t)]
        self.assertEqual(expected, [transports[1], transports[3], bare, transports[5]])
        self.assertEqual(suspectTest(adapters, versions).among(transports), expected)
        self.assertEqual(test.among(transports[:1] + transports[2:3]), [])
        self.assertEqual(test.among([]), [])

    def test_selectedEveryOne(self) -> None:
        """
        With a selection (the operator chose what moves), every connection
        may be L{UNKNOWN}.
        """
        adapters = registry(RoomAdapter(Room))
        transports = [connection(Room()) for _ in range(3)]
        test = suspectTest(adapters, {ROOM: 1}, selected=lambda t: True)
        self.assertEqual(test.among(transports), transports)
        self.assertTrue(test(transports[0]))


class BuiltInDeclarationTests(SynchronousTestCase):
    """
    The built-in adapters declare which of their connections stay
    harmlessly: such connections drain whatever the policy.
    """

    def setUp(self) -> None:
        self.adapters = defaultRegistry()

    def test_webInsideTLS(self) -> None:
        """
        A web connection inside TLS (C{twistd web --https}, or an C{ssl:}
        port: a L{BufferingTLSTransport} or L{TLSMemoryBIOProtocol} around
        the channel) whose session cannot move (here: one migrator did not
        follow from its handshake) drains harmlessly, named after both.
        """
        from OpenSSL import SSL

        for wrapper in (TLSMemoryBIOProtocol, BufferingTLSTransport):
            tls = object.__new__(wrapper)
            tls.wrappedProtocol = http._GenericHTTPChannelProtocol(http.HTTPChannel())
            tls._tlsConnection = SSL.Connection(SSL.Context(SSL.TLS_SERVER_METHOD))
            tls._handshakeDone = True
            verdict = classify(connection(tls), self.adapters)
            self.assertEqual(
                verdict,
                Verdict(
                    HARMLESS,
                    f"{typeName(wrapper)}(twisted.web.http._GenericHTTPChannelProtocol)",
                    "its session was not followed from its handshake (a port migrator does not track)",
                ),
            )

    def test_webInsideTLSBusy(self) -> None:
        """
        The channel inside TLS is asked first: one with a request in
        progress declines with its own reason, harmlessly.
        """
        channel = http.HTTPChannel()
        channel.requests = [object()]
        tls = object.__new__(BufferingTLSTransport)
        tls.wrappedProtocol = http._GenericHTTPChannelProtocol(channel)
        verdict = classify(connection(tls), self.adapters)
        self.assertEqual((verdict.kind, verdict.reason), (HARMLESS, "a request is in progress"))
        adapter = self.adapters.adapterFor(BufferingTLSTransport)
        self.assertTrue(adapter.busy(tls))

    def test_nameOf(self) -> None:
        """
        L{Classifier.nameOf} names a connection as the plan counts it: a
        protocol inside TLS as C{Wrapper(Inner)}.
        """
        tls = object.__new__(BufferingTLSTransport)
        tls.wrappedProtocol = http._GenericHTTPChannelProtocol(http.HTTPChannel())
        self.assertEqual(
            Classifier(self.adapters).nameOf(tls),
            f"{typeName(BufferingTLSTransport)}(twisted.web.http._GenericHTTPChannelProtocol)",
        )

    def test_insideTLSNoAdapter(self) -> None:
        """
        A protocol with no adapter inside TLS is L{UNKNOWN}, as it was when
        TLS had no adapter: the TLS adapter does not make it drainable.
        """
        tls = object.__new__(TLSMemoryBIOProtocol)
        tls.wrappedProtocol = Stranger()
        verdict = classify(connection(tls), self.adapters)
        self.assertEqual(
            verdict,
            Verdict(UNKNOWN, f"{typeName(TLSMemoryBIOProtocol)}({STRANGER})", "no adapter"),
        )

    def test_insideTLSSuccessorWithoutTLS(self) -> None:
        """
        A successor that has the web adapters but not the TLS adapter
        cannot take a web connection inside TLS: it stays, harmlessly.
        """
        tls = object.__new__(BufferingTLSTransport)
        tls.wrappedProtocol = http._GenericHTTPChannelProtocol(http.HTTPChannel())
        versions = {name: 1 for name in self.adapters.typeNames() if not name.startswith("migrator.tls.")}
        verdict = classify(connection(tls), self.adapters, versions)
        self.assertEqual(
            (verdict.kind, verdict.reason),
            (HARMLESS, "no adapter in the successor (for migrator.tls.TLSSession)"),
        )

    def test_webBusy(self) -> None:
        """
        A web channel with a request in progress declines, harmlessly.
        """
        channel = http.HTTPChannel()
        channel.requests = [object()]
        proxy = http._GenericHTTPChannelProtocol(channel)
        verdicts = [classify(connection(p), self.adapters) for p in (proxy, channel)]
        self.assertEqual(
            [(v.kind, v.reason) for v in verdicts],
            [(HARMLESS, "a request is in progress")] * 2,
        )

    def test_declaredHarmless(self) -> None:
        """
        SSH sessions (the manhole's), FTP sessions and proxied connections
        still connecting upstream stay harmlessly; the telnet manhole's
        and portforward's factories say nothing (they are not
        connections).
        """
        for cls in (SSHServerTransport, ftp.FTP, portforward.ProxyServer, portforward.ProxyClient):
            self.assertTrue(
                drainsHarmlessly(self.adapters.adapterFor(cls), object.__new__(cls)), cls
            )
        self.assertFalse(drainsHarmlessly(self.adapters.adapterFor(portforward.ProxyFactory), None))
        server = portforward.ProxyServer()
        server.peer = None
        verdict = classify(connection(server), self.adapters)
        self.assertEqual(
            (verdict.kind, verdict.reason), (HARMLESS, "still connecting to the other side")
        )


class PlanTests(SynchronousTestCase):
    """
    L{planConnections} counts by class; L{Plan} as plain data and words.
    """

    def setUp(self) -> None:
        busy = Room()
        busy.busy = True
        self.stranger = connection(Stranger())
        self.connections = [
            connection(Room()),
            connection(Room()),
            connection(busy),
            self.stranger,
            connection(Stranger(), connected=False),
        ]
        self.plan = planConnections(self.connections, registry(RoomAdapter(Room)), {ROOM: 1})

    def test_counts(self) -> None:
        """
        Every open connection is counted once, by class and kind; the
        reasons are kept by kind; the transports of the L{UNKNOWN} ones are
        kept with their class names.
        """
        self.assertEqual(
            self.plan.asDict(),
            {
                MOVES: 2,
                HARMLESS: 1,
                DECLINED: 1,
                UNKNOWN: 1,
                "classes": {
                    ROOM: {
                        MOVES: 2,
                        HARMLESS: 0,
                        DECLINED: 1,
                        UNKNOWN: 0,
                        "reasons": {DECLINED: {"busy": 1}},
                    },
                    STRANGER: {
                        MOVES: 0,
                        HARMLESS: 1,
                        DECLINED: 0,
                        UNKNOWN: 1,
                        "reasons": {HARMLESS: {"closing": 1}, UNKNOWN: {"no adapter": 1}},
                    },
                },
            },
        )
        self.assertEqual(self.plan.total, 5)
        self.assertEqual(self.plan.byClass(UNKNOWN), {STRANGER: 1})
        self.assertEqual(self.plan.unknownTransports, ((STRANGER, self.stranger),))

    def test_roundTrip(self) -> None:
        """
        L{Plan.fromDict} reads what L{Plan.asDict} wrote (without the
        transports, which stay in this process), and leaves out what is
        malformed.
        """
        again = Plan.fromDict(self.plan.asDict())
        self.assertEqual(again, self.plan)
        self.assertEqual(again.unknownTransports, ())
        self.assertEqual(Plan.fromDict({"classes": {"x": "y", 3: {}}}), Plan())
        self.assertEqual(Plan.fromDict(None), Plan())
        self.assertEqual(
            Plan.fromDict({"classes": {"a": {MOVES: True, UNKNOWN: 2, "reasons": {UNKNOWN: 1}}}}),
            Plan((ClassPlan("a", unknown=2),)),
        )

    def test_summary(self) -> None:
        """
        The summary counts each kind and names the classes with no
        adapter.
        """
        self.assertEqual(
            self.plan.summary(),
            "5 open connection(s): 2 can move, 1 drain harmlessly, 1 declined by "
            f"their adapters, 1 with no adapter that can move them ({STRANGER}: 1)",
        )

    def test_refusedCounts(self) -> None:
        """
        A refused takeover counts, per class with no adapter, how many
        connections refused it.
        """
        self.assertEqual(
            refusedCounts(self.plan),
            {STRANGER: {"moved": 0, "drained": 0, "closed": 0, "refused": 1}},
        )

    def test_settledCounts(self) -> None:
        """
        A committed takeover counts, per class, what moved and what is
        left: with L{DRAIN} everything left drains; with L{CLOSE} the
        L{UNKNOWN} ones are closed and the others drain.
        """
        remaining = planConnections(self.connections[2:], registry(RoomAdapter(Room)), {ROOM: 1})
        self.assertEqual(
            settledCounts({ROOM: 2}, remaining, DRAIN),
            {
                ROOM: {"moved": 2, "drained": 1, "closed": 0, "refused": 0},
                STRANGER: {"moved": 0, "drained": 2, "closed": 0, "refused": 0},
            },
        )
        self.assertEqual(
            settledCounts({ROOM: 2}, remaining, CLOSE)[STRANGER],
            {"moved": 0, "drained": 1, "closed": 1, "refused": 0},
        )

    def test_refusalMessage(self) -> None:
        """
        The refusal names each class with no adapter, its count and why,
        says that nothing changed and which process keeps serving, and
        gives the three remedies.
        """
        message = refusalMessage(self.plan, 321)
        self.assertEqual(
            message.splitlines()[:2],
            [
                "1 open connection(s) have no adapter that can move them; left in the old "
                "process, they would split the service's state in two:",
                f"  {STRANGER}: 1 connection(s) (no adapter)",
            ],
        )
        self.assertIn("Nothing was changed: pid 321 keeps serving", message)
        for remedy in (
            "docs/adapters.md",
            "--adapters MODULE",
            "registerAdapters(registry)",
            "--unmovable drain",
            "--unmovable close",
        ):
            self.assertIn(remedy, message)
        self.assertIn(
            "opened since the takeover began; seen at step switch",
            refusalMessage(self.plan, 1, "switch"),
        )


class DrainingAdapterTests(SynchronousTestCase):
    """
    L{DrainingAdapter}, and L{AdapterRegistry.registerDraining}.
    """

    def test_draining(self) -> None:
        """
        A L{DrainingAdapter} provides L{IAdapter}, always declines with its
        reason, says staying is harmless, and never captures or restores.
        """
        adapters = AdapterRegistry()
        adapter = adapters.registerDraining(Stranger, "a session of its own")
        verifyObject(IAdapter, adapter)
        self.assertIs(adapters.adapterFor(Stranger), adapter)
        self.assertEqual(adapters.adapterNamed(STRANGER), adapter)
        self.assertEqual(adapter.movable(Stranger()), "a session of its own")
        verdict = classify(connection(Stranger()), adapters, {STRANGER: 1})
        self.assertEqual((verdict.kind, verdict.reason), (HARMLESS, "a session of its own"))
        self.assertRaises(Unadaptable, adapter.capture, Stranger())
        self.assertRaises(GraphError, adapter.create, None)
        self.assertRaises(GraphError, adapter.populate, Stranger(), None, None)


class TacTypeNameTests(SynchronousTestCase):
    """
    L{typeName} names a class defined in a C{.tac} file (whose module says
    C{builtins}) C{tac:qualname}.
    """

    def test_tacClass(self) -> None:
        """
        Code run as twistd runs a C{.tac} (a namespace with no
        C{__name__}) makes classes named C{tac:qualname}, nested ones
        included; the same source run twice gives the same names.
        """
        source = "class Chat:\n    class Inner:\n        pass\n"
        names = []
        for _ in range(2):
            namespace: dict[str, Any] = {"__file__": "chat.tac"}
            exec(source, namespace, namespace)
            chat = namespace["Chat"]
            self.assertEqual(chat.__module__, "builtins")
            names.append((typeName(chat), typeName(chat.Inner)))
        self.assertEqual(names, [("tac:Chat", "tac:Chat.Inner")] * 2)

    def test_builtinClasses(self) -> None:
        """
        Python's own classes in C{builtins} keep their names, also those
        that are heap types.
        """
        self.assertEqual(typeName(type(None)), "builtins.NoneType")
        self.assertEqual(typeName(int), "builtins.int")
        # A heap type since 3.11.
        group = getattr(builtins, "ExceptionGroup", None)
        if group is not None:
            self.assertEqual(typeName(group), "builtins.ExceptionGroup")
        self.assertEqual(typeName(Room), "tests.test_plan.Room")
