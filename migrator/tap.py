# -*- test-case-name: tests.test_service,tests.test_tac -*-
"""
C{twistd migrate}: command line options and service construction.

    twistd -n --pidfile= migrate --control PATH [--takeover] SUBCOMMAND [ARGS]
    twistd -n --pidfile= migrate --control PATH [--takeover] --tac FILE
    twistd -n --pidfile= migrate --control PATH --dry-run ... (the same service)

A successor may be given C{--check COMMAND} (C{--check-timeout S}) and
C{--close-undeclared-ports}.

A C{.tac} file that defines C{registerAdapters(registry)} is its own
adapters module (L{migrator._tac}); a C{checkRestored(protocol)} in it, or
in an C{--adapters} module, checks each connection a dry run restored.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from twisted.application import service
from twisted.plugin import getPlugins
from twisted.python import usage

from migrator._config import MigrateConfig
from migrator._service import MigrateService
from migrator._tac import loadTac
from migrator.state._nativeform import VERSION as NATIVE_FORM
from migrator.state._plan import POLICIES, REFUSE
from migrator.takeover._control import ControlPathError, checkControlPath, probe
from migrator.takeover._lineage import thisCommand
from migrator.takeover._messages import Streaming
from migrator.takeover._pidfile import Pidfile
from migrator.takeover._steps import Faults, InvalidFaults


def _policy(value: str) -> str:
    if value not in POLICIES:
        raise ValueError(f"must be one of {', '.join(POLICIES)}")
    return value


def _isMissing(error: ModuleNotFoundError, name: str) -> bool:
    """
    Is C{error} about module C{name} (or a package above it) itself, not
    about something that module imports?
    """
    missing = error.name or ""
    return name == missing or name.startswith(missing + ".")


def importAdapterModule(name: str, directory: str | None = None) -> None:
    """
    Import the adapter module C{name} for C{--adapters}: from the Python
    path, else from C{directory}, the way C{--tac} finds its file there.
    C{twistd} does not put the current directory on the Python path; if
    the module is found there, that directory is added to the end of the
    path (so it shadows nothing), for the module's own imports too.

    @param name: the module's dotted name.
    @param directory: where else to look (default: the current directory).
    @raise ImportError: if the module is found in neither place, with a
        message naming both; or whatever importing the module raises.
    """
    try:
        importlib.import_module(name)
        return
    except ModuleNotFoundError as e:
        if not _isMissing(e, name):
            raise
    directory = os.path.abspath(directory if directory is not None else os.getcwd())
    added = directory not in sys.path
    if added:
        sys.path.append(directory)
        importlib.invalidate_caches()
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if not _isMissing(e, name):
            raise
        if added:
            sys.path.remove(directory)
        raise ImportError(
            f"no module named {name} on the Python path or in the current "
            f"directory ({directory})"
        ) from None


def _positiveFloat(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _nonNegativeInt(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _nonNegativeFloat(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be 0 or more")
    return number


class Options(usage.Options):
    synopsis = (
        "--control PATH [--takeover | --dry-run] [--check COMMAND] "
        "(SUBCOMMAND [subcommand options] | --tac FILE)"
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
        [
            "dry-run",
            None,
            "Instead of taking over: try this command's code on a snapshot of the running service's state, in "
            "this process, with nothing bound; print a report per class and "
            "exit 0 if every connection would move, 1 if something failed, 2 "
            "if some would stay.  The running service is not interrupted.",
        ],
        [
            "close-undeclared-ports",
            None,
            "With --takeover: let the takeover close the ports the running "
            "service listens on and this one does not declare (without it, "
            "such a takeover is refused).",
        ],
        [
            "close-busy",
            None,
            "With --takeover: close (as a shutdown would) the connections "
            "still busy at --busy-deadline, after the move, instead of "
            "letting them drain in the old process.",
        ],
        [
            "graph-batches",
            None,
            "With --takeover: have every batch of connections written by the "
            "graph writer, never in the native form (a pickle of the batch, "
            "several times cheaper per connection; see docs/architecture.md).",
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
        [
            "check",
            None,
            None,
            "With --takeover: a shell command run after the switch, before the "
            "commit, against the service as this process serves it "
            "(MIGRATOR_PORTS holds its addresses, MIGRATOR_PORT the first "
            "port); a non-zero exit or a timeout rolls the takeover back.",
        ],
        [
            "stream-batch",
            None,
            512,
            "With --takeover: the most connections moved per batch while the "
            "running service keeps serving the others (each batch is frozen "
            "from its capture until the commit); 0 moves them all at once, "
            "when accepting stops.",
            _nonNegativeInt,
        ],
        [
            "busy-deadline",
            None,
            5.0,
            "With --takeover: seconds a busy connection (a request being "
            "answered) may take to turn idle and move; then it stays and "
            "drains in the old process (or closes, --close-busy).  At most a "
            "third of --takeover-timeout.",
            _nonNegativeFloat,
        ],
        [
            "check-timeout",
            None,
            10.0,
            "Seconds --check may take before it is killed and the takeover "
            "rolled back.",
            _positiveFloat,
        ],
    ]

    #: Whether L{postOptions} has begun (a usage error before it, once a
    #: subcommand was named, is the subcommand's).
    _checking = False

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["adapters"] = []
        # A method's docstring is its option's help: make it one paragraph.
        for name, doc in list(self.docs.items()):
            if doc:
                self.docs[name] = " ".join(doc.split())
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
        Import MODULE (from the Python path, else from the current
        directory) and register the adapters its registerAdapters(registry)
        defines (repeatable; comma-separated names are accepted too).
        """
        self["adapters"].extend(m.strip() for m in module.split(",") if m.strip())

    def opt_version(self) -> None:
        """
        Display migrator's, Twisted's and Python's versions and exit.
        """
        from twisted.copyright import version

        from migrator._version import __version__

        print(f"migrator {__version__}\nTwisted {version}\nPython {platform.python_version()}")
        sys.exit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse C{options}; see L{usage.Options.parseOptions}.

        As C{twistd}'s subcommand, say a usage error briefly and exit:
        C{twistd} would print its whole usage text (several screens with
        every plugin listed) before the one line that matters.

        @raise usage.UsageError: for a usage error, used on its own.
        @raise SystemExit: for a usage error, as C{twistd}'s subcommand.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            raise SystemExit(self.briefError(e)) from None

    def briefError(self, error: usage.UsageError) -> str:
        """
        @return: C{error} in two lines: the error, and the command whose
            C{--help} shows the options it is about.
        """
        command = "twistd migrate"
        if self.subCommand and not self._checking:
            command += f" {self.subCommand}"
        return f"{command}: {error}\nRun '{command} --help' for usage."

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
        self._checking = True
        if not self["control"]:
            raise usage.UsageError("--control PATH is required")
        if self["select"] and not self["takeover"]:
            raise usage.UsageError("--select is for a takeover (--takeover)")
        if self["tac"] and self.subCommand:
            raise usage.UsageError("give either --tac or a subcommand, not both")
        if not self["tac"] and not self.subCommand:
            raise usage.UsageError("give the service to run: a subcommand, or --tac FILE")
        if self["dry-run"]:
            self._dryRun()
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
        # Read once, here: the roles are handed what to inject.
        try:
            self["faults"] = Faults.parse(
                os.environ.get("MIGRATOR_FAULT", ""),
                gate=os.environ.get("MIGRATOR_FAULT_GATE") or None,
            )
        except InvalidFaults as e:
            raise usage.UsageError(f"MIGRATOR_FAULT: {e}") from e
        from migrator.adapters import defaultRegistry

        try:
            for name in self["adapters"]:
                importAdapterModule(name)
            defaultRegistry(self["adapters"])
        except (ImportError, ValueError) as e:
            raise usage.UsageError(f"--adapters: {e}") from e

    def _dryRun(self) -> None:
        """
        C{--dry-run} needs a running service (as C{--takeover} does), runs
        in the foreground (its report and exit code are the point), and
        never touches the pidfile.
        """
        self["takeover"] = True
        parent = getattr(self, "parent", None)
        if parent is not None:
            parent["nodaemon"] = True

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

    # Before twistd changes directory (--rundir) or daemonizes.
    command = thisCommand()
    registerAdapters = None
    checks = [
        check
        for name in options["adapters"]
        if (check := getattr(sys.modules.get(name), "checkRestored", None)) is not None
    ]
    if options["tac"]:
        tac = loadTac(options["tac"])
        inner = service.IService(tac.application)
        registerAdapters = tac.registerAdapters
        if tac.checkRestored is not None:
            checks.append(tac.checkRestored)
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
        faults=options.get("faults") or Faults(),
        dryRun=bool(options["dry-run"]),
        check=options["check"],
        checkTimeout=options["check-timeout"],
        closeUndeclared=bool(options["close-undeclared-ports"]),
        stream=Streaming(
            options["stream-batch"],
            options["busy-deadline"],
            bool(options["close-busy"]),
            native=0 if options["graph-batches"] else NATIVE_FORM,
        ),
        command=command,
    )
    return MigrateService(
        inner,
        config,
        reactor,
        registerAdapters=registerAdapters,
        checkRestored=_allChecks(checks) if checks else None,
    )


def _allChecks(checks: list[Callable[[Any], object]]) -> Callable[[Any], object]:
    """
    One C{checkRestored} that runs each of C{checks} in turn.
    """

    def checkRestored(protocol: Any) -> None:
        for check in checks:
            check(protocol)

    return checkRestored
