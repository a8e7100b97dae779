# -*- test-case-name: tests.test_rollback -*-
"""
C{python -m migrator rollback --control PATH}: going back to the previous
generation is one command.

The service answering at C{PATH} knows how its predecessor was started
(C{status}'s C{previous_command}: argv, working directory, interpreter).
C{rollback} runs that command again as a successor (C{--takeover} added,
everything else as recorded, daemonizing or not), with its output going
to a log file, waits for the takeover's outcome, says what happened and
exits 0 if the previous command now serves, 1 otherwise.  State moves as
in any takeover: the newer process translates it down.

With C{--dry-run}, it runs the previous command as a dry run instead
(C{twistd migrate --dry-run}: the old code tried on the live state), in
the foreground, and exits with its code.  With C{--show}, it prints the
command and does nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from typing import Any, TextIO

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python import usage

from migrator.cli._options import CommandOptions
from migrator.cli._status import fetchStatus
from migrator.takeover._lineage import NoCommand, checkCommand, successorArgv

#: What the successor logs once it serves, and when its takeover failed.
SERVING = re.compile(r"migrate: serving .* as generation (?P<generation>\d+) \(pid (?P<pid>\d+)")
FAILED = re.compile(r"migrate: takeover failed at step (?P<step>\S+): (?P<reason>.*)")
#: How often the outcome is looked for.
INTERVAL = 0.2
#: How many of the log's last lines a failure quotes.
TAIL = 15


class RollbackOptions(CommandOptions):
    synopsis = "--control PATH [--timeout S] [--log FILE] [--dry-run | --show]"
    longdesc = (
        "Start the previous generation's command line (as the service at "
        "--control recorded it) as a successor, translating the state down, "
        "and wait for the takeover's outcome: exit 0 if the previous command "
        "serves again, 1 if not (the running service then keeps serving)."
    )
    optFlags = [
        [
            "dry-run",
            None,
            "Run the previous command as a dry run (its code tried on the live "
            "state; nothing changes) and exit with its code.",
        ],
        ["show", None, "Print the command that would run, and do nothing."],
    ]
    optParameters = [
        ["control", "c", None, "Path of the control socket."],
        [
            "timeout",
            None,
            120.0,
            "Seconds to wait for the takeover's outcome.",
            float,
        ],
        [
            "log",
            None,
            None,
            "Where the restarted command's output goes (appended to); by "
            "default the file the previous generation's output went to, if "
            "it was a file, else rollback.log beside the control socket.",
        ],
    ]

    def postOptions(self) -> None:
        if not self["control"]:
            raise usage.UsageError("--control PATH is required")
        if self["dry-run"] and self["show"]:
            raise usage.UsageError("give --dry-run or --show, not both")
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be greater than 0")


class RollbackFailed(Exception):
    """
    The previous command does not serve; the message says why.
    """


def _dryRunArgv(argv: list[str]) -> list[str]:
    at = argv.index("migrate")
    return argv[: at + 1] + ["--dry-run"] + argv[at + 1 :]


def _nodaemon(argv: list[str]) -> bool:
    """
    Does twistd run C{argv} in the foreground (C{-n}, C{--nodaemon})?
    """
    return any(a in ("-n", "--nodaemon") for a in argv[: argv.index("migrate")])


@attrs.define(eq=False)
class Rollback:
    """
    One rollback: start the previous command, watch for the outcome.

    @ivar status: fetches the status at the control socket (a seam for
        tests).
    @ivar spawn: starts the command (C{subprocess.Popen}'s signature).
    @ivar sleep: waits a little, the reactor running.
    """

    control: str
    timeout: float
    out: TextIO
    status: Callable[[], Deferred[dict[str, Any]]]
    spawn: Callable[..., Any] = subprocess.Popen
    sleep: Callable[[float], Deferred[None]] | None = None
    clock: Callable[[], float] = time.time
    log: str | None = None

    def say(self, line: str) -> None:
        self.out.write(f"rollback: {line}\n")
        self.out.flush()

    def logFile(self, previous: dict[str, Any]) -> str:
        if self.log:
            return os.path.abspath(self.log)
        stdout = previous.get("stdout")
        if isinstance(stdout, str) and os.path.isabs(stdout):
            return stdout
        return os.path.join(os.path.dirname(self.control), "rollback.log")

    async def run(self, dryRun: bool = False, show: bool = False) -> int:
        try:
            return await self._run(dryRun, show)
        except (RollbackFailed, NoCommand, RuntimeError, OSError) as e:
            self.say(f"FAILED: {e}")
            return 1

    async def _run(self, dryRun: bool, show: bool) -> int:
        before = await self.status()
        try:
            previous = checkCommand(before.get("previous_command"))
        except NoCommand as e:
            raise NoCommand(
                f"pid {before.get('pid')} (generation {before.get('generation')}) at "
                f"{self.control} has no previous command recorded ({e}): it is the first "
                f"generation, or its predecessor ran a migrator without command records"
            ) from None
        argv = successorArgv(previous)
        if dryRun:
            argv = _dryRunArgv(argv)
        self.say(f"the previous generation's command, in {previous['cwd']}:")
        self.out.write(f"  {shlex.join(argv)}\n")
        if show:
            return 0
        if dryRun:
            return await self._foreground(argv, previous["cwd"])
        path = self.logFile(previous)
        with open(path, "ab") as logFile:
            start = logFile.tell()
            started = self.clock()
            child = self.spawn(
                argv,
                cwd=previous["cwd"],
                stdin=subprocess.DEVNULL,
                stdout=logFile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.say(f"started it as pid {child.pid}; its output goes to {path}")
        return await self._watch(before, child, path, start, started, _nodaemon(argv))

    async def _foreground(self, argv: list[str], cwd: str) -> int:
        child = self.spawn(argv, cwd=cwd, stdin=subprocess.DEVNULL)
        deadline = self.clock() + self.timeout
        while (code := child.poll()) is None:
            if self.clock() >= deadline:
                child.kill()
                raise RollbackFailed(f"the dry run took longer than {self.timeout:g} s")
            await self._sleep()
        self.say(f"the dry run of the previous command exited {code}")
        return int(code)

    def _sleep(self) -> Deferred[None]:
        if self.sleep is not None:
            return self.sleep(INTERVAL)
        from twisted.internet import reactor

        return deferLater(reactor, INTERVAL, lambda: None)

    async def _watch(
        self,
        before: dict[str, Any],
        child: Any,
        path: str,
        start: int,
        started: float,
        nodaemon: bool,
    ) -> int:
        oldPid, oldGeneration = before.get("pid"), before.get("generation", 0)
        deadline = started + self.timeout
        while True:
            code = child.poll()
            lines = _readFrom(path, start)
            now = await self._status()
            if now is not None and now.get("pid") != oldPid and now.get("generation", 0) > oldGeneration:
                self.say(
                    f"done: pid {now.get('pid')} serves generation {now.get('generation')} "
                    f"with the previous command; pid {oldPid} hands over its connections "
                    f"and exits"
                )
                return 0
            failed = next((m for line in lines if (m := FAILED.search(line))), None)
            last = (now or {}).get("last_takeover") or {}
            if failed is None and now is not None and now.get("pid") == oldPid:
                if (last.get("at") or 0) >= started and last.get("outcome") in ("abandoned", "refused"):
                    failed = last.get("reason")
            if failed is not None or (code is not None and (code != 0 or nodaemon)):
                why = failed.group(0) if isinstance(failed, re.Match) else failed
                if why is None:
                    why = f"the command exited {code} before serving"
                self.say(f"FAILED: {why}")
                self.say(f"pid {oldPid} keeps serving (generation {oldGeneration}).")
                tail = lines[-TAIL:]
                if tail:
                    self.say(f"the end of {path}:")
                    self.out.write("".join(f"  {line}\n" for line in tail))
                return 1
            if self.clock() >= deadline:
                self.say(
                    f"FAILED: no outcome within {self.timeout:g} s; pid {child.pid} is "
                    f"{'still running' if code is None else f'gone (exit {code})'}; see {path}"
                )
                return 1
            await self._sleep()

    async def _status(self) -> dict[str, Any] | None:
        try:
            return await self.status()
        except RuntimeError:
            # Between the successor's commit and its control socket's
            # publication, or a busy socket: ask again.
            return None


def _readFrom(path: str, start: int) -> list[str]:
    """
    The lines written to C{path} from offset C{start} on.
    """
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(4 * 1024 * 1024)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()


def runRollback(options: RollbackOptions, out: TextIO, err: TextIO) -> int:
    from twisted.internet.task import react

    result: dict[str, int] = {}

    async def main(reactor: Any) -> None:
        rollback = Rollback(
            options["control"],
            options["timeout"],
            out,
            status=lambda: Deferred.fromCoroutine(fetchStatus(reactor, options["control"], 10.0)),
            log=options["log"],
        )
        result["code"] = await rollback.run(options["dry-run"], options["show"])

    try:
        react(lambda r: Deferred.fromCoroutine(main(r)))
    except SystemExit:
        pass
    return result.get("code", 1)

