# -*- test-case-name: tests.test_undeclared -*-
"""
Tests for L{migrator.takeover._undeclared}: a takeover that would close
ports the successor's service does not declare is refused at C{prepared},
unless the successor was started with C{--close-undeclared-ports}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._incumbent import TakeoverRefused
from migrator.takeover._messages import PreparedReport, ReceivedReport
from migrator.takeover._steps import PREPARED, RECEIVED
from migrator.takeover._undeclared import FLAG, undeclaredRefusal
from tests.test_incumbent import KEYS, IncumbentTestMixin


class UndeclaredRefusalTests(SynchronousTestCase):
    """
    L{undeclaredRefusal} names the ports and the flag.
    """

    def test_none(self) -> None:
        """
        Nothing undeclared, or the flag given: no refusal.
        """
        self.assertIsNone(undeclaredRefusal((), False))
        self.assertIsNone(undeclaredRefusal(("tcp:80:#0",), True))

    def test_refusal(self) -> None:
        """
        The refusal names every undeclared port and the flag.
        """
        one = undeclaredRefusal(("tcp:8081:#0",), False)
        assert one is not None
        self.assertIn("listens on tcp:8081:#0, which the successor's service does not declare", one)
        self.assertIn("would close it", one)
        self.assertIn(FLAG, one)
        two = undeclaredRefusal(("tcp:8081:#0", "unix:/run/x#0"), False)
        assert two is not None
        self.assertIn("tcp:8081:#0, unix:/run/x#0", two)
        self.assertIn("would close them", two)


class IncumbentUndeclaredTests(IncumbentTestMixin, SynchronousTestCase):
    """
    The incumbent refuses, at C{prepared}, a takeover that would close
    ports without the operator's consent.
    """

    def test_refused(self) -> None:
        """
        Without the flag the takeover is refused and abandoned before
        anything changed: every port still accepts, the reason (naming
        the port and the flag) is recorded and said farewell.
        """
        session = self.session()
        _, _, fds, reader = self.beginAndRead(session)
        self.incumbent.received(session, ReceivedReport(len(fds)))
        e = self.assertRaises(
            TakeoverRefused,
            self.incumbent.prepared,
            session,
            PreparedReport(len(fds), 1, (KEYS[1],)),
        )
        self.assertIn(KEYS[1], str(e))
        self.assertIn(FLAG, str(e))
        self.assertIsNone(self.incumbent.current)
        self.assertEqual(self.accepting(), [True, True])
        self.assertEqual(self.incumbent.lastAttempt["outcome"], "abandoned")
        self.assertEqual(self.incumbent.lastAttempt["step"], RECEIVED)
        self.assertFarewell(reader)

    def test_allowed(self) -> None:
        """
        With the flag the takeover goes on (the port is closed at the
        commit, as before).
        """
        session = self.session()
        _, _, fds, _ = self.beginAndRead(session)
        self.incumbent.received(session, ReceivedReport(len(fds)))
        self.incumbent.prepared(session, PreparedReport(len(fds), 1, (KEYS[1],), True))
        assert self.incumbent.current is not None
        self.assertEqual(self.incumbent.current.state, PREPARED)
