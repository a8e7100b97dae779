# -*- test-case-name: tests.test_unmovable -*-
"""
Tests for L{migrator.takeover._unmovable}: the incumbent plans a takeover
at C{begin} and applies the successor's C{--unmovable} policy to the
connections no adapter can move: C{refuse} (before any descriptor is sent,
or abandoning the takeover if one arrives later), C{drain} (the service's
state is split, and says so) or C{close} (after the commit, as a shutdown
would).  The incumbent is driven by direct calls, as in
L{tests.test_incumbent}, with L{FakeConnection}s for the connections.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from migrator.state._graph import typeName
from migrator.state._registry import AdapterRegistry
from migrator.takeover._incumbent import TakeoverRefused
from migrator.takeover._messages import (
    BeginRequest,
    CaptureRequest,
    PreparedReport,
    ReceivedReport,
    RestoredReport,
)
from migrator.takeover._unmovable import (
    UnmovableGuard,
    beginInfo,
    describePlan,
    splitStatus,
)
from tests._fakes import FakeConnection, FakeRegistry, FakeSession
from tests.test_incumbent import (
    ECHO,
    SUCCESSOR,
    ChannelReader,
    Echo,
    EchoAdapter,
    IncumbentTestMixin,
)


class Stranger:
    """
    A protocol no adapter covers.
    """


STRANGER = typeName(Stranger)


def stranger() -> FakeConnection:
    return FakeConnection(protocol=Stranger(), closeOnLose=False)


class PolicyTests(IncumbentTestMixin, SynchronousTestCase):
    """
    The policies, through a real L{migrator.takeover._incumbent.Incumbent}.
    """

    def begin(self, session: FakeSession, policy: str | None, **extra: Any) -> dict[str, Any]:
        info = dict(SUCCESSOR, **extra)
        if policy is not None:
            info["unmovable"] = policy
        return self.incumbent.begin(session, BeginRequest.fromWire(info)).toWire()

    def test_refusedAtBegin(self) -> None:
        """
        With C{refuse}, a connection whose class has no adapter refuses
        the takeover at C{begin}: the message names the class, its count
        and the remedies; no descriptor was sent, no takeover is in
        progress, the ports still accept, the connection is untouched, and
        C{last_takeover} records the refusal per class.
        """
        connection = stranger()
        self.registry.connections.append(connection)
        session = self.session()
        with capturedLogs() as events:
            e = self.assertRaises(TakeoverRefused, self.begin, session, "refuse")
        message = str(e)
        self.assertIn(f"  {STRANGER}: 1 connection(s) (no adapter)", message)
        self.assertIn("--unmovable drain", message)
        self.assertEqual(session.takeSent(), [])
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        # The ports were described, never sent.
        self.assertEqual(self.registry.calls, ["handoffRecords"])
        self.assertEqual((connection.connected, connection.loseConnectionCalls), (True, 0))
        last = self.incumbent.lastAttempt
        assert last is not None
        self.assertEqual(
            (last["outcome"], last["step"], last["successor_pid"], last["unmovable"]),
            ("refused", "begin", 4242, "refuse"),
        )
        self.assertEqual(
            last["classes"], {STRANGER: {"moved": 0, "drained": 0, "closed": 0, "refused": 1}}
        )
        self.assertEqual(last["reason"], message)
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("keeps serving, unchanged", warnings[0]["log_format"])
        # The next successor, with another policy, may go ahead.
        self.begin(self.session(), "drain")
        self.assertIsNotNone(self.incumbent.current)

    def test_defaultForOldSuccessors(self) -> None:
        """
        A successor that sends no policy (one that predates it) gets what
        it always got: the takeover goes ahead, and such connections
        drain.  An unknown policy (a newer successor's) is refused, the
        safe way.
        """
        self.registry.connections.append(stranger())
        answer = self.begin(self.session(), None)
        self.assertEqual(answer["plan"]["unknown"], 1)
        self.assertEqual(self.incumbent.unmovable.policy, "drain")
        self.incumbent.abort("next")
        self.assertRaises(TakeoverRefused, self.begin, self.session(), "ask")

    def test_declinedAndHarmlessDrainWithoutFlag(self) -> None:
        """
        Connections whose adapters decline them now, or say staying is
        harmless, do not refuse the takeover: the plan counts them.
        """
        busy = Echo()
        busy.working = True
        self.registry.connections.append(FakeConnection(protocol=busy))
        self.adapters.registerDraining(Stranger, "a session of its own")
        self.registry.connections.append(stranger())
        answer = self.begin(
            self.session(), "refuse", types=[ECHO, STRANGER], versions={ECHO: 1, STRANGER: 1}
        )
        plan = answer["plan"]
        self.assertEqual(
            (plan["moves"], plan["harmless"], plan["declined"], plan["unknown"]), (0, 1, 1, 0)
        )
        self.assertEqual(plan["classes"][ECHO]["reasons"], {"declined": {"working": 1}})

    def test_noAdapterInSuccessor(self) -> None:
        """
        A class the successor reads at a version no chain of translation
        steps reaches refuses the takeover too, saying so: nobody there
        could take its state.
        """
        self.registry.connections.append(FakeConnection(protocol=Echo()))
        e = self.assertRaises(
            TakeoverRefused,
            self.begin,
            self.session(),
            "refuse",
            types=[ECHO],
            versions={ECHO: 2},
        )
        self.assertIn(
            f"{ECHO}: 1 connection(s) (version 1 -> 2: no upgrade from 1 in the successor)",
            str(e),
        )

    def test_refusedAtCapture(self) -> None:
        """
        A connection no adapter can move that arrives after C{begin} (the
        ports accept until the capture) makes C{capture} refuse, once
        accepting has stopped and before anything is captured: the
        takeover is abandoned, the ports accept again, and the message says
        it arrived since.
        """
        session = self.session()
        self.toPrepared(session, "refuse")
        self.registry.connections.append(stranger())
        e = self.assertRaises(
            TakeoverRefused, self.incumbent.capture, session, CaptureRequest((ECHO,))
        )
        self.assertIn("opened since the takeover began; seen at step capture", str(e))
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.registry.calls[-2:], ["pauseAccepting", "resumeAccepting"])
        last = self.incumbent.lastAttempt
        assert last is not None
        self.assertEqual((last["outcome"], last["step"]), ("abandoned", "capture"))
        self.assertEqual(last["classes"][STRANGER]["refused"], 1)

    def commitWith(self, policy: str) -> tuple[dict[str, Any], FakeConnection, list[Any]]:
        """
        A whole takeover with one L{Echo} that moves and one connection no
        adapter can move, under C{policy}.

        @return: the commit's answer, that connection, and the log events
            of the commit.
        """
        protocol, _ = self.connection()
        left = stranger()
        self.registry.connections.append(left)
        session = self.session()
        reader = self.toPrepared(session, policy)
        self.capture(session, reader)
        self.incumbent.restored(session, RestoredReport(1))
        self.incumbent.switch(session)
        with capturedLogs() as events:
            answer = self.incumbent.commit(session).toWire()
        return answer, left, list(events)

    def test_drain(self) -> None:
        """
        With C{drain}, the connection stays: the commit reports the split
        per class, a warning says the service's state is now split,
        C{status} says so while the connection lives, and no longer once
        it closed.
        """
        answer, left, events = self.commitWith("drain")
        self.assertEqual(
            {k: answer[k] for k in ("unmovable", "classes", "split", "split_classes")},
            {
                "unmovable": "drain",
                "classes": {
                    ECHO: {"moved": 1, "drained": 0, "closed": 0, "refused": 0},
                    STRANGER: {"moved": 0, "drained": 1, "closed": 0, "refused": 0},
                },
                "split": True,
                "split_classes": {STRANGER: 1},
            },
        )
        last = self.incumbent.lastAttempt
        assert last is not None
        self.assertEqual((last["split"], last["classes"]), (True, answer["classes"]))
        [warning] = [e for e in events if e["log_level"].name == "warn"]
        self.assertIn("the service's state is now split", warning["log_format"])
        self.assertEqual(left.loseConnectionCalls, 0)
        self.assertEqual(
            self.incumbent.unmovable.splitStatus(),
            {"split": True, "split_classes": {STRANGER: 1}, "split_with": 4242},
        )
        left.connected = False
        self.assertEqual(
            self.incumbent.unmovable.splitStatus(),
            {"split": False, "split_classes": {}, "split_with": None},
        )

    def test_close(self) -> None:
        """
        With C{close}, the connection is closed after the commit with
        C{loseConnection} (unsent bytes written, C{connectionLost} run),
        counted as closed; the service is not split.
        """
        answer, left, events = self.commitWith("close")
        self.assertEqual(left.loseConnectionCalls, 1)
        self.assertEqual(
            answer["classes"][STRANGER], {"moved": 0, "drained": 0, "closed": 1, "refused": 0}
        )
        self.assertEqual((answer["split"], answer["split_classes"]), (False, {}))
        self.assertFalse(self.incumbent.unmovable.splitStatus()["split"])
        self.assertEqual([e for e in events if e["log_level"].name == "warn"], [])

    def toPrepared(self, session: FakeSession, policy: str = "drain") -> ChannelReader:
        """
        Like L{IncumbentTestMixin.toPrepared}, with C{policy} and the
        successor's adapters in C{begin}'s info.
        """
        answer = self.begin(session, policy, **beginInfo(self.adapters, policy))
        [channelFd] = session.takeSent()
        reader = ChannelReader(self.reactor, channelFd)
        self.addCleanup(reader.close)
        _, fds = reader.next()
        self.ownFds(fds)
        self.assertIn("plan", answer)
        self.incumbent.received(session, ReceivedReport(len(fds)))
        self.incumbent.prepared(session, PreparedReport(len(fds), len(fds)))
        return reader


class GuardTests(SynchronousTestCase):
    """
    L{UnmovableGuard} and the successor's helpers, alone.
    """

    def test_beginInfo(self) -> None:
        """
        A successor sends its policy and the type names it restores, with
        their versions, and with what it reads of each (version, upgrades).
        """
        adapters = AdapterRegistry()
        adapters.register(EchoAdapter(Echo, version=3, upgrades={2: dict}))
        self.assertEqual(
            beginInfo(adapters, "close"),
            {
                "unmovable": "close",
                "types": [ECHO],
                "versions": {ECHO: 3},
                "readable": {ECHO: {"version": 3, "upgrades": [2], "persistence": None}},
            },
        )

    def test_describePlan(self) -> None:
        """
        The successor logs the plan's summary; an incumbent that sent none
        gives nothing to log.
        """
        registry = FakeRegistry()
        registry.connections.append(stranger())
        guard = UnmovableGuard(registry, AdapterRegistry())
        plan = guard.start({"unmovable": "drain"})
        self.assertEqual(
            describePlan(plan),
            "1 open connection(s): 0 can move, 0 drain harmlessly, 0 declined by their "
            f"adapters, 1 with no adapter that can move them ({STRANGER}: 1)",
        )
        self.assertIsNone(describePlan(None))

    def test_successorSplitStatus(self) -> None:
        """
        A successor whose takeover left connections in its predecessor is
        split while the predecessor still runs, not after.
        """
        took = {"split": True, "split_classes": {STRANGER: 2}}
        self.assertEqual(
            splitStatus(None, took, {"pid": 7, "draining": True}),
            {"split": True, "split_classes": {STRANGER: 2}, "split_with": 7},
        )
        for predecessor in ({"pid": 7, "draining": False}, None):
            self.assertEqual(
                splitStatus(None, took, predecessor),
                {"split": False, "split_classes": {}, "split_with": None},
            )
        self.assertFalse(splitStatus(None, {"split": False}, {"draining": True})["split"])
