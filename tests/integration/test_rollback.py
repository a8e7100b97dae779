# -*- test-case-name: tests.integration.test_rollback -*-
"""
Failed takeovers of a real C{twistd web} under C{twistd migrate}: the
successor is killed, raises or hangs at each step of the protocol (fault
injection through C{MIGRATOR_FAULT}) while a load client opens new
connections.  The incumbent must roll back (resume accepting), keep serving
without refusing anything, say so in C{status}, and accept a later takeover.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from twisted.trial.unittest import TestCase

from migrator.testing import FAILED, ServiceProcess

from ._support import (
    ABANDONED,
    EXIT_TIMEOUT,
    FAULT,
    START_TIMEOUT,
    Load,
    Workspace,
    assertAllOk,
    reportLoad,
    sitePort,
    startService,
    status,
    takeOver,
    waitServing,
)


class _Rollback:
    """
    One failed takeover under load, from start to the incumbent's
    rollback.

    @ivar incumbent: the process that must keep serving.
    @ivar successor: the faulty successor, already at its fault.
    @ivar load: the load, running from before the successor started.
    @ivar startedSuccessor: when the faulty successor was started
        (monotonic): before anything it does, its fault included.
    """

    def __init__(
        self,
        case: TestCase,
        fault: str,
        migrateOptions: tuple[str, ...] = (),
    ) -> None:
        self.case = case
        self.workspace = Workspace(case)
        self.incumbent = startService(
            case, self.workspace, migrateOptions=migrateOptions, name="incumbent"
        )
        waitServing(self.incumbent, 0)
        self.port = sitePort(self.incumbent)
        self.load = Load(case, self.workspace, self.port)
        self.startedSuccessor = time.monotonic()
        self.successor: ServiceProcess = startService(
            case,
            self.workspace,
            takeover=True,
            fault=fault,
            migrateOptions=migrateOptions,
            name="faulty successor",
        )
        action, _, point = fault.partition(":")
        injected = self.successor.waitFor(FAULT, START_TIMEOUT)
        case.assertEqual(injected.group("action", "point"), (action, point))

    def waitAbandoned(self, step: str) -> Any:
        """
        Wait for the incumbent to abandon the takeover at C{step}, then
        check that C{status} still shows it, generation 0, with the attempt
        recorded as abandoned.

        @return: the L{ABANDONED} match.
        """
        abandoned = self.incumbent.waitFor(ABANDONED, EXIT_TIMEOUT)
        self.case.assertEqual(
            (int(abandoned.group("pid")), abandoned.group("step")),
            (self.successor.pid, step),
            abandoned.string,
        )
        now = status(self.workspace.control)
        self.case.assertEqual((now["pid"], now["generation"]), (self.incumbent.pid, 0))
        self.case.assertIsNone(now["takeover"])
        self.case.assertEqual(now["state"], "serving")
        last = now["last_takeover"]
        self.case.assertEqual(
            (last["outcome"], last["successor_pid"], last["step"]),
            ("abandoned", self.successor.pid, step),
        )
        self.case.assertIsNone(self.incumbent.process.poll())
        return abandoned

    def finish(self) -> None:
        """
        Take over normally (generation 1), stop the load, and check that
        every request succeeded.
        """
        successor = takeOver(self.case, self.workspace, self.incumbent, 1)
        self.case.assertEqual(status(self.workspace.control)["pid"], successor.pid)
        summary = self.load.finish()
        reportLoad(self.case, "load", summary)
        assertAllOk(self.case, summary)


class KillRollbackTests(TestCase):
    """
    The successor dies (SIGKILL) at each step of the protocol in turn.
    """

    def _killedAt(self, point: str, step: str) -> None:
        rollback = _Rollback(self, f"kill:{point}")
        self.assertEqual(rollback.successor.waitForExit(EXIT_TIMEOUT), -signal.SIGKILL)
        abandoned = rollback.waitAbandoned(step)
        self.assertEqual(abandoned.group("reason"), "the successor disconnected")
        rollback.finish()

    def test_killBeforeAdopt(self) -> None:
        """
        A successor killed after receiving the ports but before adopting
        them: the incumbent abandons the takeover (step C{received}), serves
        every request of the load, reports generation 0 and its own pid,
        and a later takeover succeeds.
        """
        self._killedAt("before-adopt", "received")

    def test_killAfterAdopt(self) -> None:
        """
        A successor killed after adopting the ports, before confirming:
        the incumbent abandons the takeover (step C{received}), serves every
        request, reports generation 0 and its own pid, and a later takeover
        succeeds.
        """
        self._killedAt("after-adopt", "received")

    def test_killAfterSwitch(self) -> None:
        """
        A successor killed right after the switch (the incumbent has
        stopped accepting): the incumbent abandons the takeover (step
        C{switched}) and accepts again; no request of the load is refused
        or fails; it reports generation 0 and its own pid, and a later
        takeover succeeds.
        """
        self._killedAt("after-switch", "switched")

    def test_killBeforeCommit(self) -> None:
        """
        A successor killed just before asking to commit: the incumbent
        abandons the takeover (step C{switched}) and accepts again; no
        request of the load is refused or fails; it reports generation 0
        and its own pid, and a later takeover succeeds.
        """
        self._killedAt("before-commit", "switched")


class RaiseRollbackTests(TestCase):
    """
    The successor fails with an exception at a step.
    """

    def _raisedAt(self, point: str, successorStep: str, incumbentStep: str) -> None:
        rollback = _Rollback(self, f"raise:{point}")
        failed = rollback.successor.waitFor(FAILED, EXIT_TIMEOUT)
        self.assertEqual(
            (failed.group("step"), failed.group("reason")),
            (successorStep, f"injected fault at {point}"),
        )
        self.assertNotEqual(rollback.successor.waitForExit(EXIT_TIMEOUT), 0)
        self.assertIn(
            "the running service was not changed and keeps serving",
            rollback.successor.output(),
        )
        abandoned = rollback.waitAbandoned(incumbentStep)
        self.assertEqual(
            abandoned.group("reason"), f"the successor gave up: injected fault at {point}"
        )
        rollback.finish()

    def test_raiseAfterAdopt(self) -> None:
        """
        A successor that raises after adopting the ports exits non-zero
        saying where and why it failed; the incumbent abandons the takeover,
        serves every request of the load, and a later takeover succeeds.
        """
        self._raisedAt("after-adopt", "adopt", "received")

    def test_raiseAfterSwitch(self) -> None:
        """
        A successor that raises after the switch exits non-zero saying
        where and why it failed, releasing the ports without shutting them
        down; the incumbent accepts again and serves every request of the
        load, and a later takeover succeeds.
        """
        self._raisedAt("after-switch", "switch", "switched")


class HangRollbackTests(TestCase):
    """
    The successor stops making progress.
    """

    def test_hangAfterSwitch(self) -> None:
        """
        A successor that hangs after the switch (both processes run with
        C{--takeover-timeout 2}): after 2 s the incumbent abandons the
        takeover (step C{switched}), hangs up, accepts again and reports
        generation 0 with its own pid; the successor then rolls back and
        exits non-zero saying what went wrong, after serving what it had
        accepted.  No request of the load is refused or fails, and a later
        takeover succeeds.
        """
        rollback = _Rollback(self, "hang:after-switch", ("--takeover-timeout", "2"))
        abandoned = rollback.waitAbandoned("switched")
        self.assertEqual(abandoned.group("reason"), "the successor did not commit within 2 s")
        # Not before the timeout: measured from the successor's start,
        # which comes before the switch that starts the timer, so a slow
        # machine can only lengthen it.
        self.assertGreaterEqual(time.monotonic() - rollback.startedSuccessor, 2.0)
        failed = rollback.successor.waitFor(FAILED, EXIT_TIMEOUT)
        self.assertEqual(failed.group("step"), "switch", failed.string)
        self.assertNotEqual(rollback.successor.waitForExit(EXIT_TIMEOUT), 0)
        rollback.finish()
