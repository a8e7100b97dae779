# -*- test-case-name: tests.test_service -*-
"""
Tests for L{migrator._service.MigrateService}: its two roles, its status
record, the drain after a handoff, and how a failed takeover exits.

The wrapped service is a recording fake, the registry a L{FakeRegistry},
the control socket a L{FakeControlSocket} (through the
C{MigrateService._bindControl} seam), time a L{MemoryReactorClock}.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from typing import Any, cast

from twisted.application import service
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.protocols import portforward  # noqa: F401 (its adapters register on import)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http  # noqa: F401 (its adapters register on import)
from zope.interface.verify import verifyObject

from migrator import _later, _service
from migrator._service import (
    DRAINING,
    FAILED,
    SERVING,
    STARTING,
    MigrateConfig,
    MigrateService,
)
from migrator._version import __version__
from migrator.interfaces import IMigrationNode
from migrator.state._capture import captureConnections
from migrator.state._nativeform import VERSION as NATIVE_FORM
from migrator.state._registry import AdapterRegistry
from migrator.state._versions import readableTypes
from migrator.takeover._channel import FrameChannel
from migrator.takeover._messages import (
    BeginAnswer,
    BeginRequest,
    CaptureReport,
    CaptureRequest,
    Farewell,
    PreparedReport,
    ReceivedReport,
    RestoredReport,
)
from tests._fakes import (
    FakeConnection,
    FakeControlSocket,
    FakePeerPolicy,
    FakeRegistry,
    FakeRemoteRoot,
    FakeSession,
    FakeWatch,
)

CONTROL = "/run/site/ctl"
TAKEOVER_TIMEOUT = 10.0
DRAIN_TIMEOUT = 60.0
KEYS = ["tcp:8080:#0", "unix:/run/site/web#0"]
SUCCESSOR = {"pid": 4242, "python": "3.13.0"}


class Tracked:
    """
    An application class the adapter module of these tests (this module,
    through L{registerAdapters}) knows how to move.
    """


def registerAdapters(registry: AdapterRegistry) -> None:
    """
    This module as an adapter module (C{--adapters tests.test_service}).
    """
    registry.registerInstance(Tracked)


class RecordingService(service.Service):
    """
    A wrapped service that records its life cycle, and runs C{onStart}
    when started.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.onStart: Any = None

    def privilegedStartService(self) -> None:
        self.events.append("privilegedStartService")
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        self.events.append("startService")
        service.Service.startService(self)
        if self.onStart is not None:
            self.onStart()

    def stopService(self) -> None:
        self.events.append("stopService")
        service.Service.stopService(self)


class _FakeTime:
    """
    The service's wall clock (C{wallClock}), which only says when it started.
    """

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now


class ServiceTestMixin:
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.fakeTime = _FakeTime()
        self.notified: list[str] = []
        self.patch(_service, "sdNotify", self.notified.append)
        self.alive: dict[int, bool] = {}
        self.patch(_service, "processAlive", lambda pid: self.alive.get(pid, False))
        if "MIGRATOR_FAULT" in os.environ:
            self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                       if k != "MIGRATOR_FAULT"})
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        self.exits: list[int] = []
        self.exitsWhenDone: list[int] = []
        self.stops = 0
        realStop = self.reactor.stop

        def stop() -> None:
            self.stops += 1
            realStop()

        self.reactor.stop = stop  # type: ignore[method-assign]
        self.inner = RecordingService()
        self.controls: list[FakeControlSocket] = []

    def makeService(
        self,
        takeover: bool = False,
        adapterModules: tuple[str, ...] = (),
        unmovable: str = "refuse",
    ) -> MigrateService:
        config = MigrateConfig(
            control=CONTROL,
            takeover=takeover,
            drainTimeout=DRAIN_TIMEOUT,
            takeoverTimeout=TAKEOVER_TIMEOUT,
            description="web --listen tcp:8080",
            adapterModules=adapterModules,
            unmovable=unmovable,
        )
        svc = MigrateService(
            self.inner,
            config,
            self.reactor,
            exit=self.exits.append,
            exitWhenDone=self.exitsWhenDone.append,
            policy=FakePeerPolicy(),
            wallClock=self.fakeTime.time,
        )
        self.registry = FakeRegistry(holding=takeover)
        self.addCleanup(self.registry.close)
        svc.registry = self.registry  # type: ignore[assignment]

        def bindControl() -> FakeControlSocket:
            control = FakeControlSocket(CONTROL)
            self.controls.append(control)
            return control

        svc._bindControl = bindControl  # type: ignore[method-assign]
        return svc

    def startIncumbent(self) -> MigrateService:
        svc = self.makeService()
        for key in KEYS:
            self.registry.addPort(key, key.split(":")[0], where=key)
        svc.privilegedStartService()
        svc.startService()
        return svc

    def handOff(self, svc: MigrateService, connections: int = 0, closeOnLose: bool = True) -> None:
        """
        Take C{svc}'s ports through a complete takeover (a successor on a
        L{FakeSession}), with C{connections} still open.
        """
        self.connections = [FakeConnection(closeOnLose=closeOnLose) for _ in range(connections)]
        self.registry.connections.extend(self.connections)
        incumbent = svc.incumbent
        session = self.session = FakeSession()
        self.addCleanup(session.close)
        incumbent.begin(session, BeginRequest.fromWire(SUCCESSOR))
        incumbent.received(session, ReceivedReport(len(KEYS)))
        incumbent.prepared(session, PreparedReport(len(KEYS)))
        captured = incumbent.capture(session, CaptureRequest(tuple(svc.adapters.typeNames())))
        assert isinstance(captured, CaptureReport)
        # Fake connections have no adapter: they stay, to drain.
        self.assertEqual(captured.connections, 0)
        self.assertEqual(sum(captured.staying.values()), connections)
        incumbent.restored(session, RestoredReport(0))
        incumbent.switch(session)
        incumbent.commit(session)
        # The commit closed the channel before its messages were flushed:
        # these ports have no descriptors to send.
        self.assertEqual(self.reactor.getWriters(), [])
        self.reactor.advance(0)


class IncumbentRoleTests(ServiceTestMixin, SynchronousTestCase):
    """
    L{MigrateService} started without C{takeover}.
    """

    def test_start(self) -> None:
        """
        Starting runs the wrapped service as twistd would (privileged start
        first) with the registry's hooks installed, then publishes the
        control socket and serves as generation 0.
        """
        svc = self.makeService()
        self.assertEqual(svc.state, STARTING)
        svc.privilegedStartService()
        self.assertTrue(self.registry.installed)
        self.assertEqual(self.inner.events, ["privilegedStartService"])
        svc.startService()
        self.assertEqual(self.inner.events, ["privilegedStartService", "startService"])
        [control] = self.controls
        self.assertTrue(control.published)
        self.assertEqual((svc.state, svc.generation), (SERVING, 0))
        self.assertIs(svc.root.incumbent, svc.incumbent)
        self.assertEqual(svc.incumbent.takeoverTimeout, TAKEOVER_TIMEOUT)
        self.assertEqual(self.notified, ["READY=1\nSTATUS=serving generation 0"])

    def test_importsWhatItPutOffSoon(self) -> None:
        """
        A tenth of a second after it serves, the service registers the
        adapters put off until their modules are imported (TLS's, whose
        module every process imports), off the first takeover's path;
        the modules that answer dry runs, at a second, in another turn.
        """
        svc = self.makeService()
        registered: list[str] = []
        svc.adapters.registerWhenImported("twisted.protocols.tls", lambda r: registered.append("tls"))
        self.patch(_later, "importDryRuns", lambda: registered.append("dry runs"))
        svc.privilegedStartService()
        svc.startService()
        self.reactor.advance(0.05)
        self.assertEqual(registered, [])
        self.reactor.advance(0.05)
        self.assertEqual(registered, ["tls"])
        self.reactor.advance(0.85)
        self.assertEqual(registered, ["tls"])
        self.reactor.advance(0.05)
        self.assertEqual(registered, ["tls", "dry runs"])

    def test_dryRunsImportedAfterATakeover(self) -> None:
        """
        The modules that answer dry runs are not imported while a takeover
        is under way (their import would be one of its turns), but at the
        first tenth of a second after it.
        """
        svc = self.makeService()
        imported: list[str] = []
        self.patch(_later, "importDryRuns", lambda: imported.append("dry runs"))
        svc.privilegedStartService()
        svc.startService()
        assert svc.incumbent is not None
        svc.incumbent.current = cast(Any, object())
        for step in (0.1, 0.9, 0.3):
            self.reactor.advance(step)
        self.assertEqual(imported, [])
        svc.incumbent.current = None
        self.reactor.advance(0.1)
        self.assertEqual(imported, ["dry runs"])
        self.reactor.advance(1.0)
        self.assertEqual(imported, ["dry runs"])

    def test_noDryRunsImportOnceHandedOff(self) -> None:
        """
        A service that handed off before its second (a takeover within it)
        does not import what answers dry runs: it answers none any more,
        and newer code may be on disk.
        """
        svc = self.startIncumbent()
        imported: list[str] = []
        self.patch(_later, "importDryRuns", lambda: imported.append("dry runs"))
        self.reactor.advance(0.1)
        self.handOff(svc, connections=1)
        for _ in range(20):
            self.reactor.advance(0.1)
        self.assertEqual(imported, [])

    def test_provides(self) -> None:
        """
        L{MigrateService} provides L{IMigrationNode}.
        """
        verifyObject(IMigrationNode, self.startIncumbent())

    def test_status(self) -> None:
        """
        C{status} describes the process: version, pid, Python, state,
        generation, start time and uptime, what it runs, its control path,
        its ports and open connections, and no takeover.
        """
        svc = self.startIncumbent()
        self.registry.connections.append(FakeConnection())
        self.registry.connections.append(FakeConnection(connected=False))
        # The wall clock says when; the reactor's clock how long ago.
        self.fakeTime.now += 3600
        self.reactor.advance(12.5)
        status = svc.status()
        self.assertEqual(
            status,
            {
                "migrator": __version__,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "executable": sys.executable,
                "state": SERVING,
                "generation": 0,
                "started": 1_700_000_000.0,
                "uptime": 12.5,
                "service": "web --listen tcp:8080",
                "control": CONTROL,
                "ports": [p.describe() for p in self.registry.ports],
                "connections": {"open": 1},
                "takeover": None,
                "last_takeover": None,
                "handed_off_to": None,
                "predecessor": None,
                "took_over": None,
                "adapters": svc.adapters.typeNames(),
                "split": False,
                "split_classes": {},
                "split_with": None,
                "command": None,
                "previous_command": None,
                "last_dry_run": None,
                "lineage": svc.lineage(),
            },
        )
        # migrator's own adapters, for Twisted's classes.
        self.assertIn("twisted.web.http.HTTPChannel", status["adapters"])
        self.assertIn("twisted.protocols.portforward.ProxyServer", status["adapters"])

    def test_adapterModules(self) -> None:
        """
        The adapter registry is migrator's own adapters plus those of the
        configured adapter modules (their C{registerAdapters}); the
        incumbent uses it, and C{status} lists its type names.
        """
        svc = self.makeService(adapterModules=(__name__,))
        name = f"{Tracked.__module__}.{Tracked.__qualname__}"
        self.assertIsNotNone(svc.adapters.adapterFor(Tracked))
        self.assertIn("twisted.web.http.HTTPChannel", svc.adapters.typeNames())
        svc.privilegedStartService()
        svc.startService()
        self.assertIs(svc.incumbent.adapters, svc.adapters)
        self.assertIn(name, svc.status()["adapters"])
        self.assertNotIn(name, self.makeService().status()["adapters"])

    def test_adapterModuleWithoutRegisterAdapters(self) -> None:
        """
        An adapter module without C{registerAdapters} is refused when the
        service is made.
        """
        e = self.assertRaises(ValueError, self.makeService, adapterModules=("json",))
        self.assertIn("json has no registerAdapters(registry) function", str(e))

    def test_statusBeforeServing(self) -> None:
        """
        Before it serves, C{status} says C{starting} and has no takeover
        records.
        """
        status = self.makeService().status()
        self.assertEqual(status["state"], STARTING)
        self.assertIsNone(status["takeover"])
        self.assertIsNone(status["last_takeover"])

    def test_statusDuringTakeover(self) -> None:
        """
        During a takeover, C{status} shows the step it is at.
        """
        svc = self.startIncumbent()
        session = FakeSession()
        self.addCleanup(session.close)
        svc.incumbent.begin(session, BeginRequest.fromWire(SUCCESSOR))
        takeover = svc.status()["takeover"]
        self.assertEqual((takeover["successor_pid"], takeover["step"]), (4242, "begun"))
        svc.incumbent.abort("test over", session)

    def test_stopDuringTakeoverFinishesIt(self) -> None:
        """
        Asked to stop while a successor takes over, the incumbent does not
        stop its service (which would close the ports the successor is
        about to serve) until the takeover has committed and the successor
        has hung up; then it stops.
        """
        svc = self.startIncumbent()
        session = self.session = FakeSession()
        self.addCleanup(session.close)
        incumbent = svc.incumbent
        incumbent.begin(session, BeginRequest.fromWire(SUCCESSOR))
        incumbent.received(session, ReceivedReport(len(KEYS)))
        d = svc.stopService()
        self.assertNoResult(d)
        self.assertNotIn("stopService", self.inner.events)
        incumbent.prepared(session, PreparedReport(len(KEYS)))
        incumbent.capture(session, CaptureRequest())
        incumbent.restored(session, RestoredReport(0))
        incumbent.switch(session)
        incumbent.commit(session)
        self.reactor.advance(0)
        self.assertNoResult(d)
        incumbent.detached(session)
        self.successResultOf(d)
        self.assertIn("stopService", self.inner.events)
        self.assertEqual(self.registry.listening(), [])

    def test_stopDuringTakeoverAbandoned(self) -> None:
        """
        If the takeover is abandoned instead, the incumbent stops as it
        would have without one.
        """
        svc = self.startIncumbent()
        session = FakeSession()
        self.addCleanup(session.close)
        svc.incumbent.begin(session, BeginRequest.fromWire(SUCCESSOR))
        d = svc.stopService()
        self.assertNoResult(d)
        svc.incumbent.detached(session)
        # The farewell goes out on the channel (here the channel fails: these
        # fake ports have no descriptors to send), then the stop goes on.
        for writer in self.reactor.getWriters():
            why = writer.doWrite()
            if why is not None:
                writer.connectionLost(Failure(why))
        self.successResultOf(d)
        self.assertIn("stopService", self.inner.events)

    def test_statusAfterHandOff(self) -> None:
        """
        After a handoff, C{status} says C{draining}, names the successor and
        records the takeover.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=1)
        status = svc.status()
        self.assertEqual(status["state"], DRAINING)
        self.assertEqual(
            status["handed_off_to"], {"pid": 4242, "python": "3.13.0", "generation": 1}
        )
        self.assertEqual(status["last_takeover"]["outcome"], "committed")
        self.assertEqual(
            status["last_takeover"]["connections_staying"], {"builtins.NoneType: no adapter": 1}
        )
        self.assertEqual(status["ports"], [])
        self.assertIsNone(status["took_over"])

    def test_identity(self) -> None:
        """
        C{identity} is what the incumbent tells a successor.
        """
        svc = self.startIncumbent()
        identity = svc.identity()
        self.assertEqual(
            identity,
            {
                "pid": os.getpid(),
                "generation": 0,
                "python": sys.version.split()[0],
                "command": None,
                "lineage": svc.lineage(),
            },
        )
        [me] = identity["lineage"]
        self.assertEqual(
            me,
            {
                "generation": 0,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "migrator": __version__,
                "started": 1_700_000_000.0,
                "ended": None,
                "alive": True,
            },
        )

    def test_stop(self) -> None:
        """
        Stopping stops the wrapped service, closes the control socket and
        puts the reactor's listen methods back.
        """
        svc = self.startIncumbent()
        svc.stopService()
        self.assertEqual(self.inner.events[-1], "stopService")
        self.assertTrue(self.controls[0].closed)
        self.assertFalse(self.registry.installed)


class DrainTests(ServiceTestMixin, SynchronousTestCase):
    """
    What a process does after handing off: serve its remaining connections,
    then stop the reactor.
    """

    def test_handedOffNotifies(self) -> None:
        """
        On handing off the process is C{draining} and tells systemd.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=1)
        self.assertEqual(svc.state, DRAINING)
        self.assertEqual(self.notified[-1], "STATUS=handed off to pid 4242; draining")

    def test_exitsWhenDrainedAndSuccessorGone(self) -> None:
        """
        With no connections left and the successor gone, the process stops
        its reactor (once) at the next check, having asked to end with
        code 0 once twistd is done (without the interpreter's teardown).
        """
        svc = self.startIncumbent()
        self.handOff(svc)
        self.assertEqual(self.stops, 0)
        # The successor hangs up once it has the commit's answer.
        svc.incumbent.successorAttached = False
        self.reactor.advance(0.2)
        self.assertEqual(self.stops, 1)
        self.assertEqual(self.exitsWhenDone, [0])
        self.assertEqual(self.exits, [])
        self.reactor.advance(DRAIN_TIMEOUT * 2)
        self.assertEqual(self.stops, 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_waitsForSuccessorToHangUp(self) -> None:
        """
        While the successor is attached (it has not yet got the commit's
        answer and published its control socket), the process does not
        exit, even with nothing to drain.
        """
        svc = self.startIncumbent()
        self.handOff(svc)
        self.reactor.pump([0.2] * 20)
        self.assertEqual(self.stops, 0)
        svc.incumbent.successorAttached = False
        self.reactor.advance(0.2)
        self.assertEqual(self.stops, 1)

    def test_exitsAsSoonAsSuccessorHangsUp(self) -> None:
        """
        With nothing left to drain, the successor hanging up ends the drain
        at once, not at the drain loop's next tick.
        """
        svc = self.startIncumbent()
        self.handOff(svc)
        self.reactor.pump([0.2] * 2)
        self.assertEqual(self.stops, 0)
        svc.incumbent.successorAttached = False
        svc.incumbent.onSuccessorDetached()
        self.assertEqual(self.stops, 1)

    def test_exitsAsSoonAsReleased(self) -> None:
        """
        With the successor gone, the incumbent letting go of the moved
        connections (after the commit's answer) ends the drain at once:
        they no longer count as open, and nothing waits for the drain
        loop's next tick.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=1)
        svc.incumbent.successorAttached = False
        svc.incumbent.onSuccessorDetached()
        self.assertEqual(self.stops, 0)
        [transport] = self.connections
        transport.connected = False
        assert svc.incumbent.onReleased is not None
        svc.incumbent.onReleased()
        self.assertEqual(self.stops, 1)

    def test_exitsWhileMovedStillReleased(self) -> None:
        """
        The moved connections this process is still letting go of (a few
        milliseconds' worth per turn) do not hold its exit once the
        successor is gone: they are let go of at once before the reactor
        stops (no stopService or shutdown may touch them), and exiting
        closes their handles as the release would.  They are never closed
        as a drain closes what stayed.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=1)
        [transport] = self.connections
        svc.incumbent.releasing = frozenset({id(transport)})
        finished: list[bool] = []
        svc.incumbent.finishRelease = (  # type: ignore[method-assign]
            lambda close=True: finished.append(close)
        )
        svc.incumbent.successorAttached = False
        svc.incumbent.onSuccessorDetached()
        self.assertEqual(self.stops, 1)
        self.assertEqual(self.exitsWhenDone, [0])
        self.assertEqual(transport.loseConnectionCalls, 0)
        # Let go of before the reactor stops (its handles left to the exit).
        self.assertEqual(finished, [False])

    def test_waitsForSuccessorAtMostTakeoverTimeout(self) -> None:
        """
        A successor that stays attached is waited for at most the takeover
        timeout.
        """
        svc = self.startIncumbent()
        self.handOff(svc)
        self.reactor.pump([0.1] * int((TAKEOVER_TIMEOUT - 0.3) / 0.1))
        self.assertEqual(self.stops, 0)
        self.reactor.pump([0.1] * 5)
        self.assertEqual(self.stops, 1)
        self.assertTrue(svc.incumbent.successorAttached)

    def test_waitsForConnections(self) -> None:
        """
        The process serves its remaining connections and stops once the
        last one has closed.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=2)
        svc.incumbent.successorAttached = False
        self.reactor.advance(1.0)
        self.assertEqual(self.stops, 0)
        self.connections[0].connected = False
        self.reactor.advance(1.0)
        self.assertEqual(self.stops, 0)
        self.connections[1].connected = False
        self.reactor.advance(0.2)
        self.assertEqual(self.stops, 1)
        self.assertEqual([c.loseConnectionCalls for c in self.connections], [0, 0])

    def test_drainTimeoutClosesThenStops(self) -> None:
        """
        At the drain timeout the remaining connections are closed (once),
        and the process stops 5 seconds later even if they have not gone.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=2, closeOnLose=False)
        svc.incumbent.successorAttached = False
        self.reactor.advance(DRAIN_TIMEOUT - 0.2)
        self.assertEqual([c.loseConnectionCalls for c in self.connections], [0, 0])
        self.reactor.advance(0.2)
        self.assertEqual([c.loseConnectionCalls for c in self.connections], [1, 1])
        self.reactor.advance(4.9)
        self.assertEqual(self.stops, 0)
        self.assertEqual([c.loseConnectionCalls for c in self.connections], [1, 1])
        self.reactor.advance(0.1)
        self.assertEqual(self.stops, 1)
        self.reactor.advance(10)
        self.assertEqual(self.stops, 1)

    def test_drainTimeoutConnectionsClose(self) -> None:
        """
        If the connections closed at the drain timeout go at once, the
        process stops at the next check, and only once.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=1, closeOnLose=True)
        svc.incumbent.successorAttached = False
        self.reactor.advance(DRAIN_TIMEOUT)
        self.assertEqual(self.connections[0].loseConnectionCalls, 1)
        self.reactor.advance(0.2)
        self.assertEqual(self.stops, 1)
        self.reactor.advance(10)
        self.assertEqual(self.stops, 1)

    def test_stopServiceStopsDrainLoop(self) -> None:
        """
        Stopping the service (e.g. by the reactor stopping) ends the drain
        loop.
        """
        svc = self.startIncumbent()
        self.handOff(svc, connections=1)
        d = svc.stopService()
        # Not before the successor has hung up (the answer to its commit may
        # still be on its way).
        self.assertNoResult(d)
        svc.incumbent.detached(self.session)
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class SuccessorRoleTests(ServiceTestMixin, SynchronousTestCase):
    """
    L{MigrateService} started with C{takeover}.
    """

    def start(
        self, adapterModules: tuple[str, ...] = (), unmovable: str = "refuse"
    ) -> tuple[MigrateService, Any]:
        svc = self.makeService(takeover=True, adapterModules=adapterModules, unmovable=unmovable)
        self.inner.onStart = lambda: [self.registry.declare(k) for k in KEYS]
        svc.privilegedStartService()
        self.assertEqual(self.inner.events, [])
        svc.startService()
        self.addCleanup(self.abandon, svc)
        [(path, factory, timeout, _)] = self.reactor.unixClients
        self.assertEqual((path, timeout), (CONTROL, TAKEOVER_TIMEOUT))
        self.assertEqual(svc.successor.timeout, TAKEOVER_TIMEOUT)
        self.assertIs(svc.successor.adapters, svc.adapters)
        # Fault injection is read once by the composition root, handed in.
        self.assertIs(svc.successor.faults, svc.config.faults)
        return svc, factory

    def abandon(self, svc: MigrateService) -> None:
        """
        Cancel a takeover the test left waiting, so that its coroutine is
        rolled back now rather than closed by the garbage collector.
        """
        svc.successor.cancel()

    def readChannel(self) -> None:
        """
        Let the successor read what arrived on its channel, and go on.
        """
        for reader in self.reactor.getReaders():
            reader.doRead()
        self.reactor.advance(0)

    def test_takeover(self) -> None:
        """
        A successor starts the wrapped service only once the incumbent's
        ports are on offer, and when the takeover commits serves as the
        next generation with its control socket published, tells systemd it
        is the main process now, and shows its predecessor in C{status}.
        """
        svc, factory = self.start()
        root = FakeRemoteRoot(autoAnswers={"received": None})
        factory.clientConnectionMade(root.broker)
        self.assertEqual(root.methods(), ["begin"])
        self.sendPorts(root)
        earlier = {"generation": 3, "pid": 90, "python": "3.10.1", "started": 5.0, "alive": True}
        previous = {"generation": 4, "pid": 100, "python": "3.11.7", "started": 6.0}
        root.answer(
            "begin",
            {
                "pid": 100,
                "generation": 4,
                "python": "3.11.7",
                "ports": 2,
                "lineage": [earlier, previous, "junk"],
            },
        )
        self.assertEqual(self.inner.events, [])
        self.readChannel()
        self.assertEqual(self.inner.events, ["privilegedStartService", "startService"])
        self.assertEqual(self.registry.adoptedCount(), 2)
        [control] = self.controls
        self.assertFalse(control.published)
        root.answer("prepared", {})
        names = svc.adapters.typeNames()
        versions = {n: svc.adapters.adapterNamed(n).version for n in names}
        self.assertEqual(
            root.pending("capture").args,
            (
                {
                    "types": names,
                    "versions": versions,
                    "readable": readableTypes(svc.adapters),
                    "stream": {
                        "max_batch": 512,
                        "busy_deadline": 5.0,
                        "close_busy": False,
                        "acks": True,
                        "parts": True,
                        "native_form": NATIVE_FORM,
                    },
                },
            ),
        )
        self.sendConnections()
        staying = {"web.Legacy: no adapter": 2}
        root.answer(
            "capture",
            {"connections": 0, "bytes": 0, "moved": {}, "staying": staying, "frozen_at": 0.0},
        )
        self.readChannel()
        root.answer("restored", {})
        root.answer("switch", {"paused": 2})
        self.assertEqual(svc.state, STARTING)
        self.assertIsNone(svc.status()["took_over"])
        root.answer(
            "commit",
            {"generation": 5, "released": KEYS, "connections": 0, "accept_paused_ms": 1.0},
        )
        self.assertEqual((svc.state, svc.generation), (SERVING, 5))
        self.assertEqual(
            root.methods(),
            ["begin", "received", "prepared", "capture", "restored", "switch", "commit"],
        )
        tookOver = svc.status()["took_over"]
        self.assertEqual(
            {k: tookOver[k] for k in ("generation", "connections", "moved", "staying")},
            {"generation": 5, "connections": 0, "moved": {}, "staying": staying},
        )
        self.assertTrue(control.published)
        self.assertIs(svc.root.incumbent, svc.incumbent)
        self.assertEqual(
            self.notified, [f"READY=1\nSTATUS=serving generation 5\nMAINPID={os.getpid()}"]
        )
        self.alive[100] = True
        self.assertEqual(
            svc.status()["predecessor"], {"pid": 100, "python": "3.11.7", "draining": True}
        )
        self.alive[100] = False
        self.assertFalse(svc.status()["predecessor"]["draining"])
        self.assertEqual(svc.identity()["generation"], 5)
        # The lineage: what the predecessor handed on, how it ended, and us.
        lineage = svc.status()["lineage"]
        self.assertEqual([e["generation"] for e in lineage], [3, 4, 5])
        self.assertEqual(lineage[0], {**earlier, "alive": None})
        self.assertEqual(
            lineage[1],
            {
                **previous,
                "ended": {"how": "handed off", "to": os.getpid(), "at": lineage[1]["ended"]["at"]},
                "alive": False,
            },
        )
        self.assertIsInstance(lineage[1]["ended"]["at"], float)
        self.assertEqual((lineage[2]["pid"], lineage[2]["ended"]), (os.getpid(), None))

    def sendPorts(self, root: FakeRemoteRoot) -> None:
        """
        Send the channel's descriptor and, on the channel, the ports message
        with two ports, as the incumbent does in C{begin}.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.channelEnd = ours
        root.broker.receivedFds.append(theirs.detach())
        ports = []
        for _ in KEYS:
            port, probe = socket.socketpair()
            self.addCleanup(port.close)
            self.addCleanup(probe.close)
            ports.append(port)
        records = [{"key": k, "kind": k.split(":")[0], "address": k} for k in KEYS]
        sender = FrameChannel(self.reactor, ours.dup())
        sender.sendMessage(
            json.dumps({"type": "ports", "ports": records}).encode("utf-8"),
            [p.fileno() for p in ports],
        )
        sender.doWrite()
        sender.close()

    def sendConnections(self) -> None:
        """
        Send, on the channel, the connections message of an incumbent with
        nothing to move, as the incumbent does in C{capture}.
        """
        captured = captureConnections(
            self.reactor, FakeRegistry(), AdapterRegistry(), frozenset(), frozenset()
        )
        sender = FrameChannel(self.reactor, self.channelEnd.dup())
        sender.sendMessage(captured.payload, [])
        sender.doWrite()
        sender.close()

    def test_splitAnnounced(self) -> None:
        """
        The successor sends its C{--unmovable} policy with C{begin}; when
        the commit says connections stayed behind and split the service,
        it logs a warning, and its C{status} says C{split} (with the
        classes and the predecessor) while the predecessor still runs.
        """
        svc, factory = self.start(unmovable="drain")
        root = FakeRemoteRoot(autoAnswers={"abort": None, "received": None})
        factory.clientConnectionMade(root.broker)
        self.assertEqual(root.pending("begin").args[0]["unmovable"], "drain")
        self.sendPorts(root)
        root.answer("begin", {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2})
        self.readChannel()
        root.answer("prepared", {})
        self.sendConnections()
        root.answer(
            "capture",
            {"connections": 0, "bytes": 0, "moved": {}, "staying": {}, "frozen_at": 0.0},
        )
        self.readChannel()
        root.answer("restored", {})
        root.answer("switch", {"paused": 2})
        split = {
            "unmovable": "drain",
            "classes": {"tac:Chat": {"moved": 0, "drained": 2, "closed": 0, "refused": 0}},
            "split": True,
            "split_classes": {"tac:Chat": 2},
        }
        with capturedLogs() as events:
            answer = {"generation": 5, "released": KEYS, "connections": 0, "accept_paused_ms": 1.0}
            root.answer("commit", {**answer, **split})
        [warning] = [e for e in events if e["log_level"].name == "warn"]
        self.assertIn("the service's state is now split", warning["log_format"])
        self.assertEqual((warning["count"], warning["pid"]), (2, 100))
        self.alive[100] = True
        status = svc.status()
        self.assertEqual(
            {k: status[k] for k in ("split", "split_classes", "split_with")},
            {"split": True, "split_classes": {"tac:Chat": 2}, "split_with": 100},
        )
        self.assertEqual(status["took_over"]["classes"], split["classes"])
        self.alive[100] = False
        self.assertFalse(svc.status()["split"])

    def test_translationsReported(self) -> None:
        """
        What the incumbent translated (its capture answer) and what this
        process read are merged into C{status}'s C{took_over}
        C{translations}, per class (versions seen, steps run, time), and
        logged in one line.
        """
        svc, factory = self.start()
        root = FakeRemoteRoot(autoAnswers={"received": None})
        factory.clientConnectionMade(root.broker)
        self.sendPorts(root)
        root.answer("begin", {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2})
        self.readChannel()
        root.answer("prepared", {})
        self.sendConnections()
        translations = {
            "app.Chat": {"versions": [1, 2], "objects": 0, "translated": 2, "steps": {"down 2->1": 2}, "ms": 0.25}
        }
        root.answer(
            "capture",
            {"connections": 0, "bytes": 0, "moved": {}, "staying": {}, "translations": translations},
        )
        self.readChannel()
        root.answer("restored", {})
        root.answer("switch", {"paused": 2})
        with capturedLogs() as events:
            root.answer("commit", {"generation": 5, "released": KEYS, "connections": 0})
        self.assertEqual(svc.status()["took_over"]["translations"], translations)
        self.assertIn(
            "state translated between versions: app.Chat: versions 1, 2, 2 object(s) "
            "translated (down 2->1 x 2) in 0.25 ms",
            [formatEvent(e) for e in events],
        )

    def test_takeoverUsesAdapterModules(self) -> None:
        """
        The successor asks for the connections of every type its adapter
        registry (with the configured adapter modules) can restore.
        """
        svc, factory = self.start(adapterModules=(__name__,))
        root = FakeRemoteRoot(autoAnswers={"abort": None, "received": None})
        factory.clientConnectionMade(root.broker)
        self.sendPorts(root)
        root.answer("begin", {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2})
        self.readChannel()
        root.answer("prepared", {})
        [types] = [c.args[0]["types"] for c in root.calls if c.method == "capture"]
        self.assertIn(f"{Tracked.__module__}.{Tracked.__qualname__}", types)
        self.assertEqual(types, svc.adapters.typeNames())

    def test_abandonedTakeoverRollsBack(self) -> None:
        """
        A takeover left waiting (here, for C{capture}'s answer) and then
        abandoned rolls back and exits like any failed takeover.
        """
        svc, factory = self.start()
        root = FakeRemoteRoot(autoAnswers={"abort": None, "received": None})
        factory.clientConnectionMade(root.broker)
        self.sendPorts(root)
        root.answer("begin", {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2})
        self.readChannel()
        root.answer("prepared", {})
        self.abandon(svc)
        self.assertEqual(svc.state, FAILED)
        self.assertIn("takeover failed at step capture", self.stderr.getvalue())
        self.assertEqual(root.methods()[-1], "abort")
        self.assertFalse(self.controls[0].published)
        self.assertTrue(self.controls[0].closed)
        self.assertEqual(self.registry.listening(), [])

    def test_stopMidTakeoverRollsBack(self) -> None:
        """
        A successor stopped (e.g. by SIGTERM) in the middle of its takeover
        abandons it: it rolls back and tells the incumbent.
        """
        svc, factory = self.start()
        root = FakeRemoteRoot(autoAnswers={"abort": None, "received": None})
        factory.clientConnectionMade(root.broker)
        self.sendPorts(root)
        root.answer("begin", {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2})
        self.readChannel()
        svc.stopService()
        self.assertIn("takeover failed at step", self.stderr.getvalue())
        self.assertEqual(root.methods()[-1], "abort")
        self.assertEqual(self.registry.listening(), [])

    def test_takeoverFailedExits(self) -> None:
        """
        When the takeover fails, the successor says why on standard error,
        stops its reactor, and exits with status 1 after the reactor's
        shutdown.
        """
        svc, factory = self.start()
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(svc.state, FAILED)
        self.assertEqual(
            self.stderr.getvalue(),
            "migrate: takeover failed at step connect: ConnectionRefusedError: "
            "Connection was refused by other side.\n"
            "migrate: nothing was changed (this process never reached the running service).\n",
        )
        self.assertEqual(self.stops, 0)
        self.reactor.advance(0)
        self.assertEqual(self.stops, 1)
        self.assertEqual(self.exits, [])
        [(call, args, kw)] = self.reactor.triggers["after"]["shutdown"]
        call(*args, **kw)
        self.assertEqual(self.exits, [1])
        self.assertEqual(self.inner.events, [])
        # Stopping (as the reactor does) leaves the never-started service alone.
        svc.stopService()
        self.assertEqual(self.inner.events, [])
        self.assertFalse(self.registry.installed)

    def test_incumbentDiedCompletesAlone(self) -> None:
        """
        When the incumbent dies during the takeover, the successor
        completes it on its own and serves as the next generation (control
        socket published, pidfile and systemd told), saying the
        predecessor died.
        """
        svc, factory = self.start()
        svc.successor.watchProcess = lambda pid: FakeWatch(pid, lambda p: False)
        root = FakeRemoteRoot(autoAnswers={"abort": None, "received": None})
        factory.clientConnectionMade(root.broker)
        self.sendPorts(root)
        root.answer("begin", {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2})
        self.readChannel()
        root.broker.connectionLost()
        self.assertEqual((svc.state, svc.generation), (SERVING, 5))
        self.assertTrue(self.controls[0].published)
        self.assertEqual([p.accepting for p in self.registry.ports], [True, True])
        self.assertIn(
            "STATUS=serving generation 5; the predecessor (pid 100) died during the takeover",
            self.notified,
        )
        tookOver = svc.status()["took_over"]
        self.assertEqual((tookOver["alone"]["pid"], tookOver["alone"]["step"]), (100, "prepared"))
        self.assertEqual(self.stderr.getvalue(), "")

    def test_failedAftermathNeverClaimsServing(self) -> None:
        """
        A failed takeover says what serves as far as the successor knows:
        here the incumbent gave up because it is stopping, so not that it
        keeps serving.
        """
        svc, factory = self.start()
        root = FakeRemoteRoot(autoAnswers={"abort": None, "received": None})
        factory.clientConnectionMade(root.broker)
        self.sendPorts(root)
        root.answer("begin", {"pid": 100, "generation": 4, "python": "3.11.7", "ports": 2})
        self.readChannel()
        sender = FrameChannel(self.reactor, self.channelEnd.dup())
        sender.sendMessage(Farewell("this process is stopping", stopping=True).toBytes())
        sender.doWrite()
        sender.close()
        self.readChannel()
        self.assertEqual(svc.state, FAILED)
        err = self.stderr.getvalue()
        self.assertIn("the incumbent abandoned the takeover: this process is stopping", err)
        self.assertIn("once it has exited, nothing serves", err)
        self.assertNotIn("keeps serving", err)

    def test_unexpectedFailureExits(self) -> None:
        """
        Even a failure that is not a L{TakeoverFailed} (a bug) makes the
        successor report it and exit 1, rather than linger.
        """
        svc = self.makeService(takeover=True)
        svc._takeoverFailed(Failure(ZeroDivisionError("oops")))
        self.assertEqual(svc.state, FAILED)
        self.assertIn("oops", self.stderr.getvalue())
        self.reactor.advance(0)
        [(call, args, kw)] = self.reactor.triggers["after"]["shutdown"]
        call(*args, **kw)
        self.assertEqual(self.exits, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class OperatorHooksTests(ServiceTestMixin, SynchronousTestCase):
    """
    The service's wiring of the operator's tools: a dry run (C{dryRun}),
    a successor's health check and undeclared ports, the recorded command
    lines and the last dry run in C{status}.
    """

    def configured(self, **kw: Any) -> MigrateService:
        config = MigrateConfig(
            control=CONTROL,
            takeover=True,
            takeoverTimeout=TAKEOVER_TIMEOUT,
            pidfile="/run/site/twistd.pid",
            **kw,
        )
        return MigrateService(
            self.inner,
            config,
            self.reactor,
            exit=self.exits.append,
            exitWhenDone=self.exitsWhenDone.append,
            policy=FakePeerPolicy(),
            checkRestored=lambda protocol: None,
        )

    def test_dryRunBindsNothing(self) -> None:
        """
        A dry run's registry is detached, its pidfile is none; it starts the
        wrapped service, connects to the control socket, binds no control
        socket of its own, and exits with the dry run's code (here 1: the
        incumbent refused).
        """
        svc = self.configured(dryRun=True)
        self.assertTrue(svc.registry.detached)
        self.assertIsNone(svc.pidfile.path)
        printed: list[str] = []
        self.patch(_service, "_report", printed.append)
        svc.privilegedStartService()
        svc.startService()
        self.addCleanup(svc.registry.uninstall)
        self.assertEqual(self.inner.events, ["privilegedStartService", "startService"])
        assert svc.staging is not None
        self.assertIsNotNone(svc.staging.check)
        [(path, factory, _, _)] = self.reactor.unixClients
        self.assertEqual(path, CONTROL)
        root = FakeRemoteRoot()
        factory.clientConnectionMade(root.broker)
        root.refuse("dryRun", "a takeover is in progress")
        self.reactor.advance(0)
        self.assertEqual(self.stops, 1)
        self.assertEqual(len(printed), 1)
        self.assertIn("a takeover is in progress", printed[0])
        self.assertIsNone(svc.control)
        self.assertEqual(self.notified, [])

    def test_successorOptions(self) -> None:
        """
        A successor gets the health check (told the service's addresses)
        and the operator's consent to close undeclared ports.
        """
        svc = self.configured(check="true", checkTimeout=3.0, closeUndeclared=True)
        svc.registry = FakeRegistry()  # type: ignore[assignment]
        self.addCleanup(svc.registry.close)
        svc.registry.addPort("tcp:0:#0", where="127.0.0.1:8080")
        svc.privilegedStartService()
        svc.startService()
        successor = svc.successor
        assert successor is not None
        self.addCleanup(successor.cancel)
        self.assertTrue(successor.closeUndeclared)
        check = successor.check
        self.assertEqual((check.command, check.timeout), ("true", 3.0))  # type: ignore[union-attr]
        env = check.environment()  # type: ignore[union-attr]
        self.assertEqual(env["MIGRATOR_PORTS"], "127.0.0.1:8080")
        self.assertEqual(env["MIGRATOR_CONTROL"], CONTROL)

    def test_noCheck(self) -> None:
        """
        Without C{--check} the successor runs none.
        """
        svc = self.configured()
        svc.registry = FakeRegistry()  # type: ignore[assignment]
        svc.privilegedStartService()
        svc.startService()
        assert svc.successor is not None
        self.addCleanup(svc.successor.cancel)
        self.assertIsNone(svc.successor.check)

    def test_commandsAndDryRunInStatus(self) -> None:
        """
        C{status} shows this process's command line, the one its
        predecessor sent in C{begin}'s answer, and the last dry run; the
        identity sent to a successor carries the command line.
        """
        command = {"argv": ["python", "twistd"], "cwd": "/srv", "executable": "/usr/bin/python3"}
        config = MigrateConfig(control=CONTROL, command=command)
        svc = MigrateService(self.inner, config, self.reactor, policy=FakePeerPolicy())
        svc.registry = FakeRegistry()  # type: ignore[assignment]
        svc._bindControl = lambda: FakeControlSocket(CONTROL)  # type: ignore[method-assign]
        svc.privilegedStartService()
        svc.startService()
        self.assertEqual(svc.identity()["command"], command)
        status = svc.status()
        self.assertEqual(status["command"], command)
        self.assertIsNone(status["previous_command"])
        self.assertIsNone(status["last_dry_run"])
        # Made when the first dry run is asked for.
        self.assertIsNone(svc.root.dryRuns)
        assert svc.root.makeDryRuns is not None
        svc.root.dryRuns = svc.root.makeDryRuns()
        self.assertIs(svc.root.dryRuns.incumbent, svc.incumbent)
        svc.root.dryRuns.last = {"outcome": "ok"}
        self.assertEqual(svc.status()["last_dry_run"], {"outcome": "ok"})
        svc.successor = type(  # type: ignore[assignment]
            "S", (), {"predecessor": BeginAnswer(1, 0, "3.11", 1, command={"argv": ["old"]})}
        )()
        self.assertEqual(svc.status()["previous_command"], {"argv": ["old"]})
