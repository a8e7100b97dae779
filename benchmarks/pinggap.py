"""
Responsiveness during a takeover: N idle connections of the benchmark's
service (benchmarks/apps/idle.tac) move to a successor while a few
clients ping every millisecond on connections that move too, and new
connections are opened every few milliseconds (benchmarks/apps/pinger.py).
Optionally one connection carries a very large state (C{--big}).

    PYTHONPATH=. python benchmarks/pinggap.py [--connections 10000] [--pingers 8]
        [--newcomer-interval-ms 10] [--big list:100000000] [--repeat R] [--json-out FILE]

Per run, for the phases C{steady} (before the takeover: the floor, the
same clients on the same machine with nothing moving), C{takeover} (from
starting the successor's command to the incumbent's exit) and C{after}:
the reply gaps of the pinging clients (p50/p99/max, and the p99 and max
over clients of each one's longest gap) and the newcomers' latencies
(connect to first reply).  Beside them: the longest reactor turns the
incumbent and the successor logged during the takeover (a LoopingCall
probe every millisecond in the service, C{IDLE_PROBE}), the freeze
(p50/p99/max, the successor's measure), capture and restore times, the
state's size and both processes' peak resident memory.  Prints one JSON
object.  Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from itertools import count as _counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks._bytecode import compileCheckout  # noqa: E402
from benchmarks.connections import (  # noqa: E402
    COMMITTED,
    FREEZE,
    FROZE,
    RESTORED,
    holder,
    maxConnections,
    peakRSS,
)
from migrator.testing import HANDED_OFF, READY, startMigrate  # noqa: E402

TAC = os.path.join(HERE, "apps", "idle.tac")
PINGER = os.path.join(HERE, "apps", "pinger.py")
STREAMED = re.compile(
    r"streamed in (?P<batches>\d+) batch\(es\)(?: \((?P<native>\d+) in the native form\))? "
    r"over (?P<span>[\d.]+) ms, the last one "
    r"(?P<last>[\d.]+) ms after accepting stopped(?: \((?P<again>\d+) batch\(es\) sent again)?"
)
PROBE = re.compile(r"PROBE turn (?P<ms>[\d.]+) ms at (?P<at>[\d.]+)")
_serial = _counter(1)


class PeakWatcher:
    """
    Reads a process's peak resident memory (C{VmHWM}) every 20 ms until
    it exits, keeping the last value read.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            value = peakRSS(self.pid)
            if value is None:
                return
            self.peak = value

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join(2)
        return round(self.peak / 2**20, 1) if self.peak else None


def currentRSS(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def probeTurns(lines: list[str], start: float, end: float) -> dict:
    turns = [float(m["ms"]) for m in map(PROBE.search, lines) if m and start <= float(m["at"]) <= end]
    return {"over_5ms": len(turns), "max_ms": max(turns) if turns else None}


def big(port: int, spec: str) -> tuple[socket.socket, float]:
    """
    Open the connection with the large state.

    @return: it, and how long the service took to build the state.
    """
    kind, size = spec.split(":")
    s = socket.create_connection(("127.0.0.1", port), timeout=300)
    started = time.monotonic()
    s.sendall(b"big %s %d\r\n" % (kind.encode(), int(size)))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("the big connection closed")
        reply += chunk
    if not reply.startswith(b"big "):
        raise RuntimeError(f"unexpected reply {reply!r}")
    return s, time.monotonic() - started


def progress(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, work: str) -> dict:
    control = os.path.join(work, f"ctl-{next(_serial)}")
    options = ["--adapters", "benchmarks.apps.idle", "--drain-timeout", "120"]
    env = {"IDLE_PROBE": "1"}
    incumbent = startMigrate(control, ["--tac", TAC], migrateOptions=options, cwd=ROOT, env=env)
    successor = held = pinger = bigConnection = None
    try:
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(r"IdleFactory starting on (\d+)", 10).group(1))
        held = holder(port, args.connections)
        progress(f"{args.connections} connections held")
        built = None
        if args.big:
            bigConnection, built = big(port, args.big)
        pinger = subprocess.Popen(
            [sys.executable, PINGER, str(port), str(args.pingers), str(args.newcomer_interval_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )

        def command(line: str) -> None:
            pinger.stdin.write(line + "\n")
            pinger.stdin.flush()

        if "PINGER READY" not in pinger.stdout.readline():
            raise RuntimeError("the pinger did not start")
        progress("pinging")
        command("phase steady")
        command("newcomers on")
        time.sleep(args.steady)
        before = currentRSS(incumbent.pid)
        command("phase takeover")
        started = time.time()
        clock = time.monotonic()
        # (Its exit is noted by a thread of its own: see connections.py.)
        incumbent.watchExit()
        successor = startMigrate(control, ["--tac", TAC], takeover=True, migrateOptions=options, cwd=ROOT, env=env)
        watchers = [PeakWatcher(incumbent.pid), PeakWatcher(successor.pid)]
        successor.waitFor(READY, 300)
        progress("successor ready")
        incumbent.waitFor(HANDED_OFF, 300)
        code = incumbent.waitForExit(300)
        progress("incumbent exited")
        total = (incumbent.exitedAt or time.monotonic()) - clock
        ended = time.time()
        command("phase after")
        time.sleep(args.after)
        command("newcomers off")
        command("report")
        phases = json.loads(pinger.stdout.readline())
        incumbentRSS, successorRSS = (w.stop() for w in watchers)
        freeze = successor.waitFor(FREEZE, 10)
        froze = incumbent.waitFor(FROZE, 10)
        restored = successor.waitFor(RESTORED, 10)
        committed = incumbent.waitFor(COMMITTED, 10)
        streamed = incumbent.waitFor(STREAMED, 10)
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for name, process in (("incumbent", incumbent), ("successor", successor)):
                with open(os.path.join(args.logs, f"{os.path.basename(control)}-{name}.log"), "w") as f:
                    f.write("\n".join(process.lines) + "\n")
        return {
            "connections": args.connections,
            "pingers": args.pingers,
            "big": args.big,
            "big_built_s": round(built, 3) if built is not None else None,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "total_s": round(total, 3),
            "incumbent_exit_code": code,
            "phases": {k: phases[k] for k in ("steady", "takeover", "after") if k in phases},
            "incumbent_longest_turn": probeTurns(incumbent.lines, started, ended),
            "successor_longest_turn": probeTurns(successor.lines, started, ended),
            "freeze_ms": {k: float(v) for k, v in freeze.groupdict().items()},
            "capture_ms": float(froze["ms"]),
            "batches": int(streamed["batches"]),
            "batches_native": int(streamed["native"] or 0),
            "batches_sent_again": int(streamed["again"] or 0),
            "stream_ms": float(streamed["span"]),
            "last_batch_ms": float(streamed["last"]),
            "state_bytes": int(froze["size"]),
            "restore_ms": float(restored["ms"]),
            "protocol_ms": float(committed["ms"]),
            "incumbent_rss_before_mb": before,
            "incumbent_peak_rss_mb": incumbentRSS,
            "successor_peak_rss_mb": successorRSS,
        }
    finally:
        if pinger is not None:
            pinger.kill()
            pinger.wait()
        if bigConnection is not None:
            bigConnection.close()
        if held is not None:
            held.kill()
            held.wait()
        for p in (successor, incumbent):
            if p is not None:
                p.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--pingers", type=int, default=8)
    parser.add_argument("--newcomer-interval-ms", type=float, default=10.0)
    parser.add_argument("--big", help="KIND:BYTES, KIND one of bytes, list, dicts (see apps/idle.py)")
    parser.add_argument("--steady", type=float, default=2.0, help="seconds measured before the takeover")
    parser.add_argument("--after", type=float, default=1.0, help="seconds measured after it")
    parser.add_argument("--repeat", type=int, default=1, help="runs (at most 10)")
    parser.add_argument("--json-out")
    parser.add_argument("--logs", help="write each run's incumbent and successor logs in this directory")
    args = parser.parse_args()
    args.connections = min(args.connections, maxConnections() - args.pingers - 200)
    args.steady = min(max(args.steady, 0.1), 30.0)
    args.after = min(max(args.after, 0.1), 30.0)
    bytecode = compileCheckout()
    work = tempfile.mkdtemp(prefix="migrator-pinggap-")
    os.chmod(work, 0o700)
    runs = []
    for r in range(max(1, min(args.repeat, 10))):
        print(f"run {r + 1}", file=sys.stderr, flush=True)
        runs.append(run(args, work))
    out = {
        "benchmark": "pinggap",
        "python": platform.python_version(),
        "bytecode": bytecode,
        "cpus": os.cpu_count(),
        "runs": runs,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
