# -*- test-case-name: tests.test_incumbent -*-
"""
Tests for L{migrator.takeover._incumbent}: the incumbent's state machine, driven by
direct calls (with L{FakeSession}), and its PB face (L{ControlRoot},
L{ControlSession}) over an in-memory PB connection.

The frame channel the incumbent opens is a real C{socketpair}, and so are
the established connections it captures (a C{tcp.Server} on one end, the
client at the other); everything else is in memory, and time is a
L{MemoryReactorClock}.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import shutil
import socket
import tempfile
from typing import Any

import attrs
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.spread.jelly import InsecureJelly
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from migrator._twistedinternals import releaseConnection, releasePort
from migrator.interfaces import IBusyAware, IPeerPolicy, IPortRegistry
from migrator.state._capture import captureConnections
from migrator.state._graph import GraphError, loadsPlain
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.state._restore import restoreConnections
from migrator.takeover import _attempt
from migrator.takeover._channel import ChannelError, FrameChannel
from migrator.takeover._control import ControlClientFactory, ControlServerFactory
from migrator.takeover._incumbent import RELEASE_WAIT, Incumbent, TakeoverRefused
from migrator.takeover._messages import (
    BeginAnswer,
    BeginRequest,
    CaptureReport,
    CaptureRequest,
    CommitAnswer,
    Farewell,
    PreparedReport,
    ReceivedReport,
    RestoredReport,
    SwitchAnswer,
)
from migrator.takeover._ports import ListenerRegistry
from migrator.takeover._session import ControlRoot, ControlSession
from migrator.takeover._steps import (
    BEGUN,
    CAPTURED,
    CAPTURING,
    PREPARED,
    RECEIVED,
    RESTORED,
    SWITCHED,
)
from tests._fakes import (
    FakeConnection,
    FakePeerPolicy,
    FakeRegistry,
    FakeSession,
    connectControl,
)

TIMEOUT = 30.0
SUCCESSOR = {"pid": 4242, "python": "3.13.0", "argv": ["twistd"]}
BEGIN = BeginRequest.fromWire(SUCCESSOR)
IDENTITY = {"pid": 100, "generation": 4, "python": "3.11.7"}
#: The plan of a takeover with no connection open.
EMPTY_PLAN = {"moves": 0, "harmless": 0, "declined": 0, "unknown": 0, "classes": {}}
#: What a commit with nothing left behind reports about it (a successor
#: that sends no --unmovable policy gets "drain", as it always did).
NOTHING_LEFT = {"unmovable": "drain", "classes": {}, "split": False, "split_classes": {}}
KEYS = ["tcp:8080:#0", "unix:/run/site/web#0"]

_sessions = itertools.count(1)


def ask(adapters: AdapterRegistry) -> CaptureRequest:
    """
    The capture request of a successor with the adapters of C{adapters}.
    """
    return CaptureRequest(tuple(adapters.typeNames()))


class Echo(LineReceiver):
    """
    Answers each line with itself.  While C{working} it has a request in
    hand: its adapter (L{EchoAdapter}) calls it busy, and it cannot move.
    """

    working = False
    lost = False

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)

    def ring(self) -> None:
        """
        The target of a scheduled call.
        """

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


ECHO = f"{Echo.__module__}.{Echo.__qualname__}"


@attrs.frozen
@implementer(IBusyAware)
class EchoAdapter(InstanceAdapter):
    """
    The default rule for L{Echo}, with C{busy} (which makes the capture
    wait for it, see L{migrator.state._settling.Settling}).
    """

    def busy(self, obj: Any) -> bool:
        return bool(obj.working)

    def movable(self, obj: Any) -> str | None:
        return "working" if obj.working else None


def peerState(probe: socket.socket) -> str:
    """
    What the far end of a C{socketpair} looks like from C{probe}:
    C{"open"} (nothing to read), C{"closed"} (end of file: every copy of the
    other end was closed, or it was shut down) or C{"data"}.
    """
    probe.setblocking(False)
    try:
        data = probe.recv(1)
    except BlockingIOError:
        return "open"
    return "data" if data else "closed"


def flushChannels(reactor: MemoryReactorClock) -> None:
    """
    Let the frame channels on C{reactor} write what they have queued (and
    nothing else: frozen or thawed connections are the test's to flush).
    """
    for writer in reactor.getWriters():
        if isinstance(writer, FrameChannel):
            why = writer.doWrite()
            if why is not None:
                # As a reactor does when a write fails.
                writer.connectionLost(Failure(why))


class ChannelReader:
    """
    The successor's end of a takeover's frame channel, read by the test.

    @ivar sock: the end's socket (closed by L{close}).
    """

    def __init__(self, reactor: MemoryReactorClock, fd: int) -> None:
        self._reactor = reactor
        self.sock = socket.socket(fileno=fd)
        self._received: list[tuple[bytes, list[int]]] = []
        self._channel = FrameChannel(
            reactor, self.sock, lambda payload, fds: self._received.append((payload, fds))
        )

    def next(self) -> tuple[bytes, list[int]]:
        """
        Flush what the incumbent sent and read the next message.

        @return: its payload and descriptors (now the caller's).
        """
        flushChannels(self._reactor)
        if not self._received:
            self._channel.doRead()
        if not self._received:
            raise AssertionError("no message on the channel")
        return self._received.pop(0)

    def close(self) -> None:
        self._channel.close()


def exchange(transport: Any, client: socket.socket, data: bytes = b"") -> bytes:
    """
    The client sends C{data}; C{transport} reads (if it reads) and writes
    (if it writes), as the reactor would.

    @return: what the client received.
    """
    if data:
        client.sendall(data)
    reactor = transport.reactor
    if transport in reactor.getReaders():
        transport.doRead()
    while transport in reactor.getWriters():
        transport.doWrite()
    client.setblocking(False)
    try:
        return client.recv(65536)
    except BlockingIOError:
        return b""


class _StubServerTransport:
    """
    The transport of a control connection, as L{ControlSession} uses it.
    """

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.lost = 0

    def sendFileDescriptor(self, fd: int) -> None:
        self.sent.append(os.dup(fd))

    def loseConnection(self) -> None:
        self.lost += 1


class _StubBroker:
    def __init__(self) -> None:
        self.transport = _StubServerTransport()
        self.onDisconnect: list[Any] = []

    def notifyOnDisconnect(self, notifier: Any) -> None:
        self.onDisconnect.append(notifier)


class IncumbentTestMixin:
    """
    An L{Incumbent} with two ports (socketpair ends, whose other ends are
    kept as probes) in a L{FakeRegistry}, an adapter for L{Echo}, on a
    L{MemoryReactorClock} (which is also the capture's clock).
    """

    def setUp(self) -> None:
        self.openFds: set[int] = set()
        self.addCleanup(self.closeOpenFds)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000.0)
        self.registry = FakeRegistry()
        self.addCleanup(self.registry.close)
        self.probes = []
        for key in KEYS:
            ours, probe = socket.socketpair()
            self.addCleanup(probe.close)
            self.probes.append(probe)
            self.registry.addPort(key, key.split(":")[0], ours.detach())
        self.adapters = AdapterRegistry()
        self.adapters.register(EchoAdapter(Echo))
        self.handedOff: list[dict[str, Any]] = []
        self.incumbent = Incumbent(
            self.reactor,
            self.registry,
            self.adapters,
            identity=lambda: dict(IDENTITY),
            onHandedOff=self.handedOff.append,
            takeoverTimeout=TIMEOUT,
            clock=self.reactor.seconds,
        )
        # A takeover a test leaves in progress closes its channel and thaws
        # its connections.
        self.addCleanup(self.incumbent.abort, "the test is over")

    def session(self) -> FakeSession:
        session = FakeSession()
        self.addCleanup(session.close)
        return session

    def connection(self, working: bool = False) -> tuple[Echo, socket.socket]:
        """
        An established connection served by an L{Echo} (a C{tcp.Server} on
        one end of a socket pair, reading) that the registry tracks.

        @return: the protocol and the client's end.
        """
        mine, client = socket.socketpair()
        self.addCleanup(client.close)
        mine.setblocking(False)
        protocol = Echo()
        protocol.working = working
        transport = tcp.Server(mine, protocol, ("pair", 0), None, next(_sessions), self.reactor)
        self.addCleanup(releaseConnection, transport)
        protocol.makeConnection(transport)
        self.registry.trackConnection(transport)
        return protocol, client

    def beginAndRead(
        self, session: FakeSession
    ) -> tuple[dict[str, Any], dict[str, Any], list[int], ChannelReader]:
        """
        Begin a takeover for C{session} and read what the incumbent sent on
        the channel.

        @return: the answer, the ports message, its descriptors (closed at
            the end of the test) and the channel.
        """
        answer = self.incumbent.begin(session, BEGIN)
        [channelFd] = session.takeSent()
        reader = ChannelReader(self.reactor, channelFd)
        self.addCleanup(reader.close)
        payload, fds = reader.next()
        self.ownFds(fds)
        return answer, json.loads(payload), fds, reader

    def toPrepared(self, session: FakeSession) -> ChannelReader:
        _, _, fds, reader = self.beginAndRead(session)
        self.incumbent.received(session, ReceivedReport(len(fds)))
        self.incumbent.prepared(session, PreparedReport(len(fds), len(fds)))
        return reader

    def capture(
        self, session: FakeSession, reader: ChannelReader, types: list[str] | None = None
    ) -> tuple[dict[str, Any], bytes, list[int]]:
        """
        Ask for the connections (as a successor with adapters for C{types},
        by default ours) when none is busy, and read the message.

        @return: the answer, the message's payload and its descriptors
            (closed at the end of the test).
        """
        if types is None:
            types = self.adapters.typeNames()
        answer = self.incumbent.capture(session, CaptureRequest(tuple(types)))
        assert isinstance(answer, CaptureReport)
        payload, fds = reader.next()
        self.ownFds(fds)
        return answer, payload, fds

    def toCaptured(self, session: FakeSession) -> tuple[ChannelReader, list[int]]:
        """
        @return: the channel and the descriptors of the captured
            connections.
        """
        reader = self.toPrepared(session)
        _, _, fds = self.capture(session, reader)
        return reader, fds

    def toSwitched(self, session: FakeSession) -> ChannelReader:
        reader, fds = self.toCaptured(session)
        self.incumbent.restored(session, RestoredReport(len(fds)))
        self.incumbent.switch(session)
        return reader

    def ownFds(self, fds: list[int]) -> None:
        """
        Close C{fds} at the end of the test, unless L{closeFd} did.
        """
        self.openFds.update(fds)

    def closeFd(self, fd: int) -> None:
        self.openFds.remove(fd)
        os.close(fd)

    def closeOpenFds(self) -> None:
        for fd in self.openFds:
            os.close(fd)
        self.openFds.clear()

    def assertFarewell(self, reader: ChannelReader) -> None:
        """
        The last message on the channel of an abandoned takeover is the
        incumbent's farewell, with the reason it recorded; then the channel
        closes.
        """
        payload, fds = reader.next()
        expected = Farewell(self.incumbent.lastAttempt["reason"], self.incumbent.stopping)
        self.assertEqual((Farewell.fromBytes(payload), fds), (expected, []))
        self.assertEqual(peerState(reader.sock), "closed")

    def accepting(self) -> list[bool]:
        return [p.accepting for p in self.registry.ports]

    def assertFrozen(self, transport: Any) -> None:
        """
        C{transport} neither reads nor writes.
        """
        self.assertNotIn(transport, self.reactor.getReaders())
        self.assertNotIn(transport, self.reactor.getWriters())
        self.assertTrue(transport.connected)

    def assertServing(self, protocol: Echo, client: socket.socket, sent: bytes = b"") -> None:
        """
        C{protocol}'s connection is served here: it reads, answers, and
        writes (after C{sent}, what it had not sent yet).
        """
        transport = protocol.transport
        self.assertIn(transport, self.reactor.getReaders())
        self.assertEqual(exchange(transport, client, b"ping\r\n"), sent + b"ping\r\n")
        self.assertFalse(protocol.lost)


class IncumbentTests(IncumbentTestMixin, SynchronousTestCase):
    """
    Tests for L{Incumbent}'s steps, called directly.
    """

    def test_beginAnswersWithIdentity(self) -> None:
        """
        C{begin} answers with the incumbent's pid, generation, Python and
        the number of ports it sends, and the takeover is at step C{begun}.
        """
        answer = self.incumbent.begin(self.session(), BEGIN)
        self.assertEqual(answer, BeginAnswer(**IDENTITY, ports=2, plan=EMPTY_PLAN))
        self.assertEqual(self.incumbent.current.state, BEGUN)

    def test_beginSendsPortsOverTheChannel(self) -> None:
        """
        C{begin} sends one descriptor with its answer: the successor's end
        of a frame channel, on which one C{ports} message carries every
        port's record and descriptor, in the registry's order.
        """
        _, message, fds, _ = self.beginAndRead(self.session())
        self.assertEqual(message["type"], "ports")
        self.assertEqual([r["key"] for r in message["ports"]], KEYS)
        self.assertEqual(len(fds), 2)
        # The descriptors are the ports' own sockets: bytes written through
        # them arrive at the matching probes.
        for fd, probe in zip(fds, self.probes, strict=True):
            os.write(fd, b"x")
            self.assertEqual(probe.recv(1), b"x")

    def test_beginLogsPortCount(self) -> None:
        """
        C{begin} logs who asked and how many ports are sent.
        """
        with capturedLogs() as events:
            self.incumbent.begin(self.session(), BEGIN)
        [event] = [e for e in events if "takeover requested" in e.get("log_format", "")]
        self.assertEqual((event["pid"], event["count"]), (4242, 2))

    def test_takeoverStatus(self) -> None:
        """
        C{takeoverStatus} is C{None} when idle, and during a takeover names
        the successor, the step, when it started and how long ago.
        """
        self.assertIsNone(self.incumbent.takeoverStatus())
        session = self.session()
        self.incumbent.begin(session, BEGIN)
        self.reactor.advance(1.5)
        self.assertEqual(
            self.incumbent.takeoverStatus(),
            {"successor_pid": 4242, "step": BEGUN, "started": 1000.0, "elapsed": 1.5},
        )

    def test_happyPath(self) -> None:
        """
        begin, received, prepared, capture (nothing to move), restored,
        switch, commit: the ports accept until the capture (which stops
        accepting first, so that no connection is accepted between the
        capture and the commit), are released at the commit, C{onHandedOff} is called (later, not inside the commit call)
        with the successor and generation + 1, and the attempt is recorded
        in C{lastAttempt}.
        """
        session = self.session()
        _, _, fds, reader = self.beginAndRead(session)
        self.reactor.advance(0.1)
        self.incumbent.received(session, ReceivedReport(2))
        self.assertIsNone(self.incumbent.prepared(session, PreparedReport(2, 2)))
        self.assertEqual(self.incumbent.current.state, PREPARED)
        self.assertEqual(self.accepting(), [True, True])

        answer, payload, connectionFds = self.capture(session, reader)
        self.assertEqual(answer, CaptureReport(connections=0, bytes=len(payload), frozenAt=1000.1))
        self.assertEqual(connectionFds, [])
        self.assertEqual(self.incumbent.current.state, CAPTURED)
        self.assertEqual(self.accepting(), [False, False])
        self.assertIsNone(self.incumbent.restored(session, RestoredReport(0)))
        self.assertEqual(self.incumbent.current.state, RESTORED)
        self.assertEqual(self.accepting(), [False, False])

        self.assertEqual(self.incumbent.switch(session), SwitchAnswer(paused=2))
        self.assertEqual(self.incumbent.current.state, SWITCHED)
        self.assertEqual(self.accepting(), [False, False])
        self.assertEqual([p.released for p in self.registry.ports], [False, False])

        self.reactor.advance(0.25)
        result = self.incumbent.commit(session)
        self.assertEqual(
            result,
            CommitAnswer(
                generation=5,
                released=tuple(KEYS),
                connections=0,
                acceptPausedMs=250.0,
                unmovable="drain",
                classes={},
                split=False,
                splitClasses={},
            ),
        )
        self.assertEqual([p.released for p in self.registry.ports], [True, True])
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(
            self.incumbent.handedOffTo, {"pid": 4242, "python": "3.13.0", "generation": 5}
        )
        self.assertTrue(self.incumbent.successorAttached)
        self.assertEqual(
            self.incumbent.lastAttempt,
            {
                "outcome": "committed",
                "successor_pid": 4242,
                "at": 1000.35,
                "ports_moved": 2,
                "connections_moved": 0,
                "connections_staying": {},
                "accept_paused_ms": 250.0,
                "total_ms": 350.0,
                **NOTHING_LEFT,
            },
        )
        self.assertEqual(self.handedOff, [])
        self.reactor.advance(0)
        self.assertEqual(self.handedOff, [{"pid": 4242, "python": "3.13.0", "generation": 5}])
        # No timeout is left behind.
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_captureWithNothingToMove(self) -> None:
        """
        The connections message of a capture with nothing to move is a
        graph with no roots and no descriptors, which the successor's
        L{restoreConnections} accepts; the ports' factories are anchored
        by key.
        """
        session = self.session()
        reader = self.toPrepared(session)
        _, payload, fds = self.capture(session, reader)
        state = loadsPlain(payload)
        self.assertEqual((state["roots"], state["count"], fds), ([], 0, []))
        self.assertEqual(
            [node[2] for node in state["factories"]], ["factory:" + k for k in KEYS]
        )
        successorPorts = FakeRegistry()
        self.addCleanup(successorPorts.close)
        for key in KEYS:
            successorPorts.declare(key)
        restored = restoreConnections(
            self.reactor, successorPorts, AdapterRegistry(), payload, fds
        )
        self.assertEqual(restored.count, 0)

    def test_captureLeavesWhatCannotMove(self) -> None:
        """
        Connections no adapter covers, and those the successor has no
        adapter for, stay (counted by reason) and are not frozen: the
        capture moves nothing, and the takeover goes on.
        """
        self.registry.connections.append(FakeConnection())
        protocol, client = self.connection()
        session = self.session()
        reader = self.toPrepared(session)
        answer, _, fds = self.capture(session, reader, types=[])
        self.assertEqual(answer.connections, 0)
        self.assertEqual(answer.moved, {})
        self.assertEqual(
            answer.staying,
            {"builtins.NoneType: no adapter": 1, f"{ECHO}: no adapter in the successor": 1},
        )
        self.assertEqual(fds, [])
        self.assertServing(protocol, client)
        self.assertIsNone(self.incumbent.restored(session, RestoredReport(0)))
        self.incumbent.switch(session)
        self.assertEqual(self.incumbent.commit(session).connections, 0)
        self.assertEqual(
            self.incumbent.lastAttempt["connections_staying"], answer.staying
        )
        # Not moved, so not released: it drains here.
        self.assertServing(protocol, client)

    def test_captureLeavesOtherVersions(self) -> None:
        """
        A type the successor reads at a version no chain of steps reaches
        (here: a successor that says nothing of its upgrades) stays (its
        connection drains, with the reason) instead of failing the restore.
        """
        protocol, client = self.connection()
        session = self.session()
        reader = self.toPrepared(session)
        answer = self.incumbent.capture(session, CaptureRequest((ECHO,), {ECHO: 99}))
        assert isinstance(answer, CaptureReport)
        _, fds = reader.next()
        self.ownFds(fds)
        self.assertEqual(answer.connections, 0)
        self.assertEqual(
            answer.staying,
            {f"{ECHO}: version 1 -> 99: no upgrade from 1 in the successor": 1},
        )
        self.assertServing(protocol, client)
        self.incumbent.abort("test over", session)

    def test_captureDowngradesForAnOlderSuccessor(self) -> None:
        """
        Where this process's adapter is newer than the successor's, the
        capture downgrades the state with its own steps before sending it
        (written at the successor's version), and the answer says what was
        translated; with no step down to that version, the connection
        stays, saying which step is missing.
        """

        def down(state: dict[str, Any]) -> dict[str, Any]:
            state["downgraded"] = True
            return state

        self.adapters.register(EchoAdapter(Echo, version=2, downgrades={1: down}))
        self.connection()
        session = self.session()
        reader = self.toPrepared(session)
        readable = {ECHO: {"version": 1, "upgrades": [], "persistence": None}}
        answer = self.incumbent.capture(session, CaptureRequest((ECHO,), {ECHO: 1}, readable))
        assert isinstance(answer, CaptureReport)
        payload, fds = reader.next()
        self.ownFds(fds)
        self.assertEqual(answer.connections, 1)
        self.assertEqual(answer.translations[ECHO]["steps"], {"down 2->1": 1})
        tag, _, name, version, state = loadsPlain(payload)["roots"][0]
        self.assertEqual((tag, name, version), ("o", ECHO, 1))
        self.assertIn("downgraded", state[2])
        self.incumbent.abort("test over", session)

        self.adapters.register(EchoAdapter(Echo, version=3, downgrades={2: down}))
        session = self.session()
        reader = self.toPrepared(session)
        answer = self.incumbent.capture(session, CaptureRequest((ECHO,), None, readable))
        assert isinstance(answer, CaptureReport)
        _, fds = reader.next()
        self.ownFds(fds)
        self.assertEqual(answer.connections, 0)
        self.assertEqual(answer.staying, {f"{ECHO}: version 3 -> 1: no downgrade from 2": 1})

    def test_captureSendsConnections(self) -> None:
        """
        C{capture} freezes the movable connections (no reading, no writing,
        their scheduled calls pushed away) and sends their state and
        descriptors on the channel, unsent output included; it answers
        with the counts.
        """
        protocol, client = self.connection()
        transport = protocol.transport
        self.assertEqual(exchange(transport, client, b"one\r\n"), b"one\r\n")
        # Input half read and output not yet written travel too.
        client.sendall(b"two\r\ntw")
        transport.doRead()
        self.assertIn(transport, self.reactor.getWriters())
        timer = self.reactor.callLater(10, protocol.ring)
        protocol.timer = timer
        session = self.session()
        reader = self.toPrepared(session)
        self.reactor.advance(0.5)
        answer, payload, [fd] = self.capture(session, reader)
        self.assertEqual(
            answer,
            CaptureReport(
                connections=1,
                bytes=len(payload),
                moved={ECHO: 1},
                staying={},
                frozenAt=1000.5,
                held=1,
            ),
        )
        self.assertFrozen(transport)
        self.assertGreater(timer.getTime(), 1000.0 + TIMEOUT * 1000)
        state = loadsPlain(payload)
        self.assertEqual(state["count"], 1)
        [root] = state["roots"]
        self.assertEqual((root[0], root[2]), ("o", ECHO))
        flat = root[4][2]
        self.assertEqual(flat[flat.index("_buffer") + 1], b"tw")
        self.assertIn(b"two\r\n", payload)
        # The descriptor is the connection's own socket.
        os.write(fd, b"x")
        self.assertEqual(client.recv(1), b"x")
        # Frozen: what the client sends now is not read here.
        client.sendall(b"three\r\n")
        self.assertEqual(exchange(transport, client), b"")

    def test_captureLogs(self) -> None:
        """
        The capture is logged with what was frozen and what stays.
        """
        self.connection()
        self.connection(working=True)
        self.incumbent.settleTimeout = 0.0
        session = self.session()
        reader = self.toPrepared(session)
        with capturedLogs() as events:
            self.successResultOf(
                self.incumbent.capture(session, ask(self.adapters))
            )
        self.ownFds(reader.next()[1])
        [event] = [e for e in events if "froze and sent" in e.get("log_format", "")]
        self.assertEqual((event["count"], event["stay"], event["held"]), (1, 1, 2))
        self.assertEqual(event["why"], f": 1 x {ECHO}: working")

    def test_captureFails(self) -> None:
        """
        If capturing raises, the takeover is abandoned and the successor
        is told why; the failure is logged.
        """

        def broken(*args: Any) -> Any:
            raise RuntimeError("the graph is on fire")

        self.patch(_attempt, "captureConnections", broken)
        protocol, client = self.connection()
        session = self.session()
        self.toPrepared(session)
        e = self.assertRaises(TakeoverRefused, self.incumbent.capture, session, CaptureRequest())
        self.assertEqual(str(e), "capturing connections failed: the graph is on fire")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.lastAttempt["step"], CAPTURING)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"],
            "capturing connections failed: the graph is on fire",
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertServing(protocol, client)
        # It had stopped accepting just before: it accepts again.
        self.assertEqual(self.accepting(), [True, True])
        flushChannels(self.reactor)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_captureBeforePreparedRefusedAndAborted(self) -> None:
        """
        C{capture} before C{prepared} is a protocol error: refused, the
        takeover abandoned, and no connection frozen.
        """
        protocol, client = self.connection()
        session = self.session()
        self.incumbent.begin(session, BEGIN)
        e = self.assertRaises(TakeoverRefused, self.incumbent.capture, session, {})
        self.assertEqual(str(e), "capture is not allowed at step begun")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"], "protocol error: capture at step begun"
        )
        self.assertServing(protocol, client)

    def test_captureTwiceRefusedAndThaws(self) -> None:
        """
        A second C{capture} is a protocol error: refused, and the takeover
        abandoned, the connections captured by the first one thawed.
        """
        protocol, client = self.connection()
        session = self.session()
        self.toCaptured(session)
        self.assertFrozen(protocol.transport)
        e = self.assertRaises(TakeoverRefused, self.incumbent.capture, session, {})
        self.assertEqual(str(e), "capture is not allowed at step captured")
        self.assertIsNone(self.incumbent.current)
        self.assertServing(protocol, client)

    def test_restoredBeforeCaptureRefusedAndAborted(self) -> None:
        """
        C{restored} before C{capture} is refused and abandons the takeover.
        """
        session = self.session()
        self.toPrepared(session)
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.restored, session, RestoredReport(0)
        )
        self.assertEqual(str(e), "restored is not allowed at step prepared")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.lastAttempt["step"], PREPARED)

    def test_restoredWrongCountAbortsAndThaws(self) -> None:
        """
        A C{restored} report whose count differs from the number of
        connections sent is refused; the takeover is abandoned and the
        connections thawed: they read again, and write what they had not
        sent yet.
        """
        protocol, client = self.connection()
        transport = protocol.transport
        client.sendall(b"one\r\n")
        transport.doRead()
        session = self.session()
        reader, fds = self.toCaptured(session)
        self.assertEqual(len(fds), 1)
        self.assertFrozen(transport)
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.restored, session, RestoredReport(0)
        )
        self.assertEqual(str(e), "count mismatch: sent 1 connections, you restored 0")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.lastAttempt["step"], CAPTURED)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"], "the successor restored 0 of 1 connections"
        )
        self.assertFarewell(reader)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # It writes again by itself, before it reads anything.
        self.assertIn(transport, self.reactor.getWriters())
        transport.doWrite()
        self.assertEqual(client.recv(100), b"one\r\n")
        self.assertServing(protocol, client)

    def test_commitReleasesCapturedConnections(self) -> None:
        """
        At the commit the incumbent lets go of the connections it sent:
        its handles are closed (never shut down: the client stays connected
        to the successor's copy), the protocol's C{connectionLost} does not
        run here and its scheduled calls are cancelled.
        """
        protocol, client = self.connection()
        transport = protocol.transport
        timer = self.reactor.callLater(10, protocol.ring)
        protocol.timer = timer
        session = self.session()
        self.addCleanup(gc.enable)
        gc.enable()
        reader = self.toPrepared(session)
        # (Paused from begin to the end of the attempt.)
        self.assertFalse(gc.isenabled())
        _, _, [fd] = self.capture(session, reader)
        self.incumbent.restored(session, RestoredReport(1))
        self.incumbent.switch(session)
        result = self.incumbent.commit(session)
        self.assertTrue(gc.isenabled())
        self.assertEqual(result.connections, 1)
        self.assertEqual(self.incumbent.lastAttempt["connections_moved"], 1)
        # Until released, it is among those being let go of (not drained),
        # held (so that the registry's quick look may count it).
        self.assertEqual(self.incumbent.releasing, {id(transport)})
        self.assertEqual(self.incumbent._leavingHeld, [transport])
        # (Of no port: not counted as one the registry surely counts.)
        self.assertEqual(self.incumbent.releasingCounted, 0)
        # Not before the successor has the answer: it hangs up once it has.
        self.reactor.advance(0)
        self.reactor.advance(0)
        self.assertEqual(self.incumbent.releasing, {id(transport)})
        self.incumbent.detached(session)
        self.assertEqual(self.incumbent.releasing, frozenset())
        self.assertEqual(self.incumbent._leavingHeld, [])
        self.assertEqual(self.incumbent.releasingCounted, -1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertFalse(transport.connected)
        self.assertEqual(transport.fileno(), -1)
        self.assertNotIn(transport, self.reactor.getReaders())
        self.assertFalse(protocol.lost)
        self.assertFalse(timer.active())
        self.assertEqual(peerState(client), "open")
        os.write(fd, b"from the successor")
        self.assertEqual(client.recv(100), b"from the successor")
        self.closeFd(fd)
        self.assertEqual(peerState(client), "closed")

    def test_finishReleaseBeforeTheReleaseBegan(self) -> None:
        """
        A process that stops right after the commit, before the release
        began, lets go of the moved connections at once
        (C{finishRelease}): not connected here any more (nothing a
        shutdown does can touch them), their timers cancelled, and with
        C{close=False} its handle left open for the exit to close; the
        release scheduled after the answer then does nothing.
        """
        protocol, client = self.connection()
        transport = protocol.transport
        handle = transport.socket
        timer = self.reactor.callLater(10, protocol.ring)
        protocol.timer = timer
        session = self.session()
        reader = self.toPrepared(session)
        _, _, [fd] = self.capture(session, reader)
        self.incumbent.restored(session, RestoredReport(1))
        self.incumbent.switch(session)
        released = []
        self.incumbent.onReleased = lambda: released.append(1)
        self.incumbent.commit(session)
        self.incumbent.finishRelease(close=False)
        self.assertEqual(self.incumbent.releasing, frozenset())
        self.assertFalse(transport.connected)
        self.assertFalse(timer.active())
        self.assertNotEqual(handle.fileno(), -1)
        self.assertEqual(released, [1])
        self.reactor.advance(0)
        self.reactor.advance(0)
        self.assertEqual(released, [1])
        self.assertNotEqual(handle.fileno(), -1)
        transport.loseConnection()
        self.assertNotIn(transport, self.reactor.getWriters())
        handle.close()
        self.assertEqual(peerState(client), "open")
        self.closeFd(fd)
        self.assertEqual(peerState(client), "closed")

    def test_abortAfterCaptureThaws(self) -> None:
        """
        An abort after the capture thaws the connections: they read what
        arrived meanwhile, write what they had not sent, and their scheduled
        calls are due when they were.
        """
        protocol, client = self.connection()
        transport = protocol.transport
        client.sendall(b"one\r\n")
        transport.doRead()
        timer = self.reactor.callLater(10, protocol.ring)
        protocol.timer = timer
        session = self.session()
        self.toCaptured(session)
        client.sendall(b"two\r\n")
        self.assertFrozen(transport)
        self.assertTrue(self.incumbent.abort("it hurts", session))
        # It writes again by itself, before it reads anything.
        self.assertIn(transport, self.reactor.getWriters())
        transport.doWrite()
        self.assertEqual(client.recv(100), b"one\r\n")
        self.assertEqual(exchange(transport, client), b"two\r\n")
        self.assertEqual(timer.getTime(), 1010.0)
        self.assertServing(protocol, client)

    def test_abortBeforeConnectionsFlushed(self) -> None:
        """
        An abort before the connections message was written out drops it
        quietly: nothing is logged as an unhandled error.
        """
        self.connection()
        session = self.session()
        _, _, fds, _ = self.beginAndRead(session)
        self.incumbent.received(session, ReceivedReport(2))
        self.incumbent.prepared(session, PreparedReport(2))
        self.incumbent.capture(session, ask(self.adapters))
        self.assertTrue(self.incumbent.abort("never mind", session))
        # An unhandled failure is logged when its Deferred is collected.
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(ChannelError), [])

    def test_preparedWrongCountAborts(self) -> None:
        """
        A C{prepared} report whose count differs from the number of ports
        sent is refused, and the takeover is abandoned (the ports never
        stopped accepting) with the reason recorded.
        """
        session = self.session()
        _, _, _, reader = self.beginAndRead(session)
        self.incumbent.received(session, ReceivedReport(2))
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.prepared, session, PreparedReport(1)
        )
        self.assertEqual(str(e), "count mismatch: sent 2 ports, you received 1")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "abandoned")
        self.assertEqual(self.incumbent.lastAttempt["step"], RECEIVED)
        self.assertIn("received 1 of 2 listening ports", self.incumbent.lastAttempt["reason"])
        self.assertFarewell(reader)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_switchBeforePreparedRefusedAndAborted(self) -> None:
        """
        C{switch} before C{prepared} is a protocol error: refused, and the
        takeover is abandoned without ever pausing.
        """
        session = self.session()
        self.incumbent.begin(session, BEGIN)
        e = self.assertRaises(TakeoverRefused, self.incumbent.switch, session)
        self.assertEqual(str(e), "switch is not allowed at step begun")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(
            self.incumbent.lastAttempt["reason"], "protocol error: switch at step begun"
        )
        self.assertNotIn("pauseAccepting", self.registry.calls)

    def test_switchBeforeRestoredRefusedAndThaws(self) -> None:
        """
        C{switch} right after C{capture} (without C{restored}) is refused;
        the takeover is abandoned: the incumbent accepts again (it stopped
        at the capture), and the captured connections are thawed.
        """
        protocol, client = self.connection()
        session = self.session()
        self.toCaptured(session)
        self.assertEqual(self.accepting(), [False, False])
        e = self.assertRaises(TakeoverRefused, self.incumbent.switch, session)
        self.assertEqual(str(e), "switch is not allowed at step captured")
        self.assertEqual(self.accepting(), [True, True])
        self.assertServing(protocol, client)

    def test_commitBeforeSwitchRefusedAndAborted(self) -> None:
        """
        C{commit} before C{switch} is refused and abandons the takeover;
        nothing is released, and the connections are thawed.
        """
        protocol, client = self.connection()
        session = self.session()
        self.toCaptured(session)
        self.incumbent.restored(session, RestoredReport(1))
        e = self.assertRaises(TakeoverRefused, self.incumbent.commit, session)
        self.assertEqual(str(e), "commit is not allowed at step restored")
        self.assertIsNone(self.incumbent.current)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertIsNone(self.incumbent.handedOffTo)
        self.assertServing(protocol, client)

    def test_stepRepeatedAfterSwitchRefusedAndResumes(self) -> None:
        """
        A step out of order after the switch abandons the takeover, and the
        incumbent accepts again on every port and serves its connections.
        """
        protocol, client = self.connection()
        session = self.session()
        self.toSwitched(session)
        self.assertEqual(self.accepting(), [False, False])
        self.assertRaises(TakeoverRefused, self.incumbent.prepared, session, PreparedReport(2))
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.incumbent.lastAttempt["step"], SWITCHED)
        self.assertServing(protocol, client)

    def test_stepsWithoutTakeoverRefused(self) -> None:
        """
        Every step but C{begin} with no takeover in progress is refused, and
        changes nothing.
        """
        session = self.session()
        for step, args in [
            ("prepared", ({"received": 2},)),
            ("capture", ({},)),
            ("restored", ({"connections": 0},)),
            ("switch", ()),
            ("commit", ()),
        ]:
            e = self.assertRaises(
                TakeoverRefused, getattr(self.incumbent, step), session, *args
            )
            self.assertEqual(str(e), f"{step}: no takeover of yours is in progress")
        self.assertIsNone(self.incumbent.lastAttempt)
        self.assertEqual(self.registry.calls, [])

    def test_stepsFromAnotherSessionRefused(self) -> None:
        """
        Steps from a session other than the one that began the takeover are
        refused without disturbing the takeover in progress.
        """
        first = self.session()
        self.incumbent.begin(first, BEGIN)
        other = self.session()
        self.assertRaises(TakeoverRefused, self.incumbent.prepared, other, PreparedReport(2))
        self.assertRaises(TakeoverRefused, self.incumbent.received, other, ReceivedReport(2))
        self.assertRaises(TakeoverRefused, self.incumbent.capture, other, CaptureRequest())
        self.assertRaises(TakeoverRefused, self.incumbent.restored, other, RestoredReport(0))
        self.assertRaises(TakeoverRefused, self.incumbent.switch, other)
        self.assertRaises(TakeoverRefused, self.incumbent.commit, other)
        self.assertFalse(self.incumbent.abort("not yours", other))
        self.assertIs(self.incumbent.current.session, first)
        self.assertEqual(self.incumbent.current.state, BEGUN)

    def assertTimesOut(
        self, session: FakeSession, waitingFor: str, step: str, timeout: float = TIMEOUT
    ) -> None:
        self.reactor.advance(timeout - 0.001)
        self.assertIsNotNone(self.incumbent.current)
        self.assertEqual(session.hungUp, 0)
        self.reactor.advance(0.001)
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(session.hungUp, 1)
        self.assertEqual(
            self.incumbent.lastAttempt,
            {
                "outcome": "abandoned",
                "successor_pid": 4242,
                "at": self.reactor.seconds(),
                "step": step,
                "reason": f"the successor did not {waitingFor} within {timeout:g} s",
            },
        )
        self.assertEqual(self.accepting(), [True, True])
        # Once its farewell is sent, nothing of the takeover is left.
        flushChannels(self.reactor)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_handshakeTimeout(self) -> None:
        """
        A peer that sends C{begin} and then nothing holds the takeover no
        longer than the handshake timeout (10 s by default, shorter than
        the takeover timeout): it is hung up on, the takeover abandoned,
        and the next successor may begin.
        """
        session = self.session()
        _, _, _, reader = self.beginAndRead(session)
        self.assertEqual(self.incumbent.handshakeTimeout, 10.0)
        self.assertTimesOut(session, "acknowledge the ports", BEGUN, timeout=10.0)
        self.assertFarewell(reader)
        self.assertEqual(self.incumbent.begin(self.session(), BEGIN).ports, 2)

    def test_handshakeTimeoutAtMostTheTakeoverTimeout(self) -> None:
        """
        With a takeover timeout shorter than the handshake timeout, the
        handshake is bounded by the takeover timeout.
        """
        self.incumbent.takeoverTimeout = 4.0
        session = self.session()
        self.incumbent.begin(session, BEGIN)
        self.assertTimesOut(session, "acknowledge the ports", BEGUN, timeout=4.0)

    def test_timeoutWaitingForPrepared(self) -> None:
        """
        Once the handshake is over (C{received}), a successor has the
        takeover timeout to start its service and report C{prepared};
        after that it is hung up on and the takeover abandoned.
        """
        session = self.session()
        _, _, _, reader = self.beginAndRead(session)
        self.reactor.advance(9)
        self.incumbent.received(session, ReceivedReport(2))
        self.assertTimesOut(session, "prepare", RECEIVED)
        self.assertFarewell(reader)

    def test_timeoutWaitingForCapture(self) -> None:
        """
        A successor that does not ask for the connections within the
        timeout after C{prepared} is hung up on and the takeover abandoned.
        """
        session = self.session()
        self.incumbent.begin(session, BEGIN)
        self.incumbent.received(session, ReceivedReport(2))
        self.incumbent.prepared(session, PreparedReport(2))
        self.assertTimesOut(session, "ask for the connections", PREPARED)
        self.assertNotIn("resumeAccepting", self.registry.calls)

    def test_timeoutWaitingForRestored(self) -> None:
        """
        A successor that does not report C{restored} within the timeout
        after the capture is hung up on, and the connections are thawed.
        """
        protocol, client = self.connection()
        session = self.session()
        self.toCaptured(session)
        self.assertFrozen(protocol.transport)
        self.assertTimesOut(session, "restore the connections", CAPTURED)
        self.assertServing(protocol, client)

    def test_timeoutWaitingForSwitch(self) -> None:
        """
        A successor that does not ask to C{switch} within the timeout after
        C{restored} is hung up on, the incumbent accepts again (it stopped
        at the capture), and the connections are thawed.
        """
        protocol, client = self.connection()
        session = self.session()
        _, fds = self.toCaptured(session)
        self.incumbent.restored(session, RestoredReport(len(fds)))
        self.assertTimesOut(session, "switch", RESTORED)
        self.assertIn("resumeAccepting", self.registry.calls)
        self.assertServing(protocol, client)

    def test_timeoutWaitingForCommit(self) -> None:
        """
        A successor that does not C{commit} within the timeout after the
        switch is hung up on, and the incumbent accepts again and serves
        its connections.
        """
        protocol, client = self.connection()
        session = self.session()
        self.toSwitched(session)
        self.assertEqual(self.accepting(), [False, False])
        self.assertTimesOut(session, "commit", SWITCHED)
        self.assertIn("resumeAccepting", self.registry.calls)
        self.assertServing(protocol, client)

    def test_eachStepHasItsOwnTimeout(self) -> None:
        """
        The timeout applies to each step, not to the whole takeover.
        """
        session = self.session()
        reader = self.toPrepared(session)
        self.reactor.advance(TIMEOUT - 1)
        self.capture(session, reader)
        self.reactor.advance(TIMEOUT - 1)
        self.incumbent.restored(session, RestoredReport(0))
        self.reactor.advance(TIMEOUT - 1)
        self.incumbent.switch(session)
        self.reactor.advance(TIMEOUT - 1)
        self.incumbent.commit(session)
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "committed")

    def test_abortFromSuccessor(self) -> None:
        """
        C{abort} for the successor's session abandons the takeover with the
        given reason, resumes accepting if it had switched, and thaws the
        connections.
        """
        protocol, client = self.connection()
        session = self.session()
        self.toSwitched(session)
        self.assertTrue(self.incumbent.abort("it hurts", session))
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.incumbent.lastAttempt["reason"], "it hurts")
        self.assertEqual(session.hungUp, 0)
        flushChannels(self.reactor)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertServing(protocol, client)

    def test_abortWhenIdle(self) -> None:
        """
        C{abort} with no takeover in progress does nothing.
        """
        self.assertFalse(self.incumbent.abort("nothing"))
        self.assertIsNone(self.incumbent.lastAttempt)

    def test_abortAfterCommitDoesNothing(self) -> None:
        """
        Once committed, an abort cannot bring the ports (or the
        connections) back.
        """
        protocol, _ = self.connection()
        session = self.session()
        self.toSwitched(session)
        self.incumbent.commit(session)
        self.assertFalse(self.incumbent.abort("too late", session))
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "committed")
        self.assertNotIn("resumeAccepting", self.registry.calls)
        # Released once the successor hangs up.
        self.incumbent.detached(session)
        self.assertFalse(protocol.transport.connected)
        self.assertNotIn(protocol.transport, self.reactor.getReaders())

    def test_releasedLaterWithoutHangUp(self) -> None:
        """
        A successor that does not hang up after the commit still has the
        moved connections released here, L{RELEASE_WAIT} later.
        """
        protocol, _ = self.connection()
        session = self.session()
        self.toSwitched(session)
        self.incumbent.commit(session)
        self.reactor.advance(RELEASE_WAIT / 2)
        self.assertTrue(protocol.transport.connected)
        self.reactor.advance(RELEASE_WAIT / 2)
        self.assertFalse(protocol.transport.connected)
        self.assertEqual(self.incumbent.releasing, frozenset())

    def test_exitingAtTheHangUp(self) -> None:
        """
        A process that exits when the successor hangs up lets go of the
        moved connections at once, their handles left for the exit; the
        release that would have followed does nothing, and nothing is left
        scheduled.
        """
        protocol, _ = self.connection()
        handle = protocol.transport.socket
        session = self.session()
        self.toSwitched(session)
        self.incumbent.commit(session)
        self.incumbent.onSuccessorDetached = lambda: self.incumbent.finishRelease(close=False)
        self.incumbent.detached(session)
        self.assertFalse(protocol.transport.connected)
        self.assertNotEqual(handle.fileno(), -1)
        self.reactor.advance(0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        handle.close()

    def test_abortLogsWhy(self) -> None:
        """
        An abandoned takeover is logged with its step and reason.
        """
        session = self.session()
        self.toSwitched(session)
        with capturedLogs() as events:
            self.incumbent.abort("why not", session)
        [event] = [e for e in events if "abandoned" in e.get("log_format", "")]
        self.assertEqual((event["step"], event["reason"]), (SWITCHED, "why not"))
        self.assertEqual(event["resumed"], " (accepting again on 2)")

    def test_newBeginAfterAbort(self) -> None:
        """
        After an abandoned takeover, the next C{begin} (from another
        session) starts a complete new takeover, which moves the
        connections the first one had thawed.
        """
        protocol, _ = self.connection()
        first = self.session()
        self.toSwitched(first)
        self.incumbent.abort("first one failed", first)
        second = self.session()
        answer, _, fds, reader = self.beginAndRead(second)
        self.assertEqual(answer.ports, 2)
        self.assertEqual(len(fds), 2)
        self.incumbent.received(second, ReceivedReport(2))
        self.incumbent.prepared(second, PreparedReport(2))
        captured, _, connectionFds = self.capture(second, reader)
        self.assertEqual((captured.connections, len(connectionFds)), (1, 1))
        self.incumbent.restored(second, RestoredReport(1))
        self.incumbent.switch(second)
        self.assertEqual(self.incumbent.commit(second).generation, 5)
        # Released once the successor hangs up.
        self.incumbent.detached(second)
        self.assertFalse(protocol.transport.connected)
        # The first session is no longer part of anything.
        self.assertFalse(self.incumbent.abort("late", first))

    def test_newBeginAfterTimeout(self) -> None:
        """
        After a takeover timed out, a new C{begin} works.
        """
        self.incumbent.begin(self.session(), BEGIN)
        self.reactor.advance(TIMEOUT)
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.begin(self.session(), BEGIN).ports, 2)

    def test_commitClosesOnlyTheIncumbentsCopies(self) -> None:
        """
        After the commit the incumbent's copies of the ports are closed, but
        the sockets live on in the successor's copies (nothing was shut
        down); once those close too, the sockets are gone.
        """
        session = self.session()
        _, _, fds, reader = self.beginAndRead(session)
        self.incumbent.received(session, ReceivedReport(2))
        self.incumbent.prepared(session, PreparedReport(2))
        self.capture(session, reader)
        self.incumbent.restored(session, RestoredReport(0))
        self.incumbent.switch(session)
        self.incumbent.commit(session)
        self.assertEqual([peerState(p) for p in self.probes], ["open", "open"])
        for fd in fds:
            self.closeFd(fd)
        self.assertEqual([peerState(p) for p in self.probes], ["closed", "closed"])

    def test_commitClosesTheChannel(self) -> None:
        """
        At the commit the incumbent closes its end of the frame channel.
        """
        session = self.session()
        reader = self.toSwitched(session)
        self.assertEqual(peerState(reader.sock), "open")
        self.incumbent.commit(session)
        self.assertEqual(peerState(reader.sock), "closed")

    def test_commitLogsTimings(self) -> None:
        """
        The commit is logged with the number of ports and connections
        moved, the new generation, and how long accepting was paused.
        """
        self.connection()
        session = self.session()
        self.toSwitched(session)
        self.reactor.advance(0.002)
        with capturedLogs() as events:
            self.incumbent.commit(session)
        [event] = [e for e in events if "takeover committed" in e.get("log_format", "")]
        self.assertEqual(
            (event["moved"], event["connections"], event["generation"]), (2, 1, 5)
        )
        self.assertAlmostEqual(event["paused"], 2.0, places=6)

    def test_secondBeginRefused(self) -> None:
        """
        A C{begin} while a takeover is in progress is refused with a message
        naming the successor in progress and its step; the takeover in
        progress goes on undisturbed.
        """
        first = self.session()
        self.incumbent.begin(first, BEGIN)
        second = self.session()
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.begin, second, {"pid": 7, "python": "3.12"}
        )
        self.assertIn("a takeover is already in progress", str(e))
        self.assertIn("successor pid 4242, step begun", str(e))
        self.assertEqual(second.sentFds, [])
        self.assertIs(self.incumbent.current.session, first)
        self.incumbent.received(first, ReceivedReport(2))
        self.assertIsNone(self.incumbent.prepared(first, PreparedReport(2)))

    def test_beginAfterHandedOffRefused(self) -> None:
        """
        Once it has handed off, a process refuses any further C{begin}: its
        ports belong to its successor.
        """
        session = self.session()
        self.toSwitched(session)
        self.incumbent.commit(session)
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.begin, self.session(), BEGIN
        )
        self.assertIn("has already handed its service to pid 4242", str(e))

    def test_beginWithUnsupportedPortRefused(self) -> None:
        """
        A service with a port that cannot be handed over (a UDP port
        connected to one peer) cannot be taken over: C{begin} is refused
        with the registry's explanation, nothing is sent, and no takeover is
        in progress.
        """
        self.registry.addPort("udp:53:#0", "udp").peer = ("127.0.0.1", 5353)
        session = self.session()
        e = self.assertRaises(TakeoverRefused, self.incumbent.begin, session, BEGIN)
        self.assertIn("udp:53:#0", str(e))
        self.assertIn("a UDP port connected to one peer", str(e))
        self.assertEqual(session.sentFds, [])
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class SettlingTests(IncumbentTestMixin, SynchronousTestCase):
    """
    The capture's bounded wait for busy connections
    (L{migrator.state._settling.Settling}): C{capture} then answers with a
    L{Deferred}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.busy, self.busyClient = self.connection(working=True)
        self.idle, self.idleClient = self.connection()
        self.session_ = self.session()
        self.reader = self.toPrepared(self.session_)

    def startCapture(self) -> Deferred[dict[str, Any]]:
        with capturedLogs() as events:
            d = self.incumbent.capture(self.session_, ask(self.adapters))
        self.assertIsInstance(d, Deferred)
        [event] = [e for e in events if "waiting up to" in e.get("log_format", "")]
        timeout = min(self.incumbent.settleTimeout, TIMEOUT / 3)
        self.assertEqual((event["timeout"], event["busy"]), (timeout, 1))
        return d

    def test_waitsForBusyConnections(self) -> None:
        """
        While a connection is busy the capture waits, the idle connections
        not reading (so they start nothing new); once it is done, both are
        captured in the same turn, and both had been reading.
        """
        d = self.startCapture()
        self.assertNoResult(d)
        self.assertNotIn(self.idle.transport, self.reactor.getReaders())
        self.assertIn(self.busy.transport, self.reactor.getReaders())
        self.reactor.pump([0.005] * 10)
        self.assertNoResult(d)
        self.busy.working = False
        self.reactor.advance(0.005)
        answer = self.successResultOf(d)
        self.assertEqual((answer.connections, answer.moved), (2, {ECHO: 2}))
        self.assertEqual(self.incumbent.current.state, CAPTURED)
        self.assertFrozen(self.busy.transport)
        self.assertFrozen(self.idle.transport)
        _, fds = self.reader.next()
        self.ownFds(fds)
        self.assertEqual(len(fds), 2)
        # Both were captured as reading: an abort has them read again.
        self.incumbent.abort("test", self.session_)
        self.assertServing(self.busy, self.busyClient)
        self.assertServing(self.idle, self.idleClient)

    def test_waitIsBounded(self) -> None:
        """
        The wait lasts at most C{settleTimeout} (at most a third of the
        takeover timeout); a connection still busy then stays, and keeps
        being served.
        """
        self.incumbent.settleTimeout = 0.05
        d = self.startCapture()
        self.reactor.pump([0.01] * 4)
        self.assertNoResult(d)
        self.reactor.pump([0.01] * 2)
        answer = self.successResultOf(d)
        self.assertEqual(answer.connections, 1)
        self.assertEqual(answer.staying, {f"{ECHO}: working": 1})
        self.assertFrozen(self.idle.transport)
        self.assertServing(self.busy, self.busyClient)
        _, fds = self.reader.next()
        self.ownFds(fds)

    def test_waitIsAThirdOfTheTakeoverTimeout(self) -> None:
        """
        The wait never takes more than a third of the takeover timeout, so
        the successor's call does not time out.
        """
        self.incumbent.settleTimeout = TIMEOUT
        d = self.incumbent.capture(self.session_, ask(self.adapters))
        self.reactor.pump([1.0] * 9)
        self.assertNoResult(d)
        self.reactor.pump([1.0] * 2)
        self.assertEqual(self.successResultOf(d).connections, 1)
        self.ownFds(self.reader.next()[1])

    def test_abortWhileWaiting(self) -> None:
        """
        An abort during the wait abandons it at once: the capture is refused,
        nothing was frozen, the connections paused for the wait read again,
        and no call is left scheduled.
        """
        d = self.startCapture()
        self.reactor.advance(0.005)
        self.assertTrue(self.incumbent.abort("the operator changed their mind", self.session_))
        e = self.failureResultOf(d, TakeoverRefused).value
        self.assertEqual(str(e), "capture: the takeover was abandoned while waiting")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.lastAttempt["step"], CAPTURING)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"], "the operator changed their mind"
        )
        self.assertFarewell(self.reader)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertServing(self.busy, self.busyClient)
        self.assertServing(self.idle, self.idleClient)

    def test_noWait(self) -> None:
        """
        With a C{settleTimeout} of 0 the capture does not wait: the busy
        connection stays, and the idle one is captured as it was, reading
        (an abort has it read again).
        """
        self.incumbent.settleTimeout = 0.0
        answer = self.successResultOf(
            self.incumbent.capture(self.session_, ask(self.adapters))
        )
        self.assertEqual(answer.staying, {f"{ECHO}: working": 1})
        self.assertEqual(answer.connections, 1)
        self.ownFds(self.reader.next()[1])
        self.assertFrozen(self.idle.transport)
        self.incumbent.abort("test", self.session_)
        self.assertServing(self.idle, self.idleClient)
        self.assertServing(self.busy, self.busyClient)

    def test_stepDuringWaitRefused(self) -> None:
        """
        Another step while the capture waits is a protocol error: the
        takeover is abandoned, and so is the wait.
        """
        d = self.startCapture()
        self.assertRaises(TakeoverRefused, self.incumbent.switch, self.session_)
        self.failureResultOf(d, TakeoverRefused)
        flushChannels(self.reactor)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertServing(self.idle, self.idleClient)


class ControlSessionTests(IncumbentTestMixin, SynchronousTestCase):
    """
    Tests for L{ControlSession}: remote methods and what a disconnection
    means at each step.
    """

    def setUp(self) -> None:
        super().setUp()
        self.root = ControlRoot(lambda: {"pid": 100}, self.incumbent)

    def connect(self) -> tuple[ControlSession, _StubBroker]:
        broker = _StubBroker()
        session = self.root.rootObject(broker)
        self.assertEqual(broker.onDisconnect, [session.disconnected])

        def closeSent() -> None:
            for fd in broker.transport.sent:
                os.close(fd)

        self.addCleanup(closeSent)
        return session, broker

    def switched(self, session: ControlSession) -> None:
        session.remote_begin(dict(SUCCESSOR))
        session.remote_received({"ports": 2})
        session.remote_prepared({"received": 2})
        captured = session.remote_capture({"types": self.adapters.typeNames()})
        session.remote_restored({"connections": captured["connections"]})
        session.remote_switch()

    def test_beginSendsChannelOverTheConnection(self) -> None:
        """
        C{remote_begin} sends the channel's descriptor over the session's
        own connection.
        """
        session, broker = self.connect()
        self.assertEqual(session.remote_begin(dict(SUCCESSOR))["ports"], 2)
        self.assertEqual(len(broker.transport.sent), 1)

    def test_status(self) -> None:
        """
        C{remote_status} answers the root's status record.
        """
        session, _ = self.connect()
        self.assertEqual(session.remote_status(), {"pid": 100})

    def test_notServingYet(self) -> None:
        """
        Before the process serves (no incumbent yet), takeover steps are
        refused and a disconnection is harmless.
        """
        root = ControlRoot(lambda: {})
        session = root.rootObject(_StubBroker())
        e = self.assertRaises(TakeoverRefused, session.remote_begin, dict(SUCCESSOR))
        self.assertEqual(str(e), "this process is not serving yet")
        self.assertRaises(TakeoverRefused, session.remote_capture, {})
        self.assertRaises(TakeoverRefused, session.remote_restored, {})
        session.disconnected()

    def test_remoteSteps(self) -> None:
        """
        C{remote_capture} and C{remote_restored} answer as the incumbent's
        C{capture} and C{restored} do.
        """
        protocol, _ = self.connection()
        session, _ = self.connect()
        session.remote_begin(dict(SUCCESSOR))
        session.remote_received({"ports": 2})
        session.remote_prepared({"received": 2})
        captured = session.remote_capture({"types": self.adapters.typeNames()})
        self.assertEqual((captured["connections"], captured["moved"]), (1, {ECHO: 1}))
        self.assertFrozen(protocol.transport)
        self.assertIsNone(session.remote_restored({"connections": 1}))
        self.assertEqual(self.incumbent.current.state, RESTORED)

    def test_malformedBeginRefused(self) -> None:
        """
        A C{begin} that is not a begin request (not a dictionary, no pid, a
        pid that is not an integer) is refused with a one-line reason, and
        no takeover starts.
        """
        session, broker = self.connect()
        for request, reason in [
            ([1], "begin: expected a dictionary, got list"),
            ({"python": "3.12"}, "begin: pid is missing"),
            ({"pid": "4242"}, "begin: pid must be an integer, not str"),
        ]:
            e = self.assertRaises(TakeoverRefused, session.remote_begin, request)
            self.assertEqual(str(e), f"malformed message: {reason}")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(broker.transport.sent, [])

    def test_malformedStepAborts(self) -> None:
        """
        A malformed report at any later step is refused with a one-line
        reason (never a C{KeyError} or C{TypeError} sent to the peer), and
        the sender's takeover is abandoned: frozen connections thaw.
        """
        protocol, client = self.connection()
        steps = [
            ("received", lambda s: s.remote_received("yes"), "received: expected a dictionary, got str"),
            ("prepared", lambda s: s.remote_prepared({}), "prepared: received is missing"),
            (
                "capture",
                lambda s: s.remote_capture({"types": "everything"}),
                "capture: types must be a list of strings, not str",
            ),
            (
                "restored",
                lambda s: s.remote_restored({"connections": True}),
                "restored: connections must be an integer, not bool",
            ),
        ]
        good = [
            lambda s: s.remote_received({"ports": 2}),
            lambda s: s.remote_prepared({"received": 2}),
            lambda s: s.remote_capture({"types": self.adapters.typeNames()}),
        ]
        for i, (step, call, reason) in enumerate(steps):
            session, _ = self.connect()
            session.remote_begin(dict(SUCCESSOR))
            for earlier in good[:i]:
                earlier(session)
            e = self.assertRaises(TakeoverRefused, call, session)
            self.assertEqual(str(e), f"malformed message: {reason}")
            self.assertIsNone(self.incumbent.current)
            self.assertEqual(
                self.incumbent.lastAttempt["reason"], f"malformed message at {step}: {reason}"
            )
            self.assertServing(protocol, client)

    def test_disconnectAtEachStepAborts(self) -> None:
        """
        A successor whose connection drops before the commit abandons its
        takeover at whatever step it was; after the switch, accepting
        resumes; after the capture, the connections are thawed.
        """
        protocol, client = self.connection()
        types = self.adapters.typeNames()
        steps = [
            ("begun", lambda s: s.remote_begin(dict(SUCCESSOR))),
            ("received", lambda s: s.remote_received({"ports": 2})),
            ("prepared", lambda s: s.remote_prepared({"received": 2})),
            ("captured", lambda s: s.remote_capture({"types": types})),
            ("restored", lambda s: s.remote_restored({"connections": 1})),
            ("switched", lambda s: s.remote_switch()),
        ]
        for n in range(1, len(steps) + 1):
            session, _ = self.connect()
            for _, step in steps[:n]:
                step(session)
            session.disconnected()
            self.assertIsNone(self.incumbent.current)
            self.assertEqual(self.incumbent.lastAttempt["step"], steps[n - 1][0])
            self.assertEqual(
                self.incumbent.lastAttempt["reason"], "the successor disconnected"
            )
            self.assertEqual(self.accepting(), [True, True])
            self.assertServing(protocol, client)

    def test_disconnectWhileCaptureWaits(self) -> None:
        """
        A successor that hangs up while the capture waits for a busy
        connection abandons the wait with the takeover.
        """
        busy, client = self.connection(working=True)
        session, _ = self.connect()
        session.remote_begin(dict(SUCCESSOR))
        session.remote_received({"ports": 2})
        session.remote_prepared({"received": 2})
        d = session.remote_capture({"types": self.adapters.typeNames()})
        self.assertNoResult(d)
        session.disconnected()
        self.failureResultOf(d, TakeoverRefused)
        self.assertIsNone(self.incumbent.current)
        flushChannels(self.reactor)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertServing(busy, client)

    def test_disconnectAfterCommit(self) -> None:
        """
        A successor that hangs up after the commit does not abort anything;
        it is no longer attached.
        """
        session, _ = self.connect()
        self.switched(session)
        session.remote_commit()
        self.assertTrue(self.incumbent.successorAttached)
        session.disconnected()
        self.assertFalse(self.incumbent.successorAttached)
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "committed")

    def test_otherDisconnectAfterCommit(self) -> None:
        """
        After the commit, another peer (e.g. a C{status} query) hanging up
        does not count as the successor detaching.
        """
        session, _ = self.connect()
        self.switched(session)
        session.remote_commit()
        other, _ = self.connect()
        other.remote_status()
        other.disconnected()
        self.assertTrue(self.incumbent.successorAttached)

    def test_otherDisconnectDuringTakeover(self) -> None:
        """
        Another peer hanging up during a takeover does not abandon it.
        """
        session, _ = self.connect()
        self.switched(session)
        other, _ = self.connect()
        other.disconnected()
        self.assertEqual(self.incumbent.current.state, SWITCHED)

    def test_remoteAbort(self) -> None:
        """
        C{remote_abort} abandons the caller's takeover with the successor's
        reason, cut to 500 characters.
        """
        session, _ = self.connect()
        self.switched(session)
        session.remote_abort("x" * 1000)
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"], "the successor gave up: " + "x" * 500
        )
        self.assertEqual(self.accepting(), [True, True])

    def test_timeoutHangsUp(self) -> None:
        """
        When a step times out, the incumbent closes the successor's
        connection.
        """
        session, broker = self.connect()
        session.remote_begin(dict(SUCCESSOR))
        self.reactor.advance(TIMEOUT)
        self.assertEqual(broker.transport.lost, 1)


class IncumbentWithListenerRegistryTests(SynchronousTestCase):
    """
    L{Incumbent} with a real L{ListenerRegistry}, a real listening UNIX
    port (in a temporary directory, on a L{MemoryReactorClock}) and a real
    connection it accepted.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        directory = tempfile.mkdtemp(prefix="migrator-test-")
        self.addCleanup(shutil.rmtree, directory)
        self.path = os.path.join(directory, "web.sock")

        def listenUNIX(
            address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
        ) -> Any:
            port = unix.Port(address, factory, backlog, mode, self.reactor, wantPID)
            port.startListening()
            self.addCleanup(releasePort, port)
            return port

        self.reactor.listenUNIX = listenUNIX  # type: ignore[method-assign]
        self.registry = ListenerRegistry(self.reactor)
        self.registry.install()
        self.addCleanup(self.registry.uninstall)
        self.factory = Factory.forProtocol(Echo)
        self.port = self.reactor.listenUNIX(self.path, self.factory)
        self.adapters = AdapterRegistry()
        self.adapters.register(EchoAdapter(Echo))
        self.handedOff: list[dict[str, Any]] = []
        self.incumbent = Incumbent(
            self.reactor,
            self.registry,
            self.adapters,
            identity=lambda: dict(IDENTITY),
            onHandedOff=self.handedOff.append,
            takeoverTimeout=TIMEOUT,
            clock=self.reactor.seconds,
        )
        self.addCleanup(self.incumbent.abort, "the test is over")
        self.session = FakeSession()
        self.addCleanup(self.session.close)
        self.successorFds: list[int] = []
        self.addCleanup(self.closeSuccessorFds)

    def closeSuccessorFds(self) -> None:
        for fd in self.successorFds:
            os.close(fd)

    def test_verifyRegistry(self) -> None:
        """
        L{ListenerRegistry} provides L{IPortRegistry}.
        """
        verifyObject(IPortRegistry, self.registry)

    def accept(self) -> tuple[Echo, socket.socket]:
        """
        Connect a client to the port and accept it.
        """
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(self.path)
        self.port.doRead()
        [transport] = list(self.registry.openConnections())
        self.addCleanup(releaseConnection, transport)
        return transport.protocol, client

    def begin(self) -> tuple[list[int], ChannelReader]:
        self.incumbent.begin(self.session, BEGIN)
        [channelFd] = self.session.takeSent()
        reader = ChannelReader(self.reactor, channelFd)
        self.addCleanup(reader.close)
        payload, fds = reader.next()
        self.successorFds.extend(fds)
        self.assertEqual(
            [(r["key"], r["kind"], r["address"]) for r in json.loads(payload)["ports"]],
            [(f"unix:{self.path}#0", "unix", self.path)],
        )
        return fds, reader

    def capture(self, reader: ChannelReader) -> list[int]:
        self.incumbent.received(self.session, ReceivedReport(1))
        self.incumbent.prepared(self.session, PreparedReport(1))
        answer = self.incumbent.capture(self.session, ask(self.adapters))
        _, fds = reader.next()
        self.successorFds.extend(fds)
        self.assertEqual(answer.connections, len(fds))
        return fds

    def test_handOff(self) -> None:
        """
        The port stops accepting at the switch and is released at the
        commit without being shut down or unlinked, and so is the accepted
        connection: a client connecting to the path afterwards is accepted
        by the successor's copy, and the connected client is served by the
        successor's copy of its connection.
        """
        protocol, connected = self.accept()
        [fd], reader = self.begin()
        successorCopy = socket.socket(fileno=fd)
        self.successorFds.remove(fd)
        self.addCleanup(successorCopy.close)
        self.assertIn(self.port, self.reactor.getReaders())
        [connectionFd] = self.capture(reader)
        self.assertNotIn(protocol.transport, self.reactor.getReaders())
        self.incumbent.restored(self.session, RestoredReport(1))
        self.incumbent.switch(self.session)
        self.assertNotIn(self.port, self.reactor.getReaders())
        result = self.incumbent.commit(self.session)
        self.assertEqual(result.released, (f"unix:{self.path}#0",))
        self.assertEqual(result.connections, 1)
        self.assertFalse(self.port.connected)
        self.assertEqual(self.registry.listening(), [])
        self.assertTrue(os.path.exists(self.path))
        # Released once the successor hangs up.
        self.incumbent.detached(self.session)
        self.assertFalse(protocol.transport.connected)
        self.assertEqual(list(self.registry.openConnections()), [])

        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(self.path)
        successorCopy.setblocking(False)
        accepted, _ = successorCopy.accept()
        accepted.close()

        self.assertEqual(peerState(connected), "open")
        os.write(connectionFd, b"still here")
        self.assertEqual(connected.recv(100), b"still here")

    def test_abortAfterSwitchResumes(self) -> None:
        """
        An abort after the switch makes the port accept again, and the
        accepted connection read again.
        """
        protocol, connected = self.accept()
        _, reader = self.begin()
        self.capture(reader)
        self.incumbent.restored(self.session, RestoredReport(1))
        self.incumbent.switch(self.session)
        self.incumbent.abort("changed my mind", self.session)
        self.assertIn(self.port, self.reactor.getReaders())
        self.assertTrue(self.port.connected)
        self.assertEqual(exchange(protocol.transport, connected, b"hi\r\n"), b"hi\r\n")

    def test_connectionOfUnclaimedPortStays(self) -> None:
        """
        A connection accepted on a port the successor does not declare
        cannot move: it stays, and is served here.
        """
        protocol, connected = self.accept()
        _, reader = self.begin()
        self.incumbent.received(self.session, ReceivedReport(1))
        self.incumbent.prepared(
            self.session, PreparedReport(1, unclaimed=(f"unix:{self.path}#0",), closeUndeclared=True)
        )
        answer = self.incumbent.capture(self.session, ask(self.adapters))
        self.assertEqual(answer.connections, 0)
        [reason] = answer.staying
        self.assertTrue(reason.startswith(f"{ECHO}: "), reason)
        self.assertEqual(exchange(protocol.transport, connected, b"hi\r\n"), b"hi\r\n")


class ControlBrokerTests(IncumbentTestMixin, SynchronousTestCase):
    """
    L{ControlRoot} and L{ControlSession} behind a real PB broker pair
    (L{ControlServerFactory}, L{ControlClientFactory}) connected in memory
    by L{connectControl}, which also passes descriptors.
    """

    def setUp(self) -> None:
        super().setUp()
        self.status = {"pid": 100, "generation": 4, "ports": [{"key": "tcp:8080:#0"}]}
        self.root = ControlRoot(lambda: dict(self.status), self.incumbent)
        self.serverPolicy = FakePeerPolicy()
        self.clientFactory = ControlClientFactory(FakePeerPolicy())
        self.client, self.server, self.pump = connectControl(
            ControlServerFactory(self.root, self.serverPolicy),
            self.clientFactory,
            self.reactor,
        )
        self.addCleanup(self.disconnect)
        d = self.clientFactory.getRootObject()
        self.pump.flush()
        self.remote = self.successResultOf(d)

    def disconnect(self) -> None:
        self.client.transport.loseConnection()
        self.pump.flush()

    def call(self, method: str, *args: Any) -> Any:
        d = self.remote.callRemote(method, *args)
        self.pump.flush()
        return d

    def awaitCall(self, method: str, *args: Any) -> Any:
        """
        Call C{method} as L{migrator.takeover._successor.Successor} does (awaiting
        it in a coroutine).

        @return: what the coroutine got: the answer or the exception.
        """

        async def attempt() -> Any:
            try:
                return await self.remote.callRemote(method, *args)
            except Exception as e:
                return e

        d = Deferred.fromCoroutine(attempt())
        self.pump.flush()
        return self.successResultOf(d)

    def beginOverPB(self) -> ChannelReader:
        """
        C{begin} over PB; read the ports message.
        """
        answer = self.successResultOf(self.call("begin", dict(SUCCESSOR)))
        # The plan (what moves, what stays) is pinned in tests/test_unmovable.py.
        self.assertLessEqual(set(answer.pop("plan")["classes"]), {ECHO})
        self.assertEqual(answer, {**IDENTITY, "ports": 2, "connections": 1})
        [channelFd] = self.client.receivedFds
        self.client.receivedFds.clear()
        reader = ChannelReader(self.reactor, channelFd)
        self.addCleanup(reader.close)
        payload, fds = reader.next()
        self.ownFds(fds)
        self.assertEqual(len(json.loads(payload)["ports"]), 2)
        return reader

    def test_peerChecked(self) -> None:
        """
        The server's peer policy was consulted for the connection.
        """
        self.assertEqual(self.serverPolicy.checked, [self.server.transport])

    def test_status(self) -> None:
        """
        C{status} answers the root's status record over PB.
        """
        self.assertEqual(self.successResultOf(self.call("status")), self.status)

    def test_refusedBeginIsARemoteError(self) -> None:
        """
        A refused C{begin} reaches an awaiting caller as a
        L{pb.RemoteError} whose value is the refusal's message and whose
        type names L{TakeoverRefused} (the remote traceback is withheld).
        """
        self.incumbent.begin(self.session(), BEGIN)
        e = self.awaitCall("begin", {"pid": 9})
        self.assertIsInstance(e, pb.RemoteError)
        self.assertIn("a takeover is already in progress", e.args[0])
        self.assertIn("successor pid 4242", e.args[0])
        self.assertEqual(e.remoteType, b"migrator.takeover._incumbent.TakeoverRefused")
        self.assertEqual(e.remoteTraceback, "Traceback unavailable\n")

    def test_stepWithoutTakeoverRefused(self) -> None:
        """
        A takeover step from a peer with no takeover in progress is refused
        over PB with the reason.
        """
        e = self.awaitCall("switch")
        self.assertEqual(e.args, ("switch: no takeover of yours is in progress",))
        e = self.awaitCall("capture", {})
        self.assertEqual(e.args, ("capture: no takeover of yours is in progress",))

    def test_happyPathOverPB(self) -> None:
        """
        The whole takeover over PB: C{begin} answers and sends the channel's
        descriptor to the client broker, C{prepared} answers, C{capture}
        answers its counts and sends the connections on the channel,
        C{restored}, C{switch} and C{commit} answer their records, and the
        client hanging up afterwards detaches the successor.
        """
        protocol, _ = self.connection()
        reader = self.beginOverPB()
        self.successResultOf(self.call("received", {"ports": 2}))
        self.assertIsNone(self.successResultOf(self.call("prepared", {"received": 2})))
        captured = self.successResultOf(
            self.call("capture", {"types": self.adapters.typeNames()})
        )
        self.assertEqual((captured["connections"], captured["moved"]), (1, {ECHO: 1}))
        _, fds = reader.next()
        self.ownFds(fds)
        self.assertEqual(len(fds), 1)
        self.assertIsNone(self.successResultOf(self.call("restored", {"connections": 1})))
        self.assertEqual(self.successResultOf(self.call("switch")), {"paused": 2})
        result = self.successResultOf(self.call("commit"))
        self.assertEqual(result["generation"], 5)
        self.assertEqual(result["released"], KEYS)
        self.assertEqual(result["connections"], 1)
        self.assertEqual(self.handedOff, [{"pid": 4242, "python": "3.13.0", "generation": 5}])
        self.assertTrue(self.incumbent.successorAttached)
        # Released once the successor hangs up.
        self.assertTrue(protocol.transport.connected)
        self.disconnect()
        self.assertFalse(self.incumbent.successorAttached)
        self.assertFalse(protocol.transport.connected)

    def test_captureWaitOverPB(self) -> None:
        """
        When the capture waits for a busy connection, its answer reaches
        the successor once the wait is over.
        """
        busy, _ = self.connection(working=True)
        reader = self.beginOverPB()
        self.successResultOf(self.call("received", {"ports": 2}))
        self.successResultOf(self.call("prepared", {"received": 2}))
        d = self.call("capture", {"types": self.adapters.typeNames()})
        self.assertNoResult(d)
        busy.working = False
        self.reactor.advance(0.005)
        self.pump.flush()
        self.assertEqual(self.successResultOf(d)["connections"], 1)
        self.ownFds(reader.next()[1])

    def test_refusedCaptureWaitOverPB(self) -> None:
        """
        A capture abandoned while it waits reaches the successor as a
        refusal with the reason.
        """
        self.connection(working=True)
        self.beginOverPB()
        self.successResultOf(self.call("received", {"ports": 2}))
        self.successResultOf(self.call("prepared", {"received": 2}))

        async def capture() -> Any:
            try:
                return await self.remote.callRemote(
                    "capture", {"types": self.adapters.typeNames()}
                )
            except Exception as e:
                return e

        d = Deferred.fromCoroutine(capture())
        self.pump.flush()
        self.assertNoResult(d)
        self.incumbent.abort("stopping")
        self.pump.flush()
        e = self.successResultOf(d)
        self.assertIsInstance(e, pb.RemoteError)
        self.assertEqual(e.args[0], "capture: the takeover was abandoned while waiting")

    def test_disconnectAborts(self) -> None:
        """
        When the PB peer that began a takeover hangs up before the commit,
        the takeover is abandoned, accepting resumes and the connections
        are thawed.
        """
        protocol, client = self.connection()
        reader = self.beginOverPB()
        self.successResultOf(self.call("received", {"ports": 2}))
        self.successResultOf(self.call("prepared", {"received": 2}))
        self.successResultOf(self.call("capture", {"types": self.adapters.typeNames()}))
        self.ownFds(reader.next()[1])
        self.successResultOf(self.call("restored", {"connections": 1}))
        self.successResultOf(self.call("switch"))
        self.assertEqual(self.accepting(), [False, False])
        self.assertFrozen(protocol.transport)
        self.disconnect()
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.lastAttempt["reason"], "the successor disconnected")
        self.assertEqual(self.accepting(), [True, True])
        self.assertServing(protocol, client)

    def test_timeoutHangsUpOverPB(self) -> None:
        """
        A step that times out makes the incumbent hang up the PB connection.
        """
        self.successResultOf(self.call("begin", dict(SUCCESSOR)))
        self.reactor.advance(TIMEOUT)
        self.pump.flush()
        self.assertTrue(self.client.disconnected)
        self.assertIsNone(self.incumbent.current)

    def test_abortOverPB(self) -> None:
        """
        C{abort} over PB abandons the caller's takeover, and only the
        caller's.
        """
        first = self.session()
        self.incumbent.begin(first, BEGIN)
        self.assertIsNone(self.successResultOf(self.call("abort", "nope")))
        self.assertIs(self.incumbent.current.session, first)
        self.incumbent.abort("done", first)
        self.successResultOf(self.call("begin", dict(SUCCESSOR)))
        self.successResultOf(self.call("abort", "I give up"))
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(
            self.incumbent.lastAttempt["reason"], "the successor gave up: I give up"
        )

    def test_instancesAreNotUnjellied(self) -> None:
        """
        Only basic types cross the control connection: an instance sent to
        C{begin} never reaches the takeover machinery as an object.
        """
        failure = self.failureResultOf(self.call("begin", _Copyable()))
        self.assertEqual(failure.type, b"twisted.spread.jelly.InsecureJelly")
        self.assertIsNone(self.incumbent.current)
        # PB logs what it refused to unjelly.
        self.assertEqual(len(self.flushLoggedErrors(InsecureJelly)), 1)


class _Copyable(pb.Copyable):
    pass


class FakeDoublesTests(SynchronousTestCase):
    """
    The test doubles used here provide the interfaces they stand in for,
    and behave as the real ones do where the takeover relies on it.
    """

    def test_fakeRegistry(self) -> None:
        """
        L{FakeRegistry} provides L{IPortRegistry}.
        """
        verifyClass(IPortRegistry, FakeRegistry)
        verifyObject(IPortRegistry, FakeRegistry())

    def test_fakePeerPolicy(self) -> None:
        """
        L{FakePeerPolicy} provides L{IPeerPolicy} and gives its verdict.
        """
        verifyObject(IPeerPolicy, FakePeerPolicy())
        self.assertEqual(FakePeerPolicy(False, "them").check(None), (False, "them"))

    def test_fakeSessionDuplicates(self) -> None:
        """
        L{FakeSession} keeps its own duplicate of each descriptor sent, as
        the peer of a real connection would.
        """
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        session = FakeSession()
        session.sendFileDescriptor(a.fileno())
        a.close()
        [fd] = session.takeSent()
        os.write(fd, b"y")
        self.assertEqual(b.recv(1), b"y")
        os.close(fd)
        self.assertEqual(peerState(b), "closed")

    def test_fakeRegistryAdoptsAndReleases(self) -> None:
        """
        L{FakeRegistry.declare} adopts an offered port (its own duplicate,
        not accepting while holding), C{closeUnclaimed} closes the rest, and
        C{releaseAll} closes the adopted copy.
        """
        pairs = [socket.socketpair() for _ in range(2)]
        for _, probe in pairs:
            self.addCleanup(probe.close)
        registry = FakeRegistry(holding=True)
        self.addCleanup(registry.close)
        registry.offer(
            [{"key": "a", "kind": "tcp"}, {"key": "b", "kind": "tcp"}],
            [s.detach() for s, _ in pairs],
        )
        port = registry.declare("a")
        self.assertEqual((port.adopted, port.accepting), (True, False))
        self.assertEqual(registry.closeUnclaimed(), ["b"])
        self.assertEqual(peerState(pairs[1][1]), "closed")
        self.assertEqual(peerState(pairs[0][1]), "open")
        self.assertEqual(registry.adoptedCount(), 1)
        self.assertEqual(registry.resumeAccepting(), 1)
        self.assertTrue(port.accepting)
        self.assertEqual(registry.releaseAll(), ["a"])
        self.assertEqual(peerState(pairs[0][1]), "closed")
        self.assertEqual(registry.listening(), [])

    def test_fakeRegistryOfferMismatch(self) -> None:
        """
        L{FakeRegistry.offer} with more descriptors than records closes them
        all and raises L{ValueError}, as the real registry does.
        """
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        registry = FakeRegistry()
        self.assertRaises(ValueError, registry.offer, [], [a.detach()])
        self.assertEqual(peerState(b), "closed")

    def test_fakeRegistryConnections(self) -> None:
        """
        L{FakeRegistry} looks up its ports by key and by port object, as
        the capture and the restore of connections do, and counts the open
        connections it was given.
        """
        registry = FakeRegistry()
        port = registry.addPort("tcp:1:#0")
        self.assertIs(port.port, port)
        self.assertEqual(registry.keyOf(port), "tcp:1:#0")
        self.assertIsNone(registry.keyOf(object()))
        self.assertIs(registry.portForKey("tcp:1:#0"), port)
        self.assertIsNone(registry.portForKey("tcp:2:#0"))
        closed = FakeConnection(connected=False)
        registry.connections.append(closed)
        transport = FakeConnection()
        registry.trackConnection(transport)
        self.assertEqual(registry.openConnections(), [transport])
        self.assertEqual(registry.connectionCount(), 1)
        registry.releaseAll()
        self.assertIsNone(registry.portForKey("tcp:1:#0"))

    def test_fakeRegistryCaptureAndRestore(self) -> None:
        """
        The capture of connections works on a L{FakeRegistry} (its
        L{FakeConnection}s stay: no adapter covers them), and its state
        restores on another one that declares the same ports, the ports'
        factories matched by key.
        """
        reactor = MemoryReactorClock()
        incumbent = FakeRegistry()
        incumbent.addPort("tcp:1:#0")
        incumbent.connections.append(FakeConnection())
        captured = captureConnections(
            reactor, incumbent, AdapterRegistry(), frozenset({"tcp:1:#0"}), frozenset()
        )
        self.assertEqual((captured.count, captured.fds), (0, []))
        self.assertEqual(captured.staying, {"builtins.NoneType: no adapter": 1})
        successor = FakeRegistry()
        successor.declare("tcp:1:#0")
        restored = restoreConnections(
            reactor, successor, AdapterRegistry(), captured.payload, []
        )
        self.assertEqual(restored.count, 0)
        e = self.assertRaises(
            GraphError,
            restoreConnections,
            reactor,
            FakeRegistry(),
            AdapterRegistry(),
            captured.payload,
            [],
        )
        self.assertEqual(str(e), "this process has nothing to match 'factory:tcp:1:#0'")
