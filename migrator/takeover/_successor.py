# -*- test-case-name: tests.test_successor -*-
"""
The successor's half of a takeover: connect to the incumbent's control
socket, receive its listening ports, build our own service adopting them,
then switch and commit.

On any failure before the incumbent confirms the commit, the successor lets
go of every port it adopted or bound (close, never C{shutdown()}), tells the
incumbent (if it can), and its caller exits non-zero: the incumbent resumes
accepting and nothing was refused.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb

from migrator.state._registry import AdapterRegistry
from migrator.state._restore import Restored, restoreConnections
from migrator.state._translator import mergeTranslations
from migrator.state._versions import readableTypes
from migrator.takeover._channel import FrameChannel
from migrator.takeover._control import ControlClientFactory, ControlSocket, PeerPolicy
from migrator.takeover._ports import ListenerRegistry
from migrator.takeover._unmovable import beginInfo, describePlan

_log = Logger()

#: The points at which L{Successor} consults C{MIGRATOR_FAULT}: a comma
#: separated list of C{kill:POINT}, C{hang:POINT} or C{raise:POINT}.  Used by
#: the rollback tests; documented in docs/operators.md.
FAULT_POINTS = (
    "connected",
    "before-adopt",
    "after-adopt",
    "after-restore",
    "after-switch",
    "before-commit",
)


class TakeoverFailed(Exception):
    """
    The takeover did not happen; the incumbent keeps serving.  The message
    says why, for the operator.
    """


def processAlive(pid: int) -> bool:
    """
    Is process C{pid} alive?  A zombie (exited, not yet reaped) is not.
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


class _Inbox:
    """
    Messages from the incumbent's frame channel, in order.
    """

    def __init__(self, reactor: Any, sock: socket.socket) -> None:
        self._queue: list[tuple[bytes, list[int]]] = []
        self._waiting: list[Deferred[tuple[bytes, list[int]]]] = []
        self._closed: Failure | None = None
        self.channel = FrameChannel(reactor, sock, self._message, self._close)
        self.channel.startReading()

    def _message(self, payload: bytes, fds: list[int]) -> None:
        if self._waiting:
            self._waiting.pop(0).callback((payload, fds))
        else:
            self._queue.append((payload, fds))

    def _close(self, reason: Failure) -> None:
        self._closed = reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(reason)

    def next(self) -> Deferred[tuple[bytes, list[int]]]:
        if self._queue:
            return succeed(self._queue.pop(0))
        if self._closed is not None:
            return fail(self._closed)
        d: Deferred[tuple[bytes, list[int]]] = Deferred()
        self._waiting.append(d)
        return d

    def close(self) -> None:
        for _, fds in self._queue:
            for fd in fds:
                os.close(fd)
        self._queue = []
        self.channel.close()


@attrs.define(eq=False)
class Successor:
    """
    Drives one takeover from the successor's side.

    @ivar startService: builds and starts the wrapped service; called once
        the incumbent's ports are on offer in C{registry}.
    @ivar prepareControl: binds this process's own control socket (not yet
        published).
    """

    _reactor: Any
    path: str
    registry: ListenerRegistry
    startService: Callable[[], None]
    prepareControl: Callable[[], ControlSocket]
    timeout: float = 30.0
    policy: PeerPolicy = attrs.field(factory=PeerPolicy)
    faults: str = attrs.field(factory=lambda: os.environ.get("MIGRATOR_FAULT", ""))
    processAlive: Callable[[int], bool] = processAlive
    clock: Callable[[], float] = time.time
    predecessor: dict[str, Any] = attrs.field(factory=dict)
    adapters: AdapterRegistry = attrs.field(factory=AdapterRegistry)
    #: Never two: what the incumbent is to do with connections no adapter
    #: can move (C{--unmovable}: refuse, drain or close).
    unmovable: str = "refuse"
    broker: Any = None
    control: ControlSocket | None = None
    inbox: _Inbox | None = None
    restored: Restored | None = None
    connectionReport: dict[str, Any] = attrs.field(factory=dict)
    _step: str = "connect"
    # What a "hang" fault waits on, kept here: a coroutine suspended on a
    # Deferred that nothing else references is garbage-collected, which
    # throws GeneratorExit into it and turns the hang into a rollback.
    _hangs: list[Deferred[None]] = attrs.field(factory=list, init=False)
    _running: Deferred[dict[str, Any]] | None = attrs.field(default=None, init=False)

    def run(self) -> Deferred[dict[str, Any]]:
        """
        Take over.

        @return: a L{Deferred} firing with the commit's result (including
            the new C{generation}), or failing with L{TakeoverFailed} after
            everything was rolled back.
        """
        self._running = Deferred.fromCoroutine(self._run())
        return self._running

    def cancel(self) -> None:
        """
        Abandon the takeover if it is still under way (this process is
        stopping): it rolls back as on any other failure.
        """
        if self._step in ("commit", "done"):
            # The incumbent may have committed already: rolling back now
            # could leave nobody listening.
            return
        if self._running is not None and not self._running.called:
            self._running.cancel()

    def _afterCommit(self, frozenAt: float) -> None:
        """
        Finish a committed takeover; never raises.
        """
        try:
            if self.restored is not None:
                # First of all: the frozen connections resume here.
                activated = self.restored.activate()
                if activated and frozenAt:
                    freezes = sorted((t - frozenAt) * 1000 for t in activated)
                    self.connectionReport["freeze_ms"] = {
                        "p50": round(freezes[len(freezes) // 2], 3),
                        "p99": round(freezes[min(len(freezes) - 1, int(len(freezes) * 0.99))], 3),
                        "max": round(freezes[-1], 3),
                    }
        except Exception:
            _log.failure("takeover committed, but resuming the moved connections failed")
        if self.inbox is not None:
            self.inbox.close()
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

    def _incumbentHungUp(self) -> None:
        """
        The incumbent hung up on us before the commit: it has abandoned the
        takeover (timed out, or is going away) and resumed accepting.  Stop
        whatever step we are in (even one that hangs) and roll back at once,
        so that we do not keep accepting on its sockets.
        """
        if self._step in ("commit", "done") or self._running is None:
            return
        _log.warn(
            "the incumbent hung up during step {step}: rolling back", step=self._step
        )
        self._running.cancel()

    async def _fault(self, point: str) -> None:
        for spec in filter(None, self.faults.split(",")):
            action, _, where = spec.partition(":")
            if where != point:
                continue
            _log.warn("fault injection: {action} at {point}", action=action, point=point)
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif action == "hang":
                hang: Deferred[None] = Deferred()
                self._hangs.append(hang)
                await hang
            elif action == "raise":
                raise RuntimeError(f"injected fault at {point}")

    def _call(self, root: Any, method: str, *args: Any) -> Deferred[Any]:
        d = root.callRemote(method, *args)
        d.addTimeout(self.timeout, self._reactor)
        return d

    async def _run(self) -> dict[str, Any]:
        started = self.clock()
        root = None
        # Port descriptors received but not yet offered to the registry
        # (which owns them once offered) are ours to close on failure.
        unoffered: list[int] = []
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
                        f"user ({factory.refused})"
                    ) from e
                raise
            self.broker = root.broker
            self.broker.notifyOnDisconnect(self._incumbentHungUp)
            await self._fault("connected")

            self._step = "begin"
            info = {
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "argv": sys.argv[:50],
            }
            info.update(beginInfo(self.adapters, self.unmovable))
            begun = await self._call(root, "begin", info)
            self.predecessor = dict(begun)
            plan = describePlan(begun.get("plan"))
            if plan is not None:
                _log.info("the incumbent's plan: {plan}", plan=plan)
            fds = self.broker.receivedFds
            if len(fds) != 1:
                raise TakeoverFailed(
                    f"expected the incumbent's channel descriptor, got {len(fds)}"
                )
            self.inbox = _Inbox(self._reactor, socket.socket(fileno=fds.pop()))
            payload, portFds = await self._receive()
            unoffered = portFds
            message = json.loads(payload.decode("utf-8"))
            records = message["ports"]
            _log.info(
                "incumbent pid {pid} (generation {generation}, Python "
                "{python}) sent {count} listening port(s)",
                pid=begun.get("pid"),
                generation=begun.get("generation"),
                python=begun.get("python"),
                count=len(portFds),
            )
            if len(portFds) != begun.get("ports") or len(records) != len(portFds):
                raise TakeoverFailed(
                    f"the incumbent announced {begun.get('ports')} ports and "
                    f"{len(records)} records, {len(portFds)} descriptors arrived"
                )

            self._step = "adopt"
            await self._fault("before-adopt")
            unoffered = []
            self.registry.offer(records, portFds)
            self.startService()
            unclaimed = self.registry.closeUnclaimed()
            adopted = self.registry.adoptedCount()
            if adopted + len(unclaimed) != len(portFds):
                raise TakeoverFailed(
                    f"adopted {adopted} and set aside {len(unclaimed)} of "
                    f"{len(portFds)} ports received"
                )
            if unclaimed:
                _log.warn(
                    "the incumbent listens on {keys}, which this service does "
                    "not declare: they will be closed",
                    keys=", ".join(unclaimed),
                )
            self.control = self.prepareControl()
            await self._fault("after-adopt")

            self._step = "prepared"
            await self._call(
                root,
                "prepared",
                {"received": len(portFds), "adopted": adopted, "unclaimed": unclaimed},
            )

            self._step = "capture"
            captureReport = await self._call(
                root,
                "capture",
                {
                    "types": self.adapters.typeNames(),
                    "versions": {
                        name: self.adapters.adapterNamed(name).version
                        for name in self.adapters.typeNames()
                    },
                    "readable": readableTypes(self.adapters),
                },
            )
            statePayload, connectionFds = await self._receive()
            self._step = "restore"
            restoreStarted = self.clock()
            self.restored = restoreConnections(
                self._reactor, self.registry, self.adapters, statePayload, connectionFds
            )
            self.connectionReport = {
                "moved": captureReport.get("moved") or {},
                "staying": captureReport.get("staying") or {},
                "bytes": captureReport.get("bytes"),
                "restore_ms": round((self.clock() - restoreStarted) * 1000, 3),
                # Versions seen, steps run (downgrades there, upgrades here).
                "translations": mergeTranslations(
                    captureReport.get("translations"), self.restored.translations
                ),
            }
            _log.info(
                "restored {count} connection(s) from {size} bytes of state in "
                "{ms:.1f} ms (not reading until the commit)",
                count=self.restored.count,
                size=len(statePayload),
                ms=self.connectionReport["restore_ms"],
            )
            await self._fault("after-restore")
            await self._call(root, "restored", {"connections": self.restored.count})

            self._step = "switch"
            await self._call(root, "switch")
            switchedAt = self.clock()
            self.registry.resumeAccepting()
            await self._fault("after-switch")

            self._step = "commit"
            await self._fault("before-commit")
            # No timeout here: once the incumbent has committed, its ports are
            # ours alone, and giving up on a slow answer would leave nobody
            # listening.  A lost connection is decided by whether the
            # incumbent still lives (it only exits after we hang up).
            try:
                result = await root.callRemote("commit")
            except (pb.PBConnectionLost, pb.DeadReferenceError) as e:
                # DeadReferenceError: the connection was already gone when
                # we called.
                if not self.processAlive(int(begun.get("pid", -1))):
                    _log.warn(
                        "the incumbent died during commit; this process keeps the ports"
                    )
                    result = {"generation": int(begun.get("generation", 0)) + 1}
                else:
                    raise TakeoverFailed(
                        "the incumbent hung up instead of committing"
                    ) from e
            # Committed: the incumbent has let go of its ports and
            # connections.  Nothing from here on may roll back (that would
            # leave nobody serving them), so every failure is logged and the
            # successor keeps serving.
            self._step = "done"
            self._afterCommit(float(captureReport.get("frozen_at") or 0.0))
            result = dict(result)
            result["total_ms"] = round((self.clock() - started) * 1000, 3)
            result["switch_to_commit_ms"] = round((self.clock() - switchedAt) * 1000, 3)
            result.update(self.connectionReport)
            return result
        except BaseException as e:
            for fd in unoffered:
                os.close(fd)
            reason = _describe(e)
            await self._rollback(root, reason)
            raise TakeoverFailed(f"takeover failed at step {self._step}: {reason}") from e

    async def _receive(self) -> tuple[bytes, list[int]]:
        """
        The next message from the incumbent's frame channel.  Its
        descriptors are the caller's once this returns, and closed here if
        the wait for the next turn is cancelled (the incumbent hung up).
        """
        assert self.inbox is not None
        d = self.inbox.next()
        d.addTimeout(self.timeout, self._reactor)
        message = await d
        try:
            # Carry on outside the channel's read callback.
            await deferLater(self._reactor, 0, lambda: None)
        except BaseException:
            for fd in message[1]:
                os.close(fd)
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


def _describe(e: BaseException) -> str:
    if isinstance(e, CancelledError):
        return "the incumbent hung up (it gave up on this takeover)"
    if isinstance(e, pb.RemoteError):
        # The message is the remote value; the traceback is withheld
        # ("Traceback unavailable") for pb.Error subclasses.
        return f"the incumbent refused: {e.args[0] if e.args else e.remoteType}"
    if isinstance(e, TimeoutError):
        return "timed out waiting for the incumbent"
    if isinstance(e, Failure):
        return e.getErrorMessage()
    text = str(e) or e.__class__.__name__
    if e.__class__.__module__ not in ("builtins", __name__):
        text = f"{e.__class__.__name__}: {text}"
    return text
