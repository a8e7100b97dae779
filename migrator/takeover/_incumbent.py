# -*- test-case-name: tests.test_incumbent -*-
"""
The incumbent's half of a takeover: a state machine driven by its
successor's PB calls.  Its states and transitions are in one table,
L{migrator.takeover._steps.TRANSITIONS}; every step goes through
L{Incumbent._expect} (is this step allowed now?) and L{Incumbent._advance}
(go to the next state and arm the timeout for what comes next).

Until C{commit} the incumbent owns everything: it keeps its ports (it only
stops I{accepting} on them, at C{capture}, in the same reactor turn as the
capture, so that every connection it holds is either sent or counted as
staying) and its connections (frozen at C{capture}: not reading, not
writing, their scheduled calls suspended), so an abort just resumes
accepting and thaws the connections.  An abort happens on the successor's
request, when its PB connection drops, when a step takes longer than its
timeout (the short handshake timeout for C{received}, the takeover timeout
for the others), when a message is malformed, or when its report does not
match what was sent; the incumbent then says farewell on the frame channel
(L{migrator.takeover._messages.Farewell}).  At C{commit} the incumbent
releases its copies (close, never C{shutdown}) and from then on only serves
the connections it already has.  Asked to stop during a takeover, it lets
the takeover finish first (L{migrator.takeover._stopping}).

The messages are the typed records of L{migrator.takeover._messages};
L{migrator.takeover._session.ControlSession} converts them from and to
plain dictionaries at the PB boundary.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from migrator.state._registry import AdapterRegistry
from migrator.takeover._attempt import Attempt, Peer
from migrator.takeover._capturing import CapturesConnections
from migrator.takeover._messages import (
    BeginAnswer,
    BeginRequest,
    CommitAnswer,
    Farewell,
    PortsMessage,
    PreparedReport,
    ReceivedReport,
    RestoredReport,
    SwitchAnswer,
)
from migrator.takeover._ports import ListenerRegistry, UnsupportedPort
from migrator.takeover._refused import TakeoverRefused as TakeoverRefused
from migrator.takeover._steps import (
    ABORTABLE,
    HANDSHAKE,
    IDLE,
    Faults,
    ProtocolError,
    advance,
)
from migrator.takeover._stopping import StopsPolitely
from migrator.takeover._undeclared import undeclaredRefusal
from migrator.takeover._unmovable import UnmovableGuard

_log = Logger()

#: After a commit, how long the moved connections may stay frozen here if
#: the successor does not hang up (it does once it has the answer).
RELEASE_WAIT = 1.0


@attrs.define(eq=False)
class Incumbent(StopsPolitely, CapturesConnections):
    """
    Answers takeover requests for the ports in C{registry}.

    @ivar onHandedOff: called with the successor's description once a
        takeover has committed.
    @ivar takeoverTimeout: the longest any one step may take, in seconds.
    @ivar handshakeTimeout: the longest the successor may take to
        acknowledge the ports after C{begin} (C{received}); at most
        C{takeoverTimeout}.  A peer that sends C{begin} and then nothing
        holds the takeover no longer than this.
    @ivar settleTimeout: the longest the capture step waits for busy
        connections to go idle (at most a third of C{takeoverTimeout}).
    """

    Refused = TakeoverRefused

    _reactor: Any
    registry: ListenerRegistry
    adapters: AdapterRegistry
    identity: Callable[[], dict[str, Any]]
    onHandedOff: Callable[[dict[str, Any]], None]
    #: Called when the committed successor hangs up (the drain may end now).
    onSuccessorDetached: Callable[[], None] | None = None
    #: Called once this process has closed its copies of the connections
    #: that moved (after the commit): the drain may end now.
    onReleased: Callable[[], None] | None = None
    takeoverTimeout: float = 30.0
    handshakeTimeout: float = 10.0
    #: The longest the capture waits for busy connections (an HTTP request
    #: being answered) to go idle, so that they move rather than drain.
    settleTimeout: float = 5.0
    clock: Callable[[], float] = time.time
    #: Failures to inject on purpose (rollback drills), from the
    #: composition root.
    faults: Faults = attrs.field(factory=Faults)
    #: Set by L{stop}: no new takeover begins, and the one in progress
    #: finishes (commit or abort) before this process stops.
    stopping: bool = False
    current: Attempt | None = None
    handedOffTo: dict[str, Any] | None = None
    successorSession: Peer | None = None
    successorAttached: bool = False
    #: After a commit, until all are released: the ids of the transports
    #: that moved (still open here, frozen, but no longer this process's
    #: to drain).
    releasing: frozenset[int] = frozenset()
    #: How many of them the registry counts (see openConnectionsBesides).
    releasingCounted: int = -1
    _leavingHeld: list[Any] = attrs.field(factory=list, init=False)
    #: Until all are released, what releases the rest at once (given
    #: whether to close the handles).
    _releaseRest: Callable[[bool], object] | None = None
    #: After a commit, what starts the release (when the successor hangs
    #: up, or L{RELEASE_WAIT} later).
    startRelease: Callable[[], None] | None = None
    _releaseLater: IDelayedCall | None = None
    lastAttempt: dict[str, Any] | None = None
    #: Never two: what each takeover moves and leaves behind (and the policy).
    unmovable: UnmovableGuard = attrs.field(default=attrs.Factory(
        lambda self: UnmovableGuard(self.registry, self.adapters, self.clock), takes_self=True))
    _hangs: list[Deferred[None]] = attrs.field(factory=list)
    #: Channels still sending a farewell (see L{abort}).
    _closing: int = 0
    _waitedEnough: bool = False
    _detachWait: IDelayedCall | None = None
    _stopWaiters: list[Deferred[None]] = attrs.field(factory=list)

    # -- status -------------------------------------------------------------

    def takeoverStatus(self) -> dict[str, Any] | None:
        """
        @return: the takeover in progress (successor, step, start, elapsed
            seconds), or C{None}.
        """
        return None if self.current is None else self.current.status(self.clock())

    # -- steps --------------------------------------------------------------

    def begin(self, session: Peer, request: BeginRequest) -> BeginAnswer:
        """
        Start a takeover: open a frame channel, send its other end to the
        successor with this answer, and send every listening port on it.

        @param session: the successor's connection.
        @param request: who the successor is.
        @return: who this process is and how many ports it sends.
        @raise TakeoverRefused: if this process already handed off, another
            takeover is in progress, or a port cannot be handed over.
        """
        if self.handedOffTo is not None:
            raise TakeoverRefused(
                f"this process (pid {os.getpid()}) has already handed its "
                f"service to pid {self.handedOffTo.get('pid')}"
            )
        if self.stopping:
            raise TakeoverRefused(
                f"this process (pid {os.getpid()}) is stopping; start the "
                f"service afresh once it has exited"
            )
        if self.current is not None:
            raise TakeoverRefused(
                f"a takeover is already in progress (successor pid "
                f"{self.current.successorPid}, step {self.current.state}, "
                f"{self.clock() - self.current.startedAt:.1f}s ago); try again "
                f"when it has finished"
            )
        try:
            records, fds = self.registry.handoffRecords()
        except UnsupportedPort as e:
            self.lastAttempt = {
                "outcome": "refused",
                "successor_pid": request.pid,
                "at": self.clock(),
                "step": IDLE,
                "reason": str(e),
            }
            _log.warn(
                "takeover by pid {pid} refused: {reason}", pid=request.pid, reason=str(e)
            )
            raise TakeoverRefused(str(e)) from e
        # Never two: what will move and what will stay, before any port is sent.
        # (The connections listed for it serve capture too, with those
        # added meanwhile: tens of thousands take milliseconds to list.)
        listed = list(self.registry.openConnections())
        arrivals = self.registry.noteArrivals()
        plan = self.unmovable.start(request.toWire(), listed)
        self._refuseUnmovable("begin")
        attempt = Attempt(
            session=session,
            successorPid=request.pid,
            request=request,
            startedAt=self.clock(),
        )
        attempt.keepListed(listed, arrivals)
        channelFd = attempt.openChannel(self._reactor)
        attempt.sentPorts = len(fds)
        attempt.records = records
        self.current = attempt
        # (Until the attempt is closed: committed or abandoned.)
        attempt.pauseCollector()
        _log.info(
            "takeover requested by pid {pid} (Python {python}): sending "
            "{count} listening port(s)",
            pid=attempt.successorPid,
            python=request.python,
            count=len(fds),
        )
        # The channel's socket rides with the bytes of this call's answer.
        session.sendFileDescriptor(channelFd)
        assert attempt.channel is not None
        sent = attempt.channel.sendMessage(PortsMessage(tuple(records)).toBytes(), fds)
        # If the channel closes before the message went out, the takeover
        # was abandoned, and that is logged on its own.
        sent.addErrback(lambda _: None)
        self._advance(attempt, "begin")
        me = self.identity()
        return BeginAnswer(
            pid=me["pid"],
            generation=me["generation"],
            python=me["python"],
            ports=len(fds),
            # (The plan looked at every open connection.)
            connections=self.unmovable.planned.total if self.unmovable.planned else 0,
            plan=plan,
            command=me.get("command"),
            lineage=tuple(me.get("lineage", ())),
        )

    def received(self, session: Peer, report: ReceivedReport) -> None:
        """
        The successor has the frame channel and the ports: the handshake is
        over, and the successor has the takeover timeout to start its
        service.

        @param session: the successor's connection.
        @param report: how many port descriptors arrived.
        @raise TakeoverRefused: (and the takeover is abandoned) if the step
            is out of order or the count does not match.
        """
        attempt = self._expect(session, "received")
        if report.ports != attempt.sentPorts:
            self._refuse(
                attempt,
                f"the successor received {report.ports} of {attempt.sentPorts} "
                f"listening ports",
                f"count mismatch: sent {attempt.sentPorts} ports, you received "
                f"{report.ports}",
            )
        self._advance(attempt, "received")

    def prepared(self, session: Peer, report: PreparedReport) -> None:
        """
        The successor's service runs on the adopted ports (not accepting).

        @param session: the successor's connection.
        @param report: what it received, adopted and left unclaimed.
        @raise TakeoverRefused: (and the takeover is abandoned) if the step
            is out of order, the count does not match, or ports would be
            closed without C{--close-undeclared-ports}.
        """
        attempt = self._expect(session, "prepared")
        if report.received != attempt.sentPorts:
            self._refuse(
                attempt,
                f"the successor received {report.received} of {attempt.sentPorts} "
                f"listening ports",
                f"count mismatch: sent {attempt.sentPorts} ports, you received "
                f"{report.received}",
            )
        if (why := undeclaredRefusal(report.unclaimed, report.closeUndeclared)) is not None:
            self._refuse(attempt, why)
        attempt.report = report
        self._advance(attempt, "prepared")
        _log.info(
            "successor pid {pid} adopted {adopted} port(s) ({unclaimed} not "
            "declared by its service); prepare took {ms:.1f} ms",
            pid=attempt.successorPid,
            adopted=report.adopted,
            unclaimed=len(report.unclaimed),
            ms=(self.clock() - attempt.startedAt) * 1000,
        )

    def restored(self, session: Peer, report: RestoredReport) -> None:
        """
        The successor restored the connections (not reading yet).

        @param session: the successor's connection.
        @param report: how many it restored.
        @raise TakeoverRefused: (and the takeover is abandoned) if the step
            is out of order or the count does not match.
        """
        attempt = self._expect(session, "restored")
        assert attempt.captured is not None
        if report.connections != attempt.captured.count:
            self._refuse(
                attempt,
                f"the successor restored {report.connections} of "
                f"{attempt.captured.count} connections",
                f"count mismatch: sent {attempt.captured.count} connections, you "
                f"restored {report.connections}",
            )
        self._advance(attempt, "restored")

    def _released(self) -> None:
        self.releasing = frozenset()
        self.releasingCounted = -1
        self._leavingHeld = []
        self._releaseRest = None
        self.startRelease = None
        if self._releaseLater is not None and self._releaseLater.active():
            self._releaseLater.cancel()
        self._releaseLater = None
        if self.onReleased is not None:
            self.onReleased()

    def finishRelease(self, close: bool = True) -> None:
        """
        Let go at once of the moved connections not released yet (the
        release after a commit goes a few milliseconds' worth per turn):
        before this process stops, so that nothing of theirs runs, or is
        closed by a shutdown, here.

        @param close: if false (this process exits next), their handles
            are left for the exit to close, as the release would.
        """
        if self._releaseRest is not None:
            self._releaseRest(close)

    def switch(self, session: Peer) -> SwitchAnswer:
        """
        Stop accepting on every port (the kernel's backlog keeps queueing):
        the successor accepts from now on.

        @param session: the successor's connection.
        @return: how many ports stopped accepting.
        @raise TakeoverRefused: (and the takeover is abandoned) if the step
            is out of order.
        """
        attempt = self._expect(session, "switch")
        self._advance(attempt, "switch")
        _log.info(
            "the successor accepts now (this process stopped accepting on "
            "{count} port(s) before the capture)",
            count=attempt.paused,
        )
        return SwitchAnswer(attempt.paused)

    def commit(self, session: Peer) -> CommitAnswer:
        """
        Let go of the ports and the moved connections (close, never
        C{shutdown}); from now on this process only drains what stayed.

        @param session: the successor's connection.
        @return: the successor's generation, the ports and connections
            released, how long accepting was paused.
        @raise TakeoverRefused: (and the takeover is abandoned) if the step
            is out of order.
        """
        attempt = self._expect(session, "commit")
        self._advance(attempt, "commit")
        released = self.registry.releaseAll()
        moved = 0
        if attempt.captured is not None:
            moved = attempt.captured.count
            # Closing this process's copies (10,000 of them: tens of ms)
            # waits until the successor has the answer (it serves them only
            # then; meanwhile they stay frozen): it hangs up once it has.
            # If this process then exits, it lets go of them all at once
            # without closing (finishRelease, cheaper); else the release
            # goes a few milliseconds' worth per turn.  A successor that
            # does not hang up has them released a while later anyway.
            captured = attempt.captured

            def allNow(close: bool) -> object:
                # (Before the release began: finishRelease.)
                return captured.release(None, self._released, close)

            def release() -> None:
                # (Once: by the hang-up or the timer, whichever comes
                # first; _released cancels the timer.)
                if self._releaseRest is allNow:
                    self._releaseRest = captured.release(
                        partial(self._reactor.callLater, 0), self._released
                    )

            self._releaseRest = allNow
            self.startRelease = release
            # (Nothing to close: the rest of the release at once.)
            wait = RELEASE_WAIT if captured.count else 0
            self._releaseLater = self._reactor.callLater(wait, release)
        now = self.clock()
        pausedMs = (now - (attempt.pausedAt or now)) * 1000
        totalMs = (now - attempt.startedAt) * 1000
        me = self.identity()
        successor = {
            "pid": attempt.successorPid,
            "python": attempt.request.python,
            "generation": me["generation"] + 1,
        }
        self.handedOffTo = successor
        self.successorSession = session
        self.successorAttached = True
        leaving = frozenset(map(id, attempt.captured.transports)) if attempt.captured else frozenset()
        if attempt.captured is not None:
            self.releasing = leaving
            # (Held, so that each id stays theirs and the registry still
            # counts them, until they are released: see
            # openConnectionsBesides.)
            self._leavingHeld = list(attempt.captured.transports)
            self.releasingCounted = attempt.captured.ported
        unmovable = self.unmovable.committed(
            attempt.captured.moved if attempt.captured else {}, leaving, self.releasingCounted
        )
        if closed := attempt.closeBusyLeft(self.registry, self.adapters, leaving):
            _log.info("closed {n} connection(s) still busy at the successor's deadline", n=closed)
        self.lastAttempt = {**attempt.committedRecord(now, len(released)), **unmovable}
        self.current = None
        attempt.close()
        unclaimed = attempt.report.unclaimed if attempt.report is not None else ()
        _log.info(
            "takeover committed: {moved} port(s) and {connections} connection(s) "
            "now belong to pid {pid} "
            "(generation {generation}); accepting was paused for "
            "{paused:.2f} ms, the whole takeover took {total:.1f} ms; "
            "not declared by the successor and closed: {unclaimed}",
            moved=len(released),
            connections=moved,
            pid=attempt.successorPid,
            generation=successor["generation"],
            paused=pausedMs,
            total=totalMs,
            unclaimed=", ".join(unclaimed) or "none",
        )
        self._reactor.callLater(0, self.onHandedOff, successor)
        if self.stopping:
            self._waitForDetach()
            self._settled()
        return CommitAnswer(
            generation=successor["generation"],
            released=tuple(released),
            connections=moved,
            acceptPausedMs=round(pausedMs, 3),
            unmovable=unmovable["unmovable"],
            classes=unmovable["classes"],
            split=unmovable["split"],
            splitClasses=unmovable["split_classes"],
        )

    def abort(self, reason: str, session: Peer | None = None) -> bool:
        """
        Abandon the takeover in progress (if C{session} is given, only if it
        is that session's): resume accepting, thaw the frozen connections,
        close the channel.

        @param reason: why, for the log and C{lastAttempt}.
        @param session: only abandon this session's takeover.
        @return: whether anything was abandoned.
        """
        attempt = self.current
        if attempt is None or (session is not None and attempt.session is not session):
            return False
        if attempt.state not in ABORTABLE:
            return False
        attempt.disarm()
        self.current = None
        resumed = attempt.undo(self.registry)
        # Tell the successor that this was on purpose (so that it rolls
        # back even if this process exits soon after), then close.
        self._closing += 1
        closed = attempt.close(self._reactor, Farewell(reason, self.stopping).toBytes())
        closed.addCallback(self._closed)
        self.lastAttempt = {
            "outcome": "abandoned",
            "successor_pid": attempt.successorPid,
            "at": self.clock(),
            "step": attempt.state,
            "reason": reason,
        }
        if self.stopping:
            _log.warn(
                "takeover by pid {pid} abandoned at step {step}: {reason}; this "
                "process was asked to stop: it now stops as it would have "
                "without a takeover, closing its ports and connections",
                pid=attempt.successorPid,
                step=attempt.state,
                reason=reason,
            )
        else:
            _log.warn(
                "takeover by pid {pid} abandoned at step {step}: {reason}; this "
                "process keeps serving on all its ports{resumed}",
                pid=attempt.successorPid,
                step=attempt.state,
                reason=reason,
                resumed=f" (accepting again on {resumed})" if resumed else "",
            )
        return True

    def _refuseUnmovable(
        self, step: str, session: Peer | None = None, rest: list[Any] | None = None
    ) -> None:
        # Never two: refuse (abandoning session's takeover) if connections no
        # adapter can move would stay and the successor's policy is refuse.
        if (refusal := self.unmovable.check(step, rest)) is not None:
            if session is not None:
                self.abort(refusal.message, session)
            self.lastAttempt = refusal.record
            raise TakeoverRefused(refusal.message)

    # -- the state machine ------------------------------------------------------

    def _expect(self, session: Peer, step: str) -> Attempt:
        """
        The takeover of C{session}, if C{step} is allowed in its state
        (L{TRANSITIONS}).

        @raise TakeoverRefused: if C{session} has no takeover in progress,
            or (and then the takeover is abandoned) if the step is not
            allowed now.
        """
        attempt = self.current
        if attempt is None or attempt.session is not session:
            raise TakeoverRefused(f"{step}: no takeover of yours is in progress")
        try:
            advance(attempt.state, step)
        except ProtocolError as e:
            self._refuse(attempt, f"protocol error: {step} at step {attempt.state}", str(e))
        return attempt

    def _advance(self, attempt: Attempt, step: str) -> None:
        """
        Take C{step}: go to the state L{TRANSITIONS} gives, and arm the
        timeout for what the successor must do next (if anything).
        """
        transition = advance(attempt.state, step)
        attempt.state = transition.state
        attempt.disarm()
        if transition.waitingFor is None:
            return
        limit = self.takeoverTimeout
        if transition.limit == HANDSHAKE:
            limit = min(self.handshakeTimeout, self.takeoverTimeout)
        waitingFor = transition.waitingFor

        def expired() -> None:
            if self.abort(
                f"the successor did not {waitingFor} within {limit:g} s", attempt.session
            ):
                attempt.session.hangUp()

        attempt.arm(self._reactor, limit, expired)

    def _refuse(
        self,
        attempt: Attempt,
        reason: str,
        toPeer: str | None = None,
        from_: BaseException | None = None,
    ) -> NoReturn:
        """
        Abandon C{attempt} for C{reason} and refuse the step.

        @param toPeer: what the successor is told (by default C{reason}).
        @raise TakeoverRefused: always.
        """
        self.abort(reason, attempt.session)
        raise TakeoverRefused(toPeer or reason) from from_
