# -*- test-case-name: tests.test_liveness -*-
"""
Tests for L{migrator.takeover._liveness}: telling a process that died from
one that lives (L{processAlive}, L{ProcessWatch}), and the bounded wait for
a process that hung up to be reported gone (L{waitForDeath}).
"""

from __future__ import annotations

import builtins
import io
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._liveness import ProcessWatch, processAlive, waitForDeath
from tests._fakes import FakeWatch


def child() -> tuple[int, int]:
    """
    Fork a child that exits as soon as the returned pipe end is closed.

    @return: its pid and the pipe's write end (the caller's to close).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(w)
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    return pid, w


class ProcessAliveTests(SynchronousTestCase):
    """
    Tests for L{processAlive}.
    """

    def test_self(self) -> None:
        """
        This process is alive.
        """
        self.assertTrue(processAlive(os.getpid()))

    def test_notAPid(self) -> None:
        """
        Zero and negative numbers are never alive processes (and are never
        passed to C{kill}, where they mean process groups).
        """
        self.patch(os, "kill", lambda pid, sig: self.fail("kill called"))
        self.assertFalse(processAlive(0))
        self.assertFalse(processAlive(-1))

    def test_noSuchProcess(self) -> None:
        """
        A pid no process has is not alive.
        """
        with open("/proc/sys/kernel/pid_max") as f:
            pidMax = int(f.read())
        self.assertFalse(processAlive(pidMax + 1))

    def test_zombie(self) -> None:
        """
        A process that exited but was not reaped is not alive.
        """
        def kill(pid: int, sig: int) -> None:
            self.assertEqual((pid, sig), (12345, 0))

        self.patch(os, "kill", kill)
        real = open

        def fakeOpen(path: str, mode: str = "r", *a: Any, **kw: Any) -> Any:
            if path == "/proc/12345/stat":
                return io.BytesIO(b"12345 (twistd (x)) Z 1 2 3")
            return real(path, mode, *a, **kw)

        self.patch(builtins, "open", fakeOpen)
        self.assertFalse(processAlive(12345))


class ProcessWatchTests(SynchronousTestCase):
    """
    Tests for L{ProcessWatch}.
    """

    def test_pidfd(self) -> None:
        """
        A watched child is not dead while it runs, and is once it has
        exited, reaped or not (by a pidfd where the system has them).
        """
        pid, w = child()
        watch = ProcessWatch.open(pid)
        self.addCleanup(watch.close)
        self.assertFalse(watch.dead())
        os.close(w)
        os.waitpid(pid, 0)
        self.assertTrue(watch.dead())

    def test_withoutPidfd(self) -> None:
        """
        Without C{os.pidfd_open}, the watch asks L{processAlive}.
        """
        real = os.pidfd_open
        del os.pidfd_open
        self.addCleanup(setattr, os, "pidfd_open", real)
        pid, w = child()
        watch = ProcessWatch.open(pid)
        self.assertIsNone(watch._pidfd)
        self.assertFalse(watch.dead())
        os.close(w)
        os.waitpid(pid, 0)
        self.assertTrue(watch.dead())

    def test_goneAlready(self) -> None:
        """
        A process that does not exist when the watch opens is dead.
        """
        with open("/proc/sys/kernel/pid_max") as f:
            pidMax = int(f.read())
        self.assertTrue(ProcessWatch.open(pidMax + 1).dead())

    def test_close(self) -> None:
        """
        L{ProcessWatch.close} closes the pidfd, once.
        """
        watch = ProcessWatch.open(os.getpid())
        fd = watch._pidfd
        self.assertIsNotNone(fd)
        watch.close()
        watch.close()
        self.assertRaises(OSError, os.fstat, fd)


class WaitForDeathTests(SynchronousTestCase):
    """
    Tests for L{waitForDeath}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.alive = True
        self.watch: Any = FakeWatch(7, lambda pid: self.alive)

    def test_alreadyDead(self) -> None:
        """
        A process already gone: C{True} at once.
        """
        self.alive = False
        self.assertTrue(self.successResultOf(waitForDeath(self.clock, self.watch, 3.0)))

    def test_diesWithinGrace(self) -> None:
        """
        A process that dies within the grace: C{True} as soon as it is seen
        gone, and nothing left scheduled.
        """
        d = waitForDeath(self.clock, self.watch, 3.0, interval=0.01)
        self.clock.advance(0.5)
        self.assertNoResult(d)
        self.alive = False
        self.clock.advance(0.01)
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_livesOn(self) -> None:
        """
        A process alive when the grace is over: C{False}, then.
        """
        d = waitForDeath(self.clock, self.watch, 3.0, interval=0.01)
        self.clock.pump([0.01] * 290)
        self.assertNoResult(d)
        self.clock.pump([0.01] * 20)
        self.assertFalse(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_decided(self) -> None:
        """
        Once C{decided} says so (the incumbent said it gave up), the wait
        ends with C{False}, even if the process then dies.
        """
        said = []
        d = waitForDeath(self.clock, self.watch, 3.0, lambda: bool(said), interval=0.01)
        said.append(True)
        self.alive = False
        self.clock.advance(0.01)
        self.assertFalse(self.successResultOf(d))

    def test_cancel(self) -> None:
        """
        Cancelling the wait fires it with C{False} and leaves nothing
        scheduled.
        """
        d = waitForDeath(self.clock, self.watch, 3.0)
        d.cancel()
        self.assertFalse(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])
