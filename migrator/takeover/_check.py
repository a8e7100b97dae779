# -*- test-case-name: tests.test_check -*-
"""
C{--check COMMAND}: a successor's health check, run after the switch and
before the commit, against the service as the successor now serves it.

The command is run by C{/bin/sh -c}, in a session of its own (so that a
timeout kills everything it started), with this process's environment
plus where the successor listens (L{checkEnvironment}).  It passes if it
exits 0 within its timeout (C{--check-timeout}); otherwise the successor
rolls the takeover back, as after any failure before the commit, and the
failure message carries the end of the check's output.

While it runs, the successor accepts new connections (the check's own
among them), and the connections that moved are still frozen: they
resume only after the commit, so a rollback loses none of them.
Connections the successor accepted before a rollback are served to their
end by the successor before it exits.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from migrator.takeover._failure import TakeoverFailed

_log = Logger()

#: How much of the check's output is kept (its end).
OUTPUT_LIMIT = 64 * 1024
#: How many of its last lines, and characters at most, a failure quotes.
TAIL_LINES = 10
TAIL_CHARS = 1500
#: After killing a check that timed out, how long its pipes may stay open
#: (a descendant that left its session) before they are closed.
GRACE = 2.0

#: Runs C{sh -c COMMAND} as the leader of a new session: the timeout kills
#: the whole session.
_SESSION = "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])"


def checkEnvironment(addresses: Iterable[tuple[str, str]], control: str) -> dict[str, str]:
    """
    What a check learns of the service, in its environment.

      - C{MIGRATOR_PORTS}: the successor's listening addresses, in the
        order its service declared them, separated by spaces
        (C{127.0.0.1:8080}, C{[::1]:8443}, C{/run/site/web.sock});
      - C{MIGRATOR_PORT}: the port number of the first TCP or UDP address;
      - C{MIGRATOR_CONTROL}: the control socket's path;
      - C{MIGRATOR_SUCCESSOR_PID}: the successor's pid.

    @param addresses: C{(kind, address)} of each listening port.
    """
    env = {
        "MIGRATOR_PORTS": " ".join(address for _, address in addresses),
        "MIGRATOR_CONTROL": control,
        "MIGRATOR_SUCCESSOR_PID": str(os.getpid()),
    }
    for kind, address in addresses:
        if kind in ("tcp", "udp"):
            env["MIGRATOR_PORT"] = address.rpartition(":")[2]
            break
    return env


@attrs.frozen
class CheckResult:
    """
    How a check ended.

    @ivar code: its exit code (C{None} if a signal ended it).
    @ivar signal: the signal that ended it, if one did.
    @ivar timedOut: whether it was killed at its timeout.
    @ivar output: the end of what it wrote (stdout and stderr).
    @ivar seconds: how long it ran.
    """

    command: str
    code: int | None
    signal: int | None = None
    timedOut: bool = False
    output: bytes = b""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timedOut

    def describe(self) -> str:
        """
        How it ended, in words.
        """
        if self.timedOut:
            return f"timed out after {self.seconds:.1f} s"
        if self.code is None:
            return f"killed by signal {self.signal} after {self.seconds:.2f} s"
        return f"exited {self.code} after {self.seconds:.2f} s"

    def lines(self) -> list[str]:
        """
        The last lines of its output that are not blank (at most
        L{TAIL_LINES}).
        """
        text = self.output.decode("utf-8", "replace")
        return [line.rstrip() for line in text.splitlines() if line.strip()][-TAIL_LINES:]

    def tail(self) -> str:
        """
        The last lines of its output on one line, separated by C{" | "}
        (at most L{TAIL_CHARS} characters: the end).
        """
        joined = " | ".join(line.strip() for line in self.lines())
        return joined if len(joined) <= TAIL_CHARS else "..." + joined[-TAIL_CHARS:]


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[object] = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data
        if len(self.output) > OUTPUT_LIMIT:
            del self.output[: len(self.output) - OUTPUT_LIMIT]

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)


def _killSession(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@attrs.define(eq=False)
class HealthCheck:
    """
    A successor's C{--check}: call it to run the command once.

    @ivar _reactor: spawns the command and bounds it in time (an
        L{IReactorProcess} and L{IReactorTime}).
    @ivar command: the shell command.
    @ivar timeout: seconds it may take.
    @ivar environment: what to add to this process's environment when the
        check runs (L{checkEnvironment}).
    @ivar kill: kills a check's session by the pid of its leader (a seam
        for tests).
    """

    _reactor: Any
    command: str
    timeout: float = 10.0
    environment: Callable[[], dict[str, str]] = dict
    shell: str = "/bin/sh"
    kill: Callable[[int], None] = _killSession
    clock: Callable[[], float] = time.monotonic

    def shown(self) -> str:
        """
        The command on one line (at most 200 characters), for messages.
        """
        text = " ".join(self.command.split())
        return text if len(text) <= 200 else text[:197] + "..."

    def run(self) -> Deferred[CheckResult]:
        """
        Run the command once.

        @return: a L{Deferred} firing with how it ended (whether it passed
            or not); cancelling it kills the command.
        """
        output = _Output()
        started = self.clock()
        env = {**os.environ, **self.environment()}
        transport = self._reactor.spawnProcess(
            output,
            sys.executable,
            [sys.executable, "-S", "-E", "-c", _SESSION, self.shell, "-c", self.command],
            env=env,
        )
        timedOut = []
        calls: list[IDelayedCall] = []

        def stop() -> None:
            if transport.pid is not None:
                self.kill(transport.pid)
            # A descendant that left the session may hold the pipes open.
            calls.append(self._reactor.callLater(GRACE, transport.loseConnection))

        def expire() -> None:
            timedOut.append(True)
            stop()

        calls.append(self._reactor.callLater(self.timeout, expire))

        def ended(reason: object) -> CheckResult:
            for call in calls:
                if call.active():
                    call.cancel()
            code = signum = None
            if isinstance(reason, (ProcessDone, ProcessTerminated)):
                code, signum = reason.exitCode, reason.signal
            return CheckResult(
                self.command,
                None if timedOut else code,
                signum,
                bool(timedOut),
                bytes(output.output),
                self.clock() - started,
            )

        def cancel(d: Deferred[CheckResult]) -> None:
            stop()

        result: Deferred[CheckResult] = Deferred(cancel)
        output.ended.addCallback(ended).chainDeferred(result)
        return result

    async def __call__(self) -> None:
        """
        Run the command and say how it went.

        @raise TakeoverFailed: if it did not pass: the message says how it
            ended and quotes the end of its output.
        """
        _log.info(
            "running the health check (at most {timeout:g} s): {command}",
            timeout=self.timeout,
            command=self.shown(),
        )
        try:
            result = await self.run()
        except CancelledError:
            _log.warn("the health check was cancelled: {command}", command=self.shown())
            raise
        if result.ok:
            _log.info(
                "the health check passed ({how}): {command}",
                how=result.describe(),
                command=self.shown(),
            )
            return
        message = f"the health check {result.describe()}: {self.shown()}"
        _log.error(
            "{message}; its output ended with:\n{output}",
            message=message,
            output="\n".join(f"  {line}" for line in result.lines()) or "  (nothing)",
        )
        # One line, for the incumbent's log too.
        if tail := result.tail():
            message += f"; its output ended with: {tail}"
        raise TakeoverFailed(message)
