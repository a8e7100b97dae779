# -*- test-case-name: tests.test_consoleweb -*-
"""
C{python -m migrator console --control PATH [--port 0]
[--successor-command CMD] [--log-dir DIR]}: the operator's console, a web
page served by this process on 127.0.0.1 only, for the service at the
control socket.  It prints one line,

    console for NAME (pid N, generation G) at http://127.0.0.1:PORT/?token=...

and serves until interrupted.  A takeover started from the page runs the
successor command as a child of the console (see
L{migrator.console._run}); its output goes to a file in C{--log-dir}
(default: the control socket's directory).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python import usage

from migrator.cli._status import callControl


class ConsoleOptions(usage.Options):
    synopsis = "--control PATH [--port 0] [--successor-command CMD] [--log-dir DIR]"
    optParameters = [
        ["control", "c", None, "Path of the service's control socket."],
        ["port", "p", 0, "TCP port on 127.0.0.1 (0: any free port).", int],
        [
            "successor-command",
            None,
            None,
            'The command a takeover runs (shell words), e.g. "twistd -n migrate '
            '--control PATH --takeover web --listen tcp:8080"; by default the '
            "running service's own command line with --takeover.",
        ],
        [
            "log-dir",
            None,
            None,
            "Where a successor's output goes (default: the control's directory).",
        ],
        ["timeout", None, 30.0, "Seconds to wait for each answer of the service.", float],
    ]

    def postOptions(self) -> None:
        if not self["control"]:
            raise usage.UsageError("--control PATH is required")
        self["control"] = os.path.abspath(self["control"])
        if not 0 <= self["port"] < 65536:
            raise usage.UsageError("--port must be from 0 to 65535")
        if self["successor-command"] is not None:
            self["successor-command"] = shlex.split(self["successor-command"])
            if not self["successor-command"]:
                raise usage.UsageError("--successor-command is empty")
        if self["log-dir"] is None:
            self["log-dir"] = os.path.dirname(self["control"])


def consoleLine(status: dict[str, Any], port: int, token: str) -> str:
    """
    The line the console prints: what it watches, and its URL.
    """
    return (
        f"console for {status.get('service')} (pid {status.get('pid')}, generation "
        f"{status.get('generation')}) at http://127.0.0.1:{port}/?token={token}"
    )


async def serveConsole(reactor: Any, options: ConsoleOptions, out: TextIO) -> None:
    """
    Start the console and serve until the reactor stops.
    """
    from twisted.web.server import Site

    from migrator.console._model import ConsoleModel
    from migrator.console._security import Guard, newToken
    from migrator.console._web import consoleRoot

    path, timeout = options["control"], options["timeout"]

    def call(method: str, *args: Any) -> Any:
        return callControl(reactor, path, method, *args, timeout=timeout)

    status = await call("status")
    guard = Guard(newToken())
    model = ConsoleModel(
        reactor, call, command=options["successor-command"], logDir=options["log-dir"]
    )
    model.observe(status)
    site = Site(consoleRoot(guard, model, reactor))
    site.displayTracebacks = False
    port = reactor.listenTCP(options["port"], site, interface="127.0.0.1")
    guard.port = port.getHost().port
    out.write(consoleLine(status, guard.port, guard.token) + "\n")
    out.flush()
    await Deferred()


def runConsole(options: ConsoleOptions, out: TextIO, err: TextIO) -> int:
    from twisted.internet.task import react

    failed: list[str] = []

    async def main(reactor: Any) -> None:
        try:
            await serveConsole(reactor, options, out)
        except RuntimeError as e:
            failed.append(str(e))

    try:
        react(lambda r: Deferred.fromCoroutine(main(r)))
    except SystemExit:
        pass
    if failed:
        err.write(f"migrator console: {failed[0]}\n")
        return 1
    return 0
