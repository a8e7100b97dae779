# -*- test-case-name: tests.integration.test_demo -*-
"""
C{python -m migrator demo}: a live port takeover under load, narrated.

It starts C{twistd web} under C{twistd migrate} in a private temporary
directory, points the loopback load generator at it (a new connection for
every request), starts successors with C{--takeover} one after the other,
and prints what happened: pids, generations, how long accepting paused,
and what the load client saw.  It exits 0 only if no request failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, TextIO

from ._processes import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

_PAUSED = r"accepting was paused for (?P<ms>[\d.]+) ms"


def _status(control: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "migrator", "status", "--control", control, "--json"],
        capture_output=True,
        text=True,
        env=childEnvironment(),
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def runDemo(options: Any, out: TextIO) -> int:
    """
    Run the demo; see the module docstring.

    @return: the exit code.
    """
    takeovers = max(1, min(int(options["takeovers"]), 50))
    rate = max(1, min(int(options["rate"]), 5000))
    interval = max(0.0, min(float(options["interval"]), 60.0))
    started = time.monotonic()

    def say(text: str) -> None:
        out.write(f"[{time.monotonic() - started:5.1f}s] {text}\n")
        out.flush()

    work = tempfile.mkdtemp(prefix="migrator-demo-")
    os.chmod(work, 0o700)
    www = os.path.join(work, "www")
    os.mkdir(www)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("hello from a service that never stops\n")
    control = os.path.join(work, "ctl")
    service = ["web", "--listen", "tcp:0:interface=127.0.0.1", "--path", www]
    processes: list[ServiceProcess] = []
    out.write(
        "migrator demo: a twistd web server hands its listening port to new\n"
        "processes, one after the other, while a client keeps opening new\n"
        f"connections ({rate}/s).  Work directory: {work}\n\n"
    )
    try:
        incumbent = startMigrate(control, service, cwd=work, name="generation 0")
        processes.append(incumbent)
        ready = incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(r"Site starting on (\d+)", 10).group(1))
        say(
            f"generation 0 serves http://127.0.0.1:{port}/ "
            f"(pid {ready['pid']}, Python {ready['python']})"
        )
        say("  $ twistd " + " ".join(incumbent.argv[3:]))
        stopFile = os.path.join(work, "stop-load")
        records = os.path.join(work, "load.jsonl")
        load = ServiceProcess(
            [
                sys.executable,
                "-m",
                "migrator._loadgen",
                "--url",
                f"http://127.0.0.1:{port}/",
                "--rate",
                str(rate),
                "--duration",
                str(60 + takeovers * 30),
                "--stop-file",
                stopFile,
                "--records",
                records,
            ],
            env=childEnvironment(),
            name="load",
        )
        processes.append(load)
        load.waitFor("LOADGEN READY", 30)
        say(f"load client started: a new connection for every request, {rate}/s")

        for n in range(1, takeovers + 1):
            # Let the load run against each generation for a moment.
            time.sleep(interval)
            say(f"takeover {n}: starting a successor with --takeover ...")
            successor = startMigrate(
                control, service, takeover=True, cwd=work, name=f"generation {n}"
            )
            processes.append(successor)
            ready = successor.waitFor(READY, 60)
            paused = incumbent.waitFor(_PAUSED, 30)["ms"]
            incumbent.waitFor(HANDED_OFF, 30)
            code = incumbent.waitForExit(60)
            say(
                f"  generation {ready['generation']} serves (pid {ready['pid']}); "
                f"pid {incumbent.pid} stopped accepting for {paused} ms, "
                f"drained and exited with code {code}"
            )
            incumbent = successor

        with open(stopFile, "w"):
            pass
        load.waitForExit(60)
        summary = json.loads(load.lines[-1])
        status = _status(control)
        from ._cli import formatStatus

        out.write("\n$ python -m migrator status --control " + control + "\n")
        out.write(formatStatus(status) + "\n\n")
        failed = summary["requests"] - summary["ok"]
        out.write(
            f"load client: {summary['requests']} requests at "
            f"{summary['rate']:.0f}/s, {summary['ok']} ok, "
            f"{summary['refused']} refused, {summary['reset']} reset, "
            f"{summary['timeout']} timed out, {failed} failed in all; connect "
            f"latency p50 {summary['connect_latency']['p50']:.2f} ms, p99 "
            f"{summary['connect_latency']['p99']:.2f} ms, max "
            f"{summary['connect_latency']['max']:.2f} ms\n"
        )
        ok = failed == 0 and status["generation"] == takeovers
        out.write(
            ("RESULT: ok" if ok else "RESULT: FAILED")
            + f": {takeovers} takeover(s), {failed} failed request(s), "
            f"generation {status['generation']} serving as pid {status['pid']}\n"
        )
        return 0 if ok else 1
    except Exception as e:
        out.write(f"\nRESULT: FAILED: {e}\n")
        return 1
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)
