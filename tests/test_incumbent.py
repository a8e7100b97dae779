# -*- test-case-name: tests.test_incumbent -*-
"""
Tests for L{migrator._incumbent}: the incumbent's state machine, driven by
direct calls (with L{FakeSession}), and its PB face (L{ControlRoot},
L{ControlSession}) over an in-memory PB connection.

The frame channel the incumbent opens is a real C{socketpair}; everything
else is in memory, and time is a L{MemoryReactorClock}.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet import unix
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.spread import pb
from twisted.spread.jelly import InsecureJelly
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from migrator._channel import FrameChannel
from migrator._control import ControlClientFactory, ControlServerFactory
from migrator._incumbent import (
    BEGUN,
    PREPARED,
    SWITCHED,
    ControlRoot,
    ControlSession,
    Incumbent,
    TakeoverRefused,
)
from migrator._ports import ListenerRegistry, releasePort
from migrator.interfaces import IPeerPolicy, IPortRegistry
from migrator.testing import FakePeerPolicy, FakeRegistry, FakeSession, connectControl

TIMEOUT = 30.0
SUCCESSOR = {"pid": 4242, "python": "3.13.0", "argv": ["twistd"]}
IDENTITY = {"pid": 100, "generation": 4, "python": "3.11.7"}


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


def readChannel(
    reactor: MemoryReactorClock, fd: int
) -> tuple[dict[str, Any], list[int], socket.socket]:
    """
    Flush everything written to frame channels on C{reactor}, then read one
    message from the channel end C{fd} (which becomes the returned socket's).

    @return: the decoded message, the descriptors that came with it (the
        caller owns them), and the socket of the channel end.
    """
    for writer in reactor.getWriters():
        writer.doWrite()
    sock = socket.socket(fileno=fd)
    received: list[tuple[bytes, list[int]]] = []
    channel = FrameChannel(reactor, sock, lambda payload, fds: received.append((payload, fds)))
    channel.doRead()
    assert len(received) == 1, received
    payload, fds = received[0]
    return json.loads(payload), fds, sock


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
    kept as probes) in a L{FakeRegistry}, on a L{MemoryReactorClock}.
    """

    def setUp(self) -> None:
        self.openFds: set[int] = set()
        self.addCleanup(self.closeOpenFds)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000.0)
        self.registry = FakeRegistry()
        self.addCleanup(self.registry.close)
        self.probes = []
        for key in ("tcp:8080:#0", "unix:/run/site/web#0"):
            ours, probe = socket.socketpair()
            self.addCleanup(probe.close)
            self.probes.append(probe)
            self.registry.addPort(key, "unix" if key.startswith("unix") else "tcp", ours.detach())
        self.handedOff: list[dict[str, Any]] = []
        self.incumbent = Incumbent(
            self.reactor,
            self.registry,
            identity=lambda: dict(IDENTITY),
            onHandedOff=self.handedOff.append,
            takeoverTimeout=TIMEOUT,
            clock=self.reactor.seconds,
        )
        # A takeover a test leaves in progress closes its channel.
        self.addCleanup(self.incumbent.abort, "the test is over")

    def session(self) -> FakeSession:
        session = FakeSession()
        self.addCleanup(session.close)
        return session

    def beginAndRead(
        self, session: FakeSession
    ) -> tuple[dict[str, Any], dict[str, Any], list[int], socket.socket]:
        """
        Begin a takeover for C{session} and read what the incumbent sent on
        the channel.
        """
        answer = self.incumbent.begin(session, dict(SUCCESSOR))
        [channelFd] = session.takeSent()
        message, fds, sock = readChannel(self.reactor, channelFd)
        self.addCleanup(sock.close)
        self.ownFds(fds)
        return answer, message, fds, sock

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

    def toSwitched(self, session: FakeSession) -> socket.socket:
        _, _, fds, sock = self.beginAndRead(session)
        self.incumbent.prepared(session, {"received": len(fds), "adopted": len(fds)})
        self.incumbent.switch(session)
        return sock

    def accepting(self) -> list[bool]:
        return [p.accepting for p in self.registry.ports]


class IncumbentTests(IncumbentTestMixin, SynchronousTestCase):
    """
    Tests for L{Incumbent}'s steps, called directly.
    """

    def test_beginAnswersWithIdentity(self) -> None:
        """
        C{begin} answers with the incumbent's pid, generation, Python and
        the number of ports it sends, and the takeover is at step C{begun}.
        """
        answer = self.incumbent.begin(self.session(), dict(SUCCESSOR))
        self.assertEqual(answer, {**IDENTITY, "ports": 2})
        self.assertEqual(self.incumbent.current.state, BEGUN)

    def test_beginSendsPortsOverTheChannel(self) -> None:
        """
        C{begin} sends one descriptor with its answer: the successor's end
        of a frame channel, on which one C{ports} message carries every
        port's record and descriptor, in the registry's order.
        """
        _, message, fds, _ = self.beginAndRead(self.session())
        self.assertEqual(message["type"], "ports")
        self.assertEqual(
            [r["key"] for r in message["ports"]], ["tcp:8080:#0", "unix:/run/site/web#0"]
        )
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
            self.incumbent.begin(self.session(), dict(SUCCESSOR))
        [event] = [e for e in events if "takeover requested" in e.get("log_format", "")]
        self.assertEqual((event["pid"], event["count"]), (4242, 2))

    def test_takeoverStatus(self) -> None:
        """
        C{takeoverStatus} is C{None} when idle, and during a takeover names
        the successor, the step, when it started and how long ago.
        """
        self.assertIsNone(self.incumbent.takeoverStatus())
        session = self.session()
        self.incumbent.begin(session, dict(SUCCESSOR))
        self.reactor.advance(1.5)
        self.assertEqual(
            self.incumbent.takeoverStatus(),
            {"successor_pid": 4242, "step": BEGUN, "started": 1000.0, "elapsed": 1.5},
        )

    def test_happyPath(self) -> None:
        """
        begin, prepared, switch, commit: the ports accept until the switch,
        are released at the commit, C{onHandedOff} is called (later, not
        inside the commit call) with the successor and generation + 1, and
        the attempt is recorded in C{lastAttempt}.
        """
        session = self.session()
        _, _, fds, _ = self.beginAndRead(session)
        self.reactor.advance(0.1)
        self.assertEqual(
            self.incumbent.prepared(
                session, {"received": 2, "adopted": 2, "unclaimed": []}
            ),
            {},
        )
        self.assertEqual(self.incumbent.current.state, PREPARED)
        self.assertEqual(self.accepting(), [True, True])

        self.assertEqual(self.incumbent.switch(session), {"paused": 2})
        self.assertEqual(self.incumbent.current.state, SWITCHED)
        self.assertEqual(self.accepting(), [False, False])
        self.assertEqual([p.released for p in self.registry.ports], [False, False])

        self.reactor.advance(0.25)
        result = self.incumbent.commit(session)
        self.assertEqual(
            result,
            {
                "generation": 5,
                "released": ["tcp:8080:#0", "unix:/run/site/web#0"],
                "accept_paused_ms": 250.0,
            },
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
                "accept_paused_ms": 250.0,
                "total_ms": 350.0,
            },
        )
        self.assertEqual(self.handedOff, [])
        self.reactor.advance(0)
        self.assertEqual(self.handedOff, [{"pid": 4242, "python": "3.13.0", "generation": 5}])
        # No timeout is left behind.
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_commitClosesOnlyTheIncumbentsCopies(self) -> None:
        """
        After the commit the incumbent's copies of the ports are closed, but
        the sockets live on in the successor's copies (nothing was shut
        down); once those close too, the sockets are gone.
        """
        session = self.session()
        _, _, fds, _ = self.beginAndRead(session)
        self.incumbent.prepared(session, {"received": 2})
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
        sock = self.toSwitched(session)
        self.assertEqual(peerState(sock), "open")
        self.incumbent.commit(session)
        self.assertEqual(peerState(sock), "closed")

    def test_commitLogsTimings(self) -> None:
        """
        The commit is logged with the number of ports moved, the new
        generation, and how long accepting was paused.
        """
        session = self.session()
        self.toSwitched(session)
        self.reactor.advance(0.002)
        with capturedLogs() as events:
            self.incumbent.commit(session)
        [event] = [e for e in events if "takeover committed" in e.get("log_format", "")]
        self.assertEqual((event["moved"], event["generation"]), (2, 5))
        self.assertAlmostEqual(event["paused"], 2.0, places=6)

    def test_secondBeginRefused(self) -> None:
        """
        A C{begin} while a takeover is in progress is refused with a message
        naming the successor in progress and its step; the takeover in
        progress goes on undisturbed.
        """
        first = self.session()
        self.incumbent.begin(first, dict(SUCCESSOR))
        second = self.session()
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.begin, second, {"pid": 7, "python": "3.12"}
        )
        self.assertIn("a takeover is already in progress", str(e))
        self.assertIn("successor pid 4242, step begun", str(e))
        self.assertEqual(second.sentFds, [])
        self.assertIs(self.incumbent.current.session, first)
        self.assertEqual(self.incumbent.prepared(first, {"received": 2}), {})

    def test_beginAfterHandedOffRefused(self) -> None:
        """
        Once it has handed off, a process refuses any further C{begin}: its
        ports belong to its successor.
        """
        session = self.session()
        self.toSwitched(session)
        self.incumbent.commit(session)
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.begin, self.session(), dict(SUCCESSOR)
        )
        self.assertIn("has already handed its service to pid 4242", str(e))

    def test_beginWithUDPPortRefused(self) -> None:
        """
        A service with a UDP port cannot be taken over: C{begin} is refused
        with the registry's explanation, nothing is sent, and no takeover is
        in progress.
        """
        self.registry.addPort("udp:53:#0", "udp")
        session = self.session()
        e = self.assertRaises(TakeoverRefused, self.incumbent.begin, session, dict(SUCCESSOR))
        self.assertIn("udp:53:#0", str(e))
        self.assertIn("TCP and UNIX stream ports only", str(e))
        self.assertEqual(session.sentFds, [])
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_beginWithoutADictionaryRefused(self) -> None:
        """
        C{begin} with something other than a dictionary is refused.
        """
        e = self.assertRaises(TakeoverRefused, self.incumbent.begin, self.session(), [1])
        self.assertEqual(str(e), "begin expects a dictionary")
        self.assertIsNone(self.incumbent.current)

    def test_beginWithoutPid(self) -> None:
        """
        A successor that does not say its pid is recorded as pid -1.
        """
        self.incumbent.begin(self.session(), {"python": "3.12"})
        self.assertEqual(self.incumbent.takeoverStatus()["successor_pid"], -1)

    def test_preparedWrongCountAborts(self) -> None:
        """
        A C{prepared} report whose count differs from the number of ports
        sent is refused, and the takeover is abandoned (the ports never
        stopped accepting) with the reason recorded.
        """
        session = self.session()
        _, _, _, sock = self.beginAndRead(session)
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.prepared, session, {"received": 1}
        )
        self.assertEqual(str(e), "count mismatch: sent 2 ports, you received 1")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "abandoned")
        self.assertEqual(self.incumbent.lastAttempt["step"], BEGUN)
        self.assertIn("received 1 of 2 listening ports", self.incumbent.lastAttempt["reason"])
        self.assertEqual(peerState(sock), "closed")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_preparedWithoutAReport(self) -> None:
        """
        A C{prepared} report that is not a dictionary counts as no ports
        received: refused and abandoned.
        """
        session = self.session()
        self.incumbent.begin(session, dict(SUCCESSOR))
        e = self.assertRaises(TakeoverRefused, self.incumbent.prepared, session, "yes")
        self.assertIn("you received None", str(e))
        self.assertIsNone(self.incumbent.current)

    def test_switchBeforePreparedRefusedAndAborted(self) -> None:
        """
        C{switch} before C{prepared} is a protocol error: refused, and the
        takeover is abandoned without ever pausing.
        """
        session = self.session()
        self.incumbent.begin(session, dict(SUCCESSOR))
        e = self.assertRaises(TakeoverRefused, self.incumbent.switch, session)
        self.assertEqual(str(e), "switch is not allowed at step begun")
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(
            self.incumbent.lastAttempt["reason"], "protocol error: switch at step begun"
        )
        self.assertNotIn("pauseAccepting", self.registry.calls)

    def test_commitBeforeSwitchRefusedAndAborted(self) -> None:
        """
        C{commit} before C{switch} is refused and abandons the takeover;
        nothing is released.
        """
        session = self.session()
        self.incumbent.begin(session, dict(SUCCESSOR))
        self.incumbent.prepared(session, {"received": 2})
        e = self.assertRaises(TakeoverRefused, self.incumbent.commit, session)
        self.assertEqual(str(e), "commit is not allowed at step prepared")
        self.assertIsNone(self.incumbent.current)
        self.assertNotIn("releaseAll", self.registry.calls)
        self.assertIsNone(self.incumbent.handedOffTo)

    def test_stepRepeatedAfterSwitchRefusedAndResumes(self) -> None:
        """
        A step out of order after the switch abandons the takeover, and the
        incumbent accepts again on every port.
        """
        session = self.session()
        self.toSwitched(session)
        self.assertEqual(self.accepting(), [False, False])
        self.assertRaises(TakeoverRefused, self.incumbent.prepared, session, {"received": 2})
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.incumbent.lastAttempt["step"], SWITCHED)

    def test_stepsWithoutTakeoverRefused(self) -> None:
        """
        C{prepared}, C{switch} and C{commit} with no takeover in progress
        are refused, and change nothing.
        """
        session = self.session()
        for step, args in [("prepared", ({"received": 2},)), ("switch", ()), ("commit", ())]:
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
        self.incumbent.begin(first, dict(SUCCESSOR))
        other = self.session()
        self.assertRaises(TakeoverRefused, self.incumbent.prepared, other, {"received": 2})
        self.assertRaises(TakeoverRefused, self.incumbent.switch, other)
        self.assertRaises(TakeoverRefused, self.incumbent.commit, other)
        self.assertFalse(self.incumbent.abort("not yours", other))
        self.assertIs(self.incumbent.current.session, first)
        self.assertEqual(self.incumbent.current.state, BEGUN)

    def assertTimesOut(self, session: FakeSession, waitingFor: str, step: str) -> None:
        self.reactor.advance(TIMEOUT - 0.001)
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
                "reason": f"the successor did not {waitingFor} within 30 s",
            },
        )
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_timeoutWaitingForPrepared(self) -> None:
        """
        A successor that does not report C{prepared} within the takeover
        timeout is hung up on and the takeover abandoned.
        """
        session = self.session()
        _, _, _, sock = self.beginAndRead(session)
        self.assertTimesOut(session, "prepare", BEGUN)
        self.assertEqual(peerState(sock), "closed")

    def test_timeoutWaitingForSwitch(self) -> None:
        """
        A successor that does not ask to C{switch} within the timeout after
        C{prepared} is hung up on and the takeover abandoned.
        """
        session = self.session()
        self.incumbent.begin(session, dict(SUCCESSOR))
        self.incumbent.prepared(session, {"received": 2})
        self.assertTimesOut(session, "switch", PREPARED)
        self.assertNotIn("resumeAccepting", self.registry.calls)

    def test_timeoutWaitingForCommit(self) -> None:
        """
        A successor that does not C{commit} within the timeout after the
        switch is hung up on, and the incumbent accepts again.
        """
        session = self.session()
        self.toSwitched(session)
        self.assertEqual(self.accepting(), [False, False])
        self.assertTimesOut(session, "commit", SWITCHED)
        self.assertIn("resumeAccepting", self.registry.calls)

    def test_eachStepHasItsOwnTimeout(self) -> None:
        """
        The timeout applies to each step, not to the whole takeover.
        """
        session = self.session()
        self.incumbent.begin(session, dict(SUCCESSOR))
        self.reactor.advance(TIMEOUT - 1)
        self.incumbent.prepared(session, {"received": 2})
        self.reactor.advance(TIMEOUT - 1)
        self.incumbent.switch(session)
        self.reactor.advance(TIMEOUT - 1)
        self.incumbent.commit(session)
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "committed")

    def test_abortFromSuccessor(self) -> None:
        """
        C{abort} for the successor's session abandons the takeover with the
        given reason and resumes accepting if it had switched.
        """
        session = self.session()
        self.toSwitched(session)
        self.assertTrue(self.incumbent.abort("it hurts", session))
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.incumbent.lastAttempt["reason"], "it hurts")
        self.assertEqual(session.hungUp, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_abortWhenIdle(self) -> None:
        """
        C{abort} with no takeover in progress does nothing.
        """
        self.assertFalse(self.incumbent.abort("nothing"))
        self.assertIsNone(self.incumbent.lastAttempt)

    def test_abortAfterCommitDoesNothing(self) -> None:
        """
        Once committed, an abort cannot bring the ports back.
        """
        session = self.session()
        self.toSwitched(session)
        self.incumbent.commit(session)
        self.assertFalse(self.incumbent.abort("too late", session))
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "committed")
        self.assertNotIn("resumeAccepting", self.registry.calls)

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
        session) starts a complete new takeover.
        """
        first = self.session()
        self.toSwitched(first)
        self.incumbent.abort("first one failed", first)
        second = self.session()
        answer, message, fds, _ = self.beginAndRead(second)
        self.assertEqual(answer["ports"], 2)
        self.assertEqual(len(fds), 2)
        self.incumbent.prepared(second, {"received": 2})
        self.incumbent.switch(second)
        self.assertEqual(self.incumbent.commit(second)["generation"], 5)
        # The first session is no longer part of anything.
        self.assertFalse(self.incumbent.abort("late", first))

    def test_newBeginAfterTimeout(self) -> None:
        """
        After a takeover timed out, a new C{begin} works.
        """
        self.incumbent.begin(self.session(), dict(SUCCESSOR))
        self.reactor.advance(TIMEOUT)
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.begin(self.session(), dict(SUCCESSOR))["ports"], 2)


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
        session.remote_prepared({"received": 2})
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
        session.disconnected()

    def test_disconnectAtEachStepAborts(self) -> None:
        """
        A successor whose connection drops before the commit abandons its
        takeover at whatever step it was; after the switch, accepting
        resumes.
        """
        steps = [
            ("begun", lambda s: s.remote_begin(dict(SUCCESSOR))),
            ("prepared", lambda s: s.remote_prepared({"received": 2})),
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
    L{Incumbent} with a real L{ListenerRegistry} and a real listening UNIX
    port (in a temporary directory, on a L{MemoryReactorClock}).
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
        self.port = self.reactor.listenUNIX(self.path, Factory.forProtocol(Protocol))
        self.handedOff: list[dict[str, Any]] = []
        self.incumbent = Incumbent(
            self.reactor,
            self.registry,
            identity=lambda: dict(IDENTITY),
            onHandedOff=self.handedOff.append,
            takeoverTimeout=TIMEOUT,
            clock=self.reactor.seconds,
        )
        self.addCleanup(self.incumbent.abort, "the test is over")
        self.session = FakeSession()
        self.addCleanup(self.session.close)

    def test_verifyRegistry(self) -> None:
        """
        L{ListenerRegistry} provides L{IPortRegistry}.
        """
        verifyObject(IPortRegistry, self.registry)

    def begin(self) -> list[int]:
        self.incumbent.begin(self.session, dict(SUCCESSOR))
        [channelFd] = self.session.takeSent()
        message, fds, sock = readChannel(self.reactor, channelFd)
        self.addCleanup(sock.close)
        self.assertEqual(
            [(r["key"], r["kind"], r["address"]) for r in message["ports"]],
            [(f"unix:{self.path}#0", "unix", self.path)],
        )
        return fds

    def test_handOff(self) -> None:
        """
        The port stops accepting at the switch and is released at the
        commit without being shut down or unlinked: a client connecting to
        its path afterwards is accepted by the successor's copy.
        """
        [fd] = self.begin()
        successorCopy = socket.socket(fileno=fd)
        self.addCleanup(successorCopy.close)
        self.assertIn(self.port, self.reactor.getReaders())
        self.incumbent.prepared(self.session, {"received": 1})
        self.incumbent.switch(self.session)
        self.assertNotIn(self.port, self.reactor.getReaders())
        result = self.incumbent.commit(self.session)
        self.assertEqual(result["released"], [f"unix:{self.path}#0"])
        self.assertFalse(self.port.connected)
        self.assertEqual(self.registry.listening(), [])
        self.assertTrue(os.path.exists(self.path))

        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(self.path)
        successorCopy.setblocking(False)
        accepted, _ = successorCopy.accept()
        accepted.close()

    def test_abortAfterSwitchResumes(self) -> None:
        """
        An abort after the switch makes the port accept again.
        """
        self.begin()
        self.incumbent.prepared(self.session, {"received": 1})
        self.incumbent.switch(self.session)
        self.incumbent.abort("changed my mind", self.session)
        self.assertIn(self.port, self.reactor.getReaders())
        self.assertTrue(self.port.connected)


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
        Call C{method} as L{migrator._successor.Successor} does (awaiting
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
        self.incumbent.begin(self.session(), dict(SUCCESSOR))
        e = self.awaitCall("begin", {"pid": 9})
        self.assertIsInstance(e, pb.RemoteError)
        self.assertIn("a takeover is already in progress", e.args[0])
        self.assertIn("successor pid 4242", e.args[0])
        self.assertEqual(e.remoteType, b"migrator._incumbent.TakeoverRefused")
        self.assertEqual(e.remoteTraceback, "Traceback unavailable\n")

    def test_stepWithoutTakeoverRefused(self) -> None:
        """
        A takeover step from a peer with no takeover in progress is refused
        over PB with the reason.
        """
        e = self.awaitCall("switch")
        self.assertEqual(e.args, ("switch: no takeover of yours is in progress",))

    def test_happyPathOverPB(self) -> None:
        """
        The whole takeover over PB: C{begin} answers and sends the channel's
        descriptor to the client broker, C{prepared}, C{switch} and
        C{commit} answer their records, and the client hanging up afterwards
        detaches the successor.
        """
        answer = self.successResultOf(self.call("begin", dict(SUCCESSOR)))
        self.assertEqual(answer, {**IDENTITY, "ports": 2})
        [channelFd] = self.client.receivedFds
        self.client.receivedFds.clear()
        message, fds, sock = readChannel(self.reactor, channelFd)
        self.addCleanup(sock.close)
        self.ownFds(fds)
        self.assertEqual(len(message["ports"]), 2)
        self.assertEqual(self.successResultOf(self.call("prepared", {"received": 2})), {})
        self.assertEqual(self.successResultOf(self.call("switch")), {"paused": 2})
        result = self.successResultOf(self.call("commit"))
        self.assertEqual(result["generation"], 5)
        self.assertEqual(result["released"], ["tcp:8080:#0", "unix:/run/site/web#0"])
        self.assertEqual(self.handedOff, [{"pid": 4242, "python": "3.13.0", "generation": 5}])
        self.assertTrue(self.incumbent.successorAttached)
        self.disconnect()
        self.assertFalse(self.incumbent.successorAttached)

    def test_disconnectAborts(self) -> None:
        """
        When the PB peer that began a takeover hangs up before the commit,
        the takeover is abandoned and accepting resumes.
        """
        self.successResultOf(self.call("begin", dict(SUCCESSOR)))
        self.successResultOf(self.call("prepared", {"received": 2}))
        self.successResultOf(self.call("switch"))
        self.assertEqual(self.accepting(), [False, False])
        self.disconnect()
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.incumbent.lastAttempt["reason"], "the successor disconnected")
        self.assertEqual(self.accepting(), [True, True])

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
        self.incumbent.begin(first, dict(SUCCESSOR))
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
    The test doubles used here provide the interfaces they stand in for.
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
