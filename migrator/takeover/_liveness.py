# -*- test-case-name: tests.test_liveness -*-
"""
Is the incumbent still alive?  A successor must tell an incumbent that
I{died} (its process is gone) from one that merely hung up: the first
leaves the service to the successor, which then completes the takeover on
its own; the second has taken its sockets back.

A hang-up alone does not say which: a process killed by C{SIGKILL} closes
its sockets (the successor sees the hang-up) a little before the kernel
reports it as exited.  L{ProcessWatch} follows one process by a pidfd
(C{os.pidfd_open}, which cannot be fooled by a reused pid), or by its pid
where pidfds are missing; L{waitForDeath} gives it a bounded grace to exit.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime


def processAlive(pid: int) -> bool:
    """
    Is process C{pid} alive?  A zombie (exited, not yet reaped) is not.

    @param pid: a process id.
    @return: whether a live process has it.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


@attrs.define(eq=False)
class ProcessWatch:
    """
    One process followed until it dies.

    Descriptors: owns its pidfd (if any) until L{close}.

    @ivar pid: the process id.
    """

    pid: int
    _pidfd: int | None = None
    _alive: Callable[[int], bool] = attrs.field(default=processAlive, repr=False)

    @classmethod
    def open(cls, pid: int) -> ProcessWatch:
        """
        Follow process C{pid}, by a pidfd if this system has them.

        @param pid: a process id (from C{SO_PEERCRED}, say).
        @return: the watch; if the process is already gone it is L{dead}.
        """
        pidfd = None
        opener = getattr(os, "pidfd_open", None)
        if opener is not None and pid > 0:
            try:
                pidfd = opener(pid)
            except ProcessLookupError:
                return cls(pid, None, lambda _: False)
            except OSError:
                pidfd = None
        return cls(pid, pidfd)

    def dead(self) -> bool:
        """
        @return: whether the process has exited (a zombie has).
        """
        if self._pidfd is None:
            return not self._alive(self.pid)
        # A pidfd becomes readable when its process exits.
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        """
        Stop following the process (close the pidfd).
        """
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            os.close(pidfd)


def waitForDeath(
    clock: IReactorTime,
    watch: ProcessWatch,
    grace: float,
    decided: Callable[[], bool] = lambda: False,
    interval: float = 0.005,
) -> Deferred[bool]:
    """
    Wait (at most C{grace} seconds, checking every C{interval}) for the
    watched process to die.

    @param clock: the reactor's clock.
    @param watch: the process.
    @param grace: the longest wait, in seconds.
    @param decided: stop waiting as soon as this says so (e.g. the
        incumbent said it abandoned the takeover on purpose).
    @return: a L{Deferred} firing with whether it died (C{False} if
        C{decided} stopped the wait first).  Cancelling it fires it with
        C{False}.
    """
    deadline = clock.seconds() + grace
    pending: list[IDelayedCall] = []

    def cancel(d: Deferred[bool]) -> None:
        for call in pending:
            if call.active():
                call.cancel()
        d.callback(False)

    result: Deferred[bool] = Deferred(cancel)

    def check() -> None:
        pending[:] = []
        if decided():
            result.callback(False)
        elif watch.dead():
            result.callback(True)
        elif clock.seconds() >= deadline:
            result.callback(False)
        else:
            pending.append(clock.callLater(interval, check))

    check()
    return result
