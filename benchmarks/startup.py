"""
What a successor imports before it takes over, and what that costs: one
real takeover of the benchmark's idle service (benchmarks/apps/idle.tac,
a few connections), with the successor's imports timed by Python
(C{PYTHONPROFILEIMPORTTIME}); beside it, in the same run, the floor of a
Python start and of a Python start importing the reactor.

    PYTHONPATH=. python benchmarks/startup.py [--repeat R] [--json-out FILE]

Prints one JSON object: per run, the successor's total import time (the
sum of every module's own time, in ms) up to its READY line, the share of
some groups of modules (TLS: OpenSSL, cryptography, service_identity,
twisted.protocols.tls, twisted.internet._sslverify; http.cookiejar;
twisted.web; twisted.conch; twisted.words; twisted.protocols.ftp;
migrator itself; everything else), the wall time from the command's start
to READY, and the ranges over the runs.  Loopback only; every wait is
bounded.

Bytecode is cached (in a directory of the run, C{PYTHONPYCACHEPREFIX}, even
if C{PYTHONDONTWRITEBYTECODE} is set here), and a first takeover that is
not counted fills the cache: as an installed package would start.
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
from itertools import count as _counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from migrator.testing import HANDED_OFF, READY, childEnvironment, startMigrate  # noqa: E402

TAC = os.path.join(HERE, "apps", "idle.tac")
HOLDER = os.path.join(HERE, "apps", "holder.py")
IMPORT = re.compile(r"import time:\s+(?P<self>\d+)\s+\|\s+(?P<cumulative>\d+)\s+\|(?P<indent>\s*)(?P<name>\S+)")

#: Groups of modules, by name prefix (the first that matches counts).
GROUPS = [
    ("tls", ("OpenSSL", "cryptography", "service_identity", "twisted.protocols.tls",
             "twisted.internet._sslverify", "twisted.internet._newtls", "twisted.internet.ssl",
             "_cffi_backend", "idna")),
    ("http.cookiejar", ("http.cookiejar",)),
    ("twisted.web", ("twisted.web",)),
    ("twisted.conch", ("twisted.conch",)),
    ("twisted.words", ("twisted.words",)),
    ("twisted.protocols.ftp", ("twisted.protocols.ftp",)),
    ("migrator", ("migrator",)),
]

_serial = _counter(1)


def group(name: str) -> str:
    for label, prefixes in GROUPS:
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return label
    return "other"


def importTimes(lines: list[str]) -> dict:
    """
    The sum of the modules' own import times (ms), in all and per group,
    and the modules of each group.
    """
    total = 0
    groups: dict[str, int] = {label: 0 for label, _ in GROUPS}
    groups["other"] = 0
    names: dict[str, list[str]] = {}
    for line in lines:
        match = IMPORT.search(line)
        if match is None:
            continue
        own = int(match["self"])
        total += own
        label = group(match["name"])
        groups[label] += own
        if label not in ("other", "migrator") and len(match["indent"]) <= 1 + 2 * 12:
            names.setdefault(label, []).append(match["name"])
    return {
        "total_ms": round(total / 1000, 1),
        "groups_ms": {k: round(v / 1000, 1) for k, v in groups.items()},
        "modules": {k: len(v) for k, v in names.items()},
    }


def bytecode(work: str) -> dict[str, str]:
    """
    The environment for cached bytecode, in C{work}.
    """
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": os.path.join(work, "pycache")}


def floor(code: str, work: str) -> float:
    """
    Seconds to run C{python -c code} (the interpreter's start included).
    """
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=childEnvironment(bytecode(work)), cwd=ROOT
    )
    return time.monotonic() - started


def takeover(work: str) -> dict:
    control = os.path.join(work, f"ctl-{next(_serial)}")
    options = ["--adapters", "benchmarks.apps.idle", "--drain-timeout", "60"]
    incumbent = startMigrate(
        control, ["--tac", TAC], migrateOptions=options, cwd=ROOT, env=bytecode(work)
    )
    successor = None
    held = None
    try:
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(r"IdleFactory starting on (\d+)", 10).group(1))
        held = subprocess.Popen(
            [sys.executable, HOLDER, str(port), "10"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        if "HOLDER READY" not in held.stdout.readline():
            raise RuntimeError("the client did not connect")
        started = time.monotonic()
        successor = startMigrate(
            control, ["--tac", TAC], takeover=True, migrateOptions=options, cwd=ROOT,
            env={"PYTHONPROFILEIMPORTTIME": "1", **bytecode(work)},
        )
        successor.waitFor(READY, 120)
        ready = time.monotonic() - started
        incumbent.waitFor(HANDED_OFF, 60)
        lines = successor.lines
        index = next(i for i, line in enumerate(lines) if re.search(READY, line))
        result = importTimes(lines[:index])
        result["command_to_ready_s"] = round(ready, 3)
        return result
    finally:
        if held is not None:
            held.kill()
            held.wait()
        for p in (successor, incumbent):
            if p is not None:
                p.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs (at most 10)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="migrator-startup-")
    os.chmod(work, 0o700)
    runs = []
    takeover(work)  # fills the bytecode cache
    for r in range(max(1, min(args.repeat, 10))):
        print(f"run {r + 1}", file=sys.stderr, flush=True)
        result = takeover(work)
        result["floor_python_s"] = round(floor("pass", work), 3)
        result["floor_python_reactor_s"] = round(
            floor("from twisted.internet import reactor", work), 3
        )
        result["load_average"] = [round(x, 2) for x in os.getloadavg()]
        runs.append(result)

    def span(get):
        values = [get(r) for r in runs]
        return [min(values), max(values)]

    summary = {
        "successor_imports_ms": span(lambda r: r["total_ms"]),
        "groups_ms": {k: span(lambda r, k=k: r["groups_ms"][k]) for k in runs[0]["groups_ms"]},
        "command_to_ready_s": span(lambda r: r["command_to_ready_s"]),
        "floor_python_s": span(lambda r: r["floor_python_s"]),
        "floor_python_reactor_s": span(lambda r: r["floor_python_reactor_s"]),
    }
    out = {
        "benchmark": "startup",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "summary": summary,
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
