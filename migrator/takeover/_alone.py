# -*- test-case-name: tests.test_alone -*-
"""
A successor whose incumbent died before the commit completes the takeover
on its own, with whatever had arrived:

  - the ports: adopted from the descriptors received, or (if none had
    arrived) bound afresh, as a fresh start would;
  - the connections whose descriptors and state had arrived: restored
    (if they were not yet) and activated, their unsent bytes written first
    (they travelled with the state);
  - the connections whose state had not arrived died with the incumbent,
    and so did those that were to stay in it: they are counted and
    reported;
  - then it serves as after a commit: accepts, takes the lock files,
    publishes its control socket at the control path (and, in the
    service, the pidfile).

Never called for an incumbent that lives: that one has taken its sockets
back, and the successor rolls back instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from migrator.takeover._batches import Batches
from migrator.takeover._control import ControlSocket
from migrator.takeover._inbox import Inbox, Message
from migrator.takeover._liveness import ProcessWatch
from migrator.takeover._messages import BeginAnswer, CaptureReport
from migrator.takeover._ports import ListenerRegistry

_log = Logger()


class CompletesAlone:
    """
    The part of L{migrator.takeover._self.Successor} that completes a
    takeover whose incumbent died.
    """

    # What it uses of the successor (declared here for type checkers).
    _step: str
    watch: ProcessWatch | None
    predecessor: BeginAnswer | None
    captureReport: CaptureReport | None
    started: bool
    control: ControlSocket | None
    prepareControl: Callable[[], ControlSocket]
    inbox: Inbox | None
    restored: Batches | None
    registry: ListenerRegistry
    clock: Callable[[], float]
    connectionReport: dict[str, Any]

    def startWrapped(self) -> tuple[int, list[str]]:
        raise NotImplementedError()

    def restore(self, message: Message) -> bool:
        raise NotImplementedError()

    def restoredReport(self) -> None:
        raise NotImplementedError()

    def afterCommit(self, frozenAt: float, spread: bool = False) -> Deferred[None]:
        raise NotImplementedError()

    def completeAlone(self, cause: str, started: float) -> dict[str, Any]:
        """
        Complete the takeover without the incumbent, which died.

        @param cause: what went wrong when the incumbent died (for the log).
        @param started: when the takeover started (C{self.clock}).
        @return: the takeover's result, as L{Successor.run} gives it, with an
            C{alone} record: the pid and step of the death, the ports adopted
            and bound, the connections moved, lost and ended.
        @raise Exception: if the service cannot be started or a port bound;
            the caller then rolls back and reports that nothing serves.
        """
        step = self._step
        watch = self.watch
        assert watch is not None
        self._step = "alone"
        begun = self.predecessor
        report = self.captureReport
        adoptedBefore = self.started
        if not self.started:
            self.startWrapped()
        if self.control is None:
            self.control = self.prepareControl()
        message = self.inbox.take() if self.inbox is not None else None
        while message is not None and self.inbox is not None:
            if self.restored is not None and self.restored.done:
                # Not used: closed with the inbox.
                self.inbox.putBack(message)
                break
            # A state message (or batch) may have arrived although the
            # answer that announces it did not, or before it was read.
            try:
                self.restore(message)
            except Exception:
                # restoreConnections closed what it had not handed over.
                _log.failure("restoring the connections that arrived failed")
                break
            message = self.inbox.take()
        self.restoredReport()
        moved = self.restored.count if self.restored is not None else 0
        lost: int | None = 0
        if self.restored is None:
            if report is not None:
                lost = report.connections
            elif begun is not None:
                # As many as it held when it answered begin.
                lost = begun.connections
            else:
                lost = None
        ended = sum(report.staying.values()) if report is not None else 0
        accepting = self.registry.resumeAccepting()
        adopted = self.registry.adoptedCount()
        generation = begun.generation + 1 if begun is not None else 0
        self.afterCommit(report.frozenAt if report is not None else 0.0)
        self._step = "done"
        alone = {
            "pid": watch.pid,
            "step": step,
            "cause": cause,
            "ports_adopted": adopted,
            "ports_bound": accepting - adopted,
            "connections_moved": moved,
            "connections_lost": lost,
            "connections_ended": ended,
            "started_here": not adoptedBefore,
        }
        _log.warn(
            "the incumbent (pid {pid}) died during step {step}; this process "
            "completed the takeover on its own: accepting on {ports} port(s) "
            "({adopted} adopted from the incumbent, {bound} bound afresh), "
            "{moved} connection(s) moved with their state, {lost} whose state "
            "did not arrive ended with the incumbent, {ended} that were to stay "
            "in it ended with it",
            pid=watch.pid,
            step=step,
            ports=accepting,
            adopted=adopted,
            bound=accepting - adopted,
            moved=moved,
            lost="an unknown number" if lost is None else lost,
            ended=ended,
        )
        result: dict[str, Any] = {
            "generation": generation,
            "released": [],
            "connections": moved,
            "accept_paused_ms": None,
            "total_ms": round((self.clock() - started) * 1000, 3),
            "alone": alone,
        }
        result.update(self.connectionReport)
        return result
