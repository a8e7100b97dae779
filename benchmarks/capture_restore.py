"""
Capture and restore cost per connection, in one process: N idle
connections of the benchmark's service (benchmarks/apps/idle.py, about 200
bytes of state each) are captured as the incumbent does and restored as
the successor does (C{restoreConnections}: decoding, making the objects,
building the transports), with wall-clock and CPU time for each, in each
form: C{graph}, in one message by the graph writer (C{captureConnections}:
walking and writing the graph, encoding it, freezing), and C{native}, in
batches of 256 in the native form, as a stream's batches
(C{captureNative}).

    PYTHONPATH=. python benchmarks/capture_restore.py [--connections 1000,10000,20000]
        [--forms graph,native] [--repeat R] [--json-out FILE]

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
from migrator.state._graph import collectorPaused  # noqa: E402
from migrator.state._nativewrite import captureNative  # noqa: E402
from migrator.state._owned import Owned  # noqa: E402
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


#: The batch size of C{--form native} (a stream's batches are a few
#: hundred connections).
_BATCH = 256


def _capture(incumbent: _Side, successor: _Side, form: str, kept: list[Any]) -> list[Any]:
    """
    Capture every connection: in one message by the graph writer, or in
    batches of L{_BATCH} in the native form, as a stream's batches.
    """
    key = frozenset({incumbent.key()})
    restorable = frozenset(successor.adapters.typeNames())
    if form == "graph":
        return [
            captureConnections(
                incumbent.reactor, incumbent.ports, incumbent.adapters, key, restorable
            )
        ]
    owned = Owned()
    batches = []
    for start in range(0, len(kept), _BATCH):
        batch = captureNative(
            incumbent.reactor, incumbent.ports, incumbent.adapters, key, restorable,
            None, None, kept[start : start + _BATCH], owned, {"batch": len(batches), "last": False},
        )
        if batch is None:
            raise RuntimeError("a batch is not for the native form")
        owned.add(batch.writer.written(), len(batches))
        batches.append(batch)
    return batches


def run(count: int, form: str = "graph") -> dict[str, Any]:
    incumbent, successor = _Side(), _Side()
    client = socket.create_connection(incumbent.port.socket.getsockname())
    shared, _ = incumbent.port.socket.accept()
    try:
        kept = _connections(incumbent, count, shared)
        gc.collect()
        # (The incumbent pauses the collector for the whole takeover, as
        # here: else each batch's end would let it run.)
        with collectorPaused():
            batches, captureWall, captureCPU = _timed(
                lambda: _capture(incumbent, successor, form, kept)
            )
        if sum(b.count for b in batches) != count:
            raise RuntimeError(f"captured {sum(b.count for b in batches)} of {count}")
        # (And the successor for the whole restore, from capture on.)
        with collectorPaused():
            restored, restoreWall, restoreCPU = _timed(
                lambda: [
                    restoreConnections(
                        successor.reactor,
                        successor.ports,
                        successor.adapters,
                        b.payload,
                        list(range(b.count)),
                        adoptSocket=lambda fd, family: shared,
                        closeFd=lambda fd: None,
                        native=True,
                    )
                    for b in batches
                ]
            )
        if sum(r.count for r in restored) != count or len(kept) != count:
            raise RuntimeError(f"restored {sum(r.count for r in restored)} of {count}")
        return {
            "connections": count,
            "form": form,
            "state_bytes": sum(len(b.payload) for b in batches),
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
    parser.add_argument(
        "--forms",
        default="graph,native",
        help="graph (the graph writer, one message), native (a stream's batches in the native form)",
    )
    parser.add_argument("--json-out")
    args = parser.parse_args()
    counts = [min(int(c), 200_000) for c in args.connections.split(",")]
    forms = [f for f in args.forms.split(",") if f in ("graph", "native")]
    repeat = max(1, min(args.repeat, 20))
    results = []
    for r in range(repeat):
        for count in counts:
            # (The forms alternate, so that both see the same moments.)
            for form in forms:
                result = run(count, form)
                result["run"] = r + 1
                result["load_average"] = [round(x, 2) for x in os.getloadavg()]
                results.append(result)
                print(json.dumps(result["per_connection_us"]), count, form, file=sys.stderr, flush=True)
                gc.collect()
    summary = []
    for count, form in [(c, f) for c in counts for f in forms]:
        runs = [
            r["per_connection_us"] for r in results if r["connections"] == count and r["form"] == form
        ]
        summary.append(
            {
                "connections": count,
                "form": form,
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
