"""
Throughput of new connections through a chain of takeovers, against the
same service without takeovers, in one run.

    PYTHONPATH=. python benchmarks/chain.py [--takeovers 20] [--rate 1200]
        [--steady 5] [--json-out FILE]

One C{twistd -n --pidfile= migrate --control DIR/ctl web ...} on a loopback
port, one load generator (L{migrator.demo._loadgen}: a new TCP connection and
a complete HTTP/1.0 request per request, paced open-loop) running
throughout, and three windows:

  - C{steady_before}: C{--steady} seconds of load, no takeover;
  - C{chain}: K takeovers back to back (each: start the successor, wait for
    its C{READY} line, wait for the incumbent to exit);
  - C{steady_after}: C{--steady} seconds of load on the last generation.

The floor is the mean rate of the two steady windows: what this machine,
as busy as it is during the run, sustains for this service and this load
generator.  The figures are the chain's rate, the least number of requests
started in any whole second of it, and their ratios to the floor; and, for
the check C{tests/integration/test_takeover.py} used to make (at least
1,000 new connections a second during 20 takeovers, and in every whole
second of them), whether it held in this run.  Failed requests of any kind
are counted per window; the test keeps asserting that there are none.

One JSON object goes to stdout (and to C{--json-out}); progress to stderr.
Every wait is bounded; every child is killed on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.takeover_vs_restart import (  # noqa: E402
    BenchmarkError,
    Children,
    LoadRun,
    awaitFirstResponse,
    freePort,
    log,
    machine,
    sleepUntil,
    terminationRaises,
    webService,
)
from migrator.demo._loadgen import OUTCOMES, summarize  # noqa: E402
from migrator.demo._processes import READY, OutputTimeout, twistdCommand  # noqa: E402

#: The figure the chain test used to assert, in new connections a second.
OLD_TEST_MIN_RATE = 1000.0
MAX_TAKEOVERS = 100


def perSecond(records: list[dict[str, Any]], start: float, end: float) -> list[int]:
    """
    How many requests started in each whole second from C{start} to
    C{end}.
    """
    buckets = [0] * max(int(end - start), 0)
    for record in records:
        # Not int() alone: it would count the second before start as the
        # first one (it truncates towards zero).
        if record["t"] < start:
            continue
        i = int(record["t"] - start)
        if i < len(buckets):
            buckets[i] += 1
    return buckets


def window(records: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """
    The figures of the requests started between C{start} and C{end}.
    """
    summary = summarize(records, start, end)
    failed = sum(summary[k] for k in OUTCOMES if k != "ok")
    return {
        "seconds": round(end - start, 3),
        "requests": summary["requests"],
        "failed": failed,
        "rate": summary["rate"],
        "connect_ms": summary["connect_latency"],
        "total_ms": summary["total_latency"],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def run(options: argparse.Namespace, workdir: str, children: Children) -> dict[str, Any]:
    www = os.path.join(workdir, "www")
    os.mkdir(www)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("<html><body>hello</body></html>\n")
    control = os.path.join(workdir, "ctl")
    port = freePort()
    service = webService(port, www)
    timeout = options.step_timeout
    incumbent = children.start(twistdCommand(control, service), "generation 0")
    incumbent.waitFor(READY, timeout)
    awaitFirstResponse(port, timeout)
    bound = 2 * options.steady + options.takeovers * 2 * timeout + 60
    load = LoadRun.start(children, workdir, port, options, bound)
    log(f"migrate web on 127.0.0.1:{port}; load of {options.rate:g}/s running")

    beforeStart = time.time()
    sleepUntil(beforeStart + options.steady)
    steadyBefore = (beforeStart, time.time())

    chainStart = time.time()
    takeovers = []
    for generation in range(1, options.takeovers + 1):
        began = time.time()
        successor = children.start(
            twistdCommand(control, service, takeover=True), f"generation {generation}"
        )
        match = successor.waitFor(READY, timeout)
        if int(match.group("generation")) != generation:
            raise BenchmarkError(f"successor reports generation {match.group('generation')}")
        ready = time.time()
        code = incumbent.waitForExit(timeout)
        if code != 0:
            raise BenchmarkError(f"generation {generation - 1} exited with {code}")
        takeovers.append(round(ready - began, 3))
        incumbent = successor
    chainEnd = time.time()
    log(f"{options.takeovers} takeovers in {chainEnd - chainStart:.1f} s")

    afterStart = time.time()
    sleepUntil(afterStart + options.steady)
    steadyAfter = (afterStart, time.time())

    records = load.finish(options.request_timeout * 2 + timeout)
    incumbent.stop(timeout)

    before = window(records, *steadyBefore)
    after = window(records, *steadyAfter)
    chain = window(records, chainStart, chainEnd)
    seconds = perSecond(records, chainStart, chainEnd)
    chain["per_second"] = seconds
    chain["min_per_second"] = min(seconds) if seconds else None
    chain["takeover_s"] = takeovers
    floor = (before["rate"] + after["rate"]) / 2
    return {
        "steady_before": before,
        "chain": chain,
        "steady_after": after,
        "whole_run": window(records, steadyBefore[0], steadyAfter[1]),
        "floor_rate": round(floor, 3),
        "ratios": {
            "chain_rate_to_floor": ratio(chain["rate"], floor),
            "min_second_to_floor": ratio(chain["min_per_second"], floor),
            "floor_to_requested": ratio(floor, options.rate),
        },
        "old_test_check": {
            "min_rate": OLD_TEST_MIN_RATE,
            "chain_rate_ok": chain["rate"] >= OLD_TEST_MIN_RATE,
            "every_second_ok": bool(seconds) and min(seconds) >= OLD_TEST_MIN_RATE,
        },
    }


def parseArguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="New connections a second through a chain of takeovers, "
        "against the same service without takeovers.",
    )
    parser.add_argument(
        "--takeovers", type=int, default=20, help="takeovers in the chain (default %(default)s)"
    )
    parser.add_argument(
        "--rate", type=float, default=1200.0, help="new connections asked for a second"
    )
    parser.add_argument(
        "--steady",
        type=float,
        default=5.0,
        help="seconds of each steady window, before and after the chain (default %(default)s)",
    )
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument(
        "--step-timeout",
        type=float,
        default=30.0,
        help="longest wait for any process to be ready or to exit (default %(default)s)",
    )
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON result here")
    options = parser.parse_args(argv)
    if not 1 <= options.takeovers <= MAX_TAKEOVERS:
        parser.error(f"--takeovers must be between 1 and {MAX_TAKEOVERS}")
    if not 0 < options.rate <= 20000:
        parser.error("--rate must be above 0 and at most 20000")
    if not 1 <= options.steady <= 60:
        parser.error("--steady must be between 1 and 60")
    if not 0 < options.step_timeout <= 120 or not 0 < options.request_timeout <= 30:
        parser.error("--step-timeout is at most 120 and --request-timeout at most 30")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parseArguments(argv)
    began = time.time()
    result: dict[str, Any] = {
        "benchmark": "chain",
        "machine": machine(),
        "parameters": {
            "takeovers": options.takeovers,
            "rate": options.rate,
            "steady": options.steady,
            "concurrency": options.concurrency,
            "request_timeout": options.request_timeout,
        },
    }
    workdir = tempfile.mkdtemp(prefix="mgbench-chain-")
    children = Children()
    with terminationRaises():
        try:
            result.update(run(options, workdir, children))
        except (BenchmarkError, OutputTimeout) as e:
            sys.stderr.write(f"chain: {e}\n")
            return 1
        finally:
            children.killAll()
            shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = round(time.time() - began, 1)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if options.json_out:
        with open(options.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
