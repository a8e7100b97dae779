# -*- test-case-name: tests.test_loadgen -*-
"""
The load generator's engine: one non-blocking connection per request, paced
open-loop, each outcome classified (see L{migrator.demo._loadgen} for the
command line and the meaning of each outcome).
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from migrator.demo._loadstats import (
    _HTTP_ERROR,
    _OK,
    _OTHER,
    _REFUSED,
    _RESET,
    _TIMEOUT,
    _Records,
)

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
