# -*- test-case-name: tests.test_dryrun -*-
"""
Dry runs, on the incumbent's side: a snapshot of the live connections for
a staging process that tries new code on them (C{twistd migrate
--dry-run}), and the record of the last dry run for C{status}.

A dry run never goes through the takeover's steps (L{migrator.takeover._steps}):
no port and no connection changes hands, nothing is paused.  In one
reactor turn the incumbent captures its connections exactly as for a
takeover (L{captureConnections}: the freeze) and thaws them at once; the
state travels to the staging process on a frame channel of its own (its
end rides with the answer, as in C{begin}), without a single descriptor.
The staging process restores it with detached transports and reports back
(C{dryRunDone}); the incumbent records that in C{last_dry_run}.

The conversation (staging process -> incumbent, then the answer):

  - C{dryRun(DryRunRequest) -> DryRunAnswer}, the channel's descriptor
    with the answer and the state (one C{MESSAGE} frame, no descriptors)
    on the channel;
  - C{dryRunDone(DryRunResult) -> None}.

Only one dry run at a time, and none while a takeover is in progress
(whose connections may be frozen) or after this process handed off.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from migrator.state._capture import captureConnections
from migrator.state._plan import REFUSE, UNKNOWN, planConnections, refusalMessage
from migrator.state._versions import readableFrom
from migrator.takeover._attempt import Peer, restorableTypes
from migrator.takeover._channel import FrameChannel, channelPair
from migrator.takeover._incumbent import Incumbent
from migrator.takeover._messages import (
    BeginRequest,
    CaptureRequest,
    MalformedMessage,
    _Fields,
)
from migrator.takeover._refused import TakeoverRefused
from migrator.takeover._undeclared import undeclaredRefusal

_log = Logger()

#: The outcomes a staging process reports.
OK = "ok"
FAILED = "failed"
INCOMPLETE = "incomplete"
#: Recorded when the staging process hung up (or timed out) without one.
NO_RESULT = "no result"
#: At most this many classes of a result are kept.
MAX_CLASSES = 200


def _section(wire: object, field: str, name: str) -> object:
    if not isinstance(wire, Mapping) or field not in wire:
        raise MalformedMessage(f"{name}: {field} is missing")
    return wire[field]


@attrs.frozen
class DryRunRequest:
    """
    A staging process asks for a snapshot.

    @ivar begin: who it is, its policy and the types (and versions) it can
        restore, as a successor's C{begin} says it.
    @ivar capture: what it asks to capture, as a successor's C{capture}.
    @ivar declared: the port keys its service declares.
    @ivar closeUndeclared: whether it was given C{--close-undeclared-ports}.
    """

    begin: BeginRequest
    capture: CaptureRequest
    declared: tuple[str, ...] = ()
    closeUndeclared: bool = False

    def toWire(self) -> dict[str, Any]:
        return {
            "begin": self.begin.toWire(),
            "capture": self.capture.toWire(),
            "declared": list(self.declared),
            "close_undeclared": self.closeUndeclared,
        }

    @classmethod
    def fromWire(cls, wire: object) -> DryRunRequest:
        """
        @raise MalformedMessage: if C{wire} is not a dry run request.
        """
        f = _Fields(wire, "dryRun")
        return cls(
            BeginRequest.fromWire(_section(wire, "begin", "dryRun")),
            CaptureRequest.fromWire(_section(wire, "capture", "dryRun")),
            f.texts("declared"),
            f.flag("close_undeclared", False),
        )


@attrs.frozen
class DryRunAnswer:
    """
    The snapshot the incumbent took (sent on the channel), and what a
    takeover would do now.

    @ivar held: how many connections were open.
    @ivar connections: how many were captured (their state was sent).
    @ivar bytes: the size of their state.
    @ivar moved: how many of each class were captured.
    @ivar staying: how many would stay, by reason (C{"class: why"}).
    @ivar captureMs: how long the capture (the freeze) took.
    @ivar plan: the takeover's plan, per class (as C{begin} answers it).
    @ivar undeclared: the incumbent's ports the staging service does not
        declare.
    @ivar refusals: why a takeover would be refused now, if it would.
    @ivar ports: the keys of the incumbent's ports.
    """

    pid: int
    generation: int
    python: str
    held: int = 0
    connections: int = 0
    bytes: int = 0
    moved: dict[str, int] = attrs.field(factory=dict)
    staying: dict[str, int] = attrs.field(factory=dict)
    captureMs: float = 0.0
    plan: dict[str, Any] | None = None
    undeclared: tuple[str, ...] = ()
    refusals: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()

    def toWire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "pid": self.pid,
            "generation": self.generation,
            "python": self.python,
            "held": self.held,
            "connections": self.connections,
            "bytes": self.bytes,
            "moved": dict(self.moved),
            "staying": dict(self.staying),
            "capture_ms": self.captureMs,
            "undeclared": list(self.undeclared),
            "refusals": list(self.refusals),
            "ports": list(self.ports),
        }
        if self.plan is not None:
            wire["plan"] = self.plan
        return wire

    @classmethod
    def fromWire(cls, wire: object) -> DryRunAnswer:
        """
        @raise MalformedMessage: if C{wire} is not such an answer.
        """
        f = _Fields(wire, "dryRun's answer")
        return cls(
            f.integer("pid"),
            f.integer("generation"),
            f.text("python", ""),
            f.integer("held", 0),
            f.integer("connections", 0),
            f.integer("bytes", 0),
            f.counts("moved"),
            f.counts("staying"),
            f.number("capture_ms", 0.0),
            f.mapping("plan"),
            f.texts("undeclared"),
            f.texts("refusals"),
            f.texts("ports"),
        )


@attrs.frozen
class DryRunResult:
    """
    What the staging process found, for the incumbent's C{status}.

    @ivar outcome: L{OK} (everything would move), L{FAILED} (new code
        failed on the state: a class failed, or the state as a whole), or
        L{INCOMPLETE} (nothing failed, but not everything would move, or a
        takeover would be refused).
    @ivar classes: per class, counts (C{restored}, C{failed}, C{staying}).
    @ivar failed: the classes that failed.
    @ivar message: one line for the log.
    """

    outcome: str
    classes: dict[str, Any] = attrs.field(factory=dict)
    failed: tuple[str, ...] = ()
    message: str = ""

    def toWire(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "classes": self.classes,
            "failed": list(self.failed),
            "message": self.message,
        }

    @classmethod
    def fromWire(cls, wire: object) -> DryRunResult:
        """
        @raise MalformedMessage: if C{wire} is not such a result.
        """
        f = _Fields(wire, "dryRunDone")
        classes = f.mapping("classes") or {}
        if not all(isinstance(v, Mapping) for v in classes.values()):
            raise MalformedMessage("dryRunDone: classes must map names to counts")
        return cls(
            f.text("outcome"),
            # Bounded: it is kept for status.
            {k[:200]: _counts(v) for k, v in list(classes.items())[:MAX_CLASSES]},
            f.texts("failed")[:MAX_CLASSES],
            f.text("message", "")[:1000],
        )


def _counts(value: Mapping[Any, Any]) -> dict[str, int]:
    return {
        str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)
    }


@attrs.define(eq=False)
class _Pending:
    """
    A dry run whose snapshot was sent, waiting for its result.
    """

    session: Peer
    pid: int
    python: str
    answer: DryRunAnswer
    channel: FrameChannel
    peerEnd: socket.socket
    timer: IDelayedCall | None = None

    def close(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.peerEnd.close()
        self.channel.close()


@attrs.define(eq=False)
class DryRuns:
    """
    The incumbent's dry runs (see the module docstring).

    @ivar incumbent: the incumbent whose connections are snapshotted.
    @ivar timeout: how long a staging process has to report, once its
        snapshot was sent.
    @ivar last: the last dry run's record (C{status}'s C{last_dry_run}).
    """

    _reactor: Any
    incumbent: Incumbent
    timeout: float = 30.0
    last: dict[str, Any] | None = None
    _pending: _Pending | None = None

    def snapshot(self, session: Peer, request: DryRunRequest) -> DryRunAnswer:
        """
        Capture every connection that could move, thaw them in the same
        reactor turn, and send their state on a new channel whose end rides
        with the answer.

        @raise TakeoverRefused: if a takeover or another dry run is in
            progress, this process handed off or is stopping, or the
            capture fails.
        """
        incumbent = self.incumbent
        pid = request.begin.pid
        if incumbent.handedOffTo is not None:
            raise TakeoverRefused(
                f"this process (pid {os.getpid()}) has already handed its service to "
                f"pid {incumbent.handedOffTo.get('pid')}"
            )
        if incumbent.stopping:
            raise TakeoverRefused(f"this process (pid {os.getpid()}) is stopping")
        if incumbent.current is not None:
            raise TakeoverRefused(
                f"a takeover is in progress (successor pid {incumbent.current.successorPid}, "
                f"step {incumbent.current.state}); try the dry run again when it has finished"
            )
        if self._pending is not None:
            raise TakeoverRefused(
                f"a dry run by pid {self._pending.pid} is in progress; try again when it "
                f"has finished"
            )
        registry, adapters = incumbent.registry, incumbent.adapters
        keys = [t.key for t in registry.listening()]
        undeclared = tuple(k for k in keys if k not in request.declared)
        claimed = frozenset(k for k in keys if k in request.declared)
        plan = planConnections(
            list(registry.openConnections()), adapters, readableFrom(request.begin.toWire())
        )
        refusals = []
        if request.begin.unmovable == REFUSE and plan.count(UNKNOWN):
            refusals.append(refusalMessage(plan, os.getpid()).splitlines()[0])
        if (why := undeclaredRefusal(undeclared, request.closeUndeclared)) is not None:
            refusals.append(why)
        held = registry.connectionCount()
        started = incumbent.clock()
        try:
            # One reactor turn: capture (which ends with the freeze), thaw.
            captured = captureConnections(
                self._reactor,
                registry,
                adapters,
                claimed,
                restorableTypes(adapters, request.capture),
                # Translated as for a takeover (the newer side translates).
                readableFrom(request.capture.toWire()),
            )
            captured.thaw()
        except Exception as e:
            _log.failure("dry run by pid {pid}: capturing connections failed", pid=pid)
            self._record(pid, request.begin.python, FAILED, {}, f"FAILED: capturing failed: {e}")
            raise TakeoverRefused(f"capturing connections failed: {e}") from e
        captureMs = (incumbent.clock() - started) * 1000
        me = incumbent.identity()
        answer = DryRunAnswer(
            pid=me["pid"],
            generation=me["generation"],
            python=me["python"],
            held=held,
            connections=captured.count,
            bytes=len(captured.payload),
            moved=captured.moved,
            staying=captured.staying,
            captureMs=round(captureMs, 3),
            plan=plan.asDict(),
            undeclared=undeclared,
            refusals=tuple(refusals),
            ports=tuple(keys),
        )
        ours, theirs = channelPair()
        channel = FrameChannel(self._reactor, ours)
        pending = self._pending = _Pending(session, pid, request.begin.python, answer, channel, theirs)
        pending.timer = self._reactor.callLater(self.timeout, self._expired, pending)
        # The state goes out on the channel; no descriptor with it.
        channel.sendMessage(captured.payload).addErrback(lambda _: None)
        session.sendFileDescriptor(theirs.fileno())
        staying = captured.staying
        _log.info(
            "dry run by pid {pid} (Python {python}): captured {count} of {held} "
            "connection(s) ({size} bytes of state) in {ms:.1f} ms and thawed them "
            "in the same reactor turn; nothing changed hands; {stay} would stay{why}",
            pid=pid,
            python=request.begin.python,
            count=captured.count,
            held=held,
            size=len(captured.payload),
            ms=captureMs,
            stay=sum(staying.values()),
            why=(": " + "; ".join(f"{n} x {r}" for r, n in sorted(staying.items())))
            if staying
            else "",
        )
        return answer

    def done(self, session: Peer, result: DryRunResult) -> None:
        """
        The staging process reports what it found: record it, close its
        channel.

        @raise TakeoverRefused: if C{session} has no dry run waiting.
        """
        pending = self._pending
        if pending is None or pending.session is not session:
            raise TakeoverRefused("dryRunDone: no dry run of yours is in progress")
        self._finish(pending, result.outcome, result.classes, result.message, result.failed)

    def detached(self, session: Peer) -> None:
        """
        C{session} hung up: a dry run it had not reported is recorded
        without a result.
        """
        pending = self._pending
        if pending is not None and pending.session is session:
            self._finish(
                pending, NO_RESULT, {}, "no result: the staging process hung up without one"
            )

    def _expired(self, pending: _Pending) -> None:
        pending.timer = None
        if self._pending is pending:
            self._finish(pending, NO_RESULT, {}, f"no result within {self.timeout:g} s")
            pending.session.hangUp()

    def _finish(
        self,
        pending: _Pending,
        outcome: str,
        classes: dict[str, Any],
        message: str,
        failed: tuple[str, ...] = (),
    ) -> None:
        self._pending = None
        pending.close()
        self._record(pending.pid, pending.python, outcome, classes, message, pending.answer, failed)

    def _record(
        self,
        pid: int,
        python: str,
        outcome: str,
        classes: dict[str, Any],
        message: str,
        answer: DryRunAnswer | None = None,
        failed: tuple[str, ...] = (),
    ) -> None:
        self.last = {
            "at": self.incumbent.clock(),
            "by": pid,
            "python": python,
            "outcome": outcome,
            "classes": classes,
            "failed": list(failed),
            "message": message,
            "connections": answer.connections if answer else 0,
            "bytes": answer.bytes if answer else 0,
            "capture_ms": answer.captureMs if answer else None,
            "refusals": list(answer.refusals) if answer else [],
        }
        log = _log.info if outcome == OK else _log.warn
        log("dry run by pid {pid}: {message}", pid=pid, message=message or outcome)
