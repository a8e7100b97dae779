# -*- test-case-name: tests.test_incumbent -*-
"""
The incumbent's half of a takeover: a state machine driven by its
successor's PB calls.

    idle --begin--> begun --prepared--> prepared --capture--> captured
         --restored--> restored --switch--> switched --commit--> handed off

    any failure before commit --abort--> idle (everything as it was)

Until C{commit} the incumbent owns everything: it keeps its ports (and only
stops I{accepting} at C{switch}) and its connections (frozen at C{capture}:
not reading, not writing, their scheduled calls suspended), so an abort
just resumes accepting and thaws the connections.  An
abort happens on the successor's request, when its PB connection drops, when
a step takes longer than the takeover timeout, or when its report does not
match what was sent.  At C{commit} the incumbent releases its copies (close,
never C{shutdown}) and from then on only serves the connections it already
has.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.spread import pb
from zope.interface import implementer

from migrator.state._capture import Captured, Settling, captureConnections
from migrator.state._registry import AdapterRegistry
from migrator.state._translator import describeTranslations
from migrator.state._versions import readableFrom
from migrator.takeover._channel import FrameChannel, channelPair
from migrator.takeover._ports import ListenerRegistry, UnsupportedPort
from migrator.takeover._unmovable import UnmovableGuard

_log = Logger()

IDLE = "idle"
BEGUN = "begun"
PREPARED = "prepared"
CAPTURED = "captured"
RESTORED = "restored"
SWITCHED = "switched"
COMMITTED = "committed"


class TakeoverRefused(pb.Error):
    """
    A takeover step was refused; the message says why.  Raised to the
    successor over PB.
    """


@attrs.define(eq=False)
class _Attempt:
    """
    One takeover in progress.
    """

    session: ControlSession
    successorPid: int
    info: dict[str, Any]
    startedAt: float
    state: str = BEGUN
    channel: FrameChannel | None = None
    peerEnd: socket.socket | None = None
    sentPorts: int = 0
    records: list[dict[str, Any]] = attrs.field(factory=list)
    captured: Captured | None = None
    settling: Settling | None = None
    stepStartedAt: float = 0.0
    pausedAt: float | None = None
    timeoutCall: Any = None
    report: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Incumbent:
    """
    Answers takeover requests for the ports in C{registry}.

    @ivar onHandedOff: called with the successor's description once a
        takeover has committed.
    @ivar takeoverTimeout: the longest any one step may take, in seconds.
    @ivar settleTimeout: the longest the capture step waits for busy
        connections to go idle (at most a third of C{takeoverTimeout}).
    """

    _reactor: Any
    registry: ListenerRegistry
    adapters: AdapterRegistry
    identity: Callable[[], dict[str, Any]]
    onHandedOff: Callable[[dict[str, Any]], None]
    #: Called when the committed successor hangs up (the drain may end now).
    onSuccessorDetached: Callable[[], None] | None = None
    takeoverTimeout: float = 30.0
    #: The longest the capture waits for busy connections (an HTTP request
    #: being answered) to go idle, so that they move rather than drain.
    settleTimeout: float = 5.0
    clock: Callable[[], float] = time.time
    current: _Attempt | None = None
    handedOffTo: dict[str, Any] | None = None
    successorSession: ControlSession | None = None
    successorAttached: bool = False
    lastAttempt: dict[str, Any] | None = None
    #: Never two: what each takeover will move and leave behind, and the
    #: successor's policy for connections no adapter can move.
    unmovable: UnmovableGuard = attrs.field(default=attrs.Factory(
        lambda self: UnmovableGuard(self.registry, self.adapters, self.clock), takes_self=True))

    # -- status -------------------------------------------------------------

    def takeoverStatus(self) -> dict[str, Any] | None:
        a = self.current
        if a is None:
            return None
        return {
            "successor_pid": a.successorPid,
            "step": a.state,
            "started": a.startedAt,
            "elapsed": round(self.clock() - a.startedAt, 3),
        }

    # -- steps --------------------------------------------------------------

    def begin(self, session: ControlSession, info: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(info, dict):
            raise TakeoverRefused("begin expects a dictionary")
        if self.handedOffTo is not None:
            raise TakeoverRefused(
                f"this process (pid {os.getpid()}) has already handed its "
                f"service to pid {self.handedOffTo.get('pid')}"
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
            pid = info.get("pid")
            self.lastAttempt = {
                "outcome": "refused",
                "successor_pid": pid,
                "at": self.clock(),
                "step": IDLE,
                "reason": str(e),
            }
            _log.warn("takeover by pid {pid} refused: {reason}", pid=pid, reason=str(e))
            raise TakeoverRefused(str(e)) from e
        # Never two: what will move and what will stay, before any port is sent.
        plan = self.unmovable.start(info)
        self._refuseUnmovable("begin")
        pid = info.get("pid")
        attempt = _Attempt(
            session=session,
            successorPid=pid if isinstance(pid, int) else -1,
            info=info,
            startedAt=self.clock(),
            stepStartedAt=self.clock(),
        )
        ours, theirs = channelPair()
        attempt.peerEnd = theirs
        attempt.channel = FrameChannel(
            self._reactor, ours, onClose=lambda reason: None
        )
        attempt.sentPorts = len(fds)
        attempt.records = records
        self.current = attempt
        _log.info(
            "takeover requested by pid {pid} (Python {python}): sending "
            "{count} listening port(s)",
            pid=attempt.successorPid,
            python=info.get("python"),
            count=len(fds),
        )
        # The channel's socket rides with the bytes of this call's answer.
        session.sendFileDescriptor(theirs.fileno())
        sent = attempt.channel.sendMessage(
            json.dumps({"type": "ports", "ports": records}).encode("utf-8"), fds
        )
        # If the channel closes before the message went out, the takeover
        # was abandoned, and that is logged on its own.
        sent.addErrback(lambda _: None)
        self._armTimeout(attempt, "prepare")
        me = self.identity()
        return {
            "pid": me["pid"],
            "generation": me["generation"],
            "python": me["python"],
            "ports": len(fds),
            "plan": plan,
        }

    def prepared(self, session: ControlSession, report: dict[str, Any]) -> dict[str, Any]:
        attempt = self._expect(session, BEGUN, "prepared")
        if not isinstance(report, dict):
            report = {}
        attempt.report = report
        received = report.get("received")
        if received != attempt.sentPorts:
            self.abort(
                f"the successor received {received!r} of {attempt.sentPorts} "
                f"listening ports",
                session,
            )
            raise TakeoverRefused(
                f"count mismatch: sent {attempt.sentPorts} ports, you received "
                f"{received!r}"
            )
        attempt.state = PREPARED
        attempt.stepStartedAt = self.clock()
        self._armTimeout(attempt, "ask for the connections")
        _log.info(
            "successor pid {pid} adopted {adopted} port(s) ({unclaimed} not "
            "declared by its service); prepare took {ms:.1f} ms",
            pid=attempt.successorPid,
            adopted=report.get("adopted"),
            unclaimed=len(report.get("unclaimed") or ()),
            ms=(self.clock() - attempt.startedAt) * 1000,
        )
        return {}

    def capture(
        self, session: ControlSession, request: dict[str, Any]
    ) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """
        Capture and freeze every connection that can move, and send them
        over the channel.  If some connections are busy (see L{Settling}),
        first wait for them, a bounded time.

        @return: the report, or (after a wait) a L{Deferred} firing with it.
        """
        attempt = self._expect(session, PREPARED, "capture")
        if not isinstance(request, dict):
            request = {}
        settling = Settling(
            self._reactor,
            self.registry,
            self.adapters,
            min(self.settleTimeout, self.takeoverTimeout / 3),
            claimed=self._claimed(attempt),
        )
        waiting = settling.start()
        if waiting is None:
            return self._capture(session, attempt, request)
        attempt.settling = settling
        _log.info(
            "waiting up to {timeout:g} s for {busy} busy connection(s) to finish "
            "before capturing",
            timeout=settling.timeout,
            busy=settling.busy,
        )
        return waiting.addCallback(lambda _: self._capture(session, attempt, request))

    def _capture(
        self, session: ControlSession, attempt: _Attempt, request: dict[str, Any]
    ) -> dict[str, Any]:
        settling, attempt.settling = attempt.settling, None
        if settling is not None:
            # In this reactor turn, with the capture: nothing is read between.
            settling.resume()
            _log.info(
                "waited {ms:.1f} ms for busy connections; {busy} still busy",
                ms=settling.waited * 1000,
                busy=settling.busy,
            )
        if self.current is not attempt or attempt.state != PREPARED:
            raise TakeoverRefused("capture: the takeover was abandoned while waiting")
        self._refuseUnmovable("capture", session)
        types = request.get("types") or ()
        claimed = self._claimed(attempt)
        started = self.clock()
        try:
            captured = captureConnections(
                self._reactor,
                self.registry,
                self.adapters,
                claimed,
                frozenset(t for t in types if isinstance(t, str)),
                # Versions: the newer side translates (state/_versions.py).
                readableFrom(request),
            )
        except Exception as e:
            _log.failure("capturing connections failed")
            self.abort(f"capturing connections failed: {e}", session)
            raise TakeoverRefused(f"capturing connections failed: {e}") from e
        attempt.captured = captured
        attempt.state = CAPTURED
        assert attempt.channel is not None
        sent = attempt.channel.sendMessage(captured.payload, captured.fds)
        # Abandoned before it went out: logged by abort() on its own.
        sent.addErrback(lambda _: None)
        self._armTimeout(attempt, "restore the connections")
        ms = (self.clock() - started) * 1000
        staying = sum(captured.staying.values())
        _log.info(
            "froze and sent {count} connection(s) ({size} bytes of state, "
            "{pending} unsent bytes, captured in {ms:.1f} ms); {staying} stay "
            "here and drain{why}",
            count=captured.count,
            pending=captured.pendingBytes,
            size=len(captured.payload),
            ms=ms,
            staying=staying,
            why=(": " + "; ".join(f"{n} x {r}" for r, n in sorted(captured.staying.items())))
            if staying
            else "",
        )
        if translated := describeTranslations(captured.translations):
            _log.info("translated before sending: {translated}", translated=translated)
        return {
            "connections": captured.count,
            "bytes": len(captured.payload),
            "moved": captured.moved,
            "staying": captured.staying,
            "frozen_at": captured.frozenAt,
            "translations": captured.translations,
        }

    def restored(self, session: ControlSession, report: dict[str, Any]) -> dict[str, Any]:
        attempt = self._expect(session, CAPTURED, "restored")
        assert attempt.captured is not None
        got = report.get("connections") if isinstance(report, dict) else None
        if got != attempt.captured.count:
            self.abort(
                f"the successor restored {got!r} of {attempt.captured.count} connections",
                session,
            )
            raise TakeoverRefused(
                f"count mismatch: sent {attempt.captured.count} connections, you "
                f"restored {got!r}"
            )
        attempt.state = RESTORED
        self._armTimeout(attempt, "switch")
        return {}

    def switch(self, session: ControlSession) -> dict[str, Any]:
        attempt = self._expect(session, RESTORED, "switch")
        paused = self.registry.pauseAccepting()
        attempt.pausedAt = self.clock()
        attempt.state = SWITCHED
        # Nothing is accepted from here on: the last look at what stays.
        self._refuseUnmovable("switch", session)
        self._armTimeout(attempt, "commit")
        _log.info("stopped accepting on {count} port(s); successor accepts now", count=paused)
        return {"paused": paused}

    def commit(self, session: ControlSession) -> dict[str, Any]:
        attempt = self._expect(session, SWITCHED, "commit")
        self._disarm(attempt)
        released = self.registry.releaseAll()
        moved = 0
        if attempt.captured is not None:
            moved = attempt.captured.count
            attempt.captured.release()
        attempt.state = COMMITTED
        now = self.clock()
        pausedMs = (now - (attempt.pausedAt or now)) * 1000
        totalMs = (now - attempt.startedAt) * 1000
        me = self.identity()
        successor = {
            "pid": attempt.successorPid,
            "python": attempt.info.get("python"),
            "generation": me["generation"] + 1,
        }
        self.handedOffTo = successor
        self.successorSession = session
        self.successorAttached = True
        self.lastAttempt = {
            "outcome": "committed",
            "successor_pid": attempt.successorPid,
            "at": now,
            "ports_moved": len(released),
            "connections_moved": moved,
            "connections_staying": dict(attempt.captured.staying) if attempt.captured else {},
            "accept_paused_ms": round(pausedMs, 3),
            "total_ms": round(totalMs, 3),
        }
        unmovable = self.unmovable.committed(attempt.captured.moved if attempt.captured else {})
        self.lastAttempt.update(unmovable)
        self.current = None
        self._closeAttempt(attempt)
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
            unclaimed=", ".join(attempt.report.get("unclaimed") or ()) or "none",
        )
        self._reactor.callLater(0, self.onHandedOff, successor)
        return {
            "generation": successor["generation"],
            "released": released,
            "connections": moved,
            "accept_paused_ms": round(pausedMs, 3),
            **unmovable,
        }

    def abort(self, reason: str, session: ControlSession | None = None) -> bool:
        """
        Abandon the takeover in progress (if C{session} is given, only if it
        is that session's) and resume accepting everywhere.

        @return: whether anything was abandoned.
        """
        attempt = self.current
        if attempt is None or (session is not None and attempt.session is not session):
            return False
        if attempt.state == COMMITTED:
            return False
        self._disarm(attempt)
        self.current = None
        resumed = 0
        if attempt.state == SWITCHED:
            resumed = self.registry.resumeAccepting()
        if attempt.settling is not None:
            attempt.settling.resume()
        if attempt.captured is not None:
            attempt.captured.thaw()
        self._closeAttempt(attempt)
        self.lastAttempt = {
            "outcome": "abandoned",
            "successor_pid": attempt.successorPid,
            "at": self.clock(),
            "step": attempt.state,
            "reason": reason,
        }
        _log.warn(
            "takeover by pid {pid} abandoned at step {step}: {reason}; this "
            "process keeps serving on all its ports{resumed}",
            pid=attempt.successorPid,
            step=attempt.state,
            reason=reason,
            resumed=f" (accepting again on {resumed})" if resumed else "",
        )
        return True

    # -- helpers ---------------------------------------------------------------

    def _refuseUnmovable(self, step: str, session: ControlSession | None = None) -> None:
        """
        Never two: refuse (abandon C{session}'s) takeover if connections no
        adapter can move would stay and the successor's policy is refuse.
        """
        refusal = self.unmovable.check(step)
        if refusal is None:
            return
        if session is not None:
            self.abort(refusal.message, session)
        self.lastAttempt = refusal.record
        raise TakeoverRefused(refusal.message)

    def _claimed(self, attempt: _Attempt) -> frozenset[str]:
        """
        The keys of the ports the successor declared.
        """
        unclaimed = set(attempt.report.get("unclaimed") or ())
        return frozenset(r["key"] for r in attempt.records) - unclaimed

    def _expect(self, session: ControlSession, state: str, step: str) -> _Attempt:
        attempt = self.current
        if attempt is None or attempt.session is not session:
            raise TakeoverRefused(f"{step}: no takeover of yours is in progress")
        if attempt.state != state:
            self.abort(f"protocol error: {step} at step {attempt.state}", session)
            raise TakeoverRefused(f"{step} is not allowed at step {attempt.state}")
        return attempt

    def _armTimeout(self, attempt: _Attempt, waitingFor: str) -> None:
        self._disarm(attempt)

        def expired() -> None:
            attempt.timeoutCall = None
            if self.abort(
                f"the successor did not {waitingFor} within "
                f"{self.takeoverTimeout:g} s",
                attempt.session,
            ):
                attempt.session.hangUp()

        attempt.timeoutCall = self._reactor.callLater(self.takeoverTimeout, expired)

    def _disarm(self, attempt: _Attempt) -> None:
        if attempt.timeoutCall is not None and attempt.timeoutCall.active():
            attempt.timeoutCall.cancel()
        attempt.timeoutCall = None

    def _closeAttempt(self, attempt: _Attempt) -> None:
        if attempt.channel is not None:
            attempt.channel.close()
            attempt.channel = None
        if attempt.peerEnd is not None:
            # By now the descriptor has long been sent (it rode with the
            # answer to begin); our copy can go.
            attempt.peerEnd.close()
            attempt.peerEnd = None


@implementer(pb.IPBRoot)
@attrs.define(eq=False)
class ControlRoot:
    """
    The PB root of a control socket: each connection gets its own
    L{ControlSession}.

    @ivar status: returns the status record.
    @ivar incumbent: answers takeover steps, once this process serves.
    """

    status: Callable[[], dict[str, Any]]
    incumbent: Incumbent | None = None

    def rootObject(self, broker: Any) -> ControlSession:
        session = ControlSession(self, broker)
        broker.notifyOnDisconnect(session.disconnected)
        return session


class ControlSession(pb.Referenceable):
    """
    One peer's conversation with a control socket.
    """

    def __init__(self, root: ControlRoot, broker: Any) -> None:
        self._root = root
        self._broker = broker

    def _incumbent(self) -> Incumbent:
        if self._root.incumbent is None:
            raise TakeoverRefused("this process is not serving yet")
        return self._root.incumbent

    def sendFileDescriptor(self, fd: int) -> None:
        self._broker.transport.sendFileDescriptor(fd)

    def hangUp(self) -> None:
        self._broker.transport.loseConnection()

    def disconnected(self) -> None:
        incumbent = self._root.incumbent
        if incumbent is None:
            return
        if incumbent.abort("the successor disconnected", self):
            return
        if incumbent.successorSession is self:
            incumbent.successorAttached = False
            if incumbent.onSuccessorDetached is not None:
                incumbent.onSuccessorDetached()

    def remote_status(self) -> dict[str, Any]:
        return self._root.status()

    def remote_begin(self, info: dict[str, Any]) -> dict[str, Any]:
        return self._incumbent().begin(self, info)

    def remote_prepared(self, report: dict[str, Any]) -> dict[str, Any]:
        return self._incumbent().prepared(self, report)

    def remote_capture(
        self, request: dict[str, Any]
    ) -> dict[str, Any] | Deferred[dict[str, Any]]:
        return self._incumbent().capture(self, request)

    def remote_restored(self, report: dict[str, Any]) -> dict[str, Any]:
        return self._incumbent().restored(self, report)

    def remote_switch(self) -> dict[str, Any]:
        return self._incumbent().switch(self)

    def remote_commit(self) -> dict[str, Any]:
        return self._incumbent().commit(self)

    def remote_abort(self, reason: str) -> None:
        self._incumbent().abort(f"the successor gave up: {str(reason)[:500]}", self)

