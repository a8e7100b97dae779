# -*- test-case-name: tests.test_service -*-
"""
L{MigrateService}: the service C{twistd migrate} runs around the wrapped
service, in either role.

  - As the first process of a lineage (the I{incumbent}), it starts the
    wrapped service as twistd would, with its listen calls recorded, and
    publishes the control socket.

  - With C{--takeover} (the I{successor}), it first obtains the incumbent's
    listening ports, then starts the wrapped service so that it adopts them,
    then switches and commits, and finally publishes its own control socket
    in place of the incumbent's.  It is then the incumbent of the next
    takeover.

After handing off, a process serves the connections it still has, and exits
when the last one closes or the drain timeout expires.  (A successor imports
the incumbent's side, L{migrator.takeover._incumbent}, once it serves.)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorFDSet, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from migrator import _later
from migrator._config import MigrateConfig
from migrator._exit import exitAtInterpreterExit, exitNow
from migrator._reports import ServiceReports
from migrator._version import __version__
from migrator.adapters import defaultRegistry
from migrator.interfaces import IMigrationNode
from migrator.state._translator import describeTranslations
from migrator.takeover._control import ControlServerFactory, ControlSocket, PeerPolicy
from migrator.takeover._failure import TakeoverFailed
from migrator.takeover._liveness import processAlive
from migrator.takeover._pidfile import Pidfile, sdNotify
from migrator.takeover._ports import ListenerRegistry
from migrator.takeover._session import ControlRoot
from migrator.takeover._successor import Successor
from migrator.takeover._unmovable import splitStatus

if TYPE_CHECKING:
    from migrator.takeover._check import HealthCheck
    from migrator.takeover._incumbent import Incumbent
    from migrator.takeover._staging import Staging

_log = Logger()

#: The most generations C{status}'s lineage lists (the newest).

STARTING = "starting"
SERVING = "serving"
DRAINING = "draining"
FAILED = "failed"


def _report(text: str) -> None:
    # A dry run's report, on the standard output this process started with
    # (twistd sends sys.stdout to the log).
    out = sys.__stdout__
    if out is not None:
        out.write(text + "\n")
        out.flush()


@implementer(IMigrationNode)
class MigrateService(service.MultiService, ServiceReports):
    """
    Runs C{inner} so that it can be taken over, or takes it over.

    @ivar _reactor: the process's reactor: the clock of the drain and the
        takeover steps, also an L{IReactorCore} (stopped at the end) and an
        L{IReactorFDSet} (ports and connections register with it).
    @ivar startedAt: when this process started, by C{wallClock} (the
        one wall-clock reading, shown to operators).
    """

    def __init__(
        self,
        inner: service.IService,
        config: MigrateConfig,
        reactor: IReactorTime,
        exit: Callable[[int], None] = exitNow,
        exitWhenDone: Callable[[int], None] = exitAtInterpreterExit,
        policy: PeerPolicy | None = None,
        wallClock: Callable[[], float] = time.time,
        registerAdapters: Callable[[Any], object] | None = None,
        checkRestored: Callable[[Any], object] | None = None,
    ) -> None:
        """
        @param exit: ends the process at once with a code, after a failed
            takeover (from the reactor's last shutdown trigger).
        @param exitWhenDone: called with 0 when the drain ends, just before
            the reactor stops: the process is to end with that code once
            twistd has finished (by default without the interpreter's
            teardown, see L{migrator._exit.exitAtInterpreterExit}).
        @param registerAdapters: registers more adapters, after those of
            C{config.adapterModules} (a C{.tac} file's own
            C{registerAdapters}).
        @param checkRestored: in a dry run, checks each restored
            connection's protocol (the adapters modules' and the C{.tac}'s
            C{checkRestored}).
        """
        service.MultiService.__init__(self)
        self.inner = inner
        self.config = config
        self._reactor = reactor
        self._exit = exit
        self._exitWhenDone = exitWhenDone
        self._policy = policy or PeerPolicy()
        self._checkRestored = checkRestored
        self.registry = ListenerRegistry(
            cast(IReactorFDSet, reactor), holding=config.takeover, detached=config.dryRun
        )
        # TLS sessions can move only if followed from their handshake.
        self.registry.onListen(_later.followTLS)
        self.adapters = defaultRegistry(config.adapterModules)
        if registerAdapters is not None:
            registerAdapters(self.adapters)
        # A dry run never touches the pidfile.
        self.pidfile = Pidfile(None if config.dryRun else config.pidfile)
        self.state = STARTING
        self.generation = 0
        # When, for operators (status shows it); how long ago is measured
        # by the reactor's clock, as every other duration.
        self.startedAt = wallClock()
        self._startedSeconds = reactor.seconds()
        self.root = ControlRoot(self.status)
        self.control: ControlSocket | None = None
        self.incumbent: Incumbent | None = None
        self.successor: Successor | None = None
        self.staging: Staging | None = None
        self._innerStarted = False
        self._drainCall: LoopingCall | None = None
        self.lastTakeover: dict[str, Any] | None = None
        self._drainDeadline: float | None = None

    # -- life cycle -----------------------------------------------------------

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        self.registry.install()
        if not self.config.takeover:
            self.inner.privilegedStartService()

    def startService(self) -> None:
        service.Service.startService(self)
        if self.config.dryRun:
            self._stage()
            return
        if not self.config.takeover:
            self._startInner()
            self.control = self._bindControl()
            self.control.publish()
            self._serve(generation=0)
            return
        self.successor = Successor(
            self._reactor,
            self.config.control,
            self.registry,
            startService=self._startInner,
            prepareControl=self._bindControl,
            timeout=self.config.takeoverTimeout,
            policy=self._policy,
            adapters=self.adapters,
            clock=self._reactor.seconds,
            unmovable=self.config.unmovable,
            select=self.config.select,
            faults=self.config.faults,
            closeUndeclared=self.config.closeUndeclared,
            stream=self.config.stream,
            check=self._healthCheck() if self.config.check else None,
        )
        d = self.successor.run()
        d.addCallbacks(self._tookOver, self._takeoverFailed)

    def _healthCheck(self) -> HealthCheck:
        """
        The successor's C{--check}, told where this service listens (its
        module imported only then: most successors run no check).
        """
        from migrator.takeover._check import HealthCheck, checkEnvironment

        assert self.config.check is not None
        return HealthCheck(
            self._reactor,
            self.config.check,
            self.config.checkTimeout,
            environment=lambda: checkEnvironment(
                [(p.kind, p.address()) for p in self.registry.listening()], self.config.control
            ),
        )

    def _stage(self) -> None:
        """
        A dry run: try this code on a snapshot of the running service's
        state, print the report, exit with its code.
        """
        from migrator.takeover._staging import Staging

        self.staging = Staging(
            self._reactor,
            self.config.control,
            self.registry,
            self.adapters,
            startService=self._startInner,
            out=_report,
            check=self._checkRestored,
            timeout=self.config.takeoverTimeout,
            policy=self._policy,
            unmovable=self.config.unmovable,
            closeUndeclared=self.config.closeUndeclared,
        )
        self.staging.run().addCallback(self._staged)

    def _staged(self, code: int) -> None:
        # Unless this process is already stopping (asked to, meanwhile).
        if self.running:
            self._reactor.callLater(0, self._stopAndExit, code)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        if self.incumbent is not None:
            # Asked to stop while a successor takes over: let the takeover
            # finish first (commit or abort), so that no port or connection
            # the successor is about to serve is closed under it.
            waiting = self.incumbent.stop()
            if not waiting.called:
                return waiting.addCallback(lambda _: self._stopNow())
        return self._stopNow()

    def _stopNow(self) -> Any:
        """
        Stop the wrapped service, close the control socket, let go of the
        pidfile and the reactor hooks.
        """
        if self.incumbent is not None:
            # (Moved connections still held: see _finish.)
            self.incumbent.finishRelease()
        if self._importingLater is not None and self._importingLater.active():
            self._importingLater.cancel()
        if self.successor is not None:
            # A successor stopped before its takeover finished rolls back.
            self.successor.cancel()
        if self.staging is not None:
            self.staging.cancel()
        if self._drainCall is not None and self._drainCall.running:
            self._drainCall.stop()
        d = None
        if self._innerStarted:
            d = self.inner.stopService()
        if self.control is not None:
            self.control.close()
        self.pidfile.removeIfMine()
        self.registry.uninstall()
        return d

    def _startInner(self) -> None:
        if self.config.takeover:
            self.inner.privilegedStartService()
        self.inner.startService()
        self._innerStarted = True

    def _bindControl(self) -> ControlSocket:
        factory = ControlServerFactory(self.root, self._policy)
        return ControlSocket.listen(
            self.registry.untrackedListenUNIX, self.config.control, factory
        )

    # -- roles ----------------------------------------------------------------

    def _serve(self, generation: int) -> None:
        from migrator.takeover._incumbent import Incumbent  # (not before: see above)

        self.generation = generation
        self.state = SERVING
        self.incumbent = Incumbent(
            self._reactor,
            self.registry,
            self.adapters,
            identity=self.identity,
            onHandedOff=self._handedOff,
            onSuccessorDetached=self._successorDetached,
            onReleased=self._successorDetached,
            takeoverTimeout=self.config.takeoverTimeout,
            clock=self._reactor.seconds,
            faults=self.config.faults,
        )
        self.root.incumbent = self.incumbent
        self.root.makeDryRuns = partial(
            _later.makeDryRuns, self._reactor, self.incumbent, self.config.takeoverTimeout
        )
        # Imported soon, off the takeover's path, not at the first dry run:
        # by then newer code may be on disk, and must not run beside this.
        self._importingLater = self._reactor.callLater(_later.IMPORT_LATER[0], self._importLater)
        self.pidfile.write()
        notify = f"READY=1\nSTATUS=serving generation {generation}"
        if generation:
            notify += f"\nMAINPID={os.getpid()}"
        sdNotify(notify)
        _log.info(
            "migrate: serving {what} as generation {generation} (pid {pid}, "
            "Python {python}); control socket {control}; ports: {ports}",
            what=self.config.description,
            generation=generation,
            pid=os.getpid(),
            python=sys.version.split()[0],
            control=self.config.control,
            ports=", ".join(
                f"{p.key}={p.address()}" for p in self.registry.listening()
            ) or "none",
        )

    def _tookOver(self, result: dict[str, Any]) -> None:
        assert self.successor is not None
        # Ours now: closed (and unlinked if still ours) when we stop.
        self.control = self.successor.control
        self._tookOverAt = self._wall(self._reactor.seconds())
        self._serve(generation=int(result.get("generation", 1)))
        staying = result.get("staying") or {}
        alone = result.get("alone")
        if alone:
            # The successor said in full what happened; here, the outcome.
            sdNotify(
                f"STATUS=serving generation {self.generation}; the predecessor "
                f"(pid {alone['pid']}) died during the takeover"
            )
            _log.info(
                "takeover complete without the predecessor: generation "
                "{generation}, {ports} port(s) accepting, {connections} "
                "connection(s) moved",
                generation=self.generation,
                ports=len(self.registry.listening()),
                connections=result.get("connections", 0),
            )
        else:
            _log.info(
                "takeover complete: generation {generation}, {moved} port(s) "
                "adopted, {connections} connection(s) moved, {staying} left to "
                "drain in the predecessor; {total} ms from connecting to commit "
                "(accepting was paused {paused} ms in the predecessor)",
                generation=self.generation,
                moved=self.registry.adoptedCount(),
                connections=result.get("connections", 0),
                staying=sum(staying.values()),
                total=result.get("total_ms"),
                paused=result.get("accept_paused_ms"),
            )
        if translated := describeTranslations(result.get("translations")):
            _log.info("state translated between versions: {translated}", translated=translated)
        if result.get("freeze_ms"):
            _log.info(
                "connections were frozen for p50 {p50} ms, p99 {p99} ms, max "
                "{max} ms (capture in the predecessor to reading here)",
                **result["freeze_ms"],
            )
        self._logClasses(result)
        self.lastTakeover = result

    def _takeoverFailed(self, failure: Any) -> None:
        self.state = FAILED
        if failure.check(TakeoverFailed):
            message = failure.getErrorMessage()
            aftermath = failure.value.aftermath
        else:
            # A bug (e.g. in the rollback), not a refusal: still exit, rather
            # than linger serving nothing.
            _log.failure("the takeover failed unexpectedly", failure)
            message = f"the takeover failed unexpectedly: {failure.getErrorMessage()}"
            aftermath = self.successor.aftermath() if self.successor else "nothing is known"
        # Never more than is known: see Successor.aftermath.
        sys.stderr.write(f"migrate: {message}\nmigrate: {aftermath}.\n")
        remaining = self.registry.connectionCount()
        if remaining:
            # Connections accepted before the takeover was abandoned are
            # ours to finish: serve them, then exit.
            _log.info(
                "serving the {count} connection(s) accepted before the "
                "takeover failed, then exiting",
                count=remaining,
            )
            self._startDrain(lambda: self._stopAndExit(1))
        else:
            self._reactor.callLater(0, self._stopAndExit, 1)

    def _stopAndExit(self, code: int) -> None:
        if self._finished:
            return
        self._finished = True
        if self._drainCall is not None and self._drainCall.running:
            self._drainCall.stop()
        core = cast(IReactorCore, self._reactor)
        core.addSystemEventTrigger("after", "shutdown", self._exit, code)
        core.stop()

    def _handedOff(self, successor: dict[str, Any]) -> None:
        self.state = DRAINING
        if not self.running:
            # Asked to stop during the takeover: no drain, the stop goes on
            # once the successor has hung up.
            _log.info(
                "handed off to pid {pid}: stopping, as asked; {count} "
                "connection(s) that stayed here are closed",
                pid=successor.get("pid"),
                count=self.registry.connectionCount(),
            )
            return
        sdNotify(f"STATUS=handed off to pid {successor.get('pid')}; draining")
        remaining = len(self._remaining())
        _log.info(
            "handed off to pid {pid}: draining {count} connection(s), at "
            "most {timeout:g} s",
            pid=successor.get("pid"),
            count=remaining,
            timeout=self.config.drainTimeout,
        )
        self._successorWaitUntil = self._reactor.seconds() + self.config.takeoverTimeout
        self._startDrain(self._finish)

    def _startDrain(self, done: Callable[[], None]) -> None:
        """
        Serve the remaining connections until they close or the drain
        timeout expires, then call C{done}.
        """
        self._drainDone = done
        self._drainDeadline = self._reactor.seconds() + self.config.drainTimeout
        self._drainCall = LoopingCall(self._checkDrained)
        self._drainCall.clock = self._reactor
        self._drainCall.start(0.2, now=True)

    def _importLater(self) -> None:
        # The adapters put off (TLS's: 5-7 ms of a first takeover's turns;
        # failures logged by the registry), then the dry runs' modules.
        self.adapters.typeNames()
        later = _later.IMPORT_LATER[1] - _later.IMPORT_LATER[0]
        self._importingLater = self._reactor.callLater(later, self._importDryRuns)

    def _importDryRuns(self) -> None:
        # Not in a takeover's turns (3-5 ms among its batches): after it;
        # not at all once handed off (no more dry runs here).
        if self.state != SERVING:
            return
        if self.incumbent is not None and self.incumbent.current is not None:
            self._importingLater = self._reactor.callLater(0.1, self._importDryRuns)
        else:
            _later.importDryRuns()

    def _successorDetached(self) -> None:
        # (Or the moved connections are released.)  Not at the drain's tick.
        if self._drainCall is not None and self._drainCall.running:
            self._checkDrained()

    def _remaining(self) -> list[Any]:
        # The connections left to drain: not those that moved and are still
        # being let go of (see Incumbent.finishRelease; it holds them).
        i = self.incumbent
        if i is None:
            return list(self.registry.openConnections())
        return self.registry.openConnectionsBesides(i.releasing, i.releasingCounted)

    def _checkDrained(self) -> None:
        if self._finished:
            # (The release finishing at the exit calls here too: nothing is
            # left to look at, and 10,000 connections take 10 ms to list.)
            return
        if (
            self.incumbent is not None
            and self.incumbent.successorAttached
            and self._reactor.seconds() < self._successorWaitUntil
        ):
            # The successor hangs up once it has our commit answer and has
            # published its control socket; exiting earlier could lose the
            # answer.
            return
        remaining = self._remaining()
        if not remaining:
            _log.info("all connections drained; exiting")
            self._drainDone()
            return
        assert self._drainDeadline is not None
        if self._closing or self._reactor.seconds() < self._drainDeadline:
            return
        self._closing = True
        _log.warn(
            "drain timeout: closing {count} remaining connection(s)",
            count=len(remaining),
        )
        for transport in remaining:
            transport.loseConnection()
        # Whatever cannot even be closed within a few seconds is abandoned.
        self._reactor.callLater(5.0, self._drainDone)

    _closing = False
    _tookOverAt: float | None = None
    _importingLater: IDelayedCall | None = None
    _successorWaitUntil = 0.0
    _drainDone: Callable[[], None]
    _finished = False

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._drainCall is not None and self._drainCall.running:
            self._drainCall.stop()
        if self.incumbent is not None:
            # The moved connections still held are let go of before the
            # shutdown: no stopService or disconnectAll may touch them
            # (their handles are left for the exit to close).
            self.incumbent.finishRelease(close=False)
        self._exitWhenDone(0)
        cast(IReactorCore, self._reactor).stop()

    # -- status ---------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "generation": self.generation,
            "python": sys.version.split()[0],
            "lineage": self.lineage(),
            "command": self.config.command,
        }

    def status(self) -> dict[str, Any]:
        """
        Everything C{python -m migrator status} shows, as plain data.
        """
        incumbent = self.incumbent
        predecessor = None
        if self.successor is not None and self.successor.predecessor is not None:
            predecessor = {
                "pid": self.successor.predecessor.pid,
                "python": self.successor.predecessor.python,
                "draining": processAlive(self.successor.predecessor.pid),
            }
        guard = incumbent.unmovable if incumbent else None
        predecessorCommand = None
        if self.successor is not None and self.successor.predecessor is not None:
            predecessorCommand = self.successor.predecessor.command
        return {
            **splitStatus(guard, self.lastTakeover, predecessor),
            "migrator": __version__,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "state": self.state,
            "generation": self.generation,
            "started": self.startedAt,
            "uptime": round(self._reactor.seconds() - self._startedSeconds, 3),
            "service": self.config.description,
            "control": self.config.control,
            "ports": [p.describe() for p in self.registry.listening()],
            "connections": {"open": self.registry.connectionCount()},
            "takeover": incumbent.takeoverStatus() if incumbent else None,
            "last_takeover": incumbent.lastAttempt if incumbent else None,
            "handed_off_to": incumbent.handedOffTo if incumbent else None,
            "predecessor": predecessor,
            "took_over": self.lastTakeover,
            "adapters": self.adapters.typeNames(),
            "lineage": self.lineage(),
            "command": self.config.command,
            "previous_command": predecessorCommand,
            "last_dry_run": self.root.dryRuns.last if self.root.dryRuns else None,
        }
