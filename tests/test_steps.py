# -*- test-case-name: tests.test_steps -*-
"""
Tests for L{migrator.takeover._steps}: the incumbent's transition table and
the fault-injection specification.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._steps import (
    ABORTABLE,
    COMMITTED,
    IDLE,
    SUCCESSOR_POINTS,
    TRANSITIONS,
    Faults,
    InvalidFaults,
    ProtocolError,
    advance,
)


class TransitionsTests(SynchronousTestCase):
    """
    Tests for L{TRANSITIONS} and L{advance}.
    """

    def test_onePathFromIdleToCommitted(self) -> None:
        """
        From C{idle}, the table allows exactly one step in each state, and
        following them reaches C{committed}, visiting every state once.
        """
        state, seen = IDLE, [IDLE]
        while state != COMMITTED:
            [step] = [s for (st, s) in TRANSITIONS if st == state]
            state = advance(state, step).state
            self.assertNotIn(state, seen)
            seen.append(state)
        self.assertEqual(len(seen), len(TRANSITIONS) + 1)
        self.assertEqual(ABORTABLE, frozenset(seen) - {IDLE, COMMITTED})

    def test_protocolError(self) -> None:
        """
        A step the table does not allow in a state raises L{ProtocolError}
        naming both.
        """
        e = self.assertRaises(ProtocolError, advance, IDLE, "commit")
        self.assertEqual(str(e), "commit is not allowed at step idle")


class FaultsTests(SynchronousTestCase):
    """
    Tests for L{Faults}.
    """

    def test_parse(self) -> None:
        """
        A comma-separated list of C{ACTION:POINT} is read in order; an
        empty one is no fault.
        """
        self.assertFalse(Faults.parse(""))
        self.assertEqual(
            Faults.parse("kill:after-switch, hang:connected").points,
            (("kill", "after-switch"), ("hang", "connected")),
        )

    def test_parseRefusesUnknown(self) -> None:
        """
        An unknown action or point is refused, naming the known ones.
        """
        for spec in ["explode:connected", "kill:nowhere", "kill"]:
            e = self.assertRaises(InvalidFaults, Faults.parse, spec)
            self.assertIn(", ".join(SUCCESSOR_POINTS), str(e))

    def test_actions(self) -> None:
        """
        At a point named, C{raise} raises, C{hang} waits on a L{Deferred}
        kept in the list given, and C{kill} calls the kill seam; other
        points do nothing.
        """
        killed: list[bool] = []
        faults = Faults((("raise", "connected"), ("hang", "after-adopt"), ("kill", "after-switch")),
                        kill=lambda: killed.append(True))
        hangs: list[Deferred[None]] = []
        self.successResultOf(Deferred.fromCoroutine(faults.at("before-adopt", hangs)))
        f = self.failureResultOf(Deferred.fromCoroutine(faults.at("connected", hangs)), RuntimeError)
        self.assertEqual(str(f.value), "injected fault at connected")
        d = Deferred.fromCoroutine(faults.at("after-adopt", hangs))
        self.assertNoResult(d)
        self.assertEqual(len(hangs), 1)
        self.successResultOf(Deferred.fromCoroutine(faults.at("after-switch", hangs)))
        self.assertEqual(killed, [True])
        hangs[0].callback(None)
        self.successResultOf(d)
