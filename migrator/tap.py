# -*- test-case-name: tests.test_tap -*-
"""
C{twistd migrate}: command line options and service construction.

    twistd -n --pidfile= migrate --control PATH [--takeover] SUBCOMMAND [ARGS]
    twistd -n --pidfile= migrate --control PATH [--takeover] --tac FILE

A C{.tac} file that defines C{registerAdapters(registry)} is its own
adapters module (L{migrator._tac}).
"""

from __future__ import annotations

import os
from operator import attrgetter
from typing import Any

from twisted.application import service
from twisted.plugin import getPlugins
from twisted.python import usage

from migrator._service import MigrateConfig, MigrateService
from migrator._tac import loadTac
from migrator.state._plan import POLICIES, REFUSE
from migrator.takeover._control import ControlPathError, checkControlPath, probe
from migrator.takeover._pidfile import Pidfile


def _policy(value: str) -> str:
    if value not in POLICIES:
        raise ValueError(f"must be one of {', '.join(POLICIES)}")
    return value


def _positiveFloat(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


class Options(usage.Options):
    synopsis = (
        "--control PATH [--takeover] (SUBCOMMAND [subcommand options] | --tac FILE)"
    )
    longdesc = (
        "Run any twistd service (a subcommand plugin, or a .tac file) so that "
        "a later process can take over its listening ports without refusing "
        "a single connection.  Start the successor with the same command "
        "plus --takeover; python -m migrator status --control PATH shows "
        "what runs."
    )
    optFlags = [
        [
            "takeover",
            "t",
            "Take over the service running at --control: adopt its listening "
            "ports, then let it drain and exit.",
        ],
    ]
    optParameters = [
        ["control", "c", None, "Path of the control socket (required)."],
        ["tac", None, None, "Run the application in this .tac file instead of a subcommand."],
        [
            "drain-timeout",
            None,
            300.0,
            "After handing off, seconds to keep serving existing connections "
            "before closing them and exiting.",
            _positiveFloat,
        ],
        [
            "takeover-timeout",
            None,
            30.0,
            "Longest time one takeover step may take before it is abandoned.",
            _positiveFloat,
        ],
        [
            "unmovable",
            None,
            REFUSE,
            "With --takeover: what to do with connections no adapter can move "
            "(they would keep the old process's state): refuse the takeover, "
            "drain them in the old process (the service's state is then split), "
            "or close them after the move.  One of: " + ", ".join(POLICIES) + ".",
            _policy,
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["adapters"] = []
        self["select"] = ()

    def opt_select(self, ids: str) -> None:
        """
        With --takeover: move only these connections this time (ids of
        connections or of components, comma-separated, as "python -m
        migrator plan" shows them); the others follow --unmovable.
        """
        self["select"] = tuple(i.strip() for i in ids.split(",") if i.strip())

    def opt_adapters(self, module: str) -> None:
        """
        Import MODULE and register the adapters its registerAdapters(registry)
        defines (repeatable; comma-separated names are accepted too).
        """
        self["adapters"].extend(m.strip() for m in module.split(",") if m.strip())

    compData = usage.Completions(
        optActions={"control": usage.CompleteFiles(), "tac": usage.CompleteFiles("*.tac")}
    )

    @property
    def subCommands(self) -> Any:  # type: ignore[override]
        self.loadedPlugins = {}
        for plugin in sorted(getPlugins(service.IServiceMaker), key=attrgetter("tapname")):
            if plugin.tapname == "migrate":
                continue
            self.loadedPlugins[plugin.tapname] = plugin
            yield (
                plugin.tapname,
                None,
                # Bind the plugin now, not when the lambda runs.
                lambda plugin=plugin: plugin.options(),
                plugin.description,
            )

    def postOptions(self) -> None:
        if not self["control"]:
            raise usage.UsageError("--control PATH is required")
        if self["select"] and not self["takeover"]:
            raise usage.UsageError("--select is for a takeover (--takeover)")
        if self["tac"] and self.subCommand:
            raise usage.UsageError("give either --tac or a subcommand, not both")
        if not self["tac"] and not self.subCommand:
            raise usage.UsageError("give the service to run: a subcommand, or --tac FILE")
        if self["tac"]:
            self["tac"] = os.path.abspath(self["tac"])
            if not os.path.isfile(self["tac"]):
                raise usage.UsageError(f"no such file: {self['tac']}")
        try:
            self["control"] = checkControlPath(self["control"])
        except ControlPathError as e:
            raise usage.UsageError(str(e)) from e
        state = probe(self["control"])
        if state == "live" and not self["takeover"]:
            raise usage.UsageError(
                f"a service is already running at {self['control']}; use "
                f"--takeover to replace it"
            )
        if state != "live" and self["takeover"]:
            raise usage.UsageError(
                f"--takeover: no service answers at {self['control']} "
                f"({state}); start one without --takeover"
            )
        if state == "stale":
            os.unlink(self["control"])
        self._takeOverPidfile()
        from migrator.adapters import defaultRegistry

        try:
            defaultRegistry(self["adapters"])
        except (ImportError, ValueError) as e:
            raise usage.UsageError(f"--adapters: {e}") from e

    def _takeOverPidfile(self) -> None:
        """
        twistd refuses to start while its pidfile names a live process, and
        removes the pidfile at exit: both are wrong when the main process
        changes.  Handle the pidfile here instead (see L{migrator.takeover._pidfile}).
        """
        self["pidfile"] = None
        parent = getattr(self, "parent", None)
        if parent is None or not parent.get("pidfile"):
            return
        path = os.path.abspath(parent["pidfile"])
        parent["pidfile"] = ""
        self["pidfile"] = path
        if not self["takeover"]:
            pid = Pidfile(path).read()
            if pid and pid != os.getpid() and _alive(pid):
                raise usage.UsageError(
                    f"the pidfile {path} names running process {pid}; if it "
                    f"is a migrate service, use --takeover"
                )

    def description(self) -> str:
        if self["tac"]:
            return f"--tac {self['tac']}"
        return str(self.subCommand)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def makeService(options: Options) -> MigrateService:
    """
    Build the wrapped service and the migration service around it.
    """
    from twisted.internet import reactor

    registerAdapters = None
    if options["tac"]:
        tac = loadTac(options["tac"])
        inner = service.IService(tac.application)
        registerAdapters = tac.registerAdapters
    else:
        plugin = options.loadedPlugins[options.subCommand]
        inner = plugin.makeService(options.subOptions)
    config = MigrateConfig(
        control=options["control"],
        takeover=bool(options["takeover"]),
        drainTimeout=options["drain-timeout"],
        takeoverTimeout=options["takeover-timeout"],
        pidfile=options["pidfile"],
        description=options.description(),
        adapterModules=tuple(options["adapters"]),
        unmovable=options["unmovable"],
        select=options["select"],
    )
    return MigrateService(inner, config, reactor, registerAdapters=registerAdapters)
