# -*- test-case-name: tests.test_loadgen -*-
"""
A loopback-only HTTP/1.0 load generator.

This module proves that a server never refuses or resets a connection
while its listening port moves from one process to another: it opens a
B{new} TCP connection for every request, at a paced rate, and classifies
the outcome of each one.  It uses only the standard library (no Twisted),
so that it is unaffected by the reactor of the process under test.

Run it as::

    python -m migrator._loadgen --url http://127.0.0.1:8080/ \\
        [--rate 1200] [--concurrency 64] [--duration SECONDS] \\
        [--max-requests N] [--timeout 5] [--records FILE] \\
        [--stop-file PATH]

It prints C{LOADGEN READY} on a line of its own once the first request has
been started, and at the end one JSON object on a single line (see
L{summarize} for its keys).  The exit status is 0 whatever the outcomes of
the requests were, 2 for a usage error (including a target that is not on
the loopback interface) and 1 if the records could not be written.

Each request goes through these steps: a non-blocking C{connect()}, one
C{GET <path> HTTP/1.0} request, reading the response until EOF, C{close()}.
Its outcome is one of L{OUTCOMES}:

  - C{ok}: the status line had a 2xx status.
  - C{http_error}: the status line had any other status.
  - C{refused}: C{connect()} failed with C{ECONNREFUSED}.
  - C{reset}: C{ECONNRESET} or C{EPIPE}, or the connection was closed
    before a full status line had arrived.
  - C{timeout}: connecting, or getting the full response once connected,
    took longer than C{--timeout} seconds (or C{ETIMEDOUT}).
  - C{other}: anything else; its kind (an errno name such as
    C{EADDRNOTAVAIL}, C{BadStatusLine} or an exception's class name) is
    counted in C{other_kinds}.

Requests are paced open-loop: request M{i} is due at M{start + i / rate},
whatever happened to the earlier ones, but no more than C{--concurrency}
are in flight at once; requests that could not start on time because of
that limit start as soon as a slot is free.  A rate of 0 means "as fast as
the concurrency allows".

The run stops starting new requests when the first of these happens:
C{--duration} seconds have passed (default 10, never more than
L{MAX_DURATION}), C{--max-requests} requests have been started, the
C{--stop-file} exists, or the process got C{SIGTERM} or C{SIGINT}.  The
requests still in flight are then allowed to finish (each is bounded by its
own timeout); a second signal abandons them, and they are not recorded.

@var OUTCOMES: The names of the possible outcomes of a request, in the
    order they appear in a summary.
@var MAX_DURATION: The longest run allowed, in seconds.
@var DEFAULT_DURATION: The length of a run when C{--duration} is not given.
@var READY_LINE: The line printed once requests have started.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import math
import os
import selectors
import signal
import socket
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_DURATION",
    "MAX_DURATION",
    "OUTCOMES",
    "READY_LINE",
    "load_records",
    "main",
    "percentile",
    "summarize",
]

OUTCOMES: tuple[str, ...] = (
    "ok",
    "http_error",
    "refused",
    "reset",
    "timeout",
    "other",
)
_OK, _HTTP_ERROR, _REFUSED, _RESET, _TIMEOUT, _OTHER = range(len(OUTCOMES))
_OUTCOME_CODES = {name: code for code, name in enumerate(OUTCOMES)}

MAX_DURATION = 3600.0
DEFAULT_DURATION = 10.0
READY_LINE = "LOADGEN READY"



def command(
    port: int,
    rate: float,
    duration: float,
    records: str,
    stopFile: str,
    concurrency: int | None = None,
    timeout: float | None = None,
    python: str | None = None,
) -> list[str]:
    """
    The argv that runs this load generator against C{http://127.0.0.1:PORT/}
    in a child process (for the demo, the benchmark and the tests).
    """
    argv = [
        python or sys.executable,
        "-m",
        "migrator._loadgen",
        "--url",
        f"http://127.0.0.1:{port}/",
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--records",
        records,
        "--stop-file",
        stopFile,
    ]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if timeout is not None:
        argv += ["--timeout", str(timeout)]
    return argv


_MAX_CONCURRENCY = 10000
_MAX_TIMEOUT = 300.0
_MAX_RATE = 100000.0
# How often the stop file is looked for, and the longest single wait in
# select() (so that a signal or the stop file is noticed promptly).
_STOP_FILE_INTERVAL = 0.05
_MAX_WAIT = 0.05
# Only this much of the start of a response is kept: enough for the status
# line.  The rest is read and thrown away.
_HEAD_CAP = 1024
_RECV_SIZE = 65536
# What connect_ex() returns on a non-blocking socket while the connection
# is being established; any other non-zero value is the outcome.
_IN_PROGRESS = frozenset({errno.EINPROGRESS})


class UsageError(Exception):
    """
    The command line cannot be run; the message says why.
    """


# ---------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], q: float) -> float:
    """
    Compute a percentile by linear interpolation between closest ranks
    (the same definition as numpy's default).

    @param values: The values; they need not be sorted.
    @param q: The percentile wanted, from 0 to 100 inclusive.
    @return: The value below which C{q} percent of C{values} fall.
    @raise ValueError: If C{values} is empty or C{q} is out of range.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q!r} is not between 0 and 100")
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return _sorted_percentile(ordered, q)


def _sorted_percentile(ordered: Sequence[float], q: float) -> float:
    """
    L{percentile} of values that are already sorted and not empty.
    """
    position = (len(ordered) - 1) * (q / 100.0)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def _latency_ms(values: Iterable[float]) -> dict[str, float | None]:
    """
    Summarize latencies given in seconds as C{p50}, C{p99} and C{max}, in
    milliseconds (rounded to the microsecond), or C{None}s if there are none.
    """
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(_sorted_percentile(ordered, 50) * 1000.0, 3),
        "p99": round(_sorted_percentile(ordered, 99) * 1000.0, 3),
        "max": round(ordered[-1] * 1000.0, 3),
    }


class _Records:
    """
    The records of a run, kept in compact parallel arrays (a long run at a
    high rate makes millions of them).

    @ivar t: Wall-clock start time of each request, from C{time.time()}.
    @ivar connect: Connect latency in seconds, NaN if it never connected.
    @ivar total: Total latency in seconds.
    @ivar outcome: Index into L{OUTCOMES}.
    @ivar kinds: For requests whose outcome is C{other}: index to kind.
    """

    def __init__(self) -> None:
        self.t = array("d")
        self.connect = array("d")
        self.total = array("d")
        self.outcome = array("B")
        self.kinds: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.t)

    def add(
        self,
        t: float,
        connect: float | None,
        total: float,
        outcome: int,
        kind: str | None = None,
    ) -> None:
        """
        Record one request.
        """
        if kind is not None:
            self.kinds[len(self.t)] = kind
        self.t.append(t)
        self.connect.append(math.nan if connect is None else connect)
        self.total.append(total)
        self.outcome.append(outcome)

    def summary(
        self,
        start: float | None = None,
        end: float | None = None,
        duration: float | None = None,
    ) -> dict[str, Any]:
        """
        Summarize the records whose start time is in [C{start}, C{end}].

        @param duration: The duration to report and to compute the rate
            with; by default C{end - start} if both are given, else the
            time from the first start to the last completion.
        """
        lo = -math.inf if start is None else start
        hi = math.inf if end is None else end
        counts = [0] * len(OUTCOMES)
        kinds: dict[str, int] = {}
        connects: list[float] = []
        totals: list[float] = []
        first = math.inf
        last = -math.inf
        t, connect, total, outcome = self.t, self.connect, self.total, self.outcome
        for i in range(len(t)):
            ti = t[i]
            if not lo <= ti <= hi:
                continue
            code = outcome[i]
            counts[code] += 1
            if code == _OTHER:
                kind = self.kinds.get(i, "unknown")
                kinds[kind] = kinds.get(kind, 0) + 1
            c = connect[i]
            if not math.isnan(c):
                connects.append(c)
            totals.append(total[i])
            first = min(first, ti)
            last = max(last, ti + total[i])
        requests = sum(counts)
        if duration is None:
            if start is not None and end is not None:
                duration = end - start
            elif requests:
                duration = (last if end is None else end) - (first if start is None else start)
            else:
                duration = 0.0
        duration = max(duration, 0.0)
        result: dict[str, Any] = {"requests": requests}
        for name, count in zip(OUTCOMES, counts, strict=True):
            result[name] = count
        result["other_kinds"] = dict(sorted(kinds.items()))
        result["duration"] = round(duration, 6)
        result["rate"] = round(requests / duration, 3) if duration > 0 else 0.0
        result["connect_latency"] = _latency_ms(connects)
        result["total_latency"] = _latency_ms(totals)
        return result

    def write_jsonl(self, path: str) -> None:
        """
        Write the records to C{path} as JSON lines (see L{load_records}).
        """
        names = OUTCOMES
        with open(path, "w", encoding="utf-8") as f:
            write = f.write
            for i in range(len(self.t)):
                c = self.connect[i]
                code = self.outcome[i]
                line = (
                    f'{{"t": {self.t[i]!r}, '
                    f'"connect": {"null" if math.isnan(c) else repr(c)}, '
                    f'"total": {self.total[i]!r}, '
                    f'"outcome": "{names[code]}"'
                )
                if i in self.kinds:
                    line += f', "kind": {json.dumps(self.kinds[i])}'
                write(line + "}\n")


def _records_from_dicts(records: Iterable[Mapping[str, Any]]) -> _Records:
    """
    Convert record dictionaries (as from L{load_records}) to L{_Records}.

    @raise ValueError: If a record has an unknown outcome.
    """
    result = _Records()
    for record in records:
        name = record["outcome"]
        try:
            code = _OUTCOME_CODES[name]
        except KeyError:
            raise ValueError(f"unknown outcome {name!r}") from None
        kind = None
        if code == _OTHER:
            kind = str(record.get("kind") or "unknown")
        connect = record.get("connect")
        result.add(
            float(record["t"]),
            None if connect is None else float(connect),
            float(record["total"]),
            code,
            kind,
        )
    return result


def summarize(
    records: Iterable[Mapping[str, Any]],
    start: float | None = None,
    end: float | None = None,
) -> dict[str, Any]:
    """
    Summarize request records, as the command line does at the end of a run.

    Only records whose C{t} is in [C{start}, C{end}] (either bound may be
    C{None} for unbounded) are counted.

    @param records: Dictionaries with the keys C{t} (wall-clock start time,
        seconds since the epoch), C{connect} (connect latency in seconds,
        or C{None} if the connection was never established), C{total}
        (total latency in seconds), C{outcome} (one of L{OUTCOMES}) and,
        for C{other} outcomes, optionally C{kind}; as from L{load_records}.
    @param start: Earliest start time to count.
    @param end: Latest start time to count.

    @return: A dictionary with the keys C{requests} (how many were
        counted), one per outcome in L{OUTCOMES} with its count,
        C{other_kinds} (a dictionary from kind to count), C{duration}
        (seconds: C{end - start} if both are given, otherwise from the
        first counted start, or C{start}, to the last counted completion,
        or C{end}), C{rate} (C{requests / duration}, 0 if the duration is
        0), and C{connect_latency} and C{total_latency}, each a dictionary
        with the keys C{p50}, C{p99} and C{max} in milliseconds, C{None}
        when there is no value.  Connect latencies count only the requests
        that connected; total latencies count all of them.
    """
    return _records_from_dicts(records).summary(start, end)


def load_records(path: str) -> list[dict[str, Any]]:
    """
    Read the records written by C{--records}.

    @param path: The file: one JSON object per line, with the keys C{t},
        C{connect}, C{total}, C{outcome} and, for C{other} outcomes,
        C{kind}.
    @return: The records, in the order the requests completed.
    """
    result = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                result.append(json.loads(line))
    return result


# ---------------------------------------------------------------------------
# Target


@dataclass(frozen=True)
class _Target:
    """
    Where to send requests.

    @ivar family: The address family to connect with.
    @ivar address: The socket address to connect to.
    @ivar request: The bytes of the request.
    """

    family: int
    address: tuple[Any, ...]
    request: bytes


def _parse_target(url: str) -> _Target:
    """
    Check that C{url} is an C{http} URL of a loopback host and build the
    request for it.

    @raise UsageError: If it is not.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError as e:
        raise UsageError(f"invalid URL {url!r}: {e}") from None
    if parts.scheme != "http":
        raise UsageError(f"only http:// URLs are supported, not {url!r}")
    host = parts.hostname
    if not host:
        raise UsageError(f"no host in URL {url!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as e:
        raise UsageError(f"cannot resolve {host!r}: {e}") from None
    usable = [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not usable:
        raise UsageError(f"{host!r} has no IPv4 or IPv6 address")
    for info in usable:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_loopback:
            raise UsageError(
                f"refusing to load {host!r}: it resolves to {address}, which "
                "is not a loopback address (only 127.0.0.0/8 and ::1 are "
                "allowed)"
            )
    family, _, _, _, address_tuple = usable[0]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = parts.netloc.rsplit("@", 1)[-1]
    request = f"GET {path} HTTP/1.0\r\nHost: {host_header}\r\n\r\n"
    try:
        request_bytes = request.encode("ascii")
    except UnicodeEncodeError:
        raise UsageError(f"URL {url!r} is not ASCII; quote it") from None
    return _Target(family, tuple(address_tuple), request_bytes)


# ---------------------------------------------------------------------------
# The generator


def _classify_errno(number: int | None) -> tuple[int, str | None]:
    """
    Turn an errno into an outcome code and, for C{other}, a kind.
    """
    if number == errno.ECONNREFUSED:
        return _REFUSED, None
    if number in (errno.ECONNRESET, errno.EPIPE):
        return _RESET, None
    if number == errno.ETIMEDOUT:
        return _TIMEOUT, None
    if number is None:
        return _OTHER, "OSError"
    return _OTHER, errno.errorcode.get(number, f"errno{number}")


def _classify_exception(exc: BaseException) -> tuple[int, str | None]:
    """
    Turn an exception into an outcome code and, for C{other}, a kind.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return _classify_errno(exc.errno)
    return _OTHER, type(exc).__name__


class _Request:
    """
    One request in flight.

    @ivar deadline: When the current phase (connecting, or getting the
        response) times out, on the C{perf_counter} clock.
    """

    __slots__ = (
        "connected",
        "deadline",
        "done",
        "head",
        "pending",
        "reading",
        "registered",
        "sock",
        "started",
        "wall",
    )

    def __init__(self, sock: socket.socket, wall: float, started: float) -> None:
        self.sock = sock
        self.wall = wall
        self.started = started
        self.connected: float | None = None
        self.deadline = 0.0
        self.pending = b""
        self.head = b""
        self.reading = False
        self.registered = False
        self.done = False


class _LoadGenerator:
    """
    Send requests to a target on a single-threaded C{selectors} loop.

    @ivar records: What happened to each finished request.
    @ivar stop_requested: Set to stop starting requests.
    @ivar abort_requested: Set to abandon the requests in flight too.
    """

    def __init__(
        self,
        target: _Target,
        rate: float,
        concurrency: int,
        duration: float,
        max_requests: int | None,
        timeout: float,
        stop_file: str | None,
    ) -> None:
        self._target = target
        self._rate = rate
        self._concurrency = concurrency
        self._duration = duration
        self._max_requests = max_requests
        self._timeout = timeout
        self._stop_file = stop_file
        self._selector = selectors.DefaultSelector()
        self._inflight: set[_Request] = set()
        # (deadline, request) in the order the deadlines were set.  Every
        # deadline is "now + timeout" when set, so this is sorted.
        self._deadlines: deque[tuple[float, _Request]] = deque()
        self.records = _Records()
        self.stop_requested = False
        self.abort_requested = False

    def request_stop(self) -> None:
        """
        Stop starting requests; on a second call abandon those in flight.
        """
        if self.stop_requested:
            self.abort_requested = True
        self.stop_requested = True

    def run(self, on_ready: Callable[[], None]) -> float:
        """
        Run until a stop condition, then let the requests in flight finish.

        @param on_ready: Called once, right after the first request starts.
        @return: How long the run took, in seconds.
        """
        monotonic = time.monotonic
        start = monotonic()
        end_at = start + self._duration
        interval = 1.0 / self._rate if self._rate > 0 else 0.0
        max_requests = self._max_requests
        concurrency = self._concurrency
        inflight = self._inflight
        deadlines = self._deadlines
        stop_file = self._stop_file
        next_due = start
        next_stop_check = start
        issued = 0
        ready = False
        stopping = False
        drain_until = math.inf
        try:
            while True:
                now = monotonic()
                if not stopping:
                    if (
                        self.stop_requested
                        or now >= end_at
                        or (max_requests is not None and issued >= max_requests)
                    ):
                        stopping = True
                    elif stop_file is not None and now >= next_stop_check:
                        next_stop_check = now + _STOP_FILE_INTERVAL
                        stopping = os.path.exists(stop_file)
                    if stopping:
                        # Each request is bounded by its own deadlines; this
                        # is only a backstop.
                        drain_until = now + 2 * self._timeout + 1.0
                if stopping:
                    if not inflight or self.abort_requested or now >= drain_until:
                        break
                else:
                    while len(inflight) < concurrency and next_due <= now:
                        self._start()
                        issued += 1
                        if interval:
                            next_due += interval
                        else:
                            next_due = now
                        if not ready:
                            ready = True
                            on_ready()
                        if max_requests is not None and issued >= max_requests:
                            break

                # How long to wait for I/O.
                wait = _MAX_WAIT
                if not stopping and len(inflight) < concurrency:
                    wait = min(wait, next_due - now)
                if deadlines:
                    wait = min(wait, deadlines[0][0] - time.perf_counter())
                for key, _ in self._selector.select(max(wait, 0.0)):
                    request = key.data
                    if request.done:
                        continue
                    if request.reading:
                        self._on_readable(request)
                    else:
                        self._on_writable(request)
                self._expire()
        finally:
            for request in list(inflight):
                self._close(request)
            self._selector.close()
        return monotonic() - start

    # -- one request -------------------------------------------------------

    def _start(self) -> None:
        """
        Start one request.
        """
        target = self._target
        wall = time.time()
        started = time.perf_counter()
        try:
            sock = socket.socket(target.family, socket.SOCK_STREAM)
        except OSError as e:
            code, kind = _classify_exception(e)
            self.records.add(wall, None, time.perf_counter() - started, code, kind)
            return
        request = _Request(sock, wall, started)
        self._inflight.add(request)
        try:
            sock.setblocking(False)
            result = sock.connect_ex(target.address)
        except OSError as e:
            self._fail(request, e)
            return
        if result == 0:
            self._connected(request)
        elif result in _IN_PROGRESS:
            self._set_deadline(request, started + self._timeout)
            self._register(request, selectors.EVENT_WRITE)
        else:
            self._finish(request, *_classify_errno(result))

    def _set_deadline(self, request: _Request, deadline: float) -> None:
        request.deadline = deadline
        self._deadlines.append((deadline, request))

    def _register(self, request: _Request, events: int) -> None:
        if request.registered:
            self._selector.modify(request.sock, events, request)
        else:
            self._selector.register(request.sock, events, request)
            request.registered = True

    def _on_writable(self, request: _Request) -> None:
        """
        The socket is writable: either connected (or failed to), or ready
        for more of the request.
        """
        if request.connected is None:
            try:
                error = request.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError as e:
                self._fail(request, e)
                return
            if error:
                self._finish(request, *_classify_errno(error))
                return
            self._connected(request)
        else:
            self._send(request)

    def _connected(self, request: _Request) -> None:
        now = time.perf_counter()
        request.connected = now
        self._set_deadline(request, now + self._timeout)
        request.pending = self._target.request
        self._send(request)

    def _send(self, request: _Request) -> None:
        try:
            sent = request.sock.send(request.pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            self._fail(request, e)
            return
        request.pending = request.pending[sent:]
        if request.pending:
            self._register(request, selectors.EVENT_WRITE)
        else:
            request.reading = True
            self._register(request, selectors.EVENT_READ)

    def _on_readable(self, request: _Request) -> None:
        sock = request.sock
        while True:
            try:
                data = sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._fail(request, e)
                return
            if not data:
                self._finish(request, *self._parse_status(request.head))
                return
            if len(request.head) < _HEAD_CAP:
                request.head += data[: _HEAD_CAP - len(request.head)]

    @staticmethod
    def _parse_status(head: bytes) -> tuple[int, str | None]:
        """
        Classify a complete response from its first bytes.
        """
        end = head.find(b"\n")
        if end < 0:
            if len(head) >= _HEAD_CAP:
                return _OTHER, "BadStatusLine"
            # Closed before a full status line.
            return _RESET, None
        parts = head[:end].rstrip(b"\r").split(None, 2)
        if (
            len(parts) < 2
            or not parts[0].startswith(b"HTTP/")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            return _OTHER, "BadStatusLine"
        if 200 <= int(parts[1]) < 300:
            return _OK, None
        return _HTTP_ERROR, None

    def _expire(self) -> None:
        """
        Time out the requests whose current deadline has passed.
        """
        deadlines = self._deadlines
        if not deadlines:
            return
        now = time.perf_counter()
        while deadlines:
            deadline, request = deadlines[0]
            if request.done or request.deadline != deadline:
                deadlines.popleft()
            elif deadline <= now:
                deadlines.popleft()
                self._finish(request, _TIMEOUT, None)
            else:
                break

    def _fail(self, request: _Request, exc: BaseException) -> None:
        self._finish(request, *_classify_exception(exc))

    def _finish(self, request: _Request, code: int, kind: str | None) -> None:
        """
        Record the outcome of a request and close its socket.
        """
        now = time.perf_counter()
        connect = None
        if request.connected is not None:
            connect = request.connected - request.started
        self.records.add(request.wall, connect, now - request.started, code, kind)
        self._close(request)

    def _close(self, request: _Request) -> None:
        request.done = True
        self._inflight.discard(request)
        if request.registered:
            try:
                self._selector.unregister(request.sock)
            except (KeyError, ValueError):
                pass
            request.registered = False
        request.sock.close()


# ---------------------------------------------------------------------------
# Command line


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m migrator._loadgen",
        description=(
            "Open a new loopback TCP connection per HTTP/1.0 request at a "
            "paced rate and count how each one ended."
        ),
    )
    parser.add_argument(
        "--url",
        required=True,
        help="http:// URL whose host must be 127.0.0.0/8 or ::1",
    )
    parser.add_argument(
        "--rate",
        type=_nonnegative_float,
        default=1200.0,
        help="new connections per second (0: as fast as concurrency allows; default %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        help="most requests in flight at once (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=DEFAULT_DURATION,
        help=f"seconds to send for (default %(default)s, at most {MAX_DURATION:g})",
    )
    parser.add_argument(
        "--max-requests",
        type=_positive_int,
        default=None,
        help="stop after starting this many requests",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        help="seconds allowed to connect, and then to get the whole response (default %(default)s)",
    )
    parser.add_argument("--records", metavar="FILE", help="write per-request JSON lines here")
    parser.add_argument("--stop-file", metavar="PATH", help="stop once this file exists")
    return parser


def _ensure_file_limit(needed: int) -> None:
    """
    Raise the soft limit on open files to C{needed} if it is lower.

    @raise UsageError: If that is not possible.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise UsageError(f"--concurrency needs about {needed} open files but the limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the load generator from the command line.

    @param argv: The arguments, without the program name; by default
        C{sys.argv[1:]}.
    @return: The exit status: 0 after a run, 1 if the records could not be
        written, 2 for a usage error.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        target = _parse_target(args.url)
        if args.rate > _MAX_RATE:
            raise UsageError(f"--rate is at most {_MAX_RATE:g}")
        if args.concurrency > _MAX_CONCURRENCY:
            raise UsageError(f"--concurrency is at most {_MAX_CONCURRENCY}")
        if args.timeout > _MAX_TIMEOUT:
            raise UsageError(f"--timeout is at most {_MAX_TIMEOUT:g}")
        _ensure_file_limit(args.concurrency + 64)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    duration = args.duration
    if duration > MAX_DURATION:
        print(
            f"{parser.prog}: --duration capped at {MAX_DURATION:g} seconds",
            file=sys.stderr,
        )
        duration = MAX_DURATION
    if args.stop_file is not None and os.path.exists(args.stop_file):
        print(
            f"{parser.prog}: stop file {args.stop_file!r} already exists; not sending",
            file=sys.stderr,
        )

    generator = _LoadGenerator(
        target,
        rate=args.rate,
        concurrency=args.concurrency,
        duration=duration,
        max_requests=args.max_requests,
        timeout=args.timeout,
        stop_file=args.stop_file,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        generator.request_stop()

    def on_ready() -> None:
        sys.stdout.write(READY_LINE + "\n")
        sys.stdout.flush()

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        elapsed = generator.run(on_ready)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    status = 0
    if args.records is not None:
        try:
            generator.records.write_jsonl(args.records)
        except OSError as e:
            print(
                f"{parser.prog}: cannot write records to {args.records!r}: {e}",
                file=sys.stderr,
            )
            status = 1
    summary = generator.records.summary(duration=elapsed)
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
