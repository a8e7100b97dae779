# -*- test-case-name: tests.test_dryrun -*-
"""
Tests for dry runs: the incumbent's side (L{migrator.takeover._dryrun},
and its PB face in L{migrator.takeover._session}) with real connections
on socket pairs (as in L{tests.test_incumbent}), and the staging
process's side (L{migrator.takeover._staging}) against an incumbent played
by the test (L{FakeRemoteRoot}), restoring a real capture.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from migrator._twistedinternals import releaseConnection
from migrator.state._capture import captureConnections
from migrator.state._registry import AdapterRegistry, InstanceAdapter
from migrator.takeover import _dryrun
from migrator.takeover._channel import FrameChannel
from migrator.takeover._dryrun import (
    FAILED,
    INCOMPLETE,
    NO_RESULT,
    OK,
    DryRunAnswer,
    DryRunRequest,
    DryRunResult,
    DryRuns,
)
from migrator.takeover._incumbent import TakeoverRefused
from migrator.takeover._messages import BeginRequest, CaptureRequest, MalformedMessage
from migrator.takeover._session import ControlRoot
from migrator.takeover._staging import (
    EVERYTHING_MOVES,
    NOT_EVERYTHING_MOVES,
    SOMETHING_FAILED,
    Staging,
)
from migrator.takeover._undeclared import FLAG
from tests._fakes import FakePeerPolicy, FakeRegistry, FakeRemoteRoot, FakeSession
from tests.test_incumbent import (
    BEGIN,
    ECHO,
    KEYS,
    ChannelReader,
    Echo,
    IncumbentTestMixin,
    _StubBroker,
    exchange,
)
from tests.test_successor import doReads, peerState

PATH = "/run/site/ctl"


def request(adapters: AdapterRegistry, declared: list[str], close: bool = False) -> DryRunRequest:
    """
    The request of a staging process with the adapters of C{adapters},
    whose service declares C{declared}.
    """
    return DryRunRequest(
        BeginRequest(4343, "3.13.0", ("twistd",), "refuse", tuple(adapters.typeNames())),
        CaptureRequest(tuple(adapters.typeNames())),
        tuple(declared),
        close,
    )


class DryRunMessagesTests(SynchronousTestCase):
    """
    The dry run's messages go to the wire and back, and malformed ones are
    refused.
    """

    def test_roundTrip(self) -> None:
        """
        Each record survives C{toWire}/C{fromWire}.
        """
        req = DryRunRequest(
            BeginRequest(1, "3.11", ("a",), "drain", ("t",), {"t": 2}),
            CaptureRequest(("t",), {"t": 2}),
            ("tcp:0:#0",),
            True,
        )
        self.assertEqual(DryRunRequest.fromWire(req.toWire()), req)
        answer = DryRunAnswer(
            1, 2, "3.11", 3, 2, 100, {"a": 2}, {"a: busy": 1}, 1.5, {"moves": 2}, ("x",), ("r",),
            ("tcp:0:#0", "x"),
        )
        self.assertEqual(DryRunAnswer.fromWire(answer.toWire()), answer)
        result = DryRunResult(FAILED, {"a": {"restored": 1, "failed": 1}}, ("a",), "FAILED: a")
        self.assertEqual(DryRunResult.fromWire(result.toWire()), result)

    def test_malformed(self) -> None:
        """
        A request without its begin or capture section, or a result with
        bad counts, is malformed.
        """
        self.assertRaises(MalformedMessage, DryRunRequest.fromWire, {"capture": {}})
        self.assertRaises(MalformedMessage, DryRunRequest.fromWire, {"begin": {"pid": 1}})
        self.assertRaises(MalformedMessage, DryRunRequest.fromWire, [])
        self.assertRaises(MalformedMessage, DryRunResult.fromWire, {"outcome": 1})
        self.assertRaises(
            MalformedMessage, DryRunResult.fromWire, {"outcome": "ok", "classes": {"a": 1}}
        )


class DryRunsTests(IncumbentTestMixin, SynchronousTestCase):
    """
    L{DryRuns}: the incumbent snapshots its connections for a staging
    process and carries on, unchanged.
    """

    def setUp(self) -> None:
        super().setUp()
        self.dryRuns = DryRuns(self.reactor, self.incumbent, timeout=30.0)

    def snapshot(
        self, session: FakeSession, declared: list[str] | None = None, close: bool = False
    ) -> tuple[DryRunAnswer, bytes, ChannelReader]:
        answer = self.dryRuns.snapshot(
            session, request(self.adapters, KEYS if declared is None else declared, close)
        )
        [channelFd] = session.takeSent()
        reader = ChannelReader(self.reactor, channelFd)
        self.addCleanup(reader.close)
        payload, fds = reader.next()
        self.assertEqual(fds, [])
        return answer, payload, reader

    def test_snapshotChangesNothing(self) -> None:
        """
        The snapshot holds every movable connection's state and no
        descriptor; the connections were thawed in the same turn (they
        serve on), every port accepts, no takeover began, and nothing else
        of the incumbent's record changed.
        """
        protocol, client = self.connection()
        session = self.session()
        answer, payload, _ = self.snapshot(session)
        self.assertEqual((answer.connections, answer.held), (1, 1))
        self.assertEqual(answer.moved, {ECHO: 1})
        self.assertEqual(answer.bytes, len(payload))
        self.assertEqual((answer.pid, answer.generation), (100, 4))
        self.assertEqual(answer.refusals, ())
        self.assertEqual(answer.ports, tuple(KEYS))
        self.assertIn(protocol.transport, self.reactor.getReaders())
        self.assertEqual(exchange(protocol.transport, client, b"still here\r\n"), b"still here\r\n")
        self.assertEqual(self.accepting(), [True, True])
        self.assertIsNone(self.incumbent.current)
        self.assertIsNone(self.incumbent.lastAttempt)
        self.assertEqual(self.handedOff, [])

    def test_undeclaredPorts(self) -> None:
        """
        Ports the staging service does not declare are named, and a
        takeover would be refused for them, unless the flag is given;
        their connections would stay.
        """
        self.connection()
        session = self.session()
        answer, _, _ = self.snapshot(session, [KEYS[0]])
        self.assertEqual(answer.undeclared, (KEYS[1],))
        [refusal] = answer.refusals
        self.assertIn(FLAG, refusal)
        self.dryRuns.detached(session)
        answer, _, _ = self.snapshot(self.session(), [KEYS[0]], close=True)
        self.assertEqual(answer.refusals, ())

    def test_refusedDuringTakeover(self) -> None:
        """
        No dry run while a takeover is in progress (its connections may be
        frozen), after a handoff, while stopping, or beside another dry run.
        """
        takeover = self.session()
        self.incumbent.begin(takeover, BEGIN)
        e = self.assertRaises(
            TakeoverRefused, self.dryRuns.snapshot, self.session(), request(self.adapters, KEYS)
        )
        self.assertIn("a takeover is in progress", str(e))
        self.incumbent.abort("test")
        self.pendingSession = self.session()
        self.snapshot(self.pendingSession)
        e = self.assertRaises(
            TakeoverRefused, self.dryRuns.snapshot, self.session(), request(self.adapters, KEYS)
        )
        self.assertIn("a dry run by pid 4343 is in progress", str(e))
        self.incumbent.stopping = True
        self.dryRuns.detached(self.pendingSession)
        e = self.assertRaises(
            TakeoverRefused, self.dryRuns.snapshot, self.session(), request(self.adapters, KEYS)
        )
        self.assertIn("is stopping", str(e))
        self.incumbent.stopping = False
        self.incumbent.handedOffTo = {"pid": 7}
        e = self.assertRaises(
            TakeoverRefused, self.dryRuns.snapshot, self.session(), request(self.adapters, KEYS)
        )
        self.assertIn("handed its service to pid 7", str(e))

    def test_takeoverWhileWaiting(self) -> None:
        """
        A takeover may begin while a dry run waits for its result: the dry
        run holds nothing.
        """
        self.connection()
        self.snapshot(self.session())
        self.incumbent.begin(self.session(), BEGIN)
        self.assertIsNotNone(self.incumbent.current)

    def test_done(self) -> None:
        """
        The staging process's result is recorded as C{last_dry_run} (with
        the snapshot's figures), and the channel closed.
        """
        self.connection()
        session = self.session()
        answer, _, reader = self.snapshot(session)
        self.reactor.advance(5)
        result = DryRunResult(FAILED, {ECHO: {"restored": 0, "failed": 1}}, (ECHO,), "FAILED")
        self.dryRuns.done(session, result)
        last = self.dryRuns.last
        assert last is not None
        self.assertEqual(
            {k: last[k] for k in ("at", "by", "outcome", "classes", "failed", "connections")},
            {
                "at": self.reactor.seconds(),
                "by": 4343,
                "outcome": FAILED,
                "classes": {ECHO: {"restored": 0, "failed": 1}},
                "failed": [ECHO],
                "connections": 1,
            },
        )
        self.assertEqual(last["bytes"], answer.bytes)
        self.assertEqual(peerState(reader.sock), "closed")
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertRaises(TakeoverRefused, self.dryRuns.done, session, result)

    def test_hungUp(self) -> None:
        """
        A staging process that hangs up without a result is recorded so.
        """
        session = self.session()
        self.snapshot(session)
        self.dryRuns.detached(self.session())
        self.assertIsNone(self.dryRuns.last)
        self.dryRuns.detached(session)
        assert self.dryRuns.last is not None
        self.assertEqual(self.dryRuns.last["outcome"], NO_RESULT)

    def test_timeout(self) -> None:
        """
        A staging process that does not report in time is hung up on.
        """
        session = self.session()
        self.snapshot(session)
        self.reactor.advance(30)
        assert self.dryRuns.last is not None
        self.assertEqual(self.dryRuns.last["outcome"], NO_RESULT)
        self.assertEqual(session.hungUp, 1)

    def test_captureFails(self) -> None:
        """
        A capture that raises refuses the dry run, recorded as failed;
        nothing stays frozen.
        """
        protocol, _ = self.connection()

        def explode(*args: Any) -> Any:
            raise ValueError("no")

        self.patch(_dryrun, "captureConnections", explode)
        e = self.assertRaises(
            TakeoverRefused, self.dryRuns.snapshot, self.session(), request(self.adapters, KEYS)
        )
        self.assertIn("capturing connections failed: no", str(e))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        assert self.dryRuns.last is not None
        self.assertEqual(self.dryRuns.last["outcome"], FAILED)
        self.assertIn(protocol.transport, self.reactor.getReaders())


class DryRunSessionTests(IncumbentTestMixin, SynchronousTestCase):
    """
    The dry run's PB face: C{remote_dryRun}, C{remote_dryRunDone}, and a
    hang-up.
    """

    def test_remote(self) -> None:
        """
        The snapshot's channel rides with the answer; the result is
        recorded; malformed messages are refused.
        """
        root = ControlRoot(lambda: {}, self.incumbent, DryRuns(self.reactor, self.incumbent))
        broker = _StubBroker()
        session = root.rootObject(broker)
        self.addCleanup(lambda: [os.close(fd) for fd in broker.transport.sent])
        answer = session.remote_dryRun(request(self.adapters, KEYS).toWire())
        self.assertEqual(answer["connections"], 0)
        self.assertEqual(len(broker.transport.sent), 1)
        self.assertRaises(TakeoverRefused, session.remote_dryRunDone, {"outcome": 3})
        session.remote_dryRunDone(DryRunResult(OK).toWire())
        assert root.dryRuns is not None and root.dryRuns.last is not None
        self.assertEqual(root.dryRuns.last["outcome"], OK)
        self.assertRaises(TakeoverRefused, session.remote_dryRun, {"begin": 1})
        # A hang-up after the result changes nothing.
        session.disconnected()
        self.assertEqual(root.dryRuns.last["outcome"], OK)

    def test_notServing(self) -> None:
        """
        Before the process serves, dry runs are refused.
        """
        session = ControlRoot(lambda: {}).rootObject(_StubBroker())
        e = self.assertRaises(TakeoverRefused, session.remote_dryRun, {})
        self.assertEqual(str(e), "this process is not serving yet")
        self.assertRaises(TakeoverRefused, session.remote_dryRunDone, {})


class Broken(InstanceAdapter):
    """
    New code whose C{populate} fails.
    """

    def populate(self, obj: Any, state: Any, context: Any) -> None:
        raise RuntimeError("populate is broken")


class StagingTests(SynchronousTestCase):
    """
    L{Staging}: the staging process's dry run, against an incumbent played
    by the test, restoring what a real incumbent captured.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.registry = FakeRegistry(holding=True)
        self.adapters = AdapterRegistry()
        self.adapters.registerInstance(Echo)
        self.root = FakeRemoteRoot(autoAnswers={"dryRunDone": None})
        self.printed: list[str] = []
        self.started = 0
        self.declares = list(KEYS)

    def startService(self) -> None:
        self.started += 1
        for key in self.declares:
            self.registry.declare(key)

    def stage(self, **kw: Any) -> Any:
        self.staging = Staging(
            self.reactor,
            PATH,
            self.registry,
            self.adapters,
            self.startService,
            out=self.printed.append,
            policy=FakePeerPolicy(),
            **kw,
        )
        d = self.staging.run()
        [(path, factory, _, _)] = self.reactor.unixClients
        self.assertEqual(path, PATH)
        factory.clientConnectionMade(self.root.broker)
        return d

    def capture(self, connections: int, claimed: list[str] = KEYS) -> bytes:
        """
        What an incumbent with C{connections} L{Echo} connections captures
        for a service that declares C{claimed}.
        """
        reactor = MemoryReactorClock()
        ports = FakeRegistry()
        for key in KEYS:
            ports.addPort(key)
        for _ in range(connections):
            mine, client = socket.socketpair()
            self.addCleanup(client.close)
            protocol = Echo()
            transport = tcp.Server(mine, protocol, ("pair", 0), None, 1, reactor)
            self.addCleanup(releaseConnection, transport)
            protocol.makeConnection(transport)
            ports.trackConnection(transport)
        adapters = AdapterRegistry()
        adapters.registerInstance(Echo)
        captured = captureConnections(
            reactor, ports, adapters, frozenset(claimed), frozenset(adapters.typeNames())
        )
        captured.thaw()
        return captured.payload

    def answer(self, payload: bytes, **fields: Any) -> None:
        """
        Answer C{dryRun} as the incumbent does: the channel's descriptor,
        the answer, the snapshot on the channel.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.root.broker.receivedFds.append(theirs.detach())
        sender = FrameChannel(self.reactor, ours.dup())
        sender.sendMessage(payload)
        sender.doWrite()
        sender.close()
        wire = {"pid": 100, "generation": 4, "python": "3.11.7", "ports": list(KEYS)}
        wire.update(fields)
        self.root.answer("dryRun", wire)
        doReads(self.reactor)

    def result(self) -> dict[str, Any]:
        [done] = [c for c in self.root.calls if c.method == "dryRunDone"]
        return done.args[0]  # type: ignore[no-any-return]

    def test_everythingMoves(self) -> None:
        """
        The staging process starts its service, asks for a snapshot naming
        the ports its service declares and what it can restore, restores
        it, reports C{ok} to the incumbent, prints the report, exits 0 and
        hangs up.
        """
        d = self.stage()
        self.assertEqual(self.started, 1)
        wire = self.root.pending("dryRun").args[0]
        self.assertEqual(wire["declared"], KEYS)
        self.assertEqual(wire["begin"]["unmovable"], "refuse")
        self.assertEqual(wire["capture"]["types"], [ECHO])
        self.answer(self.capture(2), connections=2, held=2, moved={ECHO: 2})
        self.assertEqual(self.successResultOf(d), EVERYTHING_MOVES)
        self.assertEqual(self.result()["outcome"], OK)
        self.assertEqual(self.result()["classes"], {ECHO: {"restored": 2, "failed": 0, "staying": 0}})
        [text] = self.printed
        self.assertIn(f"    {ECHO}: would move 2", text)
        self.assertIn(
            f"ports: {KEYS[0]} (would be adopted); {KEYS[1]} (would be adopted)", text
        )
        self.assertTrue(text.endswith("dry run: every connection would move (2 restored here) (exit 0)"))
        self.assertEqual(self.root.broker.transport.loseConnectionCalls, 1)

    def test_populateFails(self) -> None:
        """
        New code whose C{populate} raises: exit 1, the class named, with
        its error, in the report and in the result.
        """
        self.adapters.register(Broken(Echo))
        d = self.stage()
        self.answer(self.capture(1), connections=1, held=1)
        self.assertEqual(self.successResultOf(d), SOMETHING_FAILED)
        result = self.result()
        self.assertEqual((result["outcome"], result["failed"]), (FAILED, [ECHO]))
        [text] = self.printed
        self.assertIn(f"{ECHO}: FAILED 1 of 1: ", text)
        self.assertIn("RuntimeError: populate is broken", text)
        self.assertTrue(text.endswith(f"dry run: FAILED: {ECHO} (exit 1)"))

    def test_staying(self) -> None:
        """
        Nothing failed, but connections would stay, or a takeover would be
        refused: exit 2, with the reasons.
        """
        self.declares = [KEYS[0]]
        d = self.stage(check=lambda protocol: None)
        self.answer(
            self.capture(0, [KEYS[0]]),
            held=1,
            staying={"x.Y: no adapter": 1},
            undeclared=[KEYS[1]],
            refusals=["the incumbent listens on ..."],
        )
        self.assertEqual(self.successResultOf(d), NOT_EVERYTHING_MOVES)
        self.assertEqual(self.result()["outcome"], INCOMPLETE)
        [text] = self.printed
        self.assertIn("x.Y: would stay 1 (no adapter)", text)
        self.assertIn(f"{KEYS[1]} NOT declared (closed by a takeover only with {FLAG})", text)
        self.assertIn("a takeover now would be refused: the incumbent listens on ...", text)
        self.assertIn("then checkRestored)", text)

    def test_refused(self) -> None:
        """
        An incumbent that refuses: exit 1, saying why.
        """
        d = self.stage()
        self.root.refuse("dryRun", "a takeover is in progress")
        self.assertEqual(self.successResultOf(d), SOMETHING_FAILED)
        self.assertEqual(
            self.printed,
            ["dry run: could not be done: the incumbent refused: a takeover is in progress (exit 1)"],
        )

    def test_serviceFails(self) -> None:
        """
        A service that cannot start: exit 1 before asking anything.
        """

        def broken() -> None:
            raise ValueError("bad config")

        staging = Staging(
            self.reactor, PATH, self.registry, self.adapters, broken, out=self.printed.append
        )
        self.assertEqual(self.successResultOf(staging.run()), SOMETHING_FAILED)
        self.assertIn("the service failed to start: bad config", self.printed[0])
        self.assertEqual(self.reactor.unixClients, [])

    def test_cancel(self) -> None:
        """
        Stopping the staging process gives up the dry run.
        """
        d = self.stage()
        self.staging.cancel()
        self.assertEqual(self.successResultOf(d), SOMETHING_FAILED)
        self.assertIn("this process is stopping", self.printed[0])


class DryRunResultBoundsTests(SynchronousTestCase):
    """
    What a staging process reports is kept for C{status}: bounded.
    """

    def test_bounded(self) -> None:
        """
        At most L{_dryrun.MAX_CLASSES} classes (names cut at 200
        characters), and a message of at most 1000 characters.
        """
        wire = {
            "outcome": "failed",
            "classes": {f"c{i}" + "x" * 300: {"failed": 1} for i in range(500)},
            "failed": [f"c{i}" for i in range(500)],
            "message": "m" * 5000,
        }
        result = DryRunResult.fromWire(wire)
        self.assertEqual(len(result.classes), _dryrun.MAX_CLASSES)
        self.assertTrue(all(len(k) <= 200 for k in result.classes))
        self.assertEqual(len(result.failed), _dryrun.MAX_CLASSES)
        self.assertEqual(len(result.message), 1000)
