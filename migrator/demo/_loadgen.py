# -*- test-case-name: tests.test_loadgen -*-
"""
A loopback-only HTTP/1.0 load generator.

This module proves that a server never refuses or resets a connection
while its listening port moves from one process to another: it opens a
B{new} TCP connection for every request, at a paced rate, and classifies
the outcome of each one.  It uses only the standard library (no Twisted),
so that it is unaffected by the reactor of the process under test.

Run it as::

    python -m migrator.demo._loadgen --url http://127.0.0.1:8080/ \\
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
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from migrator.demo._loadclient import (
    _MAX_CONCURRENCY,
    _MAX_RATE,
    _MAX_TIMEOUT,
    UsageError,
    _LoadGenerator,
    _parse_target,
)
from migrator.demo._loadstats import (
    OUTCOMES,
    load_records,
    percentile,
    summarize,
)

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
        "migrator.demo._loadgen",
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
        prog="python -m migrator.demo._loadgen",
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
