# -*- test-case-name: tests.test_consolerun -*-
"""
What the console knows of the service, kept fresh while someone watches.

L{ConsoleModel} asks the service's control socket (a connection per
question, as C{python -m migrator status} does: the console is a client,
and a console that crashes cannot hurt the service) for its status every
second, and for the plan and the object graph every few seconds or when
something changed (another process, another generation, connections
opened or closed).  It polls only while a page watches (L{subscribe}).

Each answer becomes an I{event} (C{status}, C{plan}, C{graph}, C{run},
C{problem}) for the pages' event streams; an event is sent only when its
data changed.  The model also remembers what it saw happen (each
generation, each takeover attempt and how it ended), beyond what the
service's status says.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from migrator.console._run import (
    DRY_RUN,
    RUNNING,
    TAKEOVER,
    CommandError,
    SuccessorRun,
    policyOf,
    serviceCommand,
    takeoverCommand,
)

_log = Logger()

#: How many takeover attempts the console remembers.
MAX_ATTEMPTS = 50


class Sink(Protocol):
    """
    Where a page's events go (an event stream).
    """

    def send(self, event: str, data: str) -> None: ...


Call = Callable[..., Awaitable[Any]]


@attrs.define(eq=False)
class ConsoleModel:
    """
    The console's view of one service.

    @ivar call: calls a method of the control socket: C{call(method,
        *args)}, a coroutine function (a seam for tests).
    @ivar command: the successor command given to the console, if any.
    @ivar logDir: where a successor's output file goes.
    """

    _reactor: Any
    call: Call
    command: list[str] | None = None
    logDir: str = "."
    interval: float = 1.0
    slowEvery: int = 5
    wallClock: Callable[[], float] = time.time
    latest: dict[str, str] = attrs.field(factory=dict)
    sinks: list[Sink] = attrs.field(factory=list)
    attempts: list[dict[str, Any]] = attrs.field(factory=list)
    run: SuccessorRun | None = None
    status: dict[str, Any] | None = None
    _loop: LoopingCall | None = None
    _busy: bool = False
    _ticks: int = 0
    _signature: Any = None
    _runSeq: int = 0
    _graphDue: float = 0.0
    _runGeneration: int | None = None

    # -- watchers ---------------------------------------------------------------

    def subscribe(self, sink: Sink) -> None:
        """
        Send C{sink} every latest event, then each change; start polling.
        """
        self.sinks.append(sink)
        for event, data in self.latest.items():
            sink.send(event, data)
        if self.run is not None:
            sink.send("run", json.dumps(self.run.asDict(0)))
        if self._loop is None:
            self._loop = LoopingCall(self.tick)
            self._loop.clock = self._reactor
            self._loop.start(self.interval, now=True)

    def unsubscribe(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
        if not self.sinks and self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def publish(self, event: str, record: Any) -> None:
        """
        Send C{record} as C{event} to every watcher, if it changed.
        """
        data = json.dumps(record, sort_keys=True)
        if self.latest.get(event) == data:
            return
        self.latest[event] = data
        for sink in list(self.sinks):
            sink.send(event, data)

    # -- polling ----------------------------------------------------------------

    def tick(self) -> Deferred[None] | None:
        """
        One poll (skipped while the previous one is still waiting).
        """
        if self._busy:
            return None
        self._busy = True
        d = Deferred.fromCoroutine(self.refresh())
        d.addBoth(self._done)
        return d

    def _done(self, result: Any) -> None:
        self._busy = False
        if hasattr(result, "getErrorMessage"):
            _log.failure("console refresh failed", result)

    async def refresh(self, slow: bool | None = None) -> None:
        """
        Ask for the status; for the plan and graph too every L{slowEvery}
        ticks, or when something changed.
        """
        self._ticks += 1
        try:
            status = await self.call("status")
        except Exception as e:
            self.publish("problem", {"message": str(e), "at": self.wallClock()})
            return
        self.publish("problem", {"message": None})
        self.observe(status)
        signature = (
            status.get("pid"),
            status.get("generation"),
            (status.get("connections") or {}).get("open"),
            bool(status.get("takeover")),
        )
        if self._signature is None or signature[:2] != self._signature[:2]:
            # Another process or generation: its graph at once.
            self._graphDue = 0.0
        if slow is None:
            slow = signature != self._signature or self._ticks % self.slowEvery == 1
        self._signature = signature
        if not slow:
            return
        try:
            self.publish("plan", await self.call("plan", self.defaultPolicy()))
            now = self._reactor.seconds()
            if now >= self._graphDue:
                graph = await self.call("graph", None, 400)
                cost = self._reactor.seconds() - now
                # The walk runs in the service's reactor: ask again at most
                # every 5 s, or 50 times as long as it took.
                self._graphDue = now + max(self.interval * self.slowEvery, 50 * cost)
                self.publish("graph", graph)
        except Exception as e:
            self.publish("problem", {"message": str(e), "at": self.wallClock()})

    def observe(self, status: dict[str, Any]) -> None:
        """
        Take in a status: remember the attempts seen, follow a run, and
        publish the status with the console's lineage.
        """
        self.status = status
        last = status.get("last_takeover")
        if isinstance(last, dict) and last.get("at") is not None:
            key = (status.get("pid"), last.get("at"), last.get("outcome"))
            if not any(a["key"] == key for a in self.attempts):
                self.attempts.append({"key": key, "by": status.get("pid"), **last})
                del self.attempts[:-MAX_ATTEMPTS]
        run = self.run
        generation = status.get("generation")
        if run is not None and run.state == RUNNING and isinstance(generation, int):
            if self._runGeneration is not None and generation > self._runGeneration:
                run.committedElsewhere(generation)
        self.publish("status", {**status, "attempts": self.attempts, "console": self.info()})

    def info(self) -> dict[str, Any]:
        """
        The console's own facts for the page: its pid, the successor
        command it would run, the policy of that command.
        """
        try:
            argv = self.successorArgv()
            problem = None
        except CommandError as e:
            argv, problem = None, str(e)
        return {
            "pid": os.getpid(),
            "command": argv,
            "command_text": shlex.join(argv) if argv else None,
            "command_problem": problem,
            "policy": self.defaultPolicy(),
        }

    def defaultPolicy(self) -> str:
        try:
            policy = policyOf(self.successorArgv())
        except CommandError:
            policy = "refuse"
        return policy if policy in ("refuse", "drain", "close") else "refuse"

    # -- takeovers ---------------------------------------------------------------

    def successorArgv(self) -> list[str]:
        """
        The successor command: the console's, or the service's own.

        @raise CommandError: if neither is known.
        """
        if self.command:
            return list(self.command)
        if not self.status or not isinstance(self.status.get("pid"), int):
            raise CommandError("the service's status is not known yet")
        argv, _ = serviceCommand(self.status["pid"])
        return takeoverCommand(argv)

    def _cwd(self) -> str | None:
        if self.command or not self.status:
            return None
        try:
            return serviceCommand(self.status["pid"])[1]
        except CommandError:
            return None

    def startRun(self, policy: str | None, select: list[str], dryRun: bool = False) -> SuccessorRun:
        """
        Start a takeover with the successor command (with C{policy} and
        C{select}, if given), or a dry run of it (C{--dry-run} added).

        @raise CommandError: if one is running, or no command is known.
        """
        if self.run is not None and self.run.state == RUNNING:
            raise CommandError(f"a {self.run.kind} is already running (pid {self.run.pid})")
        if policy is not None and policy not in ("refuse", "drain", "close"):
            raise CommandError("the policy must be refuse, drain or close")
        argv = takeoverCommand(self.successorArgv(), policy, select, dryRun)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.wallClock()))
        name = "dryrun" if dryRun else "successor"
        path = os.path.join(self.logDir, f"{name}-{stamp}-{os.getpid()}.log")
        generation = (self.status or {}).get("generation")
        self._runGeneration = generation if isinstance(generation, int) else None
        self._runSeq = 0
        self.run = SuccessorRun(
            self._reactor,
            argv,
            self._cwd(),
            path,
            self._runChanged,
            kind=DRY_RUN if dryRun else TAKEOVER,
        )
        self.run.start()
        return self.run

    def _runChanged(self) -> None:
        run = self.run
        if run is None:
            return
        record = run.asDict(self._runSeq)
        self._runSeq = run.seq
        for sink in list(self.sinks):
            sink.send("run", json.dumps(record))
        if run.state != RUNNING and self._loop is not None:
            # The end of a run: look at the service again at once.
            self._signature = None
            self._graphDue = 0.0
