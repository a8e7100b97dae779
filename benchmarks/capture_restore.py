"""
Capture and restore cost per connection, in one process: N idle
connections of the benchmark's service (benchmarks/apps/idle.py, about 200
bytes of state each) are captured as the incumbent does
(C{captureConnections}: walking and writing the graph, encoding it,
freezing) and restored as the successor does (C{restoreConnections}:
decoding, reading the graph, building the transports), with wall-clock and
CPU time for each.

    PYTHONPATH=. python benchmarks/capture_restore.py [--connections 1000,10000,20000]
        [--repeat R] [--json-out FILE]

No process start, no descriptor passing, no event loop: what is measured
is what grows with the number of connections on each side.  So that N can
exceed the open-file limit, the N transports share one real loopback TCP
socket (every per-connection system call still happens on it), and the
successor's transports are built on that socket again (the descriptor
numbers handed to the restore are placeholders, nothing is closed).

Prints one JSON object: every run, and per size the range (min-max over the
runs) of the microseconds per connection.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import tcp  # noqa: E402
from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from benchmarks.apps.idle import IdleFactory, IdleLine, registerAdapters  # noqa: E402
from migrator.state._capture import captureConnections  # noqa: E402
from migrator.state._registry import AdapterRegistry  # noqa: E402
from migrator.state._restore import restoreConnections  # noqa: E402
from migrator.takeover._ports import ListenerRegistry  # noqa: E402


class _Reactor(MemoryReactorClock):
    """
    Fake fd sets and clock; C{listenTCP} makes a real listening port.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = tcp.Port(port, factory, backlog, interface, self)
        listening.startListening()
        return listening


class _Side:
    """
    One process's reactor, port registry (with the service's port) and
    adapters.
    """

    def __init__(self) -> None:
        self.reactor = _Reactor()
        self.ports = ListenerRegistry(self.reactor)
        self.ports.install()
        self.factory = IdleFactory()
        self.port = self.reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.adapters = AdapterRegistry()
        registerAdapters(self.adapters)

    def key(self) -> str:
        [tracked] = self.ports.listening()
        return tracked.key

    def close(self) -> None:
        self.port.socket.close()


def _connections(side: _Side, count: int, shared: socket.socket) -> list[Any]:
    kept = []
    for i in range(count):
        protocol = IdleLine()
        protocol.factory = side.factory
        t = tcp.Server(shared, protocol, ("127.0.0.1", 1024 + i % 60000), side.port, i, side.reactor)
        protocol.makeConnection(t)
        side.ports.trackConnection(t)
        kept.append(t)
    return kept


def _timed(f: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = f()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run(count: int) -> dict[str, Any]:
    incumbent, successor = _Side(), _Side()
    client = socket.create_connection(incumbent.port.socket.getsockname())
    shared, _ = incumbent.port.socket.accept()
    try:
        kept = _connections(incumbent, count, shared)
        gc.collect()
        key = incumbent.key()
        captured, captureWall, captureCPU = _timed(
            lambda: captureConnections(
                incumbent.reactor,
                incumbent.ports,
                incumbent.adapters,
                frozenset({key}),
                frozenset(successor.adapters.typeNames()),
            )
        )
        if captured.count != count:
            raise RuntimeError(f"captured {captured.count} of {count}")
        restored, restoreWall, restoreCPU = _timed(
            lambda: restoreConnections(
                successor.reactor,
                successor.ports,
                successor.adapters,
                captured.payload,
                list(range(count)),
                adoptSocket=lambda fd, family: shared,
                closeFd=lambda fd: None,
            )
        )
        if restored.count != count or len(kept) != count:
            raise RuntimeError(f"restored {restored.count} of {count}")
        return {
            "connections": count,
            "state_bytes": len(captured.payload),
            "capture_ms": {"wall": round(captureWall * 1000, 1), "cpu": round(captureCPU * 1000, 1)},
            "restore_ms": {"wall": round(restoreWall * 1000, 1), "cpu": round(restoreCPU * 1000, 1)},
            "per_connection_us": {
                "capture_wall": round(captureWall * 1e6 / count, 1),
                "capture_cpu": round(captureCPU * 1e6 / count, 1),
                "restore_wall": round(restoreWall * 1e6 / count, 1),
                "restore_cpu": round(restoreCPU * 1e6 / count, 1),
            },
        }
    finally:
        client.close()
        shared.close()
        incumbent.close()
        successor.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="1000,10000,20000")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (at most 20)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    counts = [min(int(c), 200_000) for c in args.connections.split(",")]
    repeat = max(1, min(args.repeat, 20))
    results = []
    for r in range(repeat):
        for count in counts:
            result = run(count)
            result["run"] = r + 1
            result["load_average"] = [round(x, 2) for x in os.getloadavg()]
            results.append(result)
            print(json.dumps(result["per_connection_us"]), count, file=sys.stderr, flush=True)
            gc.collect()
    summary = []
    for count in counts:
        runs = [r["per_connection_us"] for r in results if r["connections"] == count]
        summary.append(
            {
                "connections": count,
                "runs": len(runs),
                **{
                    f"{k}_us_per_connection": [min(r[k] for r in runs), max(r[k] for r in runs)]
                    for k in ("capture_wall", "capture_cpu", "restore_wall", "restore_cpu")
                },
            }
        )
    out = {
        "benchmark": "capture_restore",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "summary": summary,
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
