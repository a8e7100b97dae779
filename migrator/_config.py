# -*- test-case-name: tests.test_service -*-
"""
What C{twistd migrate} was asked to do (L{migrator.tap} reads it from the
command line; L{migrator._service.MigrateService} does it).
"""

from __future__ import annotations

from typing import Any

import attrs

from migrator.takeover._messages import Streaming
from migrator.takeover._steps import Faults


@attrs.frozen
class MigrateConfig:
    """
    What C{twistd migrate} was asked to do.

    @ivar control: absolute path of the control socket.
    @ivar takeover: take over from the process serving at C{control}.
    @ivar drainTimeout: seconds a process that handed off keeps serving its
        remaining connections before closing them and exiting.
    @ivar takeoverTimeout: the longest one takeover step may take.
    @ivar pidfile: absolute path of the pidfile, or C{None}.
    @ivar description: what is being run, for status (the subcommand or tac).
    @ivar adapterModules: modules whose C{registerAdapters(registry)} add
        adapters for the application's classes.
    @ivar unmovable: as a successor, what the incumbent is to do with
        connections no adapter can move: C{"refuse"} the takeover,
        C{"drain"} them or C{"close"} them (see
        L{migrator.takeover._unmovable}).
    @ivar faults: failures to inject in a successor, on purpose (rollback
        drills; C{MIGRATOR_FAULT}, read by L{migrator.tap}).
    @ivar dryRun: instead of taking over, try this code on a snapshot of
        the running service's state (L{migrator.takeover._staging}), then
        exit: nothing is bound, published or written.
    @ivar check: as a successor, a health check to run after the switch
        and before the commit (L{migrator.takeover._check}).
    @ivar checkTimeout: how long the check may take.
    @ivar closeUndeclared: as a successor, let the takeover close the
        incumbent's ports this service does not declare.
    @ivar command: how this process was started
        (L{migrator.takeover._lineage.thisCommand}), for C{status} and for
        the successor.
    """

    control: str
    takeover: bool = False
    drainTimeout: float = 300.0
    takeoverTimeout: float = 30.0
    pidfile: str | None = None
    description: str = ""
    adapterModules: tuple[str, ...] = ()
    unmovable: str = "refuse"
    #: As a successor, the connection or component ids to move (all if
    #: empty); the others follow C{unmovable}.
    select: tuple[str, ...] = ()
    faults: Faults = attrs.field(factory=Faults)
    dryRun: bool = False
    check: str | None = None
    checkTimeout: float = 10.0
    closeUndeclared: bool = False
    #: As a successor, how the connections stream (batches, busy ones).
    stream: Streaming = attrs.field(factory=Streaming)
    command: dict[str, Any] | None = None
