# -*- test-case-name: tests.test_consolerun -*-
"""
A takeover started from the console: the successor command runs as a
child process of the console, in a session of its own (so that a Ctrl-C
in the console's terminal does not reach the service it becomes), with
its output written to a log file that the console follows and streams to
the page.  Once the successor serves, it owns nothing of the console's:
the console may exit and the service goes on, logging to that file.

Aborting a takeover in flight stops the successor (C{SIGTERM}: it rolls
back; C{SIGKILL} a few seconds later if it is still there); the incumbent
sees its successor go and keeps serving, unchanged.

The command: the one given to the console (C{--successor-command}), or
the running service's own command line (C{/proc/PID/cmdline}, with
C{--takeover} added after C{migrate}).  C{--unmovable} and C{--select}
are set after C{migrate} for each run, from what the page asked.

A dry run is the same command with C{--dry-run} added: a staging process
that tries the code on a snapshot of the service's state and prints a
report; nothing changes hands.  It passes if it exits 0 (every
connection would move); its report (from C{dry run against pid ...} to
the verdict, C{dry run: ... (exit N)}) is kept apart for the page.
"""

from __future__ import annotations

import os
import re
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet import protocol
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.task import LoopingCall

#: Runs the command in a new session (no terminal's signals reach it).
LAUNCHER = "import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"
#: What a successor logs once it serves, and when its takeover failed.
SERVING = re.compile(r"migrate: serving .* as generation (?P<generation>\d+) \(pid (?P<pid>\d+)")
FAILED = re.compile(r"migrate: takeover failed at step (?P<step>\S+): (?P<reason>.*)")
#: The first line of a dry run's report, and its verdict (the last).
REPORT = re.compile(r"^dry run(?: against pid \d+|: could not be done)")
VERDICT = re.compile(r"^dry run: (?P<summary>.*) \(exit (?P<code>\d+)\)$")

TAKEOVER = "takeover"
DRY_RUN = "dry run"

IDLE = "idle"
RUNNING = "running"
COMMITTED = "committed"
FAILED_STATE = "failed"
ABORTED = "aborted"
#: A dry run that exited 0: every connection would move.
PASSED = "passed"

#: How many lines of the successor's output are kept for the page.
MAX_LINES = 2000
#: How much of the log is read at a time.
_CHUNK = 65536


class CommandError(ValueError):
    """
    The successor command cannot be built; the message says why.
    """


def serviceCommand(pid: int, proc: str = "/proc") -> tuple[list[str], str]:
    """
    The command line and working directory of process C{pid} (the running
    service).

    @raise CommandError: if they cannot be read.
    """
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            raw = f.read()
        cwd = os.readlink(os.path.join(proc, str(pid), "cwd"))
    except OSError as e:
        raise CommandError(f"cannot read the command of pid {pid}: {e.strerror}") from e
    argv = [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]
    if not argv:
        raise CommandError(f"pid {pid} has no command line")
    return argv, cwd


def takeoverCommand(
    argv: Sequence[str],
    policy: str | None = None,
    select: Sequence[str] = (),
    dryRun: bool = False,
) -> list[str]:
    """
    C{argv} (a C{twistd ... migrate ...} command) as a successor's: with
    C{--takeover}, and C{--unmovable POLICY} and C{--select IDS} (if given)
    right after C{migrate}, instead of any it had; with C{--dry-run} if
    C{dryRun} (and without it if not).

    @raise CommandError: if there is no C{migrate} in it.
    """
    try:
        at = list(argv).index("migrate")
    except ValueError:
        raise CommandError("the successor command has no 'migrate' in it") from None
    head, tail = list(argv[: at + 1]), list(argv[at + 1 :])
    cleaned: list[str] = []
    skip = False
    for arg in tail:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--select", "--unmovable") and (policy is not None or name == "--select"):
            skip = "=" not in arg
            continue
        if arg == "--dry-run":
            continue
        cleaned.append(arg)
    extra: list[str] = []
    if "--takeover" not in cleaned:
        extra.append("--takeover")
    if dryRun:
        extra.append("--dry-run")
    if policy is not None:
        extra += ["--unmovable", policy]
    if select:
        extra += ["--select", ",".join(select)]
    return head + extra + cleaned


def policyOf(argv: Sequence[str]) -> str:
    """
    The C{--unmovable} policy C{argv} asks for (C{refuse} by default).
    """
    for i, arg in enumerate(argv):
        if arg == "--unmovable" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--unmovable="):
            return arg.split("=", 1)[1]
    return "refuse"


class _Child(protocol.ProcessProtocol):
    def __init__(self, ended: Callable[[int | None], None]) -> None:
        self._ended = ended

    def processEnded(self, reason: Any) -> None:
        self._ended(getattr(reason.value, "exitCode", None))


@attrs.define(eq=False)
class SuccessorRun:
    """
    One takeover (or dry run: C{kind}) run by the console.

    @ivar onChange: called whenever the state changes or output arrives.
    @ivar report: a dry run's report lines, as it printed them.
    """

    _reactor: Any
    argv: list[str]
    cwd: str | None
    logPath: str
    onChange: Callable[[], None]
    env: dict[str, str] | None = None
    kind: str = TAKEOVER
    state: str = IDLE
    pid: int | None = None
    exitCode: int | None = None
    message: str = ""
    lines: deque[tuple[int, str]] = attrs.field(factory=lambda: deque(maxlen=MAX_LINES))
    seq: int = 0
    report: deque[str] = attrs.field(factory=lambda: deque(maxlen=MAX_LINES))
    _process: Any = None
    _offset: int = 0
    _partial: bytes = b""
    _tail: LoopingCall | None = None
    _kill: Any = None

    def start(self) -> None:
        """
        Spawn the successor, its output going to L{logPath}.
        """
        fd = os.open(self.logPath, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            self._offset = os.fstat(fd).st_size
            reactor: IReactorProcess = self._reactor
            self._process = reactor.spawnProcess(
                _Child(self._ended),
                sys.executable,
                [sys.executable, "-c", LAUNCHER, *self.argv],
                env=self.env if self.env is not None else dict(os.environ),
                path=self.cwd,
                childFDs={0: null, 1: fd, 2: fd},
            )
        finally:
            os.close(fd)
            os.close(null)
        self.pid = self._process.pid
        self.state = RUNNING
        self._tail = LoopingCall(self.readLog)
        self._tail.clock = self._reactor
        self._tail.start(0.2, now=False)
        self.onChange()

    def readLog(self) -> None:
        """
        Read what the successor wrote since the last look.
        """
        try:
            with open(self.logPath, "rb") as f:
                f.seek(self._offset)
                chunk = f.read(_CHUNK)
        except OSError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self._line(raw.decode("utf-8", "replace"))
        self.onChange()

    def _line(self, line: str) -> None:
        self.seq += 1
        self.lines.append((self.seq, line))
        if self.kind == DRY_RUN:
            self._reportLine(line)
            return
        if self.state != RUNNING:
            return
        serving = SERVING.search(line)
        if serving and int(serving["pid"]) == self.pid:
            self.state = COMMITTED
            self.message = f"committed: pid {self.pid} serves as generation {serving['generation']}"
            self._stopKill()
        failed = FAILED.search(line)
        if failed:
            self.message = f"takeover failed at step {failed['step']}: {failed['reason']}"

    def _reportLine(self, line: str) -> None:
        if REPORT.match(line):
            self.report.clear()
            self.report.append(line)
        elif self.report and not VERDICT.match(self.report[-1]):
            self.report.append(line)
        verdict = VERDICT.match(line)
        if verdict and self.state == RUNNING:
            self.message = verdict["summary"]

    def committedElsewhere(self, generation: int) -> None:
        """
        The service's status shows a new generation while this run is
        running (a successor that daemonized serves under another pid).
        """
        if self.state == RUNNING and self.kind == TAKEOVER:
            self.state = COMMITTED
            self.message = f"committed: generation {generation} serves"
            self.onChange()

    def abort(self) -> str:
        """
        Stop the successor if its takeover has not committed (or the
        staging process of a dry run).

        @return: what was done, for the page.
        """
        if self.state != RUNNING or self._process is None:
            return f"nothing to abort: the {self.kind} is {self.state}"
        self.state = ABORTED
        if self.kind == DRY_RUN:
            self.message = "aborted from the console: the dry run was stopped; nothing changed"
        else:
            self.message = (
                "aborted from the console: the successor was stopped; the incumbent rolls back"
            )
        self._signal("TERM")
        self._kill = IReactorTime(self._reactor).callLater(5.0, self._signal, "KILL")
        self.onChange()
        return self.message

    def _signal(self, name: str) -> None:
        try:
            self._process.signalProcess(name)
        except Exception:
            # Already gone.
            pass

    def _stopKill(self) -> None:
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        self._kill = None

    def _ended(self, code: int | None) -> None:
        self.exitCode = code
        self._stopKill()
        self.readLog()
        if self._partial:
            self._line(self._partial.decode("utf-8", "replace"))
            self._partial = b""
        if self._tail is not None and self._tail.running:
            self._tail.stop()
        if self.state == RUNNING and self.kind == DRY_RUN:
            self.state = PASSED if code == 0 else FAILED_STATE
            self.message = self.message or f"the dry run exited with code {code}"
        elif self.state == RUNNING:
            if code == 0:
                self.message = self.message or "the successor exited (0) before serving"
            else:
                self.message = self.message or f"the successor exited with code {code}"
            self.state = FAILED_STATE if code else self.state
        elif self.state == COMMITTED:
            self.message += f"; it has exited since (code {code})"
        self.onChange()

    def asDict(self, since: int = 0) -> dict[str, Any]:
        """
        The run for the page, with the output lines after C{since}.
        """
        return {
            "kind": self.kind,
            "state": self.state,
            "pid": self.pid,
            "argv": self.argv,
            "cwd": self.cwd,
            "log": self.logPath,
            "exit": self.exitCode,
            "message": self.message,
            "seq": self.seq,
            "lines": [[n, line] for n, line in self.lines if n > since],
            "report": list(self.report),
        }
