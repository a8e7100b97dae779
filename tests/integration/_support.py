# -*- test-case-name: tests.integration -*-
"""
Shared helpers of the real-process integration tests: a private workspace
with a control socket path and a document root, the stock C{twistd web}
service under migrate, the load client (L{migrator.demo._loadgen}) in its own
process, C{python -m migrator status --json}, and a raw HTTP client for
connections kept open across a takeover.

Everything here waits on lines of output or on sockets with timeouts; no
loop is unbounded and nothing sleeps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, TypeVar

from twisted.trial.unittest import TestCase

from migrator.demo._loadgen import READY_LINE
from migrator.demo._loadgen import command as loadgenCommand
from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

#: Logged by C{twistd web} once its site listens; gives the real port.
SITE_STARTING = re.compile(r"Site starting on (?P<port>\d+)")
#: Logged by an incumbent that gave up a takeover and serves on.
ABANDONED = re.compile(
    r"takeover by pid (?P<pid>\d+) abandoned at step (?P<step>\S+): (?P<reason>.*?); "
    r"this process keeps serving"
)
#: Logged by a process that handed off, once it has nothing left to serve.
DRAINED = re.compile(r"all connections drained; exiting")
#: Logged by a process that handed off when its drain timeout expires.
DRAIN_TIMEOUT = re.compile(r"drain timeout: closing (?P<count>\d+) remaining connection")
#: Logged by a successor at a fault injection point.
FAULT = re.compile(r"fault injection: (?P<action>\w+) at (?P<point>\S+)")
#: An access log line of C{twistd web}.
ACCESS = re.compile(r'"GET (?P<path>\S+) HTTP/1\.[01]" (?P<code>\d{3}) ')

#: The outcomes of load requests that are failures of some kind.
FAILURES = ("http_error", "refused", "reset", "timeout", "other")

#: Bounds for waiting on processes.  Generous: the machines are small and
#: noisy, and a wait ends as soon as the line appears.
START_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0

#: The document served by the test site.
BODY = b"hello from migrator's integration tests\n"

#: Set to C{1} to skip the soak tests (see L{slow}); they run by default.
SKIP_SLOW = "MIGRATOR_SKIP_SLOW"

_Case = TypeVar("_Case", bound=type)


def slow(cls: _Case) -> _Case:
    """
    Mark a soak test class (minutes of takeovers under load): it runs by
    default, and in CI, and is skipped when the environment has
    C{MIGRATOR_SKIP_SLOW=1}.

    Both runners see the mark: the class gets C{slow = True} and, with the
    variable set, trial's C{skip} attribute (which pytest honours for trial
    test cases too); under pytest it also carries the C{slow} marker, so
    C{pytest -m "not slow"} deselects it.
    """
    cls.slow = True  # type: ignore[attr-defined]
    if os.environ.get(SKIP_SLOW, "") not in ("", "0"):
        cls.skip = f"a soak test, skipped because {SKIP_SLOW} is set"  # type: ignore[attr-defined]
    try:
        import pytest
    except ImportError:
        return cls
    marked: _Case = pytest.mark.slow(cls)
    return marked


class Workspace:
    """
    A private (mode 0700) directory holding the control socket, the site's
    document root and the load client's files.

    @ivar path: the directory.
    @ivar control: the control socket path.
    @ivar www: the document root, holding C{index.html} with L{BODY}.
    """

    def __init__(self, case: TestCase) -> None:
        # Under /tmp rather than _trial_temp: a UNIX socket path must stay
        # under 108 bytes, including the temporary name it is bound at.
        self.path = tempfile.mkdtemp(prefix="migrator-it-")
        os.chmod(self.path, 0o700)
        case.addCleanup(shutil.rmtree, self.path, ignore_errors=True)
        self.control = os.path.join(self.path, "ctl")
        self.www = os.path.join(self.path, "www")
        os.mkdir(self.www)
        with open(os.path.join(self.www, "index.html"), "wb") as f:
            f.write(BODY)
        self._counter = 0

    def file(self, stem: str) -> str:
        """
        A fresh path in the workspace (not created).
        """
        self._counter += 1
        return os.path.join(self.path, f"{stem}-{self._counter}")


def webService(workspace: Workspace) -> list[str]:
    """
    The argv of the stock web server on an ephemeral loopback port.
    """
    return ["web", "--listen", "tcp:0:interface=127.0.0.1", "--path", workspace.www]


def startService(
    case: TestCase,
    workspace: Workspace,
    takeover: bool = False,
    fault: str | None = None,
    migrateOptions: Sequence[str] = (),
    name: str = "",
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    """
    Start the web service under migrate (as incumbent, or as successor with
    C{takeover}), stopped at the end of the test.

    @param fault: the C{MIGRATOR_FAULT} for the process, if any.
    @param env: more environment for the process.
    """
    env = {"MIGRATOR_FAULT": fault or "", **(env or {})}
    process = startMigrate(
        workspace.control,
        webService(workspace),
        takeover=takeover,
        migrateOptions=migrateOptions,
        env=env,
        name=name,
    )
    case.addCleanup(process.stop)
    return process


def waitServing(
    process: ServiceProcess, generation: int, timeout: float = START_TIMEOUT
) -> re.Match[str]:
    """
    Wait for C{process} to announce it serves, and check its generation and
    pid.

    @return: the L{READY} match.
    """
    match = process.waitFor(READY, timeout)
    if int(match.group("generation")) != generation or int(match.group("pid")) != process.pid:
        raise AssertionError(
            f"{process.name} (pid {process.pid}) announced {match.group(0)!r}, "
            f"expected generation {generation}"
        )
    return match


def sitePort(process: ServiceProcess, timeout: float = START_TIMEOUT) -> int:
    """
    The port C{twistd web} listens on, from its log.
    """
    return int(process.waitFor(SITE_STARTING, timeout).group("port"))


def expectHandedOff(case: TestCase, process: ServiceProcess, successor: ServiceProcess) -> int:
    """
    Check that C{process} logged handing off to C{successor}, then wait for
    it to exit and check that it exited with code 0.

    @return: the index of its output line that said so.
    """
    match = process.waitFor(HANDED_OFF, EXIT_TIMEOUT)
    case.assertEqual(int(match.group("pid")), successor.pid, process.output()[-3000:])
    code = process.waitForExit(EXIT_TIMEOUT)
    case.assertEqual(code, 0, f"{process.name} exited {code}:\n{process.output()[-3000:]}")
    return len(process.lines)


def takeOver(
    case: TestCase,
    workspace: Workspace,
    incumbent: ServiceProcess,
    generation: int,
    migrateOptions: Sequence[str] = (),
) -> ServiceProcess:
    """
    A complete, successful takeover of C{incumbent} (now serving
    C{generation - 1}): the successor serves as C{generation} and the
    incumbent exits with code 0.
    """
    successor = startService(
        case,
        workspace,
        takeover=True,
        migrateOptions=migrateOptions,
        name=f"successor-{generation}",
    )
    waitServing(successor, generation)
    expectHandedOff(case, incumbent, successor)
    return successor


def status(control: str, timeout: float = 30.0) -> dict[str, Any]:
    """
    C{python -m migrator status --control CONTROL --json}, parsed.
    """
    result = subprocess.run(
        [sys.executable, "-m", "migrator", "status", "--control", control, "--json"],
        env=childEnvironment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"migrator status exited {result.returncode}: "
            f"{result.stderr.decode('utf-8', 'replace')}"
        )
    return json.loads(result.stdout)


class Load:
    """
    The load client in its own process: a new connection (one complete
    HTTP/1.0 request) at a paced rate, until L{finish}.

    @ivar process: the load client's process.
    """

    #: Stop by the stop file, this long at most (a bound, not a pace).
    maxDuration = 240.0

    def __init__(
        self,
        case: TestCase,
        workspace: Workspace,
        port: int,
        rate: float = 1000.0,
        concurrency: int = 256,
    ) -> None:
        self.rate = rate
        self.records = workspace.file("records.jsonl")
        self.stopFile = workspace.file("stop")
        argv = loadgenCommand(
            port,
            rate,
            self.maxDuration,
            self.records,
            self.stopFile,
            concurrency=concurrency,
            timeout=10,
        )
        self.process = ServiceProcess(argv, env=childEnvironment(), name="loadgen")
        case.addCleanup(self.process.stop)
        self.process.waitFor(re.compile("^" + re.escape(READY_LINE) + "$"), START_TIMEOUT)
        self._summary: dict[str, Any] | None = None

    def finish(self) -> dict[str, Any]:
        """
        Stop sending, wait for the requests in flight, and return the load
        client's summary (see L{migrator.demo._loadgen.summarize}).
        """
        if self._summary is None:
            with open(self.stopFile, "w"):
                pass
            # In-flight requests are bounded by their own 10 s timeouts.
            code = self.process.waitForExit(60.0)
            if code != 0:
                raise AssertionError(f"loadgen exited {code}:\n{self.process.output()}")
            lines = [line for line in self.process.lines if line.startswith("{")]
            if not lines:
                raise AssertionError(f"loadgen printed no summary:\n{self.process.output()}")
            self._summary = json.loads(lines[-1])
        return self._summary


def assertAllOk(case: TestCase, summary: dict[str, Any], what: str = "") -> None:
    """
    Every request of C{summary} got a 2xx answer: none was refused, reset,
    timed out or failed otherwise.
    """
    failures = {k: summary[k] for k in FAILURES if summary[k]}
    case.assertTrue(summary["requests"] > 0, f"{what}: no requests were made: {summary}")
    case.assertEqual(
        (summary["ok"], failures),
        (summary["requests"], {}),
        f"{what}: not every request succeeded: {json.dumps(summary)}",
    )


def reportLoad(case: TestCase, label: str, summary: dict[str, Any]) -> None:
    """
    Keep the load figures of a test in the test log (C{_trial_temp/test.log})
    and on stderr when C{MIGRATOR_IT_VERBOSE} is set.
    """
    keys = ("requests", "rate", "ok", *FAILURES, "duration")
    line = f"{case.id()} {label}: " + " ".join(f"{k}={summary.get(k)}" for k in keys)
    line += f" connect_p99={summary['connect_latency']['p99']}ms"
    line += f" connect_max={summary['connect_latency']['max']}ms"
    from twisted.python import log

    log.msg(line)
    if os.environ.get("MIGRATOR_IT_VERBOSE"):
        sys.stderr.write(line + "\n")


class HTTPConnection:
    """
    One raw, blocking loopback HTTP/1.1 connection, for connections that
    stay open across a takeover.  Every read has a timeout.
    """

    def __init__(self, case: TestCase, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        case.addCleanup(self.close)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bytes:
        chunk = self.sock.recv(65536)
        self._buffer += chunk
        return chunk

    def readResponse(self) -> tuple[int, dict[str, str], bytes]:
        """
        Read one response with a C{Content-Length}.

        @return: status code, headers (lower-case names), body.
        @raise AssertionError: if the connection closes first.
        """
        for _ in range(1000):
            if b"\r\n\r\n" in self._buffer:
                break
            if not self._fill():
                raise AssertionError(f"connection closed mid-response: {self._buffer!r}")
        else:
            raise AssertionError(f"no end of headers in {self._buffer[:500]!r}")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        code = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        for _ in range(1000):
            if len(self._buffer) >= length:
                break
            if not self._fill():
                raise AssertionError("connection closed mid-body")
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return code, headers, body

    def readEOF(self) -> bytes:
        """
        Read until the server closes the connection.

        @return: whatever arrived before the end.
        """
        for _ in range(1000):
            if not self._fill():
                return self._buffer
        raise AssertionError("the server kept sending")


def waitForAccess(
    process: ServiceProcess, count: int, start: int = 0, timeout: float = EXIT_TIMEOUT
) -> int:
    """
    Wait until C{process} has logged C{count} access lines from output line
    C{start} on (a response can reach the client before its log line
    reaches us).

    @return: the index of the output line after the last of them.
    """
    index = start
    for _ in range(count):
        process.waitFor(ACCESS, timeout, start=index)
        lines = process.lines
        index = next(i for i in range(index, len(lines)) if ACCESS.search(lines[i])) + 1
    return index


def accessLines(process: ServiceProcess, start: int = 0) -> list[str]:
    """
    The access log lines C{process} wrote, from output line C{start} on.
    """
    return [line for line in process.lines[start:] if ACCESS.search(line)]


# -- the numbered-lines application and its client -------------------------

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
NUMBERED_TAC = os.path.join(APPS, "numbered.tac")
NUMBERED_ADAPTERS = "tests.integration.apps.numbered"


def startLineClient(
    case: TestCase,
    port: int,
    connections: int,
    stop: str,
    rate: float = 40.0,
    pad: int = 1000,
    counted: bool = False,
) -> ServiceProcess:
    """
    Start C{apps/lineclient.py}: C{connections} connections streaming
    numbered lines at C{rate} per second each, reading slowly, until the
    file C{stop} exists.  Waits for it to be connected.

    @param counted: the replies carry the server's count and a tag (see
        the client's C{--counted}).
    """
    client = ServiceProcess(
        [
            sys.executable,
            os.path.join(APPS, "lineclient.py"),
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--rate",
            str(rate),
            "--stop-file",
            stop,
            "--pad",
            str(pad),
            # A bound, not a pace: the stop file ends it, and a soak test
            # on a busy machine may take many minutes to get there.
            "--duration",
            "1800",
            *(["--counted"] if counted else []),
        ],
        env=childEnvironment(),
        name="lineclient",
    )
    case.addCleanup(client.stop)
    client.waitFor("LINECLIENT READY", 30)
    return client


def finishLineClient(case: TestCase, client: ServiceProcess, stop: str) -> dict[str, Any]:
    """
    Stop the line client and check what every line client run must show:
    no error, every connection answered its final C{stats}, no line
    unanswered.

    @return: its summary (C{made}, C{min_hops}, C{received}...).
    """
    with open(stop, "w"):
        pass
    case.assertEqual(client.waitForExit(120), 0, client.output()[-3000:])
    result: dict[str, Any] = json.loads(client.lines[-1])
    case.assertEqual(result["errors"], [])
    case.assertEqual(result["error_count"], 0)
    case.assertEqual(result["missing_stats"], 0)
    case.assertEqual(result["unanswered"], 0)
    return result
