# -*- test-case-name: tests.integration.test_takeover -*-
"""
Real C{twistd migrate} processes, for integration tests, benchmarks and the
demo: start one, wait for a line of its output (never sleep), stop it.

Public through L{migrator.testing}.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

#: Printed (logged) by a process under migrate once it serves.
READY = re.compile(
    r"migrate: serving (?P<what>.*) as generation (?P<generation>\d+) "
    r"\(pid (?P<pid>\d+), Python (?P<python>[^)]+)\)"
)
#: Logged by an incumbent that has handed off and is draining.
HANDED_OFF = re.compile(r"handed off to pid (?P<pid>\d+)")
#: Logged by a successor whose takeover failed.
FAILED = re.compile(r"migrate: takeover failed at step (?P<step>\S+): (?P<reason>.*)")


class OutputTimeout(AssertionError):
    """
    The line waited for did not appear in time (or the process exited).
    """


def projectRoot() -> str | None:
    """
    The source checkout this package runs from, if it does (so that child
    processes find the C{twisted/plugins/migrator_plugin.py} next to it).
    """
    # migrator/demo/_processes.py -> the directory that holds migrator/
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.exists(os.path.join(here, "twisted", "plugins", "migrator_plugin.py")):
        return here
    return None


def childEnvironment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """
    The environment for a child twistd: ours, with the checkout (if any) on
    C{PYTHONPATH} and unbuffered output.
    """
    env = dict(os.environ)
    root = projectRoot()
    if root:
        paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NOTIFY_SOCKET", None)
    if extra:
        env.update(extra)
    return env


def twistdCommand(
    control: str,
    service: Sequence[str],
    takeover: bool = False,
    python: str | None = None,
    migrateOptions: Sequence[str] = (),
    twistdOptions: Sequence[str] = ("--pidfile=",),
) -> list[str]:
    """
    The argv of C{twistd -n [twistdOptions] migrate --control CONTROL
    [--takeover] [migrateOptions] SERVICE...}, run by interpreter C{python}.
    """
    argv = [
        python or sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        *twistdOptions,
        "migrate",
        "--control",
        control,
    ]
    if takeover:
        argv.append("--takeover")
    argv.extend(migrateOptions)
    argv.extend(service)
    return argv


def _waitExited(process: subprocess.Popen[bytes], timeout: float) -> None:
    """
    Return as soon as C{process} has exited (or after C{timeout}), where
    the system can say so (a pidfd, Linux 5.3 and later): C{Popen.wait}
    with a timeout polls, at intervals doubling up to 50 ms, which would
    see an exit tens of milliseconds late (a benchmark's total includes
    the old process's exit).
    """
    if process.poll() is not None:
        return
    try:
        fd = os.pidfd_open(process.pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


class ServiceProcess:
    """
    A child process whose combined stdout and stderr are collected line by
    line by a reader thread, so a test can wait for a line to appear.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        name: str = "",
    ) -> None:
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env if env is not None else childEnvironment(),
            cwd=cwd,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    #: When it exited (C{time.monotonic()}), as seen by L{watchExit}'s
    #: thread (set once L{waitForExit} returns); C{None} until then, or if
    #: it was not watched.
    exitedAt: float | None = None
    _watcher: threading.Thread | None = None

    def watchExit(self) -> None:
        """
        Note the moment it exits (L{exitedAt}) from now on, in a thread of
        its own that waits on its pidfd (Linux 5.3 and later; elsewhere,
        nothing is noted): a caller waiting for other lines meanwhile
        would see the exit only when done with them.
        """
        try:
            fd = os.pidfd_open(self.process.pid)  # type: ignore[attr-defined,unused-ignore]
        except (AttributeError, OSError):
            return

        def watch() -> None:
            try:
                # (Bounded: a benchmark's process lives minutes at most.)
                if select.select([fd], [], [], 3600)[0]:
                    self.exitedAt = time.monotonic()
            finally:
                os.close(fd)

        self._watcher = threading.Thread(target=watch, daemon=True)
        self._watcher.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def waitFor(
        self, pattern: re.Pattern[str] | str, timeout: float = 30.0, start: int = 0
    ) -> re.Match[str]:
        """
        Wait until a line (from line index C{start} on) matches C{pattern}.

        @raise OutputTimeout: if none does within C{timeout} seconds or the
            process's output ends first; the message holds the output.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    index += 1
                    if match:
                        return match
                if self._eof:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        raise OutputTimeout(
            f"{self.name} (pid {self.pid}): no line matching {regex.pattern!r} "
            f"within {timeout:g}s; exit code {self.process.poll()}; output:\n"
            + self.output()[-6000:]
        )

    def waitForExit(self, timeout: float = 30.0) -> int:
        """
        @return: the exit code.
        @raise OutputTimeout: if it is still running after C{timeout}.
        """
        _waitExited(self.process, timeout)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise OutputTimeout(
                f"{self.name} (pid {self.pid}) still running after {timeout:g}s; "
                f"output:\n" + self.output()[-6000:]
            ) from None
        self._reader.join(5)
        if self._watcher is not None:
            self._watcher.join(5)
        return code

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0) -> int | None:
        """
        SIGTERM, then SIGKILL if needed; idempotent.  Suits C{addCleanup}.
        """
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self._reader.join(5)
            self.process.stdout.close()
        return self.process.returncode


def startMigrate(
    control: str,
    service: Sequence[str],
    takeover: bool = False,
    python: str | None = None,
    migrateOptions: Sequence[str] = (),
    twistdOptions: Sequence[str] = ("--pidfile=",),
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    name: str = "",
) -> ServiceProcess:
    """
    Start C{twistd -n migrate} in a child process (see L{twistdCommand}).
    """
    argv = twistdCommand(control, service, takeover, python, migrateOptions, twistdOptions)
    return ServiceProcess(
        argv,
        env=childEnvironment(env),
        cwd=cwd,
        name=name or ("successor" if takeover else "incumbent"),
    )
