# -*- test-case-name: tests.test_successor -*-
"""
Tests for L{migrator.takeover._successor}: L{Successor} driven step by step against a
L{FakeRemoteRoot} (every answer of the incumbent fired by the test), and
against a real L{Incumbent} over an in-memory PB connection.

The incumbent's "listening ports" are ends of C{socketpair}s whose other
ends are kept as probes: a probe reads end-of-file once every copy of its
port is closed, or as soon as any copy is shut down.  So a probe that is
still open while the test holds a copy proves nothing was shut down, and a
probe that reads end-of-file once the test closed its own copy proves the
successor kept no copy.  The established connections it moves are
C{tcp.Server} transports on one end of a C{socketpair}, checked the same
way from the client's end.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import socket
import sys
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import TimeoutError
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import releaseConnection
from migrator.state._capture import Captured, captureConnections
from migrator.state._registry import AdapterRegistry
from migrator.state._restore import Restored
from migrator.takeover._channel import FrameChannel
from migrator.takeover._control import ControlServerFactory
from migrator.takeover._failure import TakeoverFailed
from migrator.takeover._failure import describeFailure as _describe
from migrator.takeover._incumbent import Incumbent
from migrator.takeover._session import ControlRoot
from migrator.takeover._steps import SUCCESSOR_POINTS, Faults
from migrator.takeover._successor import Successor
from tests._fakes import (
    FakeControlSocket,
    FakePeerPolicy,
    FakeRegistry,
    FakeRemoteRoot,
    FakeWatch,
    connectControl,
)

PATH = "/run/site/ctl"
TIMEOUT = 30.0
KEYS = ["tcp:8080:#0", "unix:/run/site/web#0"]
BEGUN = {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2}

_sessions = itertools.count(1)


class Greeter(LineReceiver):
    """
    Answers each line with C{<n> hello <line>}.
    """

    count = 0

    def lineReceived(self, line: bytes) -> None:
        self.count += 1
        self.sendLine(b"%d hello %s" % (self.count, line))


GREETER = f"{Greeter.__module__}.{Greeter.__qualname__}"


def adapters() -> AdapterRegistry:
    """
    An adapter registry that moves L{Greeter}s.
    """
    registry = AdapterRegistry()
    registry.registerInstance(Greeter)
    return registry


def emptyCapture() -> Captured:
    """
    What an incumbent with nothing to move captures.
    """
    return captureConnections(
        MemoryReactorClock(), FakeRegistry(), AdapterRegistry(), frozenset(), frozenset()
    )


#: The state an incumbent with nothing to move sends, and its report.
EMPTY = emptyCapture().payload
CAPTURED = {"connections": 0, "bytes": len(EMPTY), "moved": {}, "staying": {}, "frozen_at": 0.0}


def doReads(reactor: MemoryReactorClock) -> None:
    """
    Let every reader of C{reactor} read, as a real reactor would when they
    are readable: one that reports an error is disconnected.
    """
    for reader in reactor.getReaders():
        why = reader.doRead()
        if why is not None:
            reactor.removeReader(reader)
            reader.connectionLost(Failure(why))


def doWrites(reactor: MemoryReactorClock) -> None:
    """
    Let every writer of C{reactor} write.
    """
    for writer in reactor.getWriters():
        writer.doWrite()


def abandon(d: Any) -> None:
    """
    Stop a takeover the test left waiting (so that it is not finished by
    the garbage collector), ignoring how it ends.
    """
    if not d.called:
        d.cancel()
    d.addErrback(lambda _: None)


def peerState(probe: socket.socket) -> str:
    """
    C{"open"}, C{"closed"} (end of file) or C{"data"}, as seen from
    C{probe}.
    """
    probe.setblocking(False)
    try:
        data = probe.recv(1)
    except BlockingIOError:
        return "open"
    return "data" if data else "closed"


def releaseConnections(registry: FakeRegistry) -> None:
    """
    Close (without shutdown) the connections a successor restored into
    C{registry} and kept.
    """
    for transport in registry.openConnections():
        releaseConnection(transport)


def receive(client: socket.socket) -> bytes:
    client.setblocking(False)
    try:
        return client.recv(65536)
    except BlockingIOError:
        return b""


class SuccessorTestMixin:
    """
    A L{Successor} on a L{MemoryReactorClock} with a L{FakeRegistry}, a
    L{FakeControlSocket}, an adapter for L{Greeter}, and an incumbent
    played by the test through a L{FakeRemoteRoot}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.registry = FakeRegistry(holding=True)
        self.addCleanup(self.registry.close)
        # The connections a takeover that succeeded kept (whichever registry
        # the test ends up with).
        self.addCleanup(lambda: releaseConnections(self.registry))
        self.adapters = adapters()
        self.declares = list(KEYS)
        self.startError: BaseException | None = None
        self.started = 0
        self.controls: list[FakeControlSocket] = []
        self.alive: dict[int, bool] = {}
        # How long a hang-up waits for the incumbent to die (none, unless a
        # test says otherwise).
        self.deathGrace = 0.0
        # The incumbent's pid as the connection's credentials give it
        # (in-memory connections have none).
        self.peerPid: int | None = None
        self.root = FakeRemoteRoot(autoAnswers={"abort": None, "received": None})
        # The incumbent's ports: the test holds one copy of each (as the
        # incumbent does) and the probe at the other end.
        self.incumbentPorts: list[socket.socket] = []
        self.probes: list[socket.socket] = []
        for _ in KEYS:
            port, probe = socket.socketpair()
            self.incumbentPorts.append(port)
            self.probes.append(probe)
            self.addCleanup(port.close)
            self.addCleanup(probe.close)
        self.channelEnd: socket.socket | None = None

    def makeSuccessor(self, faults: str = "") -> Successor:
        return Successor(
            self.reactor,
            PATH,
            self.registry,
            startService=self.startService,
            prepareControl=self.prepareControl,
            timeout=TIMEOUT,
            policy=FakePeerPolicy(),
            faults=Faults.parse(faults),
            watchProcess=lambda pid: FakeWatch(pid, lambda p: self.alive.get(p, True)),
            peerPid=lambda broker: self.peerPid,
            deathGrace=self.deathGrace,
            clock=self.reactor.seconds,
            adapters=self.adapters,
        )

    def startService(self) -> None:
        self.started += 1
        for key in self.declares:
            self.registry.declare(key)
        if self.startError is not None:
            raise self.startError

    def prepareControl(self) -> FakeControlSocket:
        control = FakeControlSocket(PATH)
        self.controls.append(control)
        return control

    # -- the incumbent's connections ----------------------------------------

    def captureOne(self) -> tuple[Captured, socket.socket]:
        """
        Capture, as the incumbent does, one connection served by a
        L{Greeter} (a C{tcp.Server} on one end of a socket pair, in
        L{incumbentTransport}) that has answered a line (not written yet)
        and holds half of the next one.

        @return: what was captured, and the client's end.
        """
        # The two processes' reactors read the same (wall) clock, which is
        # not at 0: a capture report's frozen_at of 0 means "not measured".
        self.reactor.advance(1.0)
        reactor = MemoryReactorClock()
        reactor.advance(self.reactor.seconds())
        ports = FakeRegistry()
        for key in KEYS:
            ports.addPort(key, key.split(":")[0])
        mine, client = socket.socketpair()
        self.addCleanup(client.close)
        mine.setblocking(False)
        protocol = Greeter()
        transport = tcp.Server(mine, protocol, ("pair", 0), None, next(_sessions), reactor)
        self.addCleanup(releaseConnection, transport)
        protocol.makeConnection(transport)
        ports.trackConnection(transport)
        client.sendall(b"one\r\ntw")
        transport.doRead()
        self.incumbentTransport = transport
        captured = captureConnections(
            reactor, ports, self.adapters, frozenset(KEYS), frozenset(self.adapters.typeNames())
        )
        self.assertEqual(captured.count, 1)
        return captured, client

    def releaseIncumbentConnection(self) -> None:
        """
        Close the incumbent's handle of the connection of L{captureOne}, as
        at its commit (no shutdown).
        """
        releaseConnection(self.incumbentTransport)

    # -- driving the takeover ---------------------------------------------

    def start(self, faults: str = "") -> Any:
        """
        Start a takeover; it waits for its connection.
        """
        self.successor = self.makeSuccessor(faults)
        d = self.successor.run()
        self.addCleanup(abandon, d)
        [(path, self.factory, timeout, _)] = self.reactor.unixClients
        self.assertEqual((path, timeout), (PATH, TIMEOUT))
        return d

    def connect(self, faults: str = "") -> Any:
        """
        Start a takeover and connect it: it waits for C{begin}'s answer.
        """
        d = self.start(faults)
        self.factory.clientConnectionMade(self.root.broker)
        return d

    def sendOnChannel(self, payload: bytes, fds: list[int]) -> None:
        """
        Send one message (the descriptors are duplicated) on the channel,
        as the incumbent does.
        """
        assert self.channelEnd is not None
        sender = FrameChannel(self.reactor, self.channelEnd.dup())
        sender.sendMessage(payload, fds)
        sender.doWrite()
        sender.close()

    def sendPorts(
        self,
        records: list[dict[str, Any]] | None = None,
        fds: list[int] | None = None,
        payload: bytes | None = None,
        channel: bool = True,
    ) -> None:
        """
        Do what the incumbent does in C{begin} before answering: send the
        channel's descriptor over the connection and the ports message on
        the channel.
        """
        if not channel:
            return
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.channelEnd = ours
        self.root.broker.receivedFds.append(theirs.detach())
        if records is None:
            records = [{"key": k, "kind": k.split(":")[0], "address": k} for k in KEYS]
        if fds is None:
            fds = [p.fileno() for p in self.incumbentPorts]
        if payload is None:
            payload = json.dumps({"type": "ports", "ports": records}).encode("utf-8")
        self.sendOnChannel(payload, fds)

    def sendConnections(self, captured: Captured | None = None) -> None:
        """
        Do what the incumbent does in C{capture} before answering: send the
        connections message (by default: nothing to move).
        """
        if captured is None:
            self.sendOnChannel(EMPTY, [])
        else:
            self.sendOnChannel(captured.payload, captured.fds)

    def readChannels(self) -> None:
        """
        Let the successor read what arrived on its channel, and run what it
        scheduled.
        """
        doReads(self.reactor)
        self.reactor.advance(0)

    def toBegun(self, faults: str = "", begun: dict[str, Any] | None = None, **kw: Any) -> Any:
        """
        Take the successor through C{begin} and the ports message: it waits
        for C{prepared}'s answer (or failed on the way).
        """
        d = self.connect(faults)
        self.sendPorts(**kw)
        self.root.answer("begin", dict(BEGUN if begun is None else begun))
        self.readChannels()
        return d

    def toCapturing(self, faults: str = "") -> Any:
        """
        On to C{capture}: the successor waits for its answer.
        """
        d = self.toBegun(faults)
        self.root.answer("prepared", {})
        return d

    def toRestoring(self, faults: str = "", captured: Captured | None = None) -> Any:
        """
        On through the capture (of C{captured}, by default nothing) and the
        restore: the successor waits for C{restored}'s answer.
        """
        d = self.toCapturing(faults)
        self.sendConnections(captured)
        report = dict(CAPTURED)
        if captured is not None:
            report.update(
                connections=captured.count,
                bytes=len(captured.payload),
                moved=captured.moved,
                frozen_at=captured.frozenAt,
            )
        self.root.answer("capture", report)
        self.readChannels()
        return d

    def toSwitched(self, faults: str = "", captured: Captured | None = None) -> Any:
        d = self.toRestoring(faults, captured)
        self.root.answer("restored", {})
        self.root.answer("switch", {"paused": 2})
        return d

    # -- checking ---------------------------------------------------------

    def closeIncumbentCopies(self) -> None:
        for port in self.incumbentPorts:
            port.close()

    def assertPortsNotShutDown(self) -> None:
        self.assertEqual([peerState(p) for p in self.probes], ["open", "open"])

    def assertSuccessorHoldsNoPort(self) -> None:
        """
        Nothing was shut down, and once the incumbent's copies are closed
        the ports are gone: the successor kept no copy.
        """
        self.assertPortsNotShutDown()
        self.closeIncumbentCopies()
        self.assertEqual([peerState(p) for p in self.probes], ["closed", "closed"])

    def assertSuccessorHoldsNoConnection(self, client: socket.socket) -> None:
        """
        The connection of L{captureOne} was not shut down, and once the
        incumbent lets go of it, it is gone: the successor kept no copy.
        """
        self.assertEqual(peerState(client), "open")
        self.releaseIncumbentConnection()
        self.assertEqual(peerState(client), "closed")

    def assertFailed(self, d: Any, step: str, reason: str) -> TakeoverFailed:
        """
        The takeover failed at C{step} with C{reason}, and was rolled back:
        the registry released everything and closed what it had not
        adopted, any control socket was closed, the channel is closed, any
        restored connection was let go, and if the connection is alive the
        incumbent was told (C{abort}) and the connection closed.
        """
        e = self.failureResultOf(d, TakeoverFailed).value
        self.assertEqual(str(e), f"takeover failed at step {step}: {reason}")
        calls = self.registry.calls
        self.assertIn("releaseAll", calls)
        self.assertIn("closeUnclaimed", calls)
        self.assertEqual(self.registry.offered, {})
        self.assertEqual(self.registry.listening(), [])
        self.assertEqual(self.registry.openConnections(), [])
        self.assertIsNone(self.successor.restored)
        for control in self.controls:
            self.assertTrue(control.closed)
            self.assertFalse(control.published)
        self.assertIsNone(self.successor.control)
        if self.channelEnd is not None:
            self.assertEqual(peerState(self.channelEnd), "closed")
        connected = self.successor.broker is not None
        if connected and not self.root.broker.disconnected:
            self.assertEqual(self.root.methods()[-1], "abort")
            [abort] = [c for c in self.root.calls if c.method == "abort"]
            self.assertEqual(abort.args, (reason,))
            self.assertEqual(self.root.broker.transport.loseConnectionCalls, 1)
        else:
            self.assertNotIn("abort", self.root.methods())
        return e


class SuccessorTests(SuccessorTestMixin, SynchronousTestCase):
    """
    Tests for L{Successor}, against an incumbent played by the test.
    """

    def test_happyPath(self) -> None:
        """
        The successor connects, begins, receives the ports, starts its
        service (which adopts them without accepting), binds its control
        socket, reports C{prepared} with matching counts, asks for the
        connections its adapters can restore, restores them and reports how
        many, accepts after the switch, commits, publishes its control
        socket and hangs up.
        """
        d = self.connect()
        [begin] = self.root.calls
        self.assertEqual(begin.method, "begin")
        self.assertEqual(begin.args[0]["pid"], os.getpid())
        self.assertEqual(
            set(begin.args[0]),
            {"pid", "python", "argv", "unmovable", "types", "versions", "readable"},
        )
        # The default policy for connections no adapter can move, and what
        # it can restore (the incumbent plans with them before sending ports).
        self.assertEqual(begin.args[0]["unmovable"], "refuse")
        self.assertEqual(begin.args[0]["versions"], {GREETER: 1})

        self.sendPorts()
        self.root.answer("begin", dict(BEGUN))
        self.assertEqual(self.started, 0)
        self.readChannels()
        self.assertEqual(self.started, 1)
        self.assertEqual(self.successor.predecessor.toWire(), {**BEGUN, "connections": 0})
        self.assertEqual([(p.key, p.adopted) for p in self.registry.ports],
                         [(k, True) for k in KEYS])
        self.assertEqual([p.accepting for p in self.registry.ports], [False, False])
        [control] = self.controls
        self.assertFalse(control.published)
        prepared = self.root.pending("prepared")
        self.assertEqual(
            prepared.args,
            ({"received": 2, "adopted": 2, "unclaimed": [], "close_undeclared": False},),
        )

        self.reactor.advance(0.5)
        self.root.answer("prepared", {})
        capture = self.root.pending("capture")
        self.assertEqual(
            capture.args,
            (
                {
                    "types": [GREETER],
                    "versions": {GREETER: 1},
                    "readable": {GREETER: {"version": 1, "upgrades": [], "persistence": None}},
                },
            ),
        )
        self.sendConnections()
        staying = {"web.Legacy: no adapter": 3}
        self.root.answer("capture", {**CAPTURED, "staying": staying})
        self.assertEqual(self.root.methods()[-1], "capture")
        self.readChannels()
        restored = self.root.pending("restored")
        self.assertEqual(restored.args, ({"connections": 0},))
        self.assertEqual(self.successor.restored.count, 0)
        self.assertEqual([p.accepting for p in self.registry.ports], [False, False])

        self.root.answer("restored", {})
        self.root.answer("switch", {"paused": 2})
        self.assertEqual([p.accepting for p in self.registry.ports], [True, True])
        self.assertNoResult(d)
        self.assertFalse(control.published)

        self.reactor.advance(0.25)
        self.root.answer(
            "commit", {"generation": 5, "released": KEYS, "accept_paused_ms": 250.0}
        )
        result = self.successResultOf(d)
        self.assertEqual(
            result,
            {
                "generation": 5,
                "released": KEYS,
                "connections": 0,
                "accept_paused_ms": 250.0,
                "total_ms": 750.0,
                "switch_to_commit_ms": 250.0,
                "unmovable": "",
                "classes": {},
                "split": False,
                "split_classes": {},
                "moved": {},
                "staying": staying,
                "held": 0,
                "bytes": len(EMPTY),
                "batches": 1,
                "batches_dropped": 0,
                "restore_ms": 0.0,
                "translations": {},
            },
        )
        self.assertTrue(control.published)
        self.assertFalse(control.closed)
        self.assertEqual(
            self.root.methods(),
            ["begin", "received", "prepared", "capture", "restored", "switch", "commit"],
        )
        self.assertEqual(self.root.broker.transport.loseConnectionCalls, 1)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertEqual(peerState(self.channelEnd), "closed")
        # The successor holds the ports now: the incumbent's copies can go.
        self.closeIncumbentCopies()
        self.assertPortsNotShutDown()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_connectionMoves(self) -> None:
        """
        A connection sent by the incumbent is restored with its state on a
        new transport, which neither reads nor writes until the commit;
        then it writes what the incumbent had not sent, reads what the
        client sent meanwhile, and serves the client on its own.
        """
        captured, client = self.captureOne()
        d = self.toRestoring(captured=captured)
        self.assertEqual(self.root.pending("restored").args, ({"connections": 1},))
        [transport] = self.registry.openConnections()
        self.assertIsNot(transport, self.incumbentTransport)
        protocol = transport.protocol
        self.assertIs(type(protocol), Greeter)
        self.assertEqual((protocol.count, protocol._buffer), (1, b"tw"))
        self.assertIs(protocol.transport, transport)
        self.root.answer("restored", {})
        self.root.answer("switch", {"paused": 2})
        client.sendall(b"o\r\n")
        doReads(self.reactor)
        self.assertNotIn(transport, self.reactor.getReaders())
        self.assertNotIn(transport, self.reactor.getWriters())
        self.assertEqual(receive(client), b"")

        self.root.answer("commit", {"generation": 5})
        result = self.successResultOf(d)
        self.assertEqual(result["moved"], {GREETER: 1})
        self.assertEqual(set(result["freeze_ms"]), {"p50", "p99", "max"})
        # The incumbent lets go at its commit.
        self.releaseIncumbentConnection()
        doReads(self.reactor)
        doWrites(self.reactor)
        self.assertEqual(receive(client), b"1 hello one\r\n2 hello two\r\n")

    def collecting(self, enabled: bool) -> None:
        """
        Enable or disable the garbage collector for this test.
        """
        self.addCleanup(gc.enable if gc.isenabled() else gc.disable)
        (gc.enable if enabled else gc.disable)()

    def test_collectorPausedWhileRestoring(self) -> None:
        """
        The garbage collector is paused from C{capture} (the restored
        objects all survive: collections would scan them again after each
        batch) to the takeover's end.
        """
        self.collecting(True)
        captured, client = self.captureOne()
        d = self.toRestoring(captured=captured)
        self.assertFalse(gc.isenabled())
        self.root.answer("restored", {})
        self.root.answer("switch", {"paused": 2})
        self.assertFalse(gc.isenabled())
        self.root.answer("commit", {"generation": 5})
        self.successResultOf(d)
        self.assertTrue(gc.isenabled())
        # (What the takeover made went to the oldest generation, none of
        # it left frozen.)
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_collectorPausedAtMostTheTimeout(self) -> None:
        """
        A commit that never comes does not keep the collector paused
        longer than the takeover timeout.
        """
        self.collecting(True)
        captured, client = self.captureOne()
        self.toRestoring(captured=captured)
        self.root.answer("restored", {})
        self.root.answer("switch", {"paused": 2})
        self.reactor.advance(TIMEOUT - 0.5)
        self.assertFalse(gc.isenabled())
        self.reactor.advance(1)
        self.assertTrue(gc.isenabled())

    def test_collectorResumedOnFailure(self) -> None:
        """
        A takeover that fails resumes the collector it paused.
        """
        self.collecting(True)
        d = self.toCapturing()
        self.assertFalse(gc.isenabled())
        self.root.refuse("capture", "boom")
        self.failureResultOf(d)
        self.assertTrue(gc.isenabled())

    def test_collectorPausedBefore(self) -> None:
        """
        A collector paused before the takeover stays paused after it.
        """
        self.collecting(False)
        d = self.toCapturing()
        self.root.refuse("capture", "boom")
        self.failureResultOf(d)
        self.assertFalse(gc.isenabled())

    def test_unclaimedPortsReported(self) -> None:
        """
        Ports the successor's service does not declare are closed before
        C{prepared}, which reports them; fresh ports it declares besides
        are bound, not adopted.
        """
        self.declares = [KEYS[0], "tcp:9090:#0"]
        d = self.toBegun()
        prepared = self.root.pending("prepared")
        self.assertEqual(
            prepared.args,
            ({"received": 2, "adopted": 1, "unclaimed": [KEYS[1]], "close_undeclared": False},),
        )
        self.assertEqual(
            [(p.key, p.adopted) for p in self.registry.ports],
            [(KEYS[0], True), ("tcp:9090:#0", False)],
        )
        self.incumbentPorts[1].close()
        self.assertEqual(peerState(self.probes[1]), "closed")
        self.assertNoResult(d)

    def test_closeUndeclaredSent(self) -> None:
        """
        With C{--close-undeclared-ports} the successor says, in
        C{prepared}, that the incumbent may close the ports it does not
        declare, and logs that they will be.
        """
        self.declares = [KEYS[0]]
        with capturedLogs() as events:
            d = self.connect()
            self.successor.closeUndeclared = True
            self.sendPorts()
            self.root.answer("begin", dict(BEGUN))
            self.readChannels()
        prepared = self.root.pending("prepared")
        self.assertTrue(prepared.args[0]["close_undeclared"])
        self.assertTrue(
            any("closed at the commit (--close-undeclared-ports)" in str(e.get("log_format"))
                for e in events)
        )
        self.assertNoResult(d)

    def test_connectionFailed(self) -> None:
        """
        If the control socket cannot be reached, the takeover fails at step
        C{connect} with the reason.
        """
        d = self.start()
        self.factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        e = self.assertFailed(
            d, "connect", "ConnectionRefusedError: Connection was refused by other side."
        )
        self.assertIsInstance(e.__cause__, ConnectionRefusedError)
        self.assertEqual(self.started, 0)

    def test_wrongUserRefused(self) -> None:
        """
        If the control socket is served by another user (the client broker
        refused it and recorded who), the takeover fails saying so.
        """
        d = self.start()
        self.factory.refused = "pid 1 uid 1001 gid 1001"
        self.factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertFailed(
            d,
            "connect",
            f"the control socket {PATH} is served by another user (pid 1 uid 1001 gid 1001)",
        )

    def test_connectTimeout(self) -> None:
        """
        If no PB root arrives within the timeout, the takeover fails.
        """
        d = self.start()
        self.reactor.advance(TIMEOUT - 0.001)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        self.assertFailed(d, "connect", "timed out waiting for the incumbent")

    def test_beginRefused(self) -> None:
        """
        A refused C{begin} fails the takeover with the incumbent's own
        message (not the withheld remote traceback).
        """
        d = self.connect()
        self.root.refuse(
            "begin", "a takeover is already in progress (successor pid 7, step begun, 1.0s ago)"
        )
        self.assertFailed(
            d,
            "begin",
            "the incumbent refused: a takeover is already in progress (successor "
            "pid 7, step begun, 1.0s ago)",
        )
        self.assertEqual(self.started, 0)

    def test_beginTimeout(self) -> None:
        """
        An incumbent that does not answer C{begin} in time fails the
        takeover; it is told to abort.
        """
        d = self.connect()
        self.reactor.advance(TIMEOUT)
        self.assertFailed(d, "begin", "timed out waiting for the incumbent")

    def test_noChannelDescriptor(self) -> None:
        """
        If C{begin}'s answer comes without the channel's descriptor, the
        takeover fails.
        """
        d = self.toBegun(channel=False)
        self.assertFailed(d, "begin", "expected the incumbent's channel descriptor, got 0")

    def test_channelClosedBeforeMessage(self) -> None:
        """
        If the channel closes before the ports message arrives, the takeover
        fails, and the successor closes its end.
        """
        d = self.connect()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.channelEnd = ours
        self.root.broker.receivedFds.append(theirs.detach())
        self.root.answer("begin", dict(BEGUN))
        ours.shutdown(socket.SHUT_WR)
        self.readChannels()
        self.assertFailed(d, "begin", "ChannelError: peer closed the channel")

    def test_channelTimeout(self) -> None:
        """
        If the ports message does not arrive within the timeout, the
        takeover fails and the channel is closed.
        """
        d = self.connect()
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.channelEnd = ours
        self.root.broker.receivedFds.append(theirs.detach())
        self.root.answer("begin", dict(BEGUN))
        self.reactor.advance(TIMEOUT)
        self.assertFailed(d, "begin", "timed out waiting for the incumbent")

    def test_incumbentHangsUpAsPortsArrive(self) -> None:
        """
        If the incumbent hangs up just after the ports message was read
        (before the successor goes on with it), the ports' descriptors are
        closed with the rollback.
        """
        d = self.connect()
        self.sendPorts()
        self.root.answer("begin", dict(BEGUN))
        doReads(self.reactor)
        self.root.broker.connectionLost()
        self.assertFailed(d, "begin", "the incumbent hung up (it gave up on this takeover)")
        self.assertEqual(self.started, 0)
        self.assertSuccessorHoldsNoPort()

    def test_portCountMismatch(self) -> None:
        """
        If fewer descriptors arrive than C{begin} announced, the takeover
        fails and the descriptors that did arrive are closed.
        """
        d = self.toBegun(begun={**BEGUN, "ports": 3})
        self.assertFailed(
            d, "begin", "the incumbent announced 3 ports and 2 records, 2 descriptors arrived"
        )
        self.assertNotIn("offer", self.registry.calls)
        self.assertSuccessorHoldsNoPort()

    def test_recordCountMismatch(self) -> None:
        """
        If the records and the descriptors of the ports message differ in
        number, the takeover fails and the descriptors are closed.
        """
        records = [{"key": k, "kind": "tcp"} for k in [*KEYS, "tcp:1:#0"]]
        d = self.toBegun(records=records)
        self.assertFailed(
            d, "begin", "the incumbent announced 2 ports and 3 records, 2 descriptors arrived"
        )
        self.assertSuccessorHoldsNoPort()

    def test_malformedPortsMessage(self) -> None:
        """
        A ports message that is not the expected JSON fails the takeover,
        and the descriptors that came with it are closed.
        """
        d = self.toBegun(payload=b"\xff not json")
        e = self.failureResultOf(d, TakeoverFailed).value
        self.assertTrue(str(e).startswith("takeover failed at step begin: "), str(e))
        self.assertSuccessorHoldsNoPort()

    def test_startServiceRaises(self) -> None:
        """
        If the service fails to start, the ports it adopted are released and
        those it did not are closed, none shut down; the incumbent is told.
        """
        self.declares = [KEYS[0]]
        self.startError = RuntimeError("the new code is broken")
        d = self.toBegun()
        self.assertFailed(d, "adopt", "the new code is broken")
        self.assertEqual(self.controls, [])
        self.assertSuccessorHoldsNoPort()

    def test_adoptionCountMismatch(self) -> None:
        """
        If the ports adopted and set aside do not add up to those received
        (the service stopped one it adopted), the takeover fails.
        """
        def startService() -> None:
            self.started += 1
            self.registry.declare(KEYS[0])
            self.registry.declare(KEYS[1]).released = True

        self.startService = startService  # type: ignore[method-assign]
        d = self.toBegun()
        self.assertFailed(d, "adopt", "adopted 1 and set aside 0 of 2 ports received")

    def test_prepareControlRaises(self) -> None:
        """
        If this process cannot bind its own control socket, the takeover
        fails and the adopted ports are released.
        """

        def prepareControl() -> FakeControlSocket:
            raise OSError(98, "Address already in use")

        self.prepareControl = prepareControl  # type: ignore[method-assign]
        d = self.toBegun()
        self.assertFailed(d, "adopt", "[Errno 98] Address already in use")
        self.assertSuccessorHoldsNoPort()

    def test_preparedRefused(self) -> None:
        """
        A refused C{prepared} fails the takeover: ports released, control
        socket closed, never published.
        """
        d = self.toBegun()
        self.root.refuse("prepared", "count mismatch: sent 2 ports, you received 1")
        self.assertFailed(
            d,
            "prepared",
            "the incumbent refused: count mismatch: sent 2 ports, you received 1",
        )
        self.assertNotIn("resumeAccepting", self.registry.calls)
        self.assertNotIn("capture", self.root.methods())
        self.assertSuccessorHoldsNoPort()

    def test_preparedTimeout(self) -> None:
        """
        An incumbent that does not answer C{prepared} in time fails the
        takeover.
        """
        d = self.toBegun()
        self.reactor.advance(TIMEOUT)
        self.assertFailed(d, "prepared", "timed out waiting for the incumbent")
        self.assertSuccessorHoldsNoPort()

    def test_captureRefused(self) -> None:
        """
        A refused C{capture} fails the takeover before anything was
        restored: ports released, control socket closed.
        """
        d = self.toCapturing()
        self.root.refuse("capture", "capturing connections failed: boom")
        self.assertFailed(
            d, "capture", "the incumbent refused: capturing connections failed: boom"
        )
        self.assertNotIn("restored", self.root.methods())
        self.assertNotIn("resumeAccepting", self.registry.calls)
        self.assertSuccessorHoldsNoPort()

    def test_captureTimeout(self) -> None:
        """
        An incumbent that does not answer C{capture} in time fails the
        takeover.
        """
        d = self.toCapturing()
        self.reactor.advance(TIMEOUT - 0.001)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        self.assertFailed(d, "capture", "timed out waiting for the incumbent")
        self.assertSuccessorHoldsNoPort()

    def test_channelClosedBeforeConnections(self) -> None:
        """
        If the channel closes after C{capture}'s answer but before the
        connections message, the takeover fails and the successor closes
        its end.
        """
        d = self.toCapturing()
        self.root.answer("capture", dict(CAPTURED))
        self.assertNoResult(d)
        assert self.channelEnd is not None
        self.channelEnd.shutdown(socket.SHUT_WR)
        self.readChannels()
        self.assertFailed(d, "capture", "ChannelError: peer closed the channel")
        self.assertSuccessorHoldsNoPort()

    def test_connectionsTimeout(self) -> None:
        """
        If the connections message does not arrive within the timeout, the
        takeover fails.
        """
        d = self.toCapturing()
        self.root.answer("capture", dict(CAPTURED))
        self.reactor.advance(TIMEOUT)
        self.assertFailed(d, "capture", "timed out waiting for the incumbent")
        self.assertSuccessorHoldsNoPort()

    def test_malformedConnectionState(self) -> None:
        """
        If the connections message cannot be read (C{restoreConnections}
        raises L{GraphError}), the takeover fails and the descriptors that
        came with it are closed, not shut down.
        """
        ours, client = socket.socketpair()
        self.addCleanup(client.close)
        d = self.toCapturing()
        self.sendOnChannel(b"not state", [ours.fileno()])
        self.root.answer("capture", {**CAPTURED, "connections": 1})
        self.readChannels()
        self.assertFailed(
            d,
            "restore",
            "GraphError: undecodable state: UnpicklingError: invalid load key, 'n'.",
        )
        self.assertNotIn("restored", self.root.methods())
        self.assertEqual(peerState(client), "open")
        ours.close()
        self.assertEqual(peerState(client), "closed")
        self.assertSuccessorHoldsNoPort()

    def test_connectionStateNotAllowed(self) -> None:
        """
        State naming a class this process has no adapter for (which an
        incumbent only sends if it ignores the types asked for) is refused
        with L{GraphError}: the takeover fails, and the connection's
        descriptor is closed, the connection not shut down.
        """
        captured, client = self.captureOne()
        self.adapters = AdapterRegistry()
        d = self.toRestoring(captured=captured)
        self.assertFailed(
            d,
            "restore",
            f"GraphError: the graph holds a {GREETER}, and this process has no "
            "adapter registered for it",
        )
        self.assertSuccessorHoldsNoConnection(client)
        self.assertSuccessorHoldsNoPort()

    def test_restoredRefused(self) -> None:
        """
        A refused C{restored} fails the takeover: the restored connections
        are let go (not shut down), the ports released.
        """
        captured, client = self.captureOne()
        d = self.toRestoring(captured=captured)
        self.assertEqual(self.successor.restored.count, 1)
        self.root.refuse("restored", "count mismatch: sent 2 connections, you restored 1")
        self.assertFailed(
            d,
            "restore",
            "the incumbent refused: count mismatch: sent 2 connections, you restored 1",
        )
        self.assertNotIn("switch", self.root.methods())
        self.assertSuccessorHoldsNoConnection(client)
        self.assertSuccessorHoldsNoPort()

    def test_restoredTimeout(self) -> None:
        """
        An incumbent that does not answer C{restored} in time fails the
        takeover; the restored connections are let go.
        """
        captured, client = self.captureOne()
        d = self.toRestoring(captured=captured)
        self.reactor.advance(TIMEOUT)
        self.assertFailed(d, "restore", "timed out waiting for the incumbent")
        self.assertSuccessorHoldsNoConnection(client)

    def test_incumbentHangsUpDuringCapture(self) -> None:
        """
        If the incumbent hangs up before answering C{capture}, the takeover
        fails and is rolled back (the incumbent cannot be told).
        """
        d = self.toCapturing()
        self.root.broker.connectionLost()
        self.assertFailed(d, "capture", "the incumbent hung up")
        self.assertSuccessorHoldsNoPort()

    def test_incumbentHangsUpBeforeConnections(self) -> None:
        """
        If the incumbent hangs up after answering C{capture}, while the
        successor waits for the connections message, the wait stops and the
        takeover is rolled back at once.
        """
        d = self.toCapturing()
        self.root.answer("capture", dict(CAPTURED))
        self.assertNoResult(d)
        self.root.broker.connectionLost()
        self.assertFailed(d, "capture", "the incumbent hung up (it gave up on this takeover)")
        self.assertSuccessorHoldsNoPort()

    def test_incumbentHangsUpAsConnectionsArrive(self) -> None:
        """
        If the incumbent hangs up just after the connections message was
        read (before the restore), the connections' descriptors are closed
        with the rollback.
        """
        captured, client = self.captureOne()
        d = self.toCapturing()
        self.sendConnections(captured)
        self.root.answer("capture", {**CAPTURED, "connections": 1})
        doReads(self.reactor)
        self.root.broker.connectionLost()
        self.assertFailed(d, "capture", "the incumbent hung up (it gave up on this takeover)")
        self.assertSuccessorHoldsNoConnection(client)
        self.assertSuccessorHoldsNoPort()

    def test_incumbentHangsUpDuringRestore(self) -> None:
        """
        If the incumbent hangs up before answering C{restored}, the
        restored connections are let go and the ports released.
        """
        captured, client = self.captureOne()
        d = self.toRestoring(captured=captured)
        self.root.broker.connectionLost()
        self.assertFailed(d, "restore", "the incumbent hung up")
        self.assertSuccessorHoldsNoConnection(client)
        self.assertSuccessorHoldsNoPort()

    def test_switchRefused(self) -> None:
        """
        A refused C{switch} fails the takeover before the successor ever
        accepted; the restored connections are let go.
        """
        captured, client = self.captureOne()
        d = self.toRestoring(captured=captured)
        self.root.answer("restored", {})
        self.root.refuse("switch", "switch is not allowed at step captured")
        self.assertFailed(
            d, "switch", "the incumbent refused: switch is not allowed at step captured"
        )
        self.assertNotIn("resumeAccepting", self.registry.calls)
        self.assertSuccessorHoldsNoConnection(client)
        self.assertSuccessorHoldsNoPort()

    def test_switchTimeout(self) -> None:
        """
        An incumbent that does not answer C{switch} in time fails the
        takeover.
        """
        d = self.toRestoring()
        self.root.answer("restored", {})
        self.reactor.advance(TIMEOUT)
        self.assertFailed(d, "switch", "timed out waiting for the incumbent")
        self.assertSuccessorHoldsNoPort()

    def test_commitRefused(self) -> None:
        """
        A refused C{commit} fails the takeover: the successor stops
        accepting by releasing its copies (not shutting them down), and
        lets go of the restored connections, which never read here.
        """
        captured, client = self.captureOne()
        d = self.toSwitched(captured=captured)
        [transport] = self.registry.openConnections()
        self.root.refuse("commit", "commit is not allowed at step prepared")
        self.assertFailed(
            d, "commit", "the incumbent refused: commit is not allowed at step prepared"
        )
        self.assertFalse(transport.connected)
        self.assertSuccessorHoldsNoConnection(client)
        self.assertSuccessorHoldsNoPort()

    def test_commitHasNoTimeout(self) -> None:
        """
        The successor waits for C{commit}'s answer as long as the connection
        lives: giving up after the incumbent committed would leave nobody
        listening.
        """
        d = self.toSwitched()
        self.reactor.advance(TIMEOUT * 10)
        self.assertNoResult(d)
        self.assertNotIn("releaseAll", self.registry.calls)

    def test_commitLostIncumbentDead(self) -> None:
        """
        If the connection is lost during C{commit} and the incumbent is
        dead, the successor keeps the ports and the connections (which now
        read), publishes its control socket, and the takeover succeeds with
        the next generation.
        """
        captured, client = self.captureOne()
        d = self.toSwitched(captured=captured)
        self.alive[100] = False
        self.root.broker.connectionLost()
        result = self.successResultOf(d)
        self.assertEqual(result["generation"], 5)
        self.assertTrue(self.controls[0].published)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertEqual([p.accepting for p in self.registry.ports], [True, True])
        [transport] = self.registry.openConnections()
        self.assertIn(transport, self.reactor.getReaders())
        self.closeIncumbentCopies()
        self.assertPortsNotShutDown()
        self.releaseIncumbentConnection()
        doWrites(self.reactor)
        self.assertEqual(receive(client), b"1 hello one\r\n")

    def test_publishFailsAfterCommit(self) -> None:
        """
        If the control socket cannot be published after the commit, the
        successor still keeps the ports (the incumbent has let go of them:
        rolling back now would leave nobody listening) and says so in the
        log.
        """
        d = self.toSwitched()
        self.controls[0].failPublish = PermissionError(13, "Permission denied")
        with capturedLogs() as events:
            self.root.answer("commit", {"generation": 5})
        self.assertEqual(self.successResultOf(d)["generation"], 5)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertNotIn("abort", self.root.methods())
        self.assertEqual(self.root.broker.transport.loseConnectionCalls, 1)
        [event] = [e for e in events if e.get("log_failure") is not None]
        self.assertIsInstance(event["log_failure"].value, PermissionError)
        self.assertEqual(len(self.flushLoggedErrors(PermissionError)), 1)

    def test_activationFailsAfterCommit(self) -> None:
        """
        If resuming the moved connections fails after the commit, that is
        logged, and the successor still keeps and serves everything: no
        rollback, no abort, the control socket published.
        """

        def broken(self: Restored, clock: Any = None) -> list[float]:
            raise RuntimeError("the moved connections would not start")

        self.patch(Restored, "activate", broken)
        captured, client = self.captureOne()
        d = self.toSwitched(captured=captured)
        with capturedLogs() as events:
            self.root.answer("commit", {"generation": 5})
        result = self.successResultOf(d)
        self.assertEqual(result["generation"], 5)
        self.assertNotIn("freeze_ms", result)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertNotIn("abort", self.root.methods())
        self.assertTrue(self.controls[0].published)
        self.assertEqual(self.root.broker.transport.loseConnectionCalls, 1)
        self.assertEqual([p.accepting for p in self.registry.ports], [True, True])
        self.assertIsNotNone(self.successor.restored)
        self.assertEqual(len(self.registry.openConnections()), 1)
        [event] = [e for e in events if e.get("log_failure") is not None]
        self.assertIn("resuming the moved connections failed", event["log_format"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_commitLostIncumbentAlive(self) -> None:
        """
        If the connection is lost during C{commit} and the incumbent lives
        (it abandoned the takeover and accepts again), the takeover fails
        and the successor lets go of the ports and the connections.
        """
        captured, client = self.captureOne()
        d = self.toSwitched(captured=captured)
        self.alive[100] = True
        self.root.broker.connectionLost()
        self.assertFailed(d, "commit", "the incumbent hung up instead of committing")
        self.assertSuccessorHoldsNoConnection(client)
        self.assertSuccessorHoldsNoPort()

    def lostBeforeCommit(self) -> Any:
        # The connection drops between the switch's answer and the commit
        # call (when the successor starts accepting).
        self.registry = _DisconnectingRegistry(holding=True)
        self.registry.broker = self.root.broker
        self.addCleanup(self.registry.close)
        return self.toSwitched()

    def test_lostBeforeCommitIncumbentDead(self) -> None:
        """
        If the connection is already lost when the successor would send
        C{commit} and the incumbent is dead, the successor keeps the ports,
        as when the connection is lost during C{commit}.
        """
        self.alive[100] = False
        d = self.lostBeforeCommit()
        self.assertEqual(self.successResultOf(d)["generation"], 5)
        self.assertTrue(self.controls[0].published)
        self.assertNotIn("releaseAll", self.registry.calls)

    def test_lostBeforeCommitIncumbentAlive(self) -> None:
        """
        If the connection is already lost when the successor would send
        C{commit} and the incumbent lives, the takeover fails.
        """
        self.alive[100] = True
        d = self.lostBeforeCommit()
        self.assertFailed(d, "commit", "the incumbent hung up instead of committing")

    def test_abortUnanswered(self) -> None:
        """
        Rolling back does not wait forever for the incumbent to acknowledge
        C{abort}: after at most 5 seconds the successor hangs up and fails.
        """
        del self.root.autoAnswers["abort"]
        d = self.connect()
        self.root.refuse("begin", "no")
        self.assertNoResult(d)
        self.reactor.advance(5)
        self.assertFailed(d, "begin", "the incumbent refused: no")

    def test_failureLogged(self) -> None:
        """
        A failed takeover is logged with its step and reason.
        """
        d = self.connect()
        with capturedLogs() as events:
            self.root.refuse("begin", "no")
        self.failureResultOf(d, TakeoverFailed)
        [event] = [e for e in events if "takeover failed at step" in e.get("log_format", "")]
        self.assertEqual((event["step"], event["reason"]), ("begin", "the incumbent refused: no"))


class _DisconnectingRegistry(FakeRegistry):
    """
    Loses the connection of C{broker} when told to accept.
    """

    broker: Any = None

    def resumeAccepting(self) -> int:
        n = super().resumeAccepting()
        self.broker.connectionLost()
        return n


class FaultInjectionTests(SuccessorTestMixin, SynchronousTestCase):
    """
    Tests for C{MIGRATOR_FAULT} (L{Successor.faults}): C{raise:POINT} and
    C{hang:POINT}.  (C{kill:} is exercised by the integration tests; here
    C{os.kill} is replaced so that nothing can be killed by mistake.)
    """

    def setUp(self) -> None:
        super().setUp()
        self.kills: list[tuple[int, int]] = []

        def kill(pid: int, sig: int) -> None:
            self.kills.append((pid, sig))
            raise AssertionError("os.kill called by a unit test")

        self.patch(os, "kill", kill)

    def run_(self, faults: str, captured: Captured | None = None) -> Any:
        """
        Run a takeover as far as it goes with C{faults}, the incumbent
        answering everything it is asked (and sending C{captured}, by
        default nothing, as the connections).
        """
        d = self.connect(faults)
        if self.isPending("begin"):
            self.sendPorts()
            self.root.answer("begin", dict(BEGUN))
            self.readChannels()
        if self.isPending("prepared"):
            self.root.answer("prepared", {})
        if self.isPending("capture"):
            self.sendConnections(captured)
            self.root.answer(
                "capture", {**CAPTURED, "connections": captured.count if captured else 0}
            )
            self.readChannels()
        for method, answer in [
            ("restored", {}),
            ("switch", {"paused": 2}),
            ("commit", {"generation": 5}),
        ]:
            if self.isPending(method):
                self.root.answer(method, answer)
        return d

    def isPending(self, method: str) -> bool:
        return any(c.method == method and not c.deferred.called for c in self.root.calls)

    def test_raiseAtEachPoint(self) -> None:
        """
        C{raise:POINT} fails the takeover at that point, rolled back like
        any other failure: the ports and the restored connections are let
        go, none shut down.
        """
        steps = {
            "connected": "connect",
            "before-adopt": "adopt",
            "after-adopt": "adopt",
            "after-restore": "restore",
            "after-switch": "switch",
            "before-commit": "commit",
        }
        # after-batch needs a stream of several batches: tests.test_stream.
        self.assertEqual(set(steps) | {"after-batch"}, set(SUCCESSOR_POINTS))
        for point, step in steps.items():
            self.setUp()
            captured, client = self.captureOne()
            d = self.run_(f"raise:{point}", captured)
            self.assertFailed(d, step, f"injected fault at {point}")
            self.assertNotIn("commit", self.root.methods())
            if point != "connected":
                self.assertSuccessorHoldsNoPort()
            self.assertSuccessorHoldsNoConnection(client)
            self.assertEqual(self.kills, [])

    def test_raiseAfterRestore(self) -> None:
        """
        C{raise:after-restore} fails the takeover once the connections were
        restored, before the incumbent is told how many.
        """
        captured, client = self.captureOne()
        d = self.run_("raise:after-restore", captured)
        self.assertFailed(d, "restore", "injected fault at after-restore")
        self.assertEqual(self.root.methods(), ["begin", "received", "prepared", "capture", "abort"])
        self.assertSuccessorHoldsNoConnection(client)

    def test_hang(self) -> None:
        """
        C{hang:POINT} stops the takeover at that point for good: nothing
        more is sent, and nothing is released.
        """
        d = self.run_("hang:after-switch")
        self.assertEqual(
            self.root.methods(), ["begin", "received", "prepared", "capture", "restored", "switch"]
        )
        self.reactor.advance(TIMEOUT * 10)
        self.assertNoResult(d)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertEqual(self.kills, [])

    def test_hangThenIncumbentHangsUp(self) -> None:
        """
        A successor stuck after the switch rolls back as soon as the
        incumbent hangs up (it gave up on the takeover and accepts again):
        it must not keep accepting on the shared sockets, nor hold the
        connections.
        """
        captured, client = self.captureOne()
        d = self.run_("hang:after-switch", captured)
        self.assertNoResult(d)
        self.root.broker.connectionLost()
        self.assertFailed(d, "switch", "the incumbent hung up (it gave up on this takeover)")
        self.assertSuccessorHoldsNoPort()
        self.assertSuccessorHoldsNoConnection(client)
        self.assertNotIn("commit", self.root.methods())

    def test_hangAfterRestoreThenIncumbentHangsUp(self) -> None:
        """
        A successor stuck after restoring the connections rolls back as
        soon as the incumbent hangs up.
        """
        captured, client = self.captureOne()
        d = self.run_("hang:after-restore", captured)
        self.assertNoResult(d)
        self.assertEqual(self.root.methods(), ["begin", "received", "prepared", "capture"])
        self.root.broker.connectionLost()
        self.assertFailed(
            d, "restore", "the incumbent hung up (it gave up on this takeover)"
        )
        self.assertSuccessorHoldsNoConnection(client)

    def test_hangBeforeAdopt(self) -> None:
        """
        C{hang:before-adopt} stops before the service starts.
        """
        d = self.run_("hang:before-adopt")
        self.assertNoResult(d)
        self.assertEqual(self.started, 0)
        self.assertEqual(self.root.methods(), ["begin", "received"])

    def test_otherPointsIgnored(self) -> None:
        """
        Faults for points the takeover does not reach do nothing; the first
        matching fault in the list applies.
        """
        d = self.run_("raise:after-adopt,kill:after-switch")
        self.assertFailed(d, "adopt", "injected fault at after-adopt")
        self.assertEqual(self.kills, [])

    def test_noFaults(self) -> None:
        """
        With no faults (or only empty items), the takeover completes.
        """
        d = self.run_(",,")
        self.assertEqual(self.successResultOf(d)["generation"], 5)

    def test_faultsNotFromEnvironment(self) -> None:
        """
        L{Successor} never reads C{MIGRATOR_FAULT}: by default it injects
        nothing, whatever the environment says (the composition root reads
        it and hands the faults in).
        """
        self.patch(os, "environ", {"MIGRATOR_FAULT": "raise:connected"})
        successor = Successor(self.reactor, PATH, self.registry, lambda: None, lambda: None)
        self.assertEqual(successor.faults, Faults())

    def test_faultLogged(self) -> None:
        """
        An injected fault is logged before it acts.
        """
        with capturedLogs() as events:
            d = self.run_("raise:connected")
        self.failureResultOf(d)
        [event] = [e for e in events if "fault injection" in e.get("log_format", "")]
        self.assertEqual((event["action"], event["point"]), ("raise", "connected"))


class SuccessorAgainstIncumbentTests(SynchronousTestCase):
    """
    A L{Successor} taking over from a real L{Incumbent} over an in-memory
    PB connection (L{connectControl}), with a real frame channel, each side
    with a L{FakeRegistry}, on one reactor, the incumbent serving one
    established connection (a L{Greeter}).
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.oldRegistry = FakeRegistry()
        self.addCleanup(self.oldRegistry.close)
        self.probes = []
        for key in KEYS:
            port, probe = socket.socketpair()
            self.addCleanup(probe.close)
            self.probes.append(probe)
            self.oldRegistry.addPort(key, key.split(":")[0], port.detach())
        mine, self.client = socket.socketpair()
        self.addCleanup(self.client.close)
        mine.setblocking(False)
        self.protocol = Greeter()
        transport = tcp.Server(mine, self.protocol, ("pair", 0), None, next(_sessions), self.reactor)
        self.addCleanup(releaseConnection, transport)
        self.protocol.makeConnection(transport)
        self.oldRegistry.trackConnection(transport)
        self.handedOff: list[dict[str, Any]] = []
        self.incumbent = Incumbent(
            self.reactor,
            self.oldRegistry,
            adapters(),
            identity=lambda: {"pid": 100, "generation": 4, "python": "3.11.7"},
            onHandedOff=self.handedOff.append,
            takeoverTimeout=TIMEOUT,
            clock=self.reactor.seconds,
        )
        self.addCleanup(self.incumbent.abort, "the test is over")
        self.root = ControlRoot(lambda: {"pid": 100}, self.incumbent)
        self.pumps: list[Any] = []

    def successor(
        self, startService: Any = None, faults: str = ""
    ) -> tuple[Successor, FakeRegistry]:
        registry = FakeRegistry(holding=True)
        self.addCleanup(registry.close)
        self.addCleanup(releaseConnections, registry)

        def declare() -> None:
            for key in KEYS:
                registry.declare(key)

        successor = Successor(
            self.reactor,
            PATH,
            registry,
            startService=startService or declare,
            prepareControl=FakeControlSocket,
            timeout=TIMEOUT,
            policy=FakePeerPolicy(),
            faults=Faults.parse(faults),
            watchProcess=lambda pid: FakeWatch(pid, lambda p: True),
            peerPid=lambda broker: None,
            deathGrace=0,
            clock=self.reactor.seconds,
            adapters=adapters(),
        )
        return successor, registry

    def run_(self, successor: Successor) -> Any:
        d = successor.run()
        self.addCleanup(abandon, d)
        _, factory, _, _ = self.reactor.unixClients[-1]
        client, server, pump = connectControl(
            ControlServerFactory(self.root, FakePeerPolicy()), factory, self.reactor
        )
        self.pumps.append(pump)
        self.addCleanup(self.disconnect, client, pump)
        self.turn()
        return d

    def disconnect(self, client: Any, pump: Any) -> None:
        client.transport.loseConnection()
        pump.flush()

    def turn(self) -> None:
        """
        Run everything until nothing moves.
        """
        for _ in range(20):
            for pump in self.pumps:
                pump.flush()
            doWrites(self.reactor)
            doReads(self.reactor)
            self.reactor.advance(0)

    def greet(self, line: bytes) -> bytes:
        """
        The client sends C{line}; whoever serves the connection answers.
        """
        self.client.sendall(line + b"\r\n")
        self.turn()
        return receive(self.client)

    def test_takeover(self) -> None:
        """
        A complete takeover: the successor ends up with the ports (accepting)
        and the connection, and the next generation; the incumbent released
        its copies (without shutting anything down), handed off, and saw
        the successor hang up.  The client, served by the successor now,
        sees one conversation.
        """
        self.assertEqual(self.greet(b"one"), b"1 hello one\r\n")
        oldTransport = self.protocol.transport
        successor, registry = self.successor()
        d = self.run_(successor)
        result = self.successResultOf(d)
        self.assertEqual(result["generation"], 5)
        self.assertEqual(result["released"], KEYS)
        self.assertEqual(result["connections"], 1)
        self.assertEqual(result["moved"], {GREETER: 1})
        self.assertEqual(
            self.handedOff,
            [{"pid": os.getpid(), "python": sys.version.split()[0], "generation": 5}],
        )
        self.assertEqual([(p.adopted, p.accepting) for p in registry.ports], [(True, True)] * 2)
        self.assertEqual([p.released for p in self.oldRegistry.ports], [True, True])
        self.assertEqual([peerState(p) for p in self.probes], ["open", "open"])
        self.assertFalse(self.incumbent.successorAttached)
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "committed")
        self.assertFalse(oldTransport.connected)
        [transport] = registry.openConnections()
        self.assertIsNot(transport.protocol, self.protocol)
        self.assertEqual(self.greet(b"two"), b"2 hello two\r\n")
        registry.close()
        self.assertEqual([peerState(p) for p in self.probes], ["closed", "closed"])

    def test_failedStartRollsBackBoth(self) -> None:
        """
        When the successor's service fails to start, the successor fails
        with the reason, and the incumbent learns why, keeps its ports and
        is ready for the next attempt, which succeeds.
        """

        def broken() -> None:
            raise RuntimeError("ImportError in the new code")

        successor, registry = self.successor(broken)
        d = self.run_(successor)
        e = self.failureResultOf(d, TakeoverFailed).value
        self.assertEqual(str(e), "takeover failed at step adopt: ImportError in the new code")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"],
            "the successor gave up: ImportError in the new code",
        )
        self.assertEqual([p.accepting for p in self.oldRegistry.ports], [True, True])
        self.assertEqual([peerState(p) for p in self.probes], ["open", "open"])
        self.assertEqual(self.greet(b"one"), b"1 hello one\r\n")

        successor, registry = self.successor()
        self.assertEqual(self.successResultOf(self.run_(successor))["generation"], 5)
        self.assertEqual(self.greet(b"two"), b"2 hello two\r\n")

    def test_failureAfterRestoreRollsBackBoth(self) -> None:
        """
        When the successor fails after restoring the connections, it lets
        go of its copies, and the incumbent thaws its own: the client,
        served by the incumbent again, sees one conversation, including
        what it sent during the attempt.
        """
        self.assertEqual(self.greet(b"one"), b"1 hello one\r\n")
        self.client.sendall(b"tw")
        successor, registry = self.successor(faults="raise:after-restore")
        d = self.run_(successor)
        self.failureResultOf(d, TakeoverFailed)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"],
            "the successor gave up: injected fault at after-restore",
        )
        self.assertEqual(self.incumbent.lastAttempt["step"], "captured")
        self.assertEqual(registry.openConnections(), [])
        self.assertTrue(self.protocol.transport.connected)
        self.assertEqual(self.greet(b"o"), b"2 hello two\r\n")

    def test_concurrentTakeoverRefused(self) -> None:
        """
        A second successor while a takeover is in progress fails at
        C{begin} with the incumbent's explanation; the first one completes.
        """
        first, _ = self.successor()
        # The first one stops after adopting, before reporting prepared.
        first.faults = Faults.parse("hang:after-adopt")
        d1 = self.run_(first)
        self.assertNoResult(d1)
        second, secondRegistry = self.successor()
        d2 = self.run_(second)
        e = self.failureResultOf(d2, TakeoverFailed).value
        self.assertIn(
            "takeover failed at step begin: the incumbent refused: a takeover is "
            f"already in progress (successor pid {os.getpid()}, step received",
            str(e),
        )
        self.assertEqual(secondRegistry.calls.count("offer"), 0)
        self.assertEqual(self.incumbent.current.state, "received")
        # The first one goes on from where it stopped, and takes over.
        [hang] = first._hangs
        hang.callback(None)
        self.turn()
        self.assertEqual(self.successResultOf(d1)["generation"], 5)
        self.assertEqual(self.greet(b"one"), b"1 hello one\r\n")


class DescribeTests(SynchronousTestCase):
    """
    Tests for L{_describe}, which turns what went wrong into the operator's
    message.
    """

    def test_remoteError(self) -> None:
        """
        A remote error is the incumbent's refusal, with its message.
        """
        e = pb.RemoteError(b"migrator.takeover._incumbent.TakeoverRefused", "no way", "Traceback unavailable\n")
        self.assertEqual(_describe(e), "the incumbent refused: no way")

    def test_timeout(self) -> None:
        """
        A timeout is a timeout waiting for the incumbent.
        """
        self.assertEqual(_describe(TimeoutError()), "timed out waiting for the incumbent")

    def test_builtinException(self) -> None:
        """
        A built-in exception is described by its message alone, or by its
        class if it has none.
        """
        self.assertEqual(_describe(ValueError("bad")), "bad")
        self.assertEqual(_describe(KeyError()), "KeyError")

    def test_otherException(self) -> None:
        """
        Other exceptions are prefixed with their class name.
        """
        self.assertEqual(_describe(pb.NoSuchMethod("gone")), "NoSuchMethod: gone")

    def test_hungUp(self) -> None:
        """
        A lost PB connection is the incumbent hanging up.
        """
        self.assertEqual(_describe(pb.PBConnectionLost("gone")), "the incumbent hung up")
        self.assertEqual(_describe(pb.DeadReferenceError("stale")), "the incumbent hung up")

    def test_takeoverFailed(self) -> None:
        """
        L{TakeoverFailed} (raised by L{Successor} itself) is its message.
        """
        self.assertEqual(_describe(TakeoverFailed("why")), "why")
