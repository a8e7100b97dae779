"""
Takeover under C{twistd migrate} against a naive restart, under the same load,
in one run.

    PYTHONPATH=. python benchmarks/takeover_vs_restart.py \\
        [--takeovers 5] [--rate 1000] [--duration-per-switch 2] [--json-out FILE]

Two phases, each with its own service on a loopback port chosen free
beforehand and its own run of the load generator (L{migrator.demo._loadgen}: a new
TCP connection and a complete HTTP/1.0 request per request, paced open-loop):

  - C{takeover}: C{twistd -n --pidfile= migrate --control DIR/ctl web ...};
    K times, the same command with C{--takeover} is started.  A switch window
    runs from starting the successor's command to seeing its C{READY} line
    (L{migrator.demo._processes.READY}); the incumbent must then exit.
  - C{restart}: C{twistd -n --pidfile= web ...} (no migrate); K times it gets
    C{SIGTERM}, is waited for, and the same command is started again.  A
    switch window runs from the C{SIGTERM} to the new process's
    C{Site starting on} line.

Each phase waits for one answered request, then starts the load, which runs
throughout the phase: a lead-in of steady load, then K slots of
C{--duration-per-switch} seconds, each starting with one switch.  Figures are
given for the whole phase, for the switch windows, for the C{--settle}
seconds after each ready line (C{after_ready}), and for the rest.  One JSON
object goes to stdout (and to C{--json-out}); progress goes to stderr.  See
C{benchmarks/README.md} for what each figure means.

Everything is bounded: the number of switches, the length of each slot, and
every wait for a line or an exit has a timeout.  Every child is started in its
own session, and its process group is killed on the way out, whatever
happened.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from migrator.demo._loadgen import OUTCOMES, READY_LINE, load_records, percentile, summarize
from migrator.demo._loadgen import command as loadgenCommand
from migrator.demo._processes import (
    READY,
    OutputTimeout,
    ServiceProcess,
    childEnvironment,
    twistdCommand,
)

#: Logged by a plain C{twistd web} once its port listens.
SITE_STARTING = re.compile(r"Site starting on (?P<port>\d+)")
#: Logged by the incumbent when it commits; the figures are its own
#: millisecond measurements (the log's timestamps only have seconds).
COMMITTED = re.compile(
    r"takeover committed: .* accepting was paused for (?P<paused>[\d.]+) ms, "
    r"the whole takeover took (?P<total>[\d.]+) ms"
)

#: Seconds of steady load before the first switch.
LEAD_IN = 1.0
#: Added on each side of the incumbent's own measure of the handoff to make
#: the narrow window of a takeover (see L{narrowWindow}).
HANDOFF_MARGIN = 0.05
#: Longest the load generator is asked to run beyond the planned phase; it
#: is normally stopped earlier with its stop file.
LOADGEN_SLACK = 120.0

MAX_TAKEOVERS = 100
MAX_DURATION_PER_SWITCH = 30.0


class BenchmarkError(Exception):
    """
    The benchmark could not run to the end; the message says why.
    """


@attrs.frozen
class Switch:
    """
    One switch from an old server process to a new one, as seen from here.

    @ivar start: Wall-clock time at which the switch began (successor
        started, or C{SIGTERM} sent).
    @ivar ready: Wall-clock time at which the new process's ready line was
        seen.
    @ivar oldExited: Wall-clock time at which the old process was seen to
        have exited.
    @ivar pausedMs: For a takeover, how long the incumbent says it did not
        accept (its own measure, in ms).
    @ivar handoffMs: For a takeover, how long the incumbent says the whole
        handoff took, from the successor's request to the commit (in ms).
    """

    start: float
    ready: float
    oldExited: float
    pausedMs: float | None = None
    handoffMs: float | None = None

    @property
    def window(self) -> tuple[float, float]:
        return (self.start, self.ready)

    def settling(self, seconds: float) -> tuple[float, float]:
        """
        The C{seconds} after the new process said it was ready.
        """
        return (self.ready, self.ready + seconds)


def narrowWindow(switch: Switch) -> tuple[float, float] | None:
    """
    The part of a takeover's window around the handoff itself: the READY
    line is logged once the successor has the commit, so the handoff took
    place in the C{handoffMs} before it.  A margin on each side covers the
    time the line takes to reach us.
    """
    if switch.handoffMs is None:
        return None
    return (
        switch.ready - switch.handoffMs / 1000.0 - HANDOFF_MARGIN,
        switch.ready + HANDOFF_MARGIN,
    )


# -- processes ----------------------------------------------------------------


class Children:
    """
    Every child process started by the benchmark, so that all of them (with
    their process groups) are killed on the way out.
    """

    def __init__(self) -> None:
        self._all: list[ServiceProcess] = []

    def start(
        self, argv: Sequence[str], name: str, env: dict[str, str] | None = None
    ) -> ServiceProcess:
        child = ServiceProcess(argv, env=childEnvironment(env), name=name)
        self._all.append(child)
        return child

    def killAll(self) -> None:
        for child in self._all:
            killGroup(child)


def killGroup(child: ServiceProcess, grace: float = 5.0) -> None:
    """
    SIGTERM the child's process group (it leads its own session), then
    SIGKILL if it has not exited after C{grace} seconds; then collect its
    output.  Only a child not yet reaped is signalled, so a recycled pid is
    never hit.
    """
    process = child.process
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    child.stop(grace)


def freePort() -> int:
    """
    A loopback TCP port nobody listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def awaitFirstResponse(port: int, timeout: float) -> None:
    """
    Make one request and wait for its answer.  A plain twistd logs
    C{Site starting on} when its port listens, before its reactor runs:
    without this, the first requests of the load would queue in the backlog
    and count against the steady state.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/")
        status = connection.getresponse().status
    except OSError as e:
        raise BenchmarkError(f"the first request to port {port} failed: {e}") from e
    finally:
        connection.close()
    if status != 200:
        raise BenchmarkError(f"the first request to port {port} got HTTP {status}")


def webService(port: int, www: str) -> list[str]:
    return ["web", "--listen", f"tcp:{port}:interface=127.0.0.1", "--path", www]


def plainTwistdCommand(service: Sequence[str]) -> list[str]:
    """
    The same command as L{twistdCommand} builds, without C{migrate}.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        *service,
    ]


@attrs.define
class LoadRun:
    """
    A running load generator.
    """

    process: ServiceProcess
    records: str
    stopFile: str

    @classmethod
    def start(
        cls,
        children: Children,
        workdir: str,
        port: int,
        options: argparse.Namespace,
        duration: float,
    ) -> LoadRun:
        records = os.path.join(workdir, "records.jsonl")
        stopFile = os.path.join(workdir, "stop")
        argv = loadgenCommand(
            port,
            options.rate,
            duration,
            records,
            stopFile,
            concurrency=options.concurrency,
            timeout=options.request_timeout,
        )
        process = children.start(argv, "loadgen")
        process.waitFor(re.compile(re.escape(READY_LINE)), options.step_timeout)
        return cls(process, records, stopFile)

    def finish(self, timeout: float) -> list[dict[str, Any]]:
        """
        Stop starting requests, wait for those in flight, read the records.
        """
        with open(self.stopFile, "w"):
            pass
        code = self.process.waitForExit(timeout)
        if code != 0:
            raise BenchmarkError(
                f"load generator exited with {code}:\n{self.process.output()[-3000:]}"
            )
        return load_records(self.records)


def listenOverflows() -> int | None:
    """
    The kernel's count of connections dropped because a listen queue was
    full (C{TcpExt: ListenOverflows}, for the whole network namespace), or
    C{None} where it cannot be read.
    """
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            if "ListenOverflows" in table:
                return int(table["ListenOverflows"])
    return None


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def sleepUntil(when: float) -> None:
    """
    Pace the schedule of switches (not a wait for readiness).
    """
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)


# -- the two phases -------------------------------------------------------------


def runTakeovers(
    children: Children, workdir: str, options: argparse.Namespace
) -> tuple[list[Switch], list[dict[str, Any]], dict[str, Any]]:
    """
    Phase (a): K takeovers under migrate, under load.
    """
    www = os.path.join(workdir, "www")
    control = os.path.join(workdir, "ctl")
    port = freePort()
    service = webService(port, www)
    timeout = options.step_timeout
    incumbent = children.start(twistdCommand(control, service), "incumbent gen 0")
    incumbent.waitFor(READY, timeout)
    awaitFirstResponse(port, timeout)
    load = LoadRun.start(children, workdir, port, options, phaseLength(options) + LOADGEN_SLACK)
    log(f"takeover: migrate web on 127.0.0.1:{port}, load running")
    switches: list[Switch] = []
    phaseStart = time.time()
    for k in range(options.takeovers):
        sleepUntil(phaseStart + LEAD_IN + k * options.duration_per_switch)
        start = time.time()
        successor = children.start(
            twistdCommand(control, service, takeover=True), f"successor gen {k + 1}"
        )
        match = successor.waitFor(READY, timeout)
        ready = time.time()
        if int(match.group("generation")) != k + 1:
            raise BenchmarkError(f"successor reports generation {match.group('generation')}")
        incumbent.waitForExit(timeout)
        exited = time.time()
        committed = COMMITTED.search(incumbent.output())
        switch = Switch(
            start=start,
            ready=ready,
            oldExited=exited,
            pausedMs=float(committed.group("paused")) if committed else None,
            handoffMs=float(committed.group("total")) if committed else None,
        )
        switches.append(switch)
        log(
            f"takeover {k + 1}: READY after {(ready - start) * 1000:.0f} ms, "
            f"incumbent paused {switch.pausedMs} ms, exited {(exited - ready) * 1000:.0f} ms later"
        )
        incumbent = successor
    sleepUntil(phaseStart + phaseLength(options))
    records = load.finish(options.request_timeout * 2 + timeout)
    incumbent.stop(timeout)
    return switches, records, {"port": port}


def runRestarts(
    children: Children, workdir: str, options: argparse.Namespace
) -> tuple[list[Switch], list[dict[str, Any]], dict[str, Any]]:
    """
    Phase (b): K naive restarts (stop, then start the same command), under
    load.
    """
    www = os.path.join(workdir, "www")
    port = freePort()
    argv = plainTwistdCommand(webService(port, www))
    timeout = options.step_timeout
    server = children.start(argv, "server 0")
    server.waitFor(SITE_STARTING, timeout)
    awaitFirstResponse(port, timeout)
    load = LoadRun.start(children, workdir, port, options, phaseLength(options) + LOADGEN_SLACK)
    log(f"restart: plain web on 127.0.0.1:{port}, load running")
    switches: list[Switch] = []
    phaseStart = time.time()
    for k in range(options.takeovers):
        sleepUntil(phaseStart + LEAD_IN + k * options.duration_per_switch)
        start = time.time()
        server.signal(signal.SIGTERM)
        server.waitForExit(timeout)
        exited = time.time()
        server = children.start(argv, f"server {k + 1}")
        server.waitFor(SITE_STARTING, timeout)
        ready = time.time()
        switches.append(Switch(start=start, ready=ready, oldExited=exited))
        log(
            f"restart {k + 1}: old exited after {(exited - start) * 1000:.0f} ms, "
            f"new listening after {(ready - start) * 1000:.0f} ms"
        )
    sleepUntil(phaseStart + phaseLength(options))
    records = load.finish(options.request_timeout * 2 + timeout)
    server.stop(timeout)
    return switches, records, {"port": port}


def phaseLength(options: argparse.Namespace) -> float:
    return LEAD_IN + float(options.takeovers * options.duration_per_switch)


# -- figures --------------------------------------------------------------------


def inAny(t: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(lo <= t <= hi for lo, hi in windows)


def unionLength(windows: Sequence[tuple[float, float]]) -> float:
    total = 0.0
    end = float("-inf")
    for lo, hi in sorted(windows):
        lo = max(lo, end)
        if hi > lo:
            total += hi - lo
            end = hi
    return total


def counts(summary: dict[str, Any]) -> dict[str, Any]:
    """
    The outcome counts of a summary, plus C{failed}: everything but C{ok}.
    """
    result: dict[str, Any] = {"requests": summary["requests"]}
    for name in OUTCOMES:
        result[name] = summary[name]
    result["failed"] = summary["requests"] - summary["ok"]
    if summary["other_kinds"]:
        result["other_kinds"] = summary["other_kinds"]
    return result


def windowFigures(
    records: Sequence[dict[str, Any]], windows: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """
    Outcomes and latencies of the requests started inside the union of
    C{windows}.  Connect latencies are those of the C{connected} requests
    only: a refused connection has none.
    """
    inside = [r for r in records if inAny(r["t"], windows)]
    summary = summarize(inside)
    return {
        "seconds": round(unionLength(windows), 3),
        **counts(summary),
        "connected": sum(1 for r in inside if r["connect"] is not None),
        "connect_ms": summary["connect_latency"],
        "total_ms": summary["total_latency"],
    }


def switchFigures(
    records: Sequence[dict[str, Any]], switch: Switch, takeover: bool
) -> dict[str, Any]:
    """
    One switch: its timings, and what happened to the requests started in
    its window.
    """
    result: dict[str, Any] = {"window_ms": round((switch.ready - switch.start) * 1000, 1)}
    if takeover:
        result["incumbent_exited_ms_after_ready"] = round(
            (switch.oldExited - switch.ready) * 1000, 1
        )
        result["incumbent_paused_ms"] = switch.pausedMs
        result["incumbent_handoff_ms"] = switch.handoffMs
    else:
        result["old_exited_ms_after_sigterm"] = round((switch.oldExited - switch.start) * 1000, 1)
        result["new_ready_ms_after_old_exit"] = round((switch.ready - switch.oldExited) * 1000, 1)
    figures = windowFigures(records, [switch.window])
    for key in ("requests", "refused", "reset", "failed", "connected", "connect_ms", "total_ms"):
        result[key] = figures[key]
    return result


def modeFigures(
    records: Sequence[dict[str, Any]],
    switches: Sequence[Switch],
    takeover: bool,
    settle: float,
) -> dict[str, Any]:
    windows = [s.window for s in switches]
    settling = [s.settling(settle) for s in switches]
    whole = summarize(records)
    steady = [r for r in records if not inAny(r["t"], windows + settling)]
    steadySummary = summarize(steady)
    result: dict[str, Any] = {
        "whole_phase": {
            **counts(whole),
            "seconds": whole["duration"],
            "rate": whole["rate"],
        },
        "switch_windows": windowFigures(records, windows),
        "after_ready": windowFigures(records, settling),
        "outside_windows": {
            "requests": steadySummary["requests"],
            "failed": steadySummary["requests"] - steadySummary["ok"],
            "connect_ms": steadySummary["connect_latency"],
            "total_ms": steadySummary["total_latency"],
        },
    }
    if takeover:
        narrowWindows = [w for w in map(narrowWindow, switches) if w is not None]
        if narrowWindows:
            result["handoff_windows"] = windowFigures(records, narrowWindows)
    windowLengths = [(s.ready - s.start) * 1000 for s in switches]
    result["window_ms"] = {
        "p50": round(percentile(windowLengths, 50), 1),
        "max": round(max(windowLengths), 1),
    }
    result["switches"] = [switchFigures(records, s, takeover) for s in switches]
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def comparison(takeover: dict[str, Any], restart: dict[str, Any]) -> dict[str, Any]:
    """
    The lines to read first: the restart's figure next to the takeover's.
    """
    tp, rp = takeover["whole_phase"], restart["whole_phase"]
    result: dict[str, Any] = {}
    for name in ("refused", "reset", "timeout", "failed"):
        result[name] = {"takeover": tp[name], "restart": rp[name]}
    lines = [
        ("window", "switch_windows", "connect_ms", ("p50", "p99", "max")),
        ("window", "switch_windows", "total_ms", ("p99", "max")),
        ("after_ready", "after_ready", "connect_ms", ("p99", "max")),
        ("after_ready", "after_ready", "total_ms", ("p99", "max")),
    ]
    for prefix, part, latency, stats in lines:
        for stat in stats:
            t, r = takeover[part][latency][stat], restart[part][latency][stat]
            result[f"{prefix}_{latency.replace('_ms', '')}_{stat}_ms"] = {
                "takeover": t,
                "restart": r,
                "restart_over_takeover": ratio(r, t),
            }
    result["window_connected_requests"] = {
        "takeover": takeover["switch_windows"]["connected"],
        "restart": restart["switch_windows"]["connected"],
    }
    result["window_ms_p50"] = {
        "takeover": takeover["window_ms"]["p50"],
        "restart": restart["window_ms"]["p50"],
    }
    return result


def machine() -> dict[str, Any]:
    import twisted

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- command line ---------------------------------------------------------------


def parseArguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure a takeover under twistd migrate against a naive "
        "restart of the same twistd web command, under the same load.",
    )
    parser.add_argument(
        "--takeovers", type=int, default=5, help="switches per mode (default %(default)s)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="new connections per second (default %(default)s)",
    )
    parser.add_argument(
        "--duration-per-switch",
        type=float,
        default=2.0,
        help="seconds of load per switch; each slot starts with a switch (default %(default)s)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="requests in flight at most (default %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=5.0,
        help="seconds to connect, then to get the response, before a request counts "
        "as timed out (default %(default)s)",
    )
    parser.add_argument(
        "--step-timeout",
        type=float,
        default=15.0,
        help="longest wait for any process to be ready or to exit (default %(default)s)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds after each ready line reported apart as after_ready (default %(default)s)",
    )
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON result here")
    parser.add_argument(
        "--keep-records",
        metavar="DIR",
        help="write each mode's switches and per-request records to DIR/MODE.json",
    )
    options = parser.parse_args(argv)
    if not 1 <= options.takeovers <= MAX_TAKEOVERS:
        parser.error(f"--takeovers must be between 1 and {MAX_TAKEOVERS}")
    if not 0.5 <= options.duration_per_switch <= MAX_DURATION_PER_SWITCH:
        parser.error(f"--duration-per-switch must be between 0.5 and {MAX_DURATION_PER_SWITCH:g}")
    if not 0 < options.rate <= 20000:
        parser.error("--rate must be above 0 and at most 20000")
    if not 0 <= options.settle <= options.duration_per_switch / 2:
        parser.error("--settle must be between 0 and half of --duration-per-switch")
    if not 0 < options.step_timeout <= 60 or not 0 < options.request_timeout <= 30:
        parser.error("--step-timeout is at most 60 and --request-timeout at most 30")
    return options


@contextmanager
def terminationRaises() -> Iterator[None]:
    """
    Turn SIGTERM (and SIGHUP) into L{SystemExit} so that C{finally} blocks
    run and the children are killed.
    """

    def handler(signum: int, frame: Any) -> None:
        sys.stderr.write(f"takeover_vs_restart: got signal {signum}; stopping every child\n")
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def runPhase(
    name: str,
    phase: Callable[
        [Children, str, argparse.Namespace],
        tuple[list[Switch], list[dict[str, Any]], dict[str, Any]],
    ],
    options: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    Run one phase in a private directory, killing every child it started
    however it ends.
    """
    workdir = tempfile.mkdtemp(prefix=f"mgbench-{name}-")  # mode 0700
    children = Children()
    try:
        www = os.path.join(workdir, "www")
        os.mkdir(www)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("<html><body>hello</body></html>\n")
        began = time.time()
        overflowsBefore = listenOverflows()
        switches, records, info = phase(children, workdir, options)
        overflowsAfter = listenOverflows()
        info["seconds"] = round(time.time() - began, 1)
        if overflowsBefore is not None and overflowsAfter is not None:
            # System-wide: other processes' queues count too.
            info["listen_overflows"] = overflowsAfter - overflowsBefore
        if options.keep_records:
            os.makedirs(options.keep_records, exist_ok=True)
            keep = os.path.join(options.keep_records, f"{name}.json")
            with open(keep, "w") as f:
                json.dump({"switches": [attrs.asdict(s) for s in switches], "records": records}, f)
            info["records"] = keep
        figures = modeFigures(records, switches, name == "takeover", options.settle)
        return figures, info
    finally:
        children.killAll()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    options = parseArguments(argv)
    began = time.time()
    result: dict[str, Any] = {
        "benchmark": "takeover_vs_restart",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": machine(),
        "parameters": {
            "takeovers": options.takeovers,
            "rate": options.rate,
            "duration_per_switch": options.duration_per_switch,
            "lead_in": LEAD_IN,
            "concurrency": options.concurrency,
            "request_timeout": options.request_timeout,
            "settle": options.settle,
            "service": "twistd -n --pidfile= web --listen tcp:PORT:interface=127.0.0.1 --path DIR",
        },
    }
    with terminationRaises():
        try:
            takeover, takeoverInfo = runPhase("takeover", runTakeovers, options)
            restart, restartInfo = runPhase("restart", runRestarts, options)
        except (BenchmarkError, OutputTimeout) as e:
            sys.stderr.write(f"takeover_vs_restart: {e}\n")
            return 1
    result["takeover"] = {**takeover, "phase": takeoverInfo}
    result["restart"] = {**restart, "phase": restartInfo}
    result["comparison"] = comparison(takeover, restart)
    result["comparison"]["listen_overflows"] = {
        "takeover": takeoverInfo.get("listen_overflows"),
        "restart": restartInfo.get("listen_overflows"),
    }
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
