# -*- test-case-name: tests.test_stopping -*-
"""
Tests for the incumbent's side of issue 8's protocol core: it stops
accepting before it captures (so every connection it holds is sent or
counted as staying), it says farewell when it abandons a takeover, and
asked to stop during a takeover it lets the takeover finish first
(L{migrator.takeover._stopping}); and its own fault point.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._incumbent import TakeoverRefused
from migrator.takeover._messages import CaptureReport, RestoredReport
from migrator.takeover._steps import Faults
from tests._fakes import FakeConnection
from tests.test_incumbent import (
    BEGIN,
    ECHO,
    IncumbentTestMixin,
    ask,
    flushChannels,
)


class NoConnectionLeftBehindTests(IncumbentTestMixin, SynchronousTestCase):
    """
    The capture stops accepting first, in the same reactor turn: every
    connection held then is sent or staying, and none is accepted until
    the commit (or the abort).
    """

    def test_capturePausesFirst(self) -> None:
        """
        Accepting stops with the capture; C{held} counts every connection
        open then, which is the number sent plus the number staying; the
        switch does not pause again, and says how many ports are paused.
        """
        self.registry.connections.append(FakeConnection())
        self.connection()
        self.connection(working=True)
        self.incumbent.settleTimeout = 0.0
        session = self.session()
        reader = self.toPrepared(session)
        self.assertEqual(self.accepting(), [True, True])
        d = self.incumbent.capture(session, ask(self.adapters))
        report = self.successResultOf(d)
        self.ownFds(reader.next()[1])
        self.assertEqual(self.accepting(), [False, False])
        self.assertEqual(report.held, 3)
        self.assertEqual(report.connections + sum(report.staying.values()), report.held)
        self.assertEqual(report.staying, {"builtins.NoneType: no adapter": 1, f"{ECHO}: working": 1})
        self.incumbent.restored(session, RestoredReport(1))
        self.assertEqual(self.registry.calls.count("pauseAccepting"), 1)
        self.assertEqual(self.incumbent.switch(session).paused, 2)
        self.assertEqual(self.registry.calls.count("pauseAccepting"), 1)

    def test_abortAfterCaptureResumes(self) -> None:
        """
        Abandoned after the capture (before the switch), the incumbent
        accepts again.
        """
        session = self.session()
        self.toCaptured(session)
        self.assertEqual(self.accepting(), [False, False])
        self.incumbent.abort("no", session)
        self.assertEqual(self.accepting(), [True, True])


class StopPolitelyTests(IncumbentTestMixin, SynchronousTestCase):
    """
    L{Incumbent.stop}.
    """

    def test_idle(self) -> None:
        """
        With no takeover in progress, C{stop} fires at once, and any later
        C{begin} is refused.
        """
        self.successResultOf(self.incumbent.stop())
        e = self.assertRaises(TakeoverRefused, self.incumbent.begin, self.session(), BEGIN)
        self.assertIn("is stopping", str(e))

    def test_waitsForCommit(self) -> None:
        """
        During a takeover, C{stop} waits: the takeover goes on to its
        commit, and then until the successor hangs up (its answer may still
        be on its way), and it says so in the log.
        """
        session = self.session()
        self.toSwitched(session)
        with capturedLogs() as events:
            d = self.incumbent.stop()
        self.assertNoResult(d)
        [event] = [e for e in events if "finishing the takeover first" in e["log_format"]]
        self.assertEqual(event["step"], "switched")
        self.incumbent.commit(session)
        self.assertNoResult(d)
        self.incumbent.detached(session)
        self.successResultOf(d)
        self.reactor.advance(0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_commitAnswerBounded(self) -> None:
        """
        A successor that never hangs up after the commit holds the stop no
        longer than the takeover timeout.
        """
        session = self.session()
        self.toSwitched(session)
        d = self.incumbent.stop()
        self.incumbent.commit(session)
        self.reactor.advance(30.0 - 0.001)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        self.successResultOf(d)

    def test_abortedThenStops(self) -> None:
        """
        A takeover abandoned while stopping: the farewell says this
        process is stopping (so the successor does not claim it serves on),
        the log never says it keeps serving, and C{stop} fires once the
        farewell is sent.
        """
        session = self.session()
        reader, _ = self.toCaptured(session)
        d = self.incumbent.stop()
        with capturedLogs() as events:
            self.incumbent.abort("the successor did not restore", session)
        self.assertNoResult(d)
        self.assertFarewell(reader)
        self.assertTrue(self.incumbent.stopping)
        self.successResultOf(d)
        [event] = [e for e in events if "abandoned" in e["log_format"]]
        self.assertNotIn("keeps serving", event["log_format"])
        self.assertIn("now stops as it would have without a takeover", event["log_format"])

    def test_timeoutWhileStopping(self) -> None:
        """
        While stopping, the takeover's timeouts still apply: a successor
        that hangs ends the wait, at most one takeover timeout later.
        """
        session = self.session()
        self.toSwitched(session)
        d = self.incumbent.stop()
        self.reactor.advance(30.0)
        flushChannels(self.reactor)
        self.successResultOf(d)
        self.assertEqual(session.hungUp, 1)


class IncumbentFaultTests(IncumbentTestMixin, SynchronousTestCase):
    """
    The incumbent's own fault point, C{state-sent}.
    """

    def test_stateSent(self) -> None:
        """
        C{hang:state-sent}: the capture's answer waits until the state has
        been handed to the kernel and the fault has acted (here, a hang
        that the test ends).
        """
        self.incumbent.faults = Faults.parse("hang:state-sent")
        session = self.session()
        reader = self.toPrepared(session)
        d: Any = self.incumbent.capture(session, ask(self.adapters))
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        self.ownFds(reader.next()[1])
        self.assertNoResult(d)
        [hang] = self.incumbent._hangs
        hang.callback(None)
        self.assertIsInstance(self.successResultOf(d), CaptureReport)
