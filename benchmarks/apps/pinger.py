"""
Clients that ping the idle service every millisecond and time the replies
(stdlib only):

    python pinger.py PORT PINGERS NEWCOMER_INTERVAL_MS

PINGERS connections each send C{ping} as soon as the previous C{pong}
arrived and at least 1 ms after the previous ping; the time between two
consecutive replies on a connection is a I{gap}.  While newcomers are on,
a new connection is opened every NEWCOMER_INTERVAL_MS ms, sends one
C{ping}, and the time from starting to connect to its C{pong} is its
I{latency} (then it is closed).

Prints C{PINGER READY} once every pinger has had a reply.  Reads commands
from stdin, one per line:

  - C{phase NAME}: gaps and latencies from now on count in phase NAME;
  - C{newcomers on|off};
  - C{report}: prints one JSON line, per phase: the gaps (ms: count, p50,
    p99, max), each pinger's longest gap (p50, p99 over pingers, max),
    the newcomers' latencies (count, p50, p99, max, failed), the pids that
    answered;
  - C{quit} (or end of input): exits.

Every wait is bounded: a connection that gets no reply for 30 s counts
as failed.
"""

import json
import os
import selectors
import socket
import sys
import time

TIMEOUT = 30.0


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 3)


class Phase:
    def __init__(self, pingers):
        self.gaps = []
        self.longest = [0.0] * pingers
        self.latencies = []
        self.failed = 0
        self.pids = {}

    def report(self):
        return {
            "gaps_ms": {
                "count": len(self.gaps),
                "p50": percentile(self.gaps, 0.5),
                "p99": percentile(self.gaps, 0.99),
                "max": round(max(self.gaps), 3) if self.gaps else None,
            },
            "longest_gap_per_pinger_ms": {
                "p50": percentile(self.longest, 0.5),
                "p99": percentile(self.longest, 0.99),
                "max": round(max(self.longest), 3) if self.longest else None,
            },
            "newcomers_ms": {
                "count": len(self.latencies),
                "p50": percentile(self.latencies, 0.5),
                "p99": percentile(self.latencies, 0.99),
                "max": round(max(self.latencies), 3) if self.latencies else None,
                "failed": self.failed,
            },
            "pids": self.pids,
        }


def main():
    port, count, interval = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
    sel = selectors.DefaultSelector()
    pingers = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        s.setblocking(False)
        state = {"kind": "pinger", "i": i, "buf": b"", "sent": 0.0, "reply": None, "waiting": False}
        pingers.append((s, state))
        sel.register(s, selectors.EVENT_READ, state)
    sel.register(sys.stdin, selectors.EVENT_READ, {"kind": "stdin"})
    phases = {"start": Phase(count)}
    phase = phases["start"]
    newcomers = False
    nextNewcomer = 0.0
    pending = {}
    ready = False
    commands = b""
    while True:
        now = time.monotonic()
        for s, state in pingers:
            if not state["waiting"] and now - state["sent"] >= 0.001:
                try:
                    s.send(b"ping\r\n")
                except OSError:
                    continue
                state["sent"], state["waiting"] = now, True
        if newcomers and now >= nextNewcomer:
            nextNewcomer = now + interval
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            cstate = {"kind": "newcomer", "buf": b"", "started": now, "sentPing": False}
            pending[c] = cstate
            sel.register(c, selectors.EVENT_READ | selectors.EVENT_WRITE, cstate)
        for c, cstate in list(pending.items()):
            if now - cstate["started"] > TIMEOUT:
                phase.failed += 1
                sel.unregister(c)
                c.close()
                del pending[c]
        if not ready and all(state["reply"] is not None for _, state in pingers):
            ready = True
            print("PINGER READY", flush=True)
        for key, events in sel.select(0.0005):
            state = key.data
            now = time.monotonic()
            if state["kind"] == "stdin":
                # Raw reads: several commands may arrive in one.
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    return
                commands += data
                while b"\n" in commands:
                    line, commands = commands.split(b"\n", 1)
                    words = line.decode().split()
                    if not words or words[0] == "quit":
                        return
                    if words[0] == "phase":
                        phase = phases.setdefault(words[1], Phase(count))
                    elif words[0] == "newcomers":
                        newcomers = words[1] == "on"
                        nextNewcomer = now
                    elif words[0] == "report":
                        print(json.dumps({k: v.report() for k, v in phases.items()}), flush=True)
                continue
            s = key.fileobj
            if state["kind"] == "newcomer" and events & selectors.EVENT_WRITE and not state["sentPing"]:
                try:
                    s.send(b"ping\r\n")
                except OSError:
                    phase.failed += 1
                    sel.unregister(s)
                    s.close()
                    pending.pop(s, None)
                    continue
                state["sentPing"] = True
                sel.modify(s, selectors.EVENT_READ, state)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                if state["kind"] == "newcomer":
                    phase.failed += 1
                    pending.pop(s, None)
                else:
                    print(json.dumps({"error": "a pinger was disconnected"}), flush=True)
                    return
                continue
            state["buf"] += data
            while b"\r\n" in state["buf"]:
                line, state["buf"] = state["buf"].split(b"\r\n", 1)
                pid = line.split()[1].decode() if line.startswith(b"pong ") else "?"
                phase.pids[pid] = phase.pids.get(pid, 0) + 1
                if state["kind"] == "newcomer":
                    phase.latencies.append((now - state["started"]) * 1000)
                    sel.unregister(s)
                    s.close()
                    pending.pop(s, None)
                    break
                if state["reply"] is not None:
                    gap = (now - state["reply"]) * 1000
                    phase.gaps.append(gap)
                    if gap > phase.longest[state["i"]]:
                        phase.longest[state["i"]] = gap
                state["reply"], state["waiting"] = now, False


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
