# -*- test-case-name: tests.test_check -*-
"""
Tests for L{migrator.takeover._check}: a successor's health check, run on
a fake process reactor (the test plays the command: its output and its
end), with time on a L{MemoryReactorClock}.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._check import (
    GRACE,
    TAIL_LINES,
    CheckResult,
    HealthCheck,
    checkEnvironment,
)
from migrator.takeover._failure import TakeoverFailed
from migrator.takeover._successor import Successor
from tests.test_successor import BEGUN, KEYS, SuccessorTestMixin


@attrs.define(eq=False)
class FakeProcess:
    """
    What C{spawnProcess} returned: the command's process, as the test
    plays it.
    """

    protocol: Any
    executable: str
    args: list[str]
    env: dict[str, str]
    pid: int | None = 4321
    stdinClosed: bool = False
    lost: int = 0

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def loseConnection(self) -> None:
        self.lost += 1

    def end(self, code: int | None = 0, signum: int | None = None) -> None:
        reason: Exception = ProcessDone(0) if code == 0 else ProcessTerminated(code, signum)
        self.protocol.processEnded(Failure(reason))


class ProcessReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that records the processes spawned.
    """

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.processes: list[FakeProcess] = []

    def spawnProcess(
        self, protocol: Any, executable: str, args: list[str], env: dict[str, str]
    ) -> FakeProcess:
        process = FakeProcess(protocol, executable, list(args), dict(env))
        self.processes.append(process)
        protocol.makeConnection(process)
        return process


class HealthCheckTests(SynchronousTestCase):
    """
    L{HealthCheck} runs its command in a session of its own, with the
    service's addresses in its environment, bounded by its timeout.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.killed: list[int] = []
        self.check = HealthCheck(
            self.reactor,
            "curl -fs http://$MIGRATOR_PORTS/",
            timeout=10.0,
            environment=lambda: {"MIGRATOR_PORTS": "127.0.0.1:8080"},
            kill=self.killed.append,
            clock=self.reactor.seconds,
        )

    def test_spawn(self) -> None:
        """
        The command runs as C{/bin/sh -c COMMAND} behind a wrapper that
        makes it a session leader, with this process's environment plus
        the check's, and nothing on its standard input.
        """
        self.check.run()
        [process] = self.reactor.processes
        self.assertEqual(process.executable, sys.executable)
        self.assertEqual(process.args[-3:], ["/bin/sh", "-c", "curl -fs http://$MIGRATOR_PORTS/"])
        self.assertIn("os.setsid()", process.args[process.args.index("-c") + 1])
        self.assertEqual(process.env["MIGRATOR_PORTS"], "127.0.0.1:8080")
        self.assertEqual(process.env.get("PATH"), os.environ.get("PATH"))
        self.assertTrue(process.stdinClosed)

    def test_passes(self) -> None:
        """
        Exit status 0 in time passes; the log says so.
        """
        with capturedLogs() as events:
            d = Deferred.fromCoroutine(self.check())
            self.reactor.advance(0.25)
            self.reactor.processes[0].end(0)
        self.assertIsNone(self.successResultOf(d))
        text = " ".join(str(e.get("log_format", "")).format(**e) for e in events)
        self.assertIn("the health check passed (exited 0 after 0.25 s)", text)

    def test_fails(self) -> None:
        """
        A non-zero exit fails with L{TakeoverFailed}, saying how it ended
        and quoting the last lines of its output (stdout and stderr alike).
        """
        d = Deferred.fromCoroutine(self.check())
        process = self.reactor.processes[0]
        for n in range(TAIL_LINES + 5):
            process.protocol.childDataReceived(1, b"line %d\n" % n)
        process.protocol.childDataReceived(2, b"curl: (22) 404 Not Found\n")
        process.end(22)
        e = self.failureResultOf(d, TakeoverFailed).value
        message = str(e)
        self.assertTrue(message.startswith("the health check exited 22 after 0.00 s: curl"), message)
        self.assertIn("curl: (22) 404 Not Found", message)
        self.assertNotIn("line 5 ", message)
        self.assertIn("line 14 | curl", message)
        self.assertNotIn("\n", message)

    def test_timeout(self) -> None:
        """
        At its timeout the check's whole session is killed; it fails as
        timed out; its pipes are closed if they stay open.
        """
        d = self.check.run()
        process = self.reactor.processes[0]
        self.reactor.advance(10.0)
        self.assertEqual(self.killed, [4321])
        self.assertNoResult(d)
        self.reactor.advance(GRACE)
        self.assertEqual(process.lost, 1)
        process.end(None, signal.SIGKILL)
        result = self.successResultOf(d)
        self.assertFalse(result.ok)
        self.assertTrue(result.timedOut)
        self.assertEqual(result.describe(), "timed out after 12.0 s")

    def test_endedBeforeTimeout(self) -> None:
        """
        A check that ends leaves no timer behind.
        """
        d = self.check.run()
        self.reactor.processes[0].end(1)
        self.assertEqual(self.successResultOf(d).code, 1)
        self.assertEqual([c for c in self.reactor.getDelayedCalls() if c.active()], [])

    def test_cancel(self) -> None:
        """
        Cancelling the check (the takeover is abandoned) kills it.
        """
        d = Deferred.fromCoroutine(self.check())
        d.cancel()
        self.assertEqual(self.killed, [4321])
        self.failureResultOf(d, CancelledError)

    def test_outputBounded(self) -> None:
        """
        Only the end of a large output is kept.
        """
        d = self.check.run()
        process = self.reactor.processes[0]
        for _ in range(100):
            process.protocol.childDataReceived(1, b"x" * 1000 + b"\n")
        process.protocol.childDataReceived(1, b"the end\n")
        process.end(0)
        result = self.successResultOf(d)
        self.assertLessEqual(len(result.output), 64 * 1024)
        self.assertTrue(result.output.endswith(b"the end\n"))


class CheckResultTests(SynchronousTestCase):
    """
    L{CheckResult} describes how a check ended.
    """

    def test_describe(self) -> None:
        """
        Exit code, signal or timeout, with the time taken.
        """
        self.assertEqual(CheckResult("c", 0, seconds=0.5).describe(), "exited 0 after 0.50 s")
        self.assertTrue(CheckResult("c", 0).ok)
        self.assertEqual(
            CheckResult("c", None, signal=9, seconds=1).describe(),
            "killed by signal 9 after 1.00 s",
        )
        self.assertFalse(CheckResult("c", None, signal=9).ok)

    def test_tail(self) -> None:
        """
        The tail skips blank lines, keeps the last ones, indented.
        """
        result = CheckResult("c", 1, output=b"a\n\n  \nb\r\n  c\n")
        self.assertEqual(result.lines(), ["a", "b", "  c"])
        self.assertEqual(result.tail(), "a | b | c")
        long = CheckResult("c", 1, output=b"x" * 5000)
        self.assertEqual(len(long.tail()), 1503)
        self.assertTrue(long.tail().startswith("..."))


class CheckEnvironmentTests(SynchronousTestCase):
    """
    L{checkEnvironment} tells the check where the service listens.
    """

    def test_environment(self) -> None:
        """
        Every address in order, the first TCP/UDP port number, the control
        path and the successor's pid.
        """
        env = checkEnvironment(
            [("unix", "/run/s.sock"), ("tcp", "[::1]:8443"), ("tcp", "127.0.0.1:80")],
            "/run/site/ctl",
        )
        self.assertEqual(
            env,
            {
                "MIGRATOR_PORTS": "/run/s.sock [::1]:8443 127.0.0.1:80",
                "MIGRATOR_PORT": "8443",
                "MIGRATOR_CONTROL": "/run/site/ctl",
                "MIGRATOR_SUCCESSOR_PID": str(os.getpid()),
            },
        )

    def test_noInternetPort(self) -> None:
        """
        Without a TCP or UDP port there is no C{MIGRATOR_PORT}.
        """
        env = checkEnvironment([("unix", "/run/s.sock")], "/c")
        self.assertNotIn("MIGRATOR_PORT", env)


class SuccessorCheckTests(SuccessorTestMixin, SynchronousTestCase):
    """
    A successor with a health check runs it after the switch (it accepts
    by then) and before the commit; a failure rolls the takeover back.
    """

    def makeSuccessor(self, faults: str = "") -> Successor:
        successor = SuccessorTestMixin.makeSuccessor(self, faults)
        self.checks: list[Deferred[Any]] = []

        def check() -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            self.checks.append(d)
            return d

        successor.check = check
        return successor

    def test_passes(self) -> None:
        """
        The check runs once the successor accepts, at step C{check}; the
        commit is asked for only once it has passed.
        """
        d = self.toSwitched()
        self.assertIn("resumeAccepting", self.registry.calls)
        self.assertEqual(len(self.checks), 1)
        self.assertEqual(self.successor.step, "check")
        self.assertNotIn("commit", self.root.methods())
        self.checks[0].callback(None)
        self.root.answer("commit", {"generation": 5, "released": KEYS})
        self.assertEqual(self.successResultOf(d)["generation"], 5)

    def test_fails(self) -> None:
        """
        A failed check rolls the takeover back: the successor lets go of
        its ports (no shutdown) and tells the incumbent why.
        """
        d = self.toSwitched()
        self.checks[0].errback(TakeoverFailed("the health check exited 1 after 0.10 s: false"))
        self.assertFailed(d, "check", "the health check exited 1 after 0.10 s: false")
        self.assertNotIn("commit", self.root.methods())
        self.assertSuccessorHoldsNoPort()

    def test_incumbentHangsUp(self) -> None:
        """
        If the incumbent gives up while the check runs (its takeover
        timeout), the check is cancelled and the takeover rolls back.
        """
        d = self.toSwitched()
        self.alive[BEGUN["pid"]] = True
        self.root.broker.connectionLost()
        self.assertTrue(self.checks[0].called)
        e = self.failureResultOf(d, TakeoverFailed).value
        self.assertTrue(str(e).startswith("takeover failed at step check"), str(e))


class ShownTests(SynchronousTestCase):
    """
    A check's command is shown on one line, bounded.
    """

    def test_shown(self) -> None:
        """
        Newlines and runs of blanks become one space; a long command is cut.
        """
        check = HealthCheck(ProcessReactor(), "python -c 'import x\n\nx.go()'")
        self.assertEqual(check.shown(), "python -c 'import x x.go()'")
        self.assertEqual(len(HealthCheck(ProcessReactor(), "y" * 500).shown()), 200)
