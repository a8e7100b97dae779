"""
Tests for L{migrator.demo._loadgen}.

The command-line tests run the generator in a subprocess against a small
asyncio HTTP server running in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from migrator.demo import _loadgen
from migrator.demo._loadgen import (
    OUTCOMES,
    READY_LINE,
    load_records,
    percentile,
    summarize,
)

# The directory holding the migrator package, for the subprocesses.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_loadgen.__file__))))

# How long any single subprocess may take before the test gives up on it.
_PROCESS_LIMIT = 20.0

_RESPONSES = {
    b"/": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"/error": b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    b"/garbage": b"NOT HTTP AT ALL\r\n\r\n",
}


class _Protocol(asyncio.Protocol):
    """
    Answer one HTTP/1.0 request according to its path, then close:
    C{/close} closes without answering, C{/hang} never answers, the paths in
    L{_RESPONSES} get that response, any other path gets a 404.
    """

    def __init__(self, server: _ThreadedServer) -> None:
        self._server = server
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.transports.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer:
            return
        assert self._transport is not None
        self._server.requests.append(self._buffer)
        path = self._buffer.split(b" ", 2)[1]
        if path == b"/hang":
            return
        if path != b"/close":
            self._transport.write(_RESPONSES.get(path, b"HTTP/1.0 404 Not Found\r\n\r\n"))
        self._transport.close()


class _ThreadedServer:
    """
    A fast HTTP/1.0 server on 127.0.0.1 running an asyncio loop in a thread.

    @ivar port: The port it listens on.
    @ivar requests: The raw requests received.
    @ivar transports: The connections open now.
    """

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[bytes] = []
        self.transports: set[asyncio.BaseTransport | None] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """
        Start serving, returning once the port is listening.
        """
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("test server did not start")

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            loop.create_server(lambda: _Protocol(self), "127.0.0.1", 0, backlog=1024)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for transport in list(self.transports):
                if transport is not None:
                    transport.abort()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    def stop(self) -> None:
        """
        Stop serving and wait for the thread to finish.
        """
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _temp_path(case: SynchronousTestCase) -> str:
    """
    An absolute path for a file that does not exist yet, in a directory
    removed when C{case} is cleaned up.  (Not C{mktemp}: under pytest that
    makes directories in the current directory.)
    """
    directory = tempfile.mkdtemp(prefix="test_loadgen-")
    case.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return os.path.join(directory, "temp")


def _start_server(case: SynchronousTestCase) -> _ThreadedServer:
    """
    Start a L{_ThreadedServer} that is stopped when C{case} is cleaned up.
    """
    server = _ThreadedServer()
    server.start()
    case.addCleanup(server.stop)
    return server


def _spawn(case: SynchronousTestCase, args: Sequence[str]) -> subprocess.Popen[str]:
    """
    Start the load generator with C{args}; it is killed if it is still
    running after L{_PROCESS_LIMIT} seconds, or when C{case} is cleaned up.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "migrator.demo._loadgen", *args],
        cwd=_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(_PROCESS_LIMIT, process.kill)
    watchdog.daemon = True
    watchdog.start()

    def cleanup() -> None:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
        process.communicate()

    case.addCleanup(cleanup)
    return process


def _wait_ready(case: SynchronousTestCase, process: subprocess.Popen[str]) -> None:
    """
    Wait for the READY line (the watchdog of L{_spawn} bounds the wait).
    """
    assert process.stdout is not None
    line = process.stdout.readline()
    case.assertEqual(line, READY_LINE + "\n")


def _finish(
    case: SynchronousTestCase, process: subprocess.Popen[str]
) -> tuple[int, list[str], str]:
    """
    Wait for the process to exit.

    @return: Its exit status, its standard output lines and its standard
        error.
    """
    out, err = process.communicate(timeout=_PROCESS_LIMIT)
    return process.returncode, out.splitlines(), err


def _run(case: SynchronousTestCase, args: Sequence[str]) -> tuple[int, list[str], str]:
    """
    Run the load generator with C{args} to completion.
    """
    return _finish(case, _spawn(case, args))


def _summary(case: SynchronousTestCase, lines: list[str]) -> dict[str, Any]:
    """
    Check that the output is the READY line then one JSON line, and parse
    the latter.
    """
    case.assertEqual(len(lines), 2, lines)
    case.assertEqual(lines[0], READY_LINE)
    summary: dict[str, Any] = json.loads(lines[1])
    case.assertEqual(
        list(summary),
        [
            "requests",
            *OUTCOMES,
            "other_kinds",
            "duration",
            "rate",
            "connect_latency",
            "total_latency",
        ],
    )
    case.assertEqual(summary["requests"], sum(summary[outcome] for outcome in OUTCOMES))
    return summary


def _only(summary: dict[str, Any]) -> dict[str, int]:
    """
    The non-zero outcome counts of a summary, for a compact comparison.
    """
    return {name: summary[name] for name in OUTCOMES if summary[name]}


class PercentileTests(SynchronousTestCase):
    """
    Tests for L{percentile}.
    """

    def test_interpolates(self) -> None:
        """
        Percentiles between two ranks are interpolated linearly.
        """
        self.assertEqual(percentile([4.0, 1.0, 3.0, 2.0], 50), 2.5)
        self.assertEqual(percentile([0.0, 10.0], 25), 2.5)
        self.assertAlmostEqual(percentile(list(range(101)), 99), 99.0)

    def test_bounds(self) -> None:
        """
        The 0th and 100th percentiles are the minimum and the maximum, and a
        single value is every percentile.
        """
        values = [5.0, 3.0, 9.0, 1.0]
        self.assertEqual(percentile(values, 0), 1.0)
        self.assertEqual(percentile(values, 100), 9.0)
        self.assertEqual(percentile([7.0], 99), 7.0)

    def test_errors(self) -> None:
        """
        No values, or a percentile outside [0, 100], raise L{ValueError}.
        """
        self.assertRaises(ValueError, percentile, [], 50)
        self.assertRaises(ValueError, percentile, [1.0], 101)
        self.assertRaises(ValueError, percentile, [1.0], -1)


def _record(
    t: float,
    outcome: str,
    connect: float | None = 0.001,
    total: float = 0.002,
    **extra: Any,
) -> dict[str, Any]:
    return {"t": t, "connect": connect, "total": total, "outcome": outcome, **extra}


class SummarizeTests(SynchronousTestCase):
    """
    Tests for L{summarize}.
    """

    records: ClassVar[list[dict[str, Any]]] = [
        _record(100.0, "ok", 0.001, 0.002),
        _record(100.5, "ok", 0.003, 0.004),
        _record(101.0, "refused", None, 0.0005),
        _record(101.5, "http_error", 0.001, 0.010),
        _record(102.0, "reset", 0.002, 0.003),
        _record(102.5, "timeout", None, 5.0),
        _record(103.0, "other", None, 0.001, kind="EADDRNOTAVAIL"),
        _record(103.5, "other", None, 0.001),
    ]

    def test_counts(self) -> None:
        """
        Every outcome is counted, and the kinds of C{other} outcomes too.
        """
        summary = summarize(self.records)
        self.assertEqual(summary["requests"], 8)
        self.assertEqual(
            {name: summary[name] for name in OUTCOMES},
            {
                "ok": 2,
                "http_error": 1,
                "refused": 1,
                "reset": 1,
                "timeout": 1,
                "other": 2,
            },
        )
        self.assertEqual(summary["other_kinds"], {"EADDRNOTAVAIL": 1, "unknown": 1})

    def test_latencies(self) -> None:
        """
        Latencies are reported in milliseconds; connect latencies only for
        the requests that connected.
        """
        summary = summarize(self.records[:2])
        self.assertEqual(summary["connect_latency"], {"p50": 2.0, "p99": 2.98, "max": 3.0})
        self.assertEqual(summary["total_latency"], {"p50": 3.0, "p99": 3.98, "max": 4.0})
        refused = summarize(self.records[2:3])
        self.assertEqual(refused["connect_latency"], {"p50": None, "p99": None, "max": None})
        self.assertEqual(refused["total_latency"]["max"], 0.5)

    def test_window(self) -> None:
        """
        Only records starting within [start, end] are counted, and the
        duration and rate are those of the window.
        """
        summary = summarize(self.records, start=100.5, end=101.5)
        self.assertEqual(summary["requests"], 3)
        self.assertEqual(_only(summary), {"ok": 1, "refused": 1, "http_error": 1})
        self.assertEqual(summary["duration"], 1.0)
        self.assertEqual(summary["rate"], 3.0)

    def test_duration_from_records(self) -> None:
        """
        Without a window the duration runs from the first start to the last
        completion.
        """
        summary = summarize(self.records[:2])
        self.assertEqual(summary["duration"], 0.504)
        self.assertEqual(summary["rate"], round(2 / 0.504, 3))

    def test_empty(self) -> None:
        """
        Summarizing no records gives zero counts and no latencies.
        """
        summary = summarize([], start=1.0)
        self.assertEqual(summary["requests"], 0)
        self.assertEqual(summary["rate"], 0.0)
        self.assertEqual(summary["total_latency"], {"p50": None, "p99": None, "max": None})

    def test_unknown_outcome(self) -> None:
        """
        A record with an outcome that is not one of L{OUTCOMES} is rejected.
        """
        self.assertRaises(ValueError, summarize, [_record(1.0, "bogus")])

    def test_load_records(self) -> None:
        """
        L{load_records} reads JSON lines, skipping blank ones.
        """
        path = _temp_path(self)
        with open(path, "w") as f:
            f.writelines(json.dumps(record) + "\n" for record in self.records[:3])
            f.write("\n")
        self.assertEqual(load_records(path), self.records[:3])


class CommandLineTests(SynchronousTestCase):
    """
    Tests for running C{python -m migrator.demo._loadgen}.
    """

    def test_all_ok(self) -> None:
        """
        Against a working server every request is C{ok}, never faster
        than the requested rate (the pacing), for the requested duration,
        and the records written add up to the summary.  (How close to the
        requested rate it gets depends on how busy the machine is: see
        C{benchmarks/chain.py}, which reports it.)
        """
        server = _start_server(self)
        records_path = _temp_path(self)
        status, lines, err = _run(
            self,
            [
                "--url",
                f"http://127.0.0.1:{server.port}/",
                "--rate",
                "1000",
                "--duration",
                "1",
                "--records",
                records_path,
            ],
        )
        self.assertEqual(status, 0, err)
        summary = _summary(self, lines)
        self.assertGreater(summary["requests"], 0)
        self.assertEqual(_only(summary), {"ok": summary["requests"]})
        # Request i is due i/rate seconds in: a slow machine can only send
        # fewer, never more.
        self.assertLessEqual(summary["requests"], 1000 * summary["duration"] + 1)
        self.assertGreaterEqual(summary["duration"], 1.0)
        self.assertIsNotNone(summary["connect_latency"]["p99"])
        records = load_records(records_path)
        self.assertEqual(len(records), summary["requests"])
        self.assertEqual(summarize(records)["ok"], summary["requests"], "records disagree")
        self.assertEqual(len(server.requests), summary["requests"])
        self.assertEqual(
            server.requests[0],
            f"GET / HTTP/1.0\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode(),
        )

    def test_max_requests(self) -> None:
        """
        C{--max-requests} bounds the number of requests sent, and a
        C{--duration} over the hard cap is capped (with a warning).
        """
        server = _start_server(self)
        status, lines, err = _run(
            self,
            [
                "--url",
                f"http://127.0.0.1:{server.port}/",
                "--rate",
                "0",
                "--max-requests",
                "37",
                "--duration",
                "100000",
            ],
        )
        self.assertEqual(status, 0, err)
        self.assertEqual(_only(_summary(self, lines)), {"ok": 37})
        self.assertIn("--duration capped at 3600 seconds", err)

    def test_outcomes(self) -> None:
        """
        Non-2xx responses are C{http_error}, a close before the status line
        is C{reset}, a malformed status line is C{other}, and a response that
        never comes is C{timeout}.

        Only C{/hang} gets a short timeout (it never answers, so its
        timeout always expires); the others get a bound that a busy
        machine does not reach, so that a slow answer is never mistaken
        for a C{timeout}.
        """
        server = _start_server(self)
        processes = {
            path: _spawn(
                self,
                [
                    "--url",
                    f"http://127.0.0.1:{server.port}{path}",
                    "--max-requests",
                    "5",
                    "--timeout",
                    "0.3" if path == "/hang" else "10",
                ],
            )
            for path in ["/error", "/missing", "/close", "/garbage", "/hang"]
        }
        summaries = {}
        for path, process in processes.items():
            status, lines, err = _finish(self, process)
            self.assertEqual(status, 0, err)
            summaries[path] = _summary(self, lines)
        self.assertEqual(_only(summaries["/error"]), {"http_error": 5})
        self.assertEqual(_only(summaries["/missing"]), {"http_error": 5})
        self.assertEqual(_only(summaries["/close"]), {"reset": 5})
        self.assertEqual(_only(summaries["/garbage"]), {"other": 5})
        self.assertEqual(summaries["/garbage"]["other_kinds"], {"BadStatusLine": 5})
        self.assertEqual(_only(summaries["/hang"]), {"timeout": 5})

    def test_refused(self) -> None:
        """
        Connecting to a port nobody listens on counts as C{refused}.
        """
        # Bound but not listening: the port stays ours, and refuses.
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        status, lines, err = _run(
            self,
            ["--url", f"http://127.0.0.1:{port}/", "--max-requests", "10"],
        )
        self.assertEqual(status, 0, err)
        summary = _summary(self, lines)
        self.assertEqual(_only(summary), {"refused": 10})
        self.assertIsNone(summary["connect_latency"]["p50"])

    def test_not_loopback(self) -> None:
        """
        A host that is not a loopback address is refused with exit status 2
        and nothing sent.
        """
        processes = [
            _spawn(self, ["--url", url, "--max-requests", "1"])
            for url in ["http://192.0.2.1:80/", "http://[2001:db8::1]/"]
        ]
        for process in processes:
            status, lines, err = _finish(self, process)
            self.assertEqual((status, lines), (2, []))
            self.assertIn("not a loopback address", err)

    def test_bad_scheme(self) -> None:
        """
        Only C{http} URLs are accepted.
        """
        status, lines, err = _run(self, ["--url", "https://127.0.0.1/"])
        self.assertEqual((status, lines), (2, []))
        self.assertIn("only http://", err)

    def test_stop_file(self) -> None:
        """
        The generator stops once the stop file appears: asked to run for
        an hour, it exits (with status 0, within the test's bound on the
        process) when the file is created.
        """
        server = _start_server(self)
        stop_file = _temp_path(self)
        process = _spawn(
            self,
            [
                "--url",
                f"http://127.0.0.1:{server.port}/",
                "--rate",
                "200",
                "--duration",
                "3600",
                "--stop-file",
                stop_file,
            ],
        )
        _wait_ready(self, process)
        open(stop_file, "w").close()
        status, lines, err = _finish(self, process)
        self.assertEqual(status, 0, err)
        summary = _summary(self, [READY_LINE, *lines])
        self.assertEqual(_only(summary), {"ok": summary["requests"]})

    def test_sigterm(self) -> None:
        """
        C{SIGTERM} stops the generator, which still prints its summary
        (asked to run for an hour, it exits with status 0 within the test's
        bound on the process).
        """
        server = _start_server(self)
        process = _spawn(
            self,
            [
                "--url",
                f"http://127.0.0.1:{server.port}/",
                "--rate",
                "200",
                "--duration",
                "3600",
            ],
        )
        _wait_ready(self, process)
        process.send_signal(signal.SIGTERM)
        status, lines, err = _finish(self, process)
        self.assertEqual(status, 0, err)
        summary = _summary(self, [READY_LINE, *lines])
        self.assertGreater(summary["requests"], 0)
        self.assertEqual(_only(summary), {"ok": summary["requests"]})
