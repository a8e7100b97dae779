"""
Connection handoff benchmark: N idle LineReceiver connections (about 200
bytes of state each) move from an incumbent to a successor, measured side
by side with the floor (raw socket.send_fds in 253-fd batches + pickling
equivalent state + adopting every socket), in one run.

    PYTHONPATH=. python benchmarks/connections.py [--connections 1000,10000,19900]
        [--repeat R] [--json-out FILE]

Prints one JSON object: every run, and per size the range (min-max over
the runs) of the microseconds per connection spent capturing, restoring,
and moving the same sockets at the floor.  Loopback only; every wait is
bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from itertools import count as _counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks._bytecode import compileCheckout  # noqa: E402
from benchmarks.apps.idle import state  # noqa: E402
from migrator.testing import (  # noqa: E402
    HANDED_OFF,
    READY,
    ServiceProcess,
    childEnvironment,
    startMigrate,
)

TAC = os.path.join(HERE, "apps", "idle.tac")
HOLDER = os.path.join(HERE, "apps", "holder.py")
FLOOR = os.path.join(HERE, "apps", "floor_receiver.py")
FREEZE = re.compile(
    r"frozen for p50 (?P<p50>[\d.]+) ms, p99 (?P<p99>[\d.]+) ms, max (?P<max>[\d.]+) ms"
)
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) \((?P<size>\d+) bytes of state, "
    r"(?P<pending>\d+) unsent bytes, captured in (?P<ms>[\d.]+) ms"
)
RESTORED = re.compile(r"restored (?P<count>\d+) connection\(s\) from \d+ bytes of state in (?P<ms>[\d.]+) ms")
COMMITTED = re.compile(r"the whole takeover took (?P<ms>[\d.]+) ms")
_serial = _counter(1)


def peakRSS(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def holder(port: int, count: int, wait: bool = True) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, HOLDER, str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if wait:
        waitReady(process)
    return process


def waitReady(process: subprocess.Popen) -> None:
    line = process.stdout.readline()
    if "HOLDER READY" not in line:
        raise RuntimeError(f"holder did not start: {line!r}")
    return process


def check(process: subprocess.Popen) -> dict:
    process.stdin.write("check\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def takeover(count: int, work: str) -> dict:
    control = os.path.join(work, f"ctl{count}-{next(_serial)}")
    options = ["--adapters", "benchmarks.apps.idle", "--drain-timeout", "60"]
    incumbent = startMigrate(control, ["--tac", TAC], migrateOptions=options, cwd=ROOT)
    successor = None
    held = None
    try:
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(r"IdleFactory starting on (\d+)", 10).group(1))
        held = holder(port, count)
        before = check(held)
        if before["answers"] != count:
            raise RuntimeError(f"only {before} answered before the takeover")
        # (The incumbent usually exits before the successor's READY line:
        # its exit is noted by a thread of its own, not when this one is
        # done waiting for lines.)
        incumbent.watchExit()
        started = time.monotonic()
        successor = startMigrate(
            control, ["--tac", TAC], takeover=True, migrateOptions=options, cwd=ROOT
        )
        successor.waitFor(READY, 120)
        ready = time.monotonic() - started
        incumbent.waitFor(HANDED_OFF, 60)
        code = incumbent.waitForExit(120)
        total = (incumbent.exitedAt or time.monotonic()) - started
        freeze = successor.waitFor(FREEZE, 10)
        froze = incumbent.waitFor(FROZE, 10)
        restored = successor.waitFor(RESTORED, 10)
        committed = incumbent.waitFor(COMMITTED, 10)
        rss = peakRSS(successor.pid)
        after = check(held)
        return {
            "connections": count,
            "total_s": round(total, 3),
            "successor_ready_s": round(ready, 3),
            "incumbent_exit_code": code,
            "freeze_ms": {k: float(v) for k, v in freeze.groupdict().items()},
            "capture_ms": float(froze["ms"]),
            "state_bytes": int(froze["size"]),
            "restore_ms": float(restored["ms"]),
            "protocol_ms": float(committed["ms"]),
            "successor_peak_rss_mb": round(rss / 2**20, 1) if rss else None,
            "answers_after": after["answers"],
            "errors_after": after["errors"],
            "answered_by_successor": after["pids"].get(str(successor.pid), 0),
        }
    finally:
        if held is not None:
            held.kill()
            held.wait()
        for p in (successor, incumbent):
            if p is not None:
                p.stop()


def floor(count: int, work: str) -> dict:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    held = holder(listener.getsockname()[1], count, wait=False)
    accepted = []
    try:
        listener.settimeout(60)
        while len(accepted) < count:
            accepted.append(listener.accept()[0])
        waitReady(held)
        path = os.path.join(work, f"floor{count}-{next(_serial)}")
        spawned = time.time()
        receiver = ServiceProcess([sys.executable, FLOOR, path], env=childEnvironment(), name="floor")
        try:
            receiver.waitFor("FLOOR READY", 60)
            started = time.time()
            payload = pickle.dumps([state(i) for i in range(count)], protocol=4)
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.sendall(struct.pack("!I", count))
            fds = [c.fileno() for c in accepted]
            for i in range(0, count, 253):
                socket.send_fds(s, [b"x"], fds[i : i + 253])
            s.sendall(struct.pack("!I", len(payload)) + payload)
            done = float(receiver.waitFor(r"FLOOR DONE ([\d.]+)", 120).group(1))
            s.close()
        finally:
            receiver.stop()
        return {
            "connections": count,
            "transfer_s": round(done - started, 3),
            "with_process_start_s": round(done - spawned, 3),
            "state_bytes": len(payload),
        }
    finally:
        held.kill()
        held.wait()
        for c in accepted:
            c.close()
        listener.close()


#: Descriptors each process needs beside the N connections (listening
#: sockets, the control socket and channel, pipes, epoll, imports).
_HEADROOM = 100


def maxConnections() -> int:
    """
    The most connections one process can hold here: every process of the
    benchmark (client, incumbent, successor, floor) holds N sockets.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # Raise the soft limit for this process and its children.
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] - _HEADROOM


def perConnection(t: dict, f: dict) -> dict:
    """
    Microseconds per connection: the takeover's capture and restore, and
    the floor's transfer (send_fds + pickle + adopt, no process start).
    """
    n = t["connections"]
    return {
        "capture_us": round(t["capture_ms"] * 1000 / n, 1),
        "restore_us": round(t["restore_ms"] * 1000 / n, 1),
        "floor_transfer_us": round(f["transfer_s"] * 1e6 / n, 1),
    }


def summary(results: list) -> list:
    """
    Per size, the range (min, max) of each per-connection figure and of
    the totals over the runs.
    """
    out = []
    for count in sorted({r["connections"] for r in results}):
        runs = [r for r in results if r["connections"] == count]

        def span(get, runs=runs):
            values = [get(r) for r in runs]
            return [min(values), max(values)]

        out.append(
            {
                "connections": count,
                "runs": len(runs),
                "capture_us_per_connection": span(lambda r: r["per_connection"]["capture_us"]),
                "restore_us_per_connection": span(lambda r: r["per_connection"]["restore_us"]),
                "floor_transfer_us_per_connection": span(
                    lambda r: r["per_connection"]["floor_transfer_us"]
                ),
                "freeze_max_ms": span(lambda r: r["takeover"]["freeze_ms"]["max"]),
                "total_s": span(lambda r: r["takeover"]["total_s"]),
                "successor_ready_s": span(lambda r: r["takeover"]["successor_ready_s"]),
                "floor_with_process_start_s": span(lambda r: r["floor"]["with_process_start_s"]),
                "successor_peak_rss_mb": span(lambda r: r["takeover"]["successor_peak_rss_mb"] or 0),
                "all_answered_by_successor": all(
                    r["takeover"]["answered_by_successor"] == count for r in runs
                ),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--connections",
        "--counts",
        dest="connections",
        default="1000,10000",
        help=f"comma-separated sizes (at most the open-file limit minus {_HEADROOM})",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (at most 10)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    limit = maxConnections()
    counts = []
    for c in args.connections.split(","):
        if int(c) > limit:
            print(f"{c} connections do not fit under the open-file limit: using {limit}", file=sys.stderr)
        counts.append(min(int(c), limit))
    repeat = max(1, min(args.repeat, 10))
    bytecode = compileCheckout()
    work = tempfile.mkdtemp(prefix="migrator-bench-")
    os.chmod(work, 0o700)
    results = []
    for run in range(repeat):
        for count in counts:
            print(f"run {run + 1}/{repeat}: {count} connections", file=sys.stderr, flush=True)
            t = takeover(count, work)
            f = floor(count, work)
            results.append(
                {
                    "connections": count,
                    "run": run + 1,
                    "load_average": list(os.getloadavg()),
                    "takeover": t,
                    "floor": f,
                    "per_connection": perConnection(t, f),
                    "ratio_total_to_floor_with_start": round(t["total_s"] / f["with_process_start_s"], 2),
                    # (The floor ends with every socket adopted; the
                    # successor has made every connection read at READY.)
                    "ratio_ready_to_floor_with_start": round(
                        t["successor_ready_s"] / f["with_process_start_s"], 2
                    ),
                    "ratio_freeze_max_to_floor_transfer": round(
                        t["freeze_ms"]["max"] / 1000 / f["transfer_s"], 2
                    ),
                }
            )
    out = {
        "benchmark": "connections",
        "python": platform.python_version(),
        "bytecode": bytecode,
        "cpus": os.cpu_count(),
        "summary": summary(results),
        "results": results,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
