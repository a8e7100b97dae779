# -*- test-case-name: tests.test_stopping -*-
"""
An incumbent asked to stop (C{SIGTERM}, twistd's shutdown) while a
successor is in the middle of a takeover finishes handing over first: it
must not close the ports and connections the successor is about to serve.
If the takeover commits, it stops once the successor has its answer; if it
is abandoned, it stops as it would have without one (and its farewell says
so, so that the successor does not claim it serves on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from migrator.takeover._attempt import Attempt, Peer

_log = Logger()


class StopsPolitely:
    """
    The part of L{migrator.takeover._incumbent.Incumbent} that lets a
    takeover in progress finish before the process stops.
    """

    # What it uses of the incumbent (declared here for type checkers).
    _reactor: Any
    takeoverTimeout: float
    stopping: bool
    current: Attempt | None
    handedOffTo: dict[str, Any] | None
    successorSession: Peer | None
    successorAttached: bool
    onSuccessorDetached: Callable[[], None] | None
    startRelease: Callable[[], None] | None
    _closing: int
    _waitedEnough: bool
    _detachWait: IDelayedCall | None
    _stopWaiters: list[Deferred[None]]

    def abort(self, reason: str, session: Peer | None = None) -> bool:
        raise NotImplementedError()

    def stop(self) -> Deferred[None]:
        """
        This process was asked to stop (C{SIGTERM}, twistd's shutdown):
        refuse new takeovers, and let the one in progress finish first, so
        that no port or connection a successor is about to serve is closed
        under it.

        @return: a L{Deferred} that fires once no takeover is in progress
            (it committed, then the successor hung up or the takeover
            timeout passed; or it was abandoned, and its farewell sent).
        """
        self.stopping = True
        d: Deferred[None] = Deferred()
        self._stopWaiters.append(d)
        if self.current is not None:
            _log.info(
                "asked to stop during a takeover by pid {pid} (step {step}): "
                "finishing the takeover first",
                pid=self.current.successorPid,
                step=self.current.state,
            )
        if self.handedOffTo is not None:
            self._waitForDetach()
        self._settled()
        return d

    def detached(self, session: Peer) -> None:
        """
        A control connection was lost: abandon its takeover if it had one
        in progress, or note that the committed successor has hung up.

        @param session: the connection's session.
        """
        if self.abort("the successor disconnected", session):
            return
        if self.successorSession is session:
            self.successorAttached = False
            if self.onSuccessorDetached is not None:
                # (Exiting now, this process lets go of the moved
                # connections at once: finishRelease.)
                self.onSuccessorDetached()
            if self.startRelease is not None:
                # Staying to drain: their release goes on, per turn.
                self.startRelease()
            self._settled()

    def _waitForDetach(self) -> None:
        """
        Until the committed successor hangs up, the answer to its commit may
        still be on its way: a stopping process waits for that, at most the
        takeover timeout.
        """

        def enough() -> None:
            self._waitedEnough = True
            self._settled()

        if self.successorAttached and not self._waitedEnough and self._detachWait is None:
            self._detachWait = self._reactor.callLater(self.takeoverTimeout, enough)

    def _closed(self, _: object = None) -> None:
        self._closing -= 1
        self._settled()

    def _settled(self) -> None:
        """
        Fire the L{stop} waiters once nothing of a takeover is left.
        """
        if not self._stopWaiters or self.current is not None or self._closing:
            return
        if self.handedOffTo is not None and self.successorAttached and not self._waitedEnough:
            return
        if self._detachWait is not None and self._detachWait.active():
            self._detachWait.cancel()
        self._detachWait = None
        waiters, self._stopWaiters = self._stopWaiters, []
        for d in waiters:
            d.callback(None)
