"""
TLS handoff benchmark: N idle HTTPS keep-alive connections of C{twistd web
--listen ssl:...} move from an incumbent to a successor (their TLS 1.3
sessions continued by migrator's record layer), next to N plain HTTP
keep-alive connections of the same service on C{tcp:}, in one run; and
what following TLS sessions costs the incumbent in bulk transfer, next to
not following them (in-process, over memory).

    PYTHONPATH=. python benchmarks/tls_handoff.py [--counts 100,1000] [--json-out FILE]

Prints one JSON object.  Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks.connections import COMMITTED, FREEZE, RESTORED  # noqa: E402
from migrator.testing import HANDED_OFF, READY, startMigrate  # noqa: E402
from tests._tlshelpers import Session, writeCertificate  # noqa: E402

HOLDER = os.path.join(HERE, "apps", "keepalive_holder.py")
# As connections.py's FROZE, with the count of connections that stay.
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) \((?P<size>\d+) bytes of state, "
    r"(?P<pending>\d+) unsent bytes, captured in (?P<ms>[\d.]+) ms\); (?P<staying>\d+) stay"
)
LISTENING = re.compile(r"starting on (?P<port>\d+)")


def _holder(port: int, count: int, tls: bool) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, HOLDER, str(port), str(count)] + (["--tls"] if tls else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "HOLDER READY" not in line:
        process.kill()
        raise RuntimeError(f"holder did not start: {line!r}")
    return process


def _check(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("check\n")
    process.stdin.flush()
    result: dict[str, Any] = json.loads(process.stdout.readline())
    return result


def handoff(count: int, tls: bool, work: str) -> dict[str, Any]:
    """
    One takeover of C{count} idle keep-alive connections.
    """
    kind = "https" if tls else "http"
    control = os.path.join(work, f"ctl-{kind}-{count}")
    if tls:
        key, cert = writeCertificate(work)
        listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    else:
        listen = "tcp:0:interface=127.0.0.1"
    service = ["web", "--listen", listen, "--class", "tests.integration.apps.webpid.PidResource"]
    options = ["--drain-timeout", "60"]
    incumbent = startMigrate(control, service, migrateOptions=options, cwd=ROOT)
    successor = None
    held = None
    try:
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(LISTENING, 30)["port"])
        opened = time.monotonic()
        held = _holder(port, count, tls)
        openSeconds = time.monotonic() - opened
        started = time.monotonic()
        successor = startMigrate(control, service, takeover=True, migrateOptions=options, cwd=ROOT)
        successor.waitFor(READY, 120)
        incumbent.waitFor(HANDED_OFF, 60)
        code = incumbent.waitForExit(120)
        total = time.monotonic() - started
        freeze = successor.waitFor(FREEZE, 10)
        froze = incumbent.waitFor(FROZE, 10)
        restored = successor.waitFor(RESTORED, 10)
        committed = incumbent.waitFor(COMMITTED, 10)
        after = _check(held)
        capture, restore = float(froze["ms"]), float(restored["ms"])
        protocol = float(committed["ms"])
        return {
            "connections": count,
            "moved": int(froze["count"]),
            "staying": int(froze["staying"]),
            "open_and_first_request_s": round(openSeconds, 3),
            "takeover_total_s": round(total, 3),
            "incumbent_exit_code": code,
            "protocol_ms": protocol,
            "moved_per_s_protocol": round(count / (protocol / 1000), 1) if protocol else None,
            "capture_ms": capture,
            "restore_ms": restore,
            "capture_restore_us_per_connection": round((capture + restore) * 1000 / count, 1),
            "freeze_ms": {k: float(v) for k, v in freeze.groupdict().items()},
            "state_bytes": int(froze["size"]),
            "state_bytes_per_connection": round(int(froze["size"]) / count),
            "answers_after": after["answers"],
            "errors_after": after["errors"],
            "answered_by_successor": after["pids"].get(str(successor.pid), 0),
            "versions_after": after["versions"],
        }
    finally:
        if held is not None:
            held.kill()
            held.wait()
        for p in (successor, incumbent):
            if p is not None:
                p.stop()


def _bulk(follow: bool, megabytes: int) -> dict[str, float]:
    """
    C{megabytes} from server to client, then from client to server, over
    one TLS 1.3 session through memory: Twisted's TLS transport over
    OpenSSL, its sessions followed by migrator or not.
    """
    session = Session(follow=follow)
    session.handshake()
    chunk = b"x" * 2**14
    rounds = megabytes * 64
    started = time.perf_counter()
    for _ in range(rounds):
        session.server.write(chunk)
        session.clock.advance(0)
        session.client.bio_write(session.tcp.take())
        session.readClient()
    out = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(rounds):
        session.server.dataReceived(session.clientSends(chunk))
    into = time.perf_counter() - started
    return {"server_to_client_mb_s": round(megabytes / out, 1), "client_to_server_mb_s": round(megabytes / into, 1)}


def followCost(megabytes: int) -> dict[str, Any]:
    """
    Bulk throughput with and without following (best of five each,
    interleaved).
    """
    runs: dict[str, list[dict[str, float]]] = {"followed": [], "not_followed": []}
    for _ in range(5):
        runs["not_followed"].append(_bulk(False, megabytes))
        runs["followed"].append(_bulk(True, megabytes))
    best = {
        mode: {key: max(r[key] for r in results) for key in results[0]} for mode, results in runs.items()
    }
    return {
        "megabytes_each_way": megabytes,
        **best,
        "followed_over_not": {
            key: round(best["followed"][key] / best["not_followed"][key], 2) for key in best["followed"]
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="100,1000")
    parser.add_argument("--bulk-mb", type=int, default=32)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    counts = [min(int(c), 5000) for c in args.counts.split(",")]
    work = tempfile.mkdtemp(prefix="migrator-tlsbench-")
    os.chmod(work, 0o700)
    results = []
    for count in counts:
        https = handoff(count, True, work)
        http = handoff(count, False, work)
        results.append(
            {
                "connections": count,
                "https": https,
                "http": http,
                "ratio_https_to_http_capture_restore": round(
                    https["capture_restore_us_per_connection"] / http["capture_restore_us_per_connection"], 2
                ),
                "ratio_https_to_http_freeze_p50": round(
                    https["freeze_ms"]["p50"] / http["freeze_ms"]["p50"], 2
                ),
            }
        )
    out = {
        "benchmark": "tls_handoff",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
        "follow_cost": followCost(args.bulk_mb),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
