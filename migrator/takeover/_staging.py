# -*- test-case-name: tests.test_dryrun -*-
"""
Dry runs, on the staging process's side: C{twistd migrate --dry-run}
(the successor's command line plus C{--dry-run}) tries the new code on a
snapshot of the live state, and changes nothing.

L{Staging} starts the wrapped service on ports that listen nowhere
(L{migrator.state._detachedport.DetachedPort}: nothing is bound or adopted), asks
the incumbent for a snapshot (L{migrator.takeover._dryrun}), restores it
with detached transports, running every translation step, C{populate}
and the adapters' C{checkRestored} (L{restoreDetached}), tells the
incumbent what it found, and prints a report (L{DryRunReport}).  It never
publishes a control socket, never writes the pidfile, never accepts a
connection.

Its exit code: 0 if every connection would move; 1 if the new code failed
on the state (a class failed to restore, populate or pass its check, or
the state as a whole could not be read), or the dry run could not be
done; 2 if nothing failed but a takeover now would not move everything
(connections would stay, or it would be refused).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from migrator.state._detached import Check, Staged, restoreDetached
from migrator.state._registry import AdapterRegistry
from migrator.takeover._control import ControlClientFactory, PeerPolicy
from migrator.takeover._dryrun import (
    FAILED,
    INCOMPLETE,
    OK,
    DryRunAnswer,
    DryRunRequest,
    DryRunResult,
)
from migrator.takeover._failure import describeFailure
from migrator.takeover._inbox import Inbox
from migrator.takeover._messages import CaptureRequest
from migrator.takeover._ports import ListenerRegistry
from migrator.takeover._undeclared import FLAG
from migrator.takeover._unmovable import beginRequest

_log = Logger()

#: Exit codes.
EVERYTHING_MOVES = 0
SOMETHING_FAILED = 1
NOT_EVERYTHING_MOVES = 2


@attrs.frozen
class DryRunReport:
    """
    What a dry run found: the incumbent's snapshot and this process's
    restore of it.

    @ivar answer: the incumbent's answer (what it captured, what would stay).
    @ivar staged: what was restored here, per class.
    @ivar declared: the port keys this service declares.
    @ivar checked: whether a C{checkRestored} ran.
    """

    answer: DryRunAnswer
    staged: Staged
    declared: tuple[str, ...] = ()
    checked: bool = False

    @property
    def staying(self) -> int:
        return sum(self.answer.staying.values())

    @property
    def exitCode(self) -> int:
        if self.staged.failed or self.staged.problems:
            return SOMETHING_FAILED
        if self.staying or self.answer.refusals:
            return NOT_EVERYTHING_MOVES
        return EVERYTHING_MOVES

    def classes(self) -> dict[str, dict[str, Any]]:
        """
        Per class: how many were C{restored}, C{failed}, would C{stay} (and
        why: C{reasons}, with C{errors} for failures).
        """
        rows: dict[str, dict[str, Any]] = {}

        def row(name: str) -> dict[str, Any]:
            return rows.setdefault(
                name, {"restored": 0, "failed": 0, "staying": 0, "errors": [], "reasons": {}}
            )

        for name, outcome in self.staged.classes.items():
            r = row(name)
            r["restored"], r["failed"], r["errors"] = outcome.restored, outcome.failed, outcome.errors
        for reason, count in self.answer.staying.items():
            name, _, why = reason.partition(": ")
            r = row(name)
            r["staying"] += count
            r["reasons"][why or reason] = r["reasons"].get(why or reason, 0) + count
        return dict(sorted(rows.items()))

    def result(self) -> DryRunResult:
        """
        What the incumbent records (C{status}'s C{last_dry_run}).
        """
        code = self.exitCode
        outcome = {EVERYTHING_MOVES: OK, SOMETHING_FAILED: FAILED}.get(code, INCOMPLETE)
        counts = {
            name: {k: r[k] for k in ("restored", "failed", "staying")}
            for name, r in self.classes().items()
        }
        return DryRunResult(outcome, counts, tuple(self.staged.failed), self.summary())

    def summary(self) -> str:
        """
        The verdict, in one line.
        """
        code = self.exitCode
        if code == SOMETHING_FAILED:
            what = ", ".join(self.staged.failed) or "; ".join(self.staged.problems)
            return f"FAILED: {what}"
        if code == NOT_EVERYTHING_MOVES:
            parts = []
            if self.staying:
                parts.append(f"{self.staying} connection(s) would stay")
            if self.answer.refusals:
                parts.append("a takeover would be refused")
            return "not everything would move: " + ", ".join(parts)
        return f"every connection would move ({self.staged.connections} restored here)"

    def text(self) -> str:
        """
        The report, for the operator.
        """
        a, staged = self.answer, self.staged
        lines = [
            f"dry run against pid {a.pid} (generation {a.generation}, Python {a.python}):",
            f"  snapshot: {a.connections} of {a.held} open connection(s), {a.bytes} bytes of "
            f"state, captured in {a.captureMs:.1f} ms and thawed in the same reactor turn "
            f"(nothing changed hands)",
            f"  tried here on detached transports: {staged.connections} connection(s) "
            f"(translation steps and populate"
            + (", then checkRestored)" if self.checked else "; no checkRestored defined)"),
        ]
        classes = self.classes()
        if classes:
            lines.append("  by class:")
        for name, r in classes.items():
            if r["failed"]:
                total = r["failed"] + r["restored"]
                lines.append(f"    {name}: FAILED {r['failed']} of {total}: {r['errors'][0]}")
                lines.extend(f"      also: {error}" for error in r["errors"][1:])
            elif r["restored"]:
                lines.append(f"    {name}: would move {r['restored']}")
            for why, count in sorted(r["reasons"].items()):
                lines.append(f"    {name}: would stay {count} ({why})")
        lines.extend(f"  problem: {problem}" for problem in staged.problems)
        incumbent = set(a.ports)
        ports = [
            f"{key} (would be adopted)" for key in self.declared if key in incumbent
        ] + [f"{key} (would be bound anew)" for key in self.declared if key not in incumbent]
        ports += [f"{key} NOT declared (closed by a takeover only with {FLAG})" for key in a.undeclared]
        if ports:
            lines.append("  ports: " + "; ".join(ports))
        lines.extend(f"  a takeover now would be refused: {why}" for why in a.refusals)
        lines.append(f"dry run: {self.summary()} (exit {self.exitCode})")
        return "\n".join(lines)


@attrs.define(eq=False)
class Staging:
    """
    Runs one dry run; see the module docstring.

    @ivar startService: builds and starts the wrapped service (its ports
        detached).
    @ivar check: the adapters' C{checkRestored}, if any.
    @ivar out: prints the report.
    """

    _reactor: Any
    path: str
    registry: ListenerRegistry
    adapters: AdapterRegistry
    startService: Callable[[], None]
    out: Callable[[str], None]
    check: Check | None = None
    timeout: float = 30.0
    policy: PeerPolicy = attrs.field(factory=PeerPolicy)
    unmovable: str = "refuse"
    closeUndeclared: bool = False
    report: DryRunReport | None = None
    _running: Deferred[int] | None = attrs.field(default=None, init=False)
    _broker: Any = attrs.field(default=None, init=False)
    _inbox: Inbox | None = attrs.field(default=None, init=False)

    def run(self) -> Deferred[int]:
        """
        Do the dry run.

        @return: a L{Deferred} firing with the exit code (it never fails).
        """
        self._running = Deferred.fromCoroutine(self._run())
        return self._running

    def cancel(self) -> None:
        """
        Give up (this process is stopping).
        """
        if self._running is not None and not self._running.called:
            self._running.cancel()

    def _call(self, root: Any, method: str, *args: Any) -> Deferred[Any]:
        d = root.callRemote(method, *args)
        d.addTimeout(self.timeout, self._reactor)
        return d

    async def _run(self) -> int:
        try:
            return await self._stage()
        except BaseException as e:
            why = "this process is stopping" if isinstance(e, CancelledError) else describeFailure(e)
            _log.error("dry run failed: {why}", why=why)
            self.out(f"dry run: could not be done: {why} (exit {SOMETHING_FAILED})")
            return SOMETHING_FAILED
        finally:
            if self._inbox is not None:
                self._inbox.close()
            if self._broker is not None:
                self._broker.transport.loseConnection()

    async def _stage(self) -> int:
        try:
            self.startService()
        except Exception as e:
            raise RuntimeError(f"the service failed to start: {describeFailure(e)}") from e
        declared = tuple(t.key for t in self.registry.listening())
        factory = ControlClientFactory(self.policy)
        self._reactor.connectUNIX(self.path, factory, timeout=self.timeout)
        rootD = factory.getRootObject()
        rootD.addTimeout(self.timeout, self._reactor)
        try:
            root = await rootD
        except Exception as e:
            if factory.refused:
                raise RuntimeError(
                    f"the control socket {self.path} is served by another user "
                    f"({factory.refused})"
                ) from e
            raise
        self._broker = root.broker
        types = self.adapters.typeNames()
        request = DryRunRequest(
            beginRequest(self.adapters, self.unmovable),
            CaptureRequest(
                tuple(types), {name: self.adapters.adapterNamed(name).version for name in types}
            ),
            declared,
            self.closeUndeclared,
        )
        answer = DryRunAnswer.fromWire(await self._call(root, "dryRun", request.toWire()))
        fds = self._broker.receivedFds
        if len(fds) != 1:
            raise RuntimeError(f"expected the snapshot's channel descriptor, got {len(fds)}")
        self._inbox = Inbox(self._reactor, socket.socket(fileno=fds.pop()))
        received = self._inbox.next()
        received.addTimeout(self.timeout, self._reactor)
        payload, extra = await received
        for fd in extra:
            os.close(fd)
        if extra:
            raise RuntimeError(f"the snapshot came with {len(extra)} descriptor(s), expected none")
        staged = restoreDetached(self._reactor, self.registry, self.adapters, payload, self.check)
        report = self.report = DryRunReport(answer, staged, declared, self.check is not None)
        try:
            await self._call(root, "dryRunDone", report.result().toWire())
        except Exception as e:
            _log.warn(
                "could not tell the incumbent what the dry run found: {why}",
                why=describeFailure(e),
            )
        log = _log.info if report.exitCode == EVERYTHING_MOVES else _log.warn
        log("{summary}", summary=f"dry run: {report.summary()}")
        self.out(report.text())
        return report.exitCode
