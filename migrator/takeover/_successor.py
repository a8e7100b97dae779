# -*- test-case-name: tests.test_successor -*-
"""
The successor's half of a takeover: connect to the incumbent's control
socket, receive its listening ports, build our own service adopting them,
then switch and commit.

On any failure before the incumbent confirms the commit, what happens
depends on the incumbent:

  - alive (it refused, timed out, gave up on purpose, or merely hung up):
    the successor lets go of every port it adopted or bound (close, never
    C{shutdown()}), tells the incumbent (if it can), and its caller exits
    non-zero: the incumbent resumes accepting and nothing was refused;

  - dead (its process is gone: see L{migrator.takeover._liveness}): the
    successor completes the takeover on its own with whatever arrived (see
    L{migrator.takeover._alone}).
"""

from __future__ import annotations

import gc
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.spread import pb

from migrator.state._registry import AdapterRegistry
from migrator.takeover._alone import CompletesAlone
from migrator.takeover._batches import Batches, ReceivesBatches, freezeFigures
from migrator.takeover._control import (
    ControlClientFactory,
    ControlSocket,
    PeerPolicy,
    peerCredentials,
)
from migrator.takeover._failure import KEEPS_SERVING, TakeoverFailed
from migrator.takeover._failure import describeFailure as _describe
from migrator.takeover._inbox import Inbox, Message
from migrator.takeover._liveness import ProcessWatch, waitForDeath
from migrator.takeover._messages import (
    BeginAnswer,
    CaptureReport,
    CommitAnswer,
    Farewell,
    PortsMessage,
    PreparedReport,
    ReceivedReport,
    RestoredReport,
    Streaming,
    SwitchAnswer,
)
from migrator.takeover._ports import ListenerRegistry
from migrator.takeover._steps import Faults
from migrator.takeover._unmovable import beginRequest, captureRequestFor, describePlan

_log = Logger()

def _peerPid(broker: Any) -> int | None:
    """
    The pid of the process at the other end of C{broker}'s UNIX socket
    (C{SO_PEERCRED}), or C{None} if it cannot be read.
    """
    try:
        return peerCredentials(broker.transport.getHandle())[0]
    except Exception:
        return None


@attrs.define(eq=False)
class Successor(ReceivesBatches, CompletesAlone):
    """
    Drives one takeover from the successor's side.

    @ivar startService: builds and starts the wrapped service; called once
        the incumbent's ports are on offer in C{registry}.
    @ivar prepareControl: binds this process's own control socket (not yet
        published).
    @ivar faults: failures to inject on purpose (rollback drills); given
        by the composition root, which reads C{MIGRATOR_FAULT}.
    @ivar watchProcess: follows the incumbent's process (a seam for tests).
    @ivar peerPid: reads the incumbent's pid from the control connection
        (C{SO_PEERCRED}; a seam for tests).
    @ivar deathGrace: after a hang-up, how long the incumbent's process is
        given to exit before it is taken to live on (a killed process hangs
        up a little before the kernel reports it gone).
    @ivar watch: the incumbent's process, once known.
    @ivar predecessor: the incumbent's answer to C{begin}.
    """

    _reactor: Any
    path: str
    registry: ListenerRegistry
    startService: Callable[[], None]
    prepareControl: Callable[[], ControlSocket]
    timeout: float = 30.0
    policy: PeerPolicy = attrs.field(factory=PeerPolicy)
    faults: Faults = attrs.field(factory=Faults)
    watchProcess: Callable[[int], ProcessWatch] = ProcessWatch.open
    peerPid: Callable[[Any], int | None] = _peerPid
    deathGrace: float = 3.0
    clock: Callable[[], float] = time.time
    predecessor: BeginAnswer | None = None
    adapters: AdapterRegistry = attrs.field(factory=AdapterRegistry)
    #: Never two: what the incumbent does with connections no adapter can
    #: move (C{--unmovable}: refuse, drain or close).
    unmovable: str = "refuse"
    #: Whether ports of the incumbent this service does not declare may be
    #: closed (C{--close-undeclared-ports}); else the incumbent refuses.
    closeUndeclared: bool = False
    #: The health check (C{--check}), run once this process accepts, before
    #: the commit; it fails (and the takeover rolls back) if the service
    #: is not healthy (L{migrator.takeover._check}).
    check: Callable[[], Awaitable[Any]] | None = None
    #: The connection or component ids the operator selected to move (all
    #: if empty; see L{migrator.takeover._unmovable.beginInfo}).
    select: tuple[str, ...] = ()
    #: How the connections stream (L{migrator.takeover._messages.Streaming};
    #: C{None}: in one message, as before streaming).
    stream: Streaming | None = None
    broker: Any = None
    control: ControlSocket | None = None
    inbox: Inbox | None = None
    restored: Batches | None = None
    chunks: dict[int, list[list[Any]]] = attrs.field(factory=dict)
    chunkBytes: int = 0
    connectionReport: dict[str, Any] = attrs.field(factory=dict)
    watch: ProcessWatch | None = None
    captureReport: CaptureReport | None = None
    #: Port records and descriptors received, not yet offered to the
    #: registry (ours to close, or to offer when completing alone).
    unoffered: tuple[list[dict[str, Any]], list[int]] | None = None
    #: Whether the wrapped service was started.
    started: bool = False
    _step: str = "connect"
    _stopping: bool = False
    _failing: bool = False
    #: Set once the commit is asked for: from then on the incumbent may
    #: have let go, so nothing cancels the takeover.
    _committing: bool = False
    #: Whether it paused the garbage collector (from C{capture} to the
    #: takeover's end, at most L{timeout}), and the call that bounds it.
    _collecting: bool = False
    _collectorBound: Any = None
    # What a "hang" fault waits on, kept here: a coroutine suspended on a
    # Deferred that nothing else references is garbage-collected, which
    # throws GeneratorExit into it and turns the hang into a rollback.
    _hangs: list[Deferred[None]] = attrs.field(factory=list, init=False)
    _running: Deferred[dict[str, Any]] | None = attrs.field(default=None, init=False)

    @property
    def step(self) -> str:
        """
        The step the takeover is at (C{connect}, C{begin}, C{adopt},
        C{prepared}, C{capture}, C{restore}, C{switch}, C{check}, C{commit},
        C{done}, or C{alone} while completing without the incumbent).
        """
        return self._step

    def run(self) -> Deferred[dict[str, Any]]:
        """
        Take over.

        @return: a L{Deferred} firing with the commit's result (including
            the new C{generation}; with an C{alone} record if the incumbent
            died and this process completed the takeover on its own), or
            failing with L{TakeoverFailed} after everything was rolled
            back.
        """
        self._running = Deferred.fromCoroutine(self._run())
        return self._running

    def cancel(self) -> None:
        """
        Abandon the takeover if it is still under way (this process is
        stopping): it rolls back as on any other failure.
        """
        if self._committing or self._step in ("done", "alone"):
            # The incumbent may have committed already (or is gone):
            # rolling back now could leave nobody listening.
            return
        self._stopping = True
        if self._running is not None and not self._running.called:
            self._running.cancel()

    def farewell(self) -> Farewell | None:
        """
        @return: the incumbent's farewell, if it gave up on purpose.
        """
        return self.inbox.farewell if self.inbox is not None else None

    def aftermath(self) -> str:
        """
        What serves after a failed takeover, as far as this process knows.
        """
        farewell = self.farewell()
        pid = self.watch.pid if self.watch is not None else None
        if farewell is not None and farewell.stopping:
            return (
                f"the incumbent (pid {pid}) gave up this takeover because it is "
                f"stopping: once it has exited, nothing serves"
            )
        if self.watch is not None and self.watch.dead():
            return f"the incumbent (pid {pid}) is gone: nothing serves"
        if self.broker is None:
            return "nothing was changed (this process never reached the running service)"
        return KEEPS_SERVING

    def afterCommit(self, frozenAt: float, spread: bool = False) -> Deferred[None]:
        """
        Finish a committed (or completed) takeover: activate the moved
        connections, take the lock files, publish the control socket, hang
        up on the incumbent.  Never raises.

        @param frozenAt: when the incumbent froze the connections (its wall
            clock), for the freeze figures.
        @param spread: activate the batches one per reactor turn (the last
            one, whose connections were talking, at once) rather than all
            in this turn.
        @return: a L{Deferred} that fires once every connection is active
            (and the freeze figures are in the report).
        """
        activated: Deferred[None] = succeed(None)
        if self.restored is not None:
            # First of all: the frozen connections resume here.
            later = (lambda f: self._reactor.callLater(0, f)) if spread else None
            activated = self.restored.activate(frozenAt, later).addCallback(
                lambda freezes: self.connectionReport.update(freezeFigures(freezes, frozenAt))
            )
        if self.inbox is not None:
            self.inbox.close()
        if self.watch is not None:
            self.watch.close()
        try:
            self.registry.takeLocks()
        except Exception:
            _log.failure("takeover committed, but taking the UNIX lock files failed")
        try:
            assert self.control is not None
            self.control.publish()
        except Exception:
            _log.failure(
                "takeover committed, but the control socket could not be "
                "published at {path}; serving without it",
                path=self.path,
            )
        try:
            # Hanging up tells the incumbent it may exit once drained.
            self.broker.transport.loseConnection()
        except Exception:
            _log.failure("takeover committed, but hanging up on the incumbent failed")
        return activated

    def startWrapped(self) -> tuple[int, list[str]]:
        """
        Offer the ports received (if any) and start the wrapped service: it
        adopts the ports it declares and binds the others (not accepting
        until L{ListenerRegistry.resumeAccepting}); the ports it does not
        declare are closed.

        @return: how many ports were adopted, and the keys of those closed.
        """
        records, fds = self.unoffered or ([], [])
        self.unoffered = None
        if fds:
            self.registry.offer(records, fds)
        self.started = True
        self.startService()
        return self.registry.adoptedCount(), self.registry.closeUnclaimed()

    def _follow(self, pid: int | None) -> None:
        if self.watch is None and pid is not None and pid > 0:
            self.watch = self.watchProcess(pid)

    def _incumbentHungUp(self) -> None:
        """
        The incumbent hung up on us before the commit: it has abandoned the
        takeover (timed out, or is going away), or it died.  Stop whatever
        step we are in (even one that hangs) at once: L{_run} then tells
        the two apart.
        """
        if self._committing or self._step in ("done", "alone") or self._running is None:
            return
        _log.warn("the incumbent hung up during step {step}", step=self._step)
        if not self._failing:
            self._running.cancel()

    def _incumbentGaveUp(self, farewell: Farewell) -> None:
        """
        The incumbent abandoned the takeover on purpose: roll back.
        """
        _log.warn(
            "the incumbent abandoned the takeover during step {step}: {reason}",
            step=self._step,
            reason=farewell.reason,
        )
        if self._committing or self._step in ("done", "alone") or self._running is None:
            return
        if not self._failing and not self._running.called:
            self._running.cancel()

    async def _fault(self, point: str) -> None:
        await self.faults.at(point, self._hangs, self._reactor)

    def _call(self, root: Any, method: str, *args: Any) -> Deferred[Any]:
        d = root.callRemote(method, *args)
        d.addTimeout(self.timeout, self._reactor)
        return d

    async def _run(self) -> dict[str, Any]:
        started = self.clock()
        root = None
        try:
            self._step = "connect"
            factory = ControlClientFactory(self.policy)
            self._reactor.connectUNIX(self.path, factory, timeout=self.timeout)
            rootD = factory.getRootObject()
            rootD.addTimeout(self.timeout, self._reactor)
            try:
                root = await rootD
            except Exception as e:
                if factory.refused:
                    raise TakeoverFailed(
                        f"the control socket {self.path} is served by another "
                        f"user ({factory.refused})",
                        "nothing was changed",
                    ) from e
                raise
            self.broker = root.broker
            self.broker.notifyOnDisconnect(self._incumbentHungUp)
            self._follow(self.peerPid(self.broker))
            await self._fault("connected")

            self._step = "begin"
            request = beginRequest(self.adapters, self.unmovable, self.select)
            begun = BeginAnswer.fromWire(await self._call(root, "begin", request.toWire()))
            self.predecessor = begun
            if (plan := describePlan(begun.plan)) is not None:
                _log.info("the incumbent's plan: {plan}", plan=plan)
            self._follow(begun.pid)
            fds = self.broker.receivedFds
            if len(fds) != 1:
                raise TakeoverFailed(
                    f"expected the incumbent's channel descriptor, got {len(fds)}"
                )
            self.inbox = Inbox(
                self._reactor, socket.socket(fileno=fds.pop()), self._incumbentGaveUp
            )
            payload, portFds = await self._receive()
            self.unoffered = ([], portFds)
            records = list(PortsMessage.fromBytes(payload).ports)
            self.unoffered = (records, portFds)
            _log.info(
                "incumbent pid {pid} (generation {generation}, Python "
                "{python}) sent {count} listening port(s)",
                pid=begun.pid,
                generation=begun.generation,
                python=begun.python,
                count=len(portFds),
            )
            if len(portFds) != begun.ports or len(records) != len(portFds):
                raise TakeoverFailed(
                    f"the incumbent announced {begun.ports} ports and "
                    f"{len(records)} records, {len(portFds)} descriptors arrived"
                )
            # The handshake's end: from here on the incumbent gives us the
            # takeover timeout for each step (starting our service first).
            await self._call(root, "received", ReceivedReport(len(portFds)).toWire())

            self._step = "adopt"
            await self._fault("before-adopt")
            adopted, unclaimed = self.startWrapped()
            if adopted + len(unclaimed) != len(portFds):
                raise TakeoverFailed(
                    f"adopted {adopted} and set aside {len(unclaimed)} of "
                    f"{len(portFds)} ports received"
                )
            if unclaimed and self.closeUndeclared:
                _log.warn(
                    "the incumbent listens on {keys}, which this service does not "
                    "declare: they will be closed at the commit (--close-undeclared-ports)",
                    keys=", ".join(unclaimed),
                )
            self.control = self.prepareControl()
            await self._fault("after-adopt")

            self._step = "prepared"
            await self._call(
                root,
                "prepared",
                PreparedReport(
                    len(portFds), adopted, tuple(unclaimed), self.closeUndeclared
                ).toWire(),
            )

            self._step = "capture"
            # The connections' objects, restored batch after batch, all
            # survive: the collections the batches' allocations bring
            # about would scan them again and again, the older generations
            # too (about 6 us per connection in all).  Paused until the
            # takeover's end (the commit, the connections reading again),
            # at most the takeover timeout; then the first collections
            # see them once.
            self._pauseCollector()
            captureRequest = captureRequestFor(self.adapters, self.stream)
            answer = self._call(root, "capture", captureRequest.toWire())
            # Kept as soon as it comes (a death before the batches arrive
            # counts what was announced).
            answer.addCallback(lambda wire: setattr(self, "captureReport", CaptureReport.fromWire(wire)))
            await self.receiveBatches(answer, lambda n: self._acknowledge(root, n))
            self._step = "restore"
            self.restoredReport()
            await self._fault("after-restore")
            assert self.restored is not None
            await self._call(root, "restored", RestoredReport(self.restored.count).toWire())

            self._step = "switch"
            SwitchAnswer.fromWire(await self._call(root, "switch"))
            switchedAt = self.clock()
            self.registry.resumeAccepting()
            await self._fault("after-switch")
            if self.check is not None:
                self._step = "check"
                await self.check()

            self._step = "commit"
            await self._fault("before-commit")
            # No timeout here: once the incumbent has committed, its ports are
            # ours alone, and giving up on a slow answer would leave nobody
            # listening.  A lost connection is decided by whether the
            # incumbent still lives (it only exits after we hang up).
            self._committing = True
            try:
                committed = CommitAnswer.fromWire(await root.callRemote("commit"))
            except (pb.PBConnectionLost, pb.DeadReferenceError) as e:
                # DeadReferenceError: the connection was already gone when
                # we called.
                raise TakeoverFailed("the incumbent hung up instead of committing") from e
            # Committed: the incumbent has let go of its ports and
            # connections.  Nothing from here on may roll back (that would
            # leave nobody serving them), so every failure is logged and the
            # successor keeps serving.
            self._step = "done"
            assert self.captureReport is not None
            await self.afterCommit(self.captureReport.frozenAt, spread=True)
            result = committed.toWire()
            result["total_ms"] = round((self.clock() - started) * 1000, 3)
            result["switch_to_commit_ms"] = round((self.clock() - switchedAt) * 1000, 3)
            result.update(self.connectionReport)
            return result
        except BaseException as e:
            # From here on, a hang-up or a farewell is taken into account
            # by what follows, not by cancelling it.
            self._failing = True
            reason = _describe(e)
            if self._stopping:
                reason = "this process is stopping"
            farewell = self.farewell()
            if farewell is not None and isinstance(e, CancelledError) and not self._stopping:
                reason = f"the incumbent abandoned the takeover: {farewell.reason}"
            if await self._incumbentDied(e):
                try:
                    return self.completeAlone(reason, started)
                except Exception as alone:
                    _log.failure("completing the takeover without the incumbent failed")
                    reason = f"{reason}; completing the takeover alone failed: {_describe(alone)}"
            if self.unoffered is not None:
                for fd in self.unoffered[1]:
                    os.close(fd)
                self.unoffered = None
            await self._rollback(root, reason)
            if self.watch is not None:
                aftermath = self.aftermath()
                self.watch.close()
            else:
                aftermath = e.aftermath if isinstance(e, TakeoverFailed) else self.aftermath()
            raise TakeoverFailed(
                f"takeover failed at step {self._step}: {reason}", aftermath
            ) from e
        finally:
            self._resumeCollector()

    def _pauseCollector(self) -> None:
        if gc.isenabled():
            gc.disable()
            self._collecting = True
            # (A commit never answered does not keep it paused for good.)
            self._collectorBound = self._reactor.callLater(self.timeout, self._resumeCollector)

    def _resumeCollector(self) -> None:
        if self._collecting:
            self._collecting = False
            # Everything the takeover made (a connection's million objects,
            # say) joins the oldest generation, not scanned now: else the
            # first collection, young, would scan it all in one turn (46
            # ms for a million strings' list) while the moved connections
            # are served again.  (Freezing then unfreezing moves, without
            # scanning; a later full collection sees them, as always.)
            gc.freeze()
            gc.unfreeze()
            gc.enable()
        bound, self._collectorBound = self._collectorBound, None
        if bound is not None and bound.active():
            bound.cancel()

    def _acknowledge(self, root: Any, number: int) -> None:
        # Not a step: lost or refused (an older incumbent), it changes
        # nothing but when the incumbent's last turn comes.
        root.callRemote("batchRestored", number).addErrback(lambda _: None)

    async def _incumbentDied(self, e: BaseException) -> bool:
        """
        After a failure: is the incumbent dead (so that this process must
        complete the takeover on its own)?  Not if this process is stopping,
        if the incumbent refused or said it gave up, or if it lives on; a
        hang-up gives it L{deathGrace} seconds to be reported gone.
        """
        watch = self.watch
        if self._stopping or watch is None or isinstance(e, pb.RemoteError):
            return False

        def decided() -> bool:
            return self._stopping or self.farewell() is not None

        if decided():
            return False
        if watch.dead():
            return True
        hungUp = bool(getattr(self.broker, "disconnected", False)) or (
            self.inbox is not None and self.inbox.closed
        )
        if not hungUp:
            return False
        try:
            return await waitForDeath(self._reactor, watch, self.deathGrace, decided)
        except CancelledError:
            return False

    async def _receive(self) -> Message:
        """
        The next message from the incumbent's frame channel.  Its
        descriptors are the caller's once this returns; if the wait for the
        next turn is cancelled (the incumbent hung up), the message goes
        back to the inbox (which closes its descriptors unless it is used
        to complete the takeover).
        """
        assert self.inbox is not None
        d = self.inbox.next()
        d.addTimeout(self.timeout, self._reactor)
        message = await d
        try:
            # Carry on outside the channel's read callback.
            await deferLater(self._reactor, 0, lambda: None)
        except BaseException:
            self.inbox.putBack(message)
            raise
        return message

    async def _rollback(self, root: Any, reason: str) -> None:
        if self.restored is not None:
            self.restored.rollback()
            self.restored = None
        if self.inbox is not None:
            self.inbox.close()
        released = self.registry.releaseAll()
        self.registry.closeUnclaimed()
        if self.control is not None:
            self.control.close()
            self.control = None
        _log.error(
            "takeover failed at step {step}: {reason}; released {count} "
            "port(s) without closing them for the incumbent",
            step=self._step,
            reason=reason,
            count=len(released),
        )
        if root is not None and not self.broker.disconnected:
            try:
                d = root.callRemote("abort", reason)
                d.addTimeout(min(self.timeout, 5.0), self._reactor)
                await d
            except Exception:
                pass
            self.broker.transport.loseConnection()

