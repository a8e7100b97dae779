# -*- test-case-name: tests.test_detached -*-
"""
Tests for L{migrator.state._detached}: a dry run's snapshot restored in a
staging process with detached transports, one connection at a time, with
a report per class.

The incumbent's side is real: C{tcp.Server} transports on one end of a
socket pair, captured by L{captureConnections} on a L{FakeRegistry} (and
thawed at once, as a dry run does).  The staging side has its own
registry, adapters and L{MemoryReactorClock}.
"""

from __future__ import annotations

import itertools
import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import DatagramProtocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import releaseConnection
from migrator.state._capture import captureConnections
from migrator.state._detached import (
    UNKNOWN_CLASS,
    DetachedTransport,
    lastLine,
    peerAddress,
    restoreDetached,
)
from migrator.state._detachedport import DetachedPort
from migrator.state._graph import GraphError, dumpsPlain
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from tests._fakes import FakeRegistry

KEY = "tcp:0:127.0.0.1#0"
_sessions = itertools.count(1)


class Counter(LineReceiver):
    """
    Counts lines, in itself and in its factory; rings later.
    """

    def lineReceived(self, line: bytes) -> None:
        self.count += 1
        self.factory.total += 1
        self.sendLine(b"%d" % self.count)

    def ring(self) -> None:
        rung.append(self)


class Other(LineReceiver):
    """
    Another class, with an adapter of its own.
    """


class Hub(ServerFactory):
    """
    A factory with configuration (C{name}) and shared state (C{total}).
    """

    protocol = Counter

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0


rung: list[Any] = []


class Broken(InstanceAdapter):
    """
    The default rule, whose C{populate} fails (new code with a bug).
    """

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        raise RuntimeError("the new populate is broken")


def registry(counterAdapter: Any = None) -> AdapterRegistry:
    adapters = AdapterRegistry()
    adapters.register(counterAdapter or InstanceAdapter(Counter))
    adapters.registerInstance(Other)
    adapters.registerFactory(Hub, keep=["name"])
    return adapters


class RestoreDetachedTests(SynchronousTestCase):
    """
    L{restoreDetached} restores every connection it can, reports per class
    what failed and why, and leaves nothing running.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.incumbent = FakeRegistry()
        self.hub = Hub("old")
        self.hub.total = 41
        self.incumbent.addPort(KEY, factory=self.hub)
        self.adapters = registry()
        self.staging = FakeRegistry()
        self.newHub = Hub("new")
        self.staging.addPort(KEY, factory=self.newHub)
        self.stagingReactor = MemoryReactorClock()

    def connect(self, cls: type = Counter) -> tuple[Any, socket.socket]:
        mine, client = socket.socketpair()
        self.addCleanup(client.close)
        mine.setblocking(False)
        protocol = cls()
        protocol.factory = self.hub
        protocol.count = 7
        transport = tcp.Server(
            mine, protocol, ("10.0.0.9", 4711), None, next(_sessions), self.reactor
        )
        self.addCleanup(releaseConnection, transport)
        protocol.makeConnection(transport)
        self.incumbent.trackConnection(transport)
        return protocol, client

    def snapshot(self) -> bytes:
        """
        Capture as a dry run does: freeze, then thaw at once.
        """
        captured = captureConnections(
            self.reactor,
            self.incumbent,
            self.adapters,
            frozenset([KEY]),
            frozenset(self.adapters.typeNames()),
        )
        captured.thaw()
        return captured.payload

    def test_restoresEveryConnection(self) -> None:
        """
        Every connection comes back in new objects of the staging process's
        classes, on detached transports (with the captured peer), merged
        into the staging service's own factory (whose configuration wins);
        what they write goes nowhere.
        """
        protocol, client = self.connect()
        self.connect(Other)
        staged = restoreDetached(self.stagingReactor, self.staging, registry(), self.snapshot())
        self.assertTrue(staged.ok, staged)
        self.assertEqual(staged.connections, 2)
        self.assertEqual(
            {n: (c.restored, c.failed) for n, c in staged.classes.items()},
            {f"{__name__}.Counter": (1, 0), f"{__name__}.Other": (1, 0)},
        )
        [counter] = [p for p in staged.protocols if isinstance(p, Counter)]
        self.assertIsNot(counter, protocol)
        self.assertEqual(counter.count, 7)
        self.assertIs(counter.factory, self.newHub)
        self.assertEqual((self.newHub.name, self.newHub.total), ("new", 41))
        self.assertIsInstance(counter.transport, DetachedTransport)
        # The test's connections are UNIX socket pairs (unnamed peers).
        self.assertEqual(counter.transport.getPeer(), UNIXAddress(None))
        self.assertEqual(counter.transport.meta["pending"], b"")
        counter.dataReceived(b"hello\r\n")
        self.assertEqual(counter.transport.value(), b"8\r\n")
        client.setblocking(False)
        self.assertRaises(BlockingIOError, client.recv, 10)

    def test_populateFails(self) -> None:
        """
        A class whose new C{populate} raises is reported failed, with the
        last line of the traceback (and where it was raised); the other
        classes are still restored.
        """
        self.connect()
        self.connect()
        self.connect(Other)
        staged = restoreDetached(
            self.stagingReactor, self.staging, registry(Broken(Counter)), self.snapshot()
        )
        self.assertFalse(staged.ok)
        self.assertEqual(staged.failed, [f"{__name__}.Counter"])
        counter = staged.classes[f"{__name__}.Counter"]
        self.assertEqual((counter.restored, counter.failed), (0, 2))
        [error] = counter.errors
        self.assertIn("RuntimeError: the new populate is broken", error)
        self.assertIn("in populate)", error)
        self.assertEqual(staged.classes[f"{__name__}.Other"].restored, 1)

    def test_sharedGraph(self) -> None:
        """
        Connections reached through another one's graph (a factory's list
        of clients) have no root of their own: they are counted by their
        transports, restored or failed with the graph that holds them.
        """
        first, _ = self.connect()
        second, _ = self.connect()
        self.hub.clients = [first, second]
        staged = restoreDetached(self.stagingReactor, self.staging, registry(), self.snapshot())
        self.assertEqual(staged.classes[f"{__name__}.Counter"].restored, 2)
        self.assertEqual(len(staged.protocols), 2)
        staged = restoreDetached(
            self.stagingReactor, self.staging, registry(Broken(Counter)), self.snapshot()
        )
        counter = staged.classes[f"{__name__}.Counter"]
        self.assertEqual((counter.restored, counter.failed), (0, 2))

    def test_check(self) -> None:
        """
        The check is called with each restored protocol; a connection whose
        check raises fails, with the check's error.
        """
        self.connect()
        self.connect(Other)
        seen: list[Any] = []

        def check(protocol: Any) -> None:
            seen.append(protocol)
            if isinstance(protocol, Other):
                raise ValueError("Other is not ready")

        staged = restoreDetached(
            self.stagingReactor, self.staging, registry(), self.snapshot(), check
        )
        self.assertEqual(len(seen), 2)
        self.assertEqual(staged.failed, [f"{__name__}.Other"])
        [error] = staged.classes[f"{__name__}.Other"].errors
        self.assertTrue(error.startswith("checkRestored: ValueError: Other is not ready"), error)
        self.assertEqual(staged.classes[f"{__name__}.Counter"].restored, 1)

    def test_noAdapter(self) -> None:
        """
        A class the staging process has no adapter for fails, named.
        """
        self.connect(Other)
        adapters = AdapterRegistry()
        adapters.registerFactory(Hub)
        staged = restoreDetached(self.stagingReactor, self.staging, adapters, self.snapshot())
        self.assertEqual(staged.failed, [f"{__name__}.Other"])
        self.assertIn("no adapter", staged.classes[f"{__name__}.Other"].errors[0])

    def test_factoryFails(self) -> None:
        """
        A factory whose state cannot merge fails the connection through
        which it was reached first (the error names the factory's class);
        a factory reached by no connection is reported under its own class.
        """
        self.connect()
        adapters = registry()
        adapters.register(Broken(Hub))
        staged = restoreDetached(self.stagingReactor, self.staging, adapters, self.snapshot())
        self.assertEqual(staged.failed, [f"{__name__}.Counter"])
        self.assertIn(
            f"cannot populate a {__name__}.Hub: RuntimeError",
            staged.classes[f"{__name__}.Counter"].errors[0],
        )
        self.incumbent.connections.clear()
        staged = restoreDetached(self.stagingReactor, self.staging, adapters, self.snapshot())
        self.assertEqual(staged.failed, [f"{__name__}.Hub"])
        self.assertIn(
            "its factory's state did not merge", staged.classes[f"{__name__}.Hub"].errors[0]
        )

    def test_dangling(self) -> None:
        """
        A connection that refers to objects of one that failed before it
        says so.
        """
        first, _ = self.connect(Other)
        second, _ = self.connect()
        second.peer = first
        # No adapter for Other: reading it fails before it is made.
        adapters = AdapterRegistry()
        adapters.registerInstance(Counter)
        adapters.registerFactory(Hub)
        staged = restoreDetached(self.stagingReactor, self.staging, adapters, self.snapshot())
        self.assertEqual(staged.failed, [f"{__name__}.Counter", f"{__name__}.Other"])
        self.assertIn(
            "refers to objects of a connection that failed",
            staged.classes[f"{__name__}.Counter"].errors[0],
        )

    def test_malformed(self) -> None:
        """
        State that cannot be read is a problem of the whole dry run.
        """
        staged = restoreDetached(self.stagingReactor, self.staging, registry(), b"not a pickle")
        self.assertFalse(staged.ok)
        self.assertIn("cannot be read", staged.problems[0])
        staged = restoreDetached(
            self.stagingReactor, self.staging, registry(), dumpsPlain({"roots": 1})
        )
        self.assertEqual(staged.problems, ["the state lacks its roots, factories or count"])

    def test_countMismatch(self) -> None:
        """
        A state that announces more connections than it holds is a problem.
        """
        payload = dumpsPlain({"roots": [], "factories": [], "count": 2})
        staged = restoreDetached(self.stagingReactor, self.staging, registry(), payload)
        self.assertEqual(staged.problems, ["0 connections restored, 2 announced"])

    def test_unknownRoot(self) -> None:
        """
        A root that is not an object is counted under an unknown class.
        """
        payload = dumpsPlain({"roots": [("r", 99)], "factories": [], "count": 0})
        staged = restoreDetached(self.stagingReactor, self.staging, registry(), payload)
        self.assertEqual(staged.failed, [UNKNOWN_CLASS])

    def test_callsNeverRun(self) -> None:
        """
        A scheduled call restored from the snapshot never runs in the
        staging process: it is cancelled at the end.
        """
        protocol, _ = self.connect()
        protocol.timer = self.reactor.callLater(5, protocol.ring)
        self.adapters.allowFunction(Counter.ring)
        staged = restoreDetached(self.stagingReactor, self.staging, registry(), self.snapshot())
        self.assertTrue(staged.ok, staged)
        self.assertEqual([c for c in self.stagingReactor.getDelayedCalls() if c.active()], [])
        self.stagingReactor.advance(10)
        self.assertEqual(rung, [])
        # The incumbent's own call is back at its time (thawed).
        self.assertTrue(protocol.timer.active())
        self.assertEqual(protocol.timer.getTime(), 5)


class DetachedPortTests(SynchronousTestCase):
    """
    L{DetachedPort} binds nothing but starts and stops what it serves.
    """

    def test_stream(self) -> None:
        """
        A stream port starts its factory once, stops it once, and answers
        the declared address.
        """
        factory = Hub("x")
        port = DetachedPort.forTCP(8080, "127.0.0.1", factory)
        port.startListening()
        port.startListening()
        self.assertEqual(factory.numPorts, 1)
        self.assertTrue(port.connected)
        self.assertEqual(port.getHost(), IPv4Address("TCP", "127.0.0.1", 8080))
        self.assertEqual(port.fileno(), -1)
        port.stopListening()
        port.stopListening()
        self.assertEqual(factory.numPorts, 0)
        self.assertFalse(port.connected)

    def test_addresses(self) -> None:
        """
        IPv6 and UNIX declarations give addresses of their kind; a UNIX
        port's socket family says so.
        """
        self.assertEqual(
            DetachedPort.forTCP(0, "::1", Hub("x")).getHost(), IPv6Address("TCP", "::1", 0)
        )
        unix = DetachedPort.forUNIX("/run/x.sock", Hub("x"))
        self.assertEqual(unix.getHost(), UNIXAddress("/run/x.sock"))
        self.assertEqual(unix.socket.family, socket.AF_UNIX)

    def test_datagram(self) -> None:
        """
        A datagram port connects its protocol (which starts it).
        """
        protocol = DatagramProtocol()
        port = DetachedPort.forTCP(53, "", protocol, kind="udp")
        port.startListening()
        self.assertIs(protocol.transport, port)
        self.assertEqual(port.getHost(), IPv4Address("UDP", "0.0.0.0", 53))
        port.write(b"answer", ("127.0.0.1", 5353))
        port.stopListening()
        self.assertEqual(protocol.numPorts, 0)


class HelpersTests(SynchronousTestCase):
    """
    L{peerAddress} and L{lastLine}.
    """

    def test_peerAddress(self) -> None:
        """
        The captured peer comes back as an address of its family.
        """
        self.assertEqual(
            peerAddress({"family": socket.AF_INET, "peer": ["1.2.3.4", 5]}),
            IPv4Address("TCP", "1.2.3.4", 5),
        )
        self.assertEqual(
            peerAddress({"family": socket.AF_INET6, "peer": ["::1", 5, 0, 0]}),
            IPv6Address("TCP", "::1", 5),
        )
        self.assertEqual(
            peerAddress({"family": socket.AF_UNIX, "unix": True, "peer": ""}), UNIXAddress(None)
        )
        self.assertEqual(peerAddress({}), IPv4Address("TCP", "0.0.0.0", 0))

    def test_lastLine(self) -> None:
        """
        The last line names the exception and, through a wrapping
        exception, where the wrapped one was raised.
        """

        def inner() -> None:
            raise KeyError("k")

        try:
            try:
                inner()
            except KeyError as e:
                raise GraphError("cannot populate") from e
        except GraphError as e:
            line = lastLine(e)
        self.assertTrue(line.startswith("migrator.state._graph.GraphError: cannot populate"))
        self.assertIn("in inner)", line)
        self.assertEqual(lastLine(ValueError("v")), "ValueError: v")
