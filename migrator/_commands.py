# -*- test-case-name: tests.test_commands -*-
"""
C{python -m migrator}: the operator's commands, dispatched.

    python -m migrator status --control PATH [--json]
    python -m migrator plan --control PATH [--policy P] [--select IDS] [--json]
    python -m migrator console --control PATH [--port 0] [--successor-command CMD]
    python -m migrator rollback --control PATH [--timeout S] [--log FILE] [--dry-run | --show]
    python -m migrator demo [--interactive] [--python PATH]
    python -m migrator demo --load [--takeovers N] [--rate R] [--interval S]

The demo's and the console's modules are imported only when they run.
"""

from __future__ import annotations

import sys
from typing import TextIO

from twisted.python import usage

from migrator.cli._options import PROGRAM, CommandOptions, briefUsageError
from migrator.cli._plan import PlanOptions, runPlan
from migrator.cli._rollback import RollbackOptions, runRollback
from migrator.cli._status import StatusOptions, runStatus
from migrator.console._app import ConsoleOptions


class DemoOptions(CommandOptions):
    synopsis = (
        "[--interactive] [--python PATH] | --load [--takeovers N] [--rate R] [--interval SECONDS]"
    )
    longdesc = (
        "Without --load: a telnet manhole session moves to a new process, on "
        "a second Python when one is found (--python PATH, else "
        "MIGRATOR_DEMO_PYTHON, MIGRATOR_TEST_OTHER_PYTHON or python3.N on "
        "PATH; it must be able to import migrator and its dependencies: the "
        "python of a virtualenv of another Python version where migrator "
        "is installed).  With --load: a web server hands its port over, "
        "again and again, under load."
    )
    optFlags = [
        [
            "interactive",
            None,
            "Start the manhole service and say how to telnet in and take over by hand.",
        ],
        ["load", None, "The web-server-under-load demo instead."],
    ]
    optParameters = [
        [
            "python",
            None,
            None,
            "Interpreter for the successor (manhole demo): the python of a "
            "virtualenv, of another Python version, with migrator installed.",
        ],
        ["takeovers", "n", 5, "How many takeovers to perform (--load).", int],
        ["rate", "r", 500, "New connections per second from the load client (--load).", int],
        ["interval", "i", 1.0, "Seconds of load between takeovers (--load).", float],
    ]

    def postOptions(self) -> None:
        if self["load"] and self["interactive"]:
            raise usage.UsageError("--interactive is for the manhole demo, not --load")


class MainOptions(CommandOptions):
    longdesc = (
        "The tools of migrator that run outside a service: see what runs at "
        "a control socket, go back to the previous generation, or watch a "
        "takeover happen.  Services themselves "
        "run under twistd migrate (twistd migrate --help).  "
        f"{PROGRAM} COMMAND --help shows a command's options."
    )
    subCommands = [
        ["status", None, StatusOptions, "Show what runs at a control socket."],
        ["plan", None, PlanOptions, "Show what a takeover would do now (nothing starts)."],
        ["console", None, ConsoleOptions, "Serve the operator's console (a web page)."],
        [
            "rollback",
            None,
            RollbackOptions,
            "Start the previous generation's command again, as a successor.",
        ],
        ["demo", None, DemoOptions, "Run the live demonstration: a telnet session moves."],
    ]

    def getSynopsis(self) -> str:
        # A command's synopsis is this one, its name and its own synopsis.
        if self.subCommand:
            return f"Usage: {PROGRAM}"
        return f"Usage: {PROGRAM} COMMAND [options]"

    def postOptions(self) -> None:
        if not self.subCommand:
            raise usage.UsageError("give a command: status, plan, console, rollback or demo")


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """
    Entry point of C{python -m migrator}.

    @param argv: the arguments (default: C{sys.argv[1:]}).
    @param out: where a command writes its output.
    @param err: where errors go.
    @return: the exit code: 2 for a usage error, else the command's.
    """
    options = MainOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        command = f"{PROGRAM} {options.subCommand}" if options.subCommand else PROGRAM
        briefUsageError(command, e, err)
        return 2
    if options.subCommand == "status":
        return runStatus(options.subOptions, out, err)
    if options.subCommand == "plan":
        return runPlan(options.subOptions, out, err)
    if options.subCommand == "console":
        from migrator.console._app import runConsole

        return runConsole(options.subOptions, out, err)
    if options.subCommand == "rollback":
        return runRollback(options.subOptions, out, err)
    from migrator.demo._demo import runDemo

    return runDemo(options.subOptions, out)
