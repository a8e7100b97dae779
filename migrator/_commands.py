# -*- test-case-name: tests.integration.test_operator -*-
"""
C{python -m migrator}: the operator's commands, dispatched.

    python -m migrator status --control PATH [--json]
    python -m migrator plan --control PATH [--policy P] [--select IDS] [--json]
    python -m migrator console --control PATH [--port 0] [--successor-command CMD]
    python -m migrator demo [--interactive] [--python PATH]
    python -m migrator demo --load [--takeovers N] [--rate R] [--interval S]

The demo's and the console's modules are imported only when they run.
"""

from __future__ import annotations

import sys
from typing import TextIO

from twisted.python import usage

from migrator.cli._plan import PlanOptions, runPlan
from migrator.cli._status import StatusOptions, runStatus
from migrator.console._app import ConsoleOptions


class DemoOptions(usage.Options):
    synopsis = (
        "[--interactive] [--python PATH] | --load [--takeovers N] [--rate R] [--interval SECONDS]"
    )
    longdesc = (
        "Without --load: a telnet manhole session moves to a new process (on "
        "a second Python when one is found: --python, MIGRATOR_DEMO_PYTHON, "
        "MIGRATOR_TEST_OTHER_PYTHON or python3.N on PATH).  With --load: a "
        "web server hands its port over, again and again, under load."
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
        ["python", None, None, "Interpreter for the successor (manhole demo)."],
        ["takeovers", "n", 5, "How many takeovers to perform (--load).", int],
        ["rate", "r", 500, "New connections per second from the load client (--load).", int],
        ["interval", "i", 1.0, "Seconds of load between takeovers (--load).", float],
    ]

    def postOptions(self) -> None:
        if self["load"] and self["interactive"]:
            raise usage.UsageError("--interactive is for the manhole demo, not --load")


class MainOptions(usage.Options):
    synopsis = "COMMAND [options]"
    subCommands = [
        ["status", None, StatusOptions, "Show what runs at a control socket."],
        ["plan", None, PlanOptions, "Show what a takeover would do now (nothing starts)."],
        ["console", None, ConsoleOptions, "Serve the operator's console (a web page)."],
        ["demo", None, DemoOptions, "Run the live demonstration: a telnet session moves."],
    ]

    def postOptions(self) -> None:
        if not self.subCommand:
            raise usage.UsageError("give a command: status, plan, console or demo")


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """
    Entry point of C{python -m migrator}.
    """
    options = MainOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        err.write(f"{options}\nmigrator: {e}\n")
        return 2
    if options.subCommand == "status":
        return runStatus(options.subOptions, out, err)
    if options.subCommand == "plan":
        return runPlan(options.subOptions, out, err)
    if options.subCommand == "console":
        from migrator.console._app import runConsole

        return runConsole(options.subOptions, out, err)
    from migrator.demo._demo import runDemo

    return runDemo(options.subOptions, out)
