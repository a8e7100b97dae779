# -*- test-case-name: tests.integration.test_demo -*-
"""
C{python -m migrator demo}: the talk's demonstration, live.

C{twistd manhole} (a Python prompt reachable by telnet) runs under
C{twistd migrate} in a private temporary directory, with a generated
password.  A telnet session is driven through a pseudo-terminal (the real
C{telnet} program when there is one, else a fallback speaking telnet from
Python, and the transcript says which, see L{migrator.demo._telnetdriver}): it
logs in, imports, defines a function and a class, makes an instance,
shows its pid and Python version, and types half a line.  Then a
successor takes over, on a second Python interpreter when one is found
and can run it (see L{migrator.demo._interpreters}; else a second process
of the same one, and the transcript says so), and
the same session, without reconnecting or logging in again, finishes the
line and shows the new pid and version with every name intact.  It exits
0 only if every check held.

C{demo --interactive} starts the service and tells you how to telnet in
and how to take over by hand.

C{demo --load} is the older demonstration: C{twistd web} hands its
listening port to new processes one after the other, while a client keeps
opening new connections; it exits 0 only if no request failed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, TextIO

from migrator.demo._interpreters import UnusablePython, findSecondPython
from migrator.demo._loadgen import command as loadgenCommand
from migrator.demo._processes import (
    HANDED_OFF,
    READY,
    ServiceProcess,
    childEnvironment,
    projectRoot,
    startMigrate,
    twistdCommand,
)
from migrator.demo._telnetdriver import connect

_PAUSED = r"accepting was paused for (?P<ms>[\d.]+) ms"
#: Logged when the manhole's telnet port listens.
_TELNET_PORT = re.compile(r"ServerFactory starting on (?P<port>\d+)")
#: What C{os.getpid(), sys.version} shows.
_PID_VERSION = re.compile(r"\((\d+), '(([0-9.]+)[^']*)'\)")
#: The takeover's log lines worth showing, from either process.
_TAKEOVER_LOG = re.compile(
    r"migrate|takeover|handed off|froze|adopt|drain|connection\(s\)|restored|moved"
)
_USER = "admin"
#: How long a predecessor may drain what stayed with it.
_DRAIN = ["--drain-timeout", "30"]


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


def _manhole(passwd: str) -> list[str]:
    return ["manhole", "--telnetPort", "tcp:0:interface=127.0.0.1", "--passwd", passwd]


def _handCommand(control: str, service: list[str], python: str | None) -> str:
    """
    The shell command an operator types to take over by hand.
    """
    interpreter = python or sys.executable
    argv = twistdCommand(control, service, takeover=True, python=interpreter)
    twistd = os.path.join(os.path.dirname(interpreter), "twistd")
    if os.access(twistd, os.X_OK):
        argv = [twistd] + argv[3:]
    command = " ".join(shlex.quote(a) for a in argv)
    if projectRoot():
        # Run from a checkout: the successor needs it on its path too.
        paths = childEnvironment()["PYTHONPATH"].split(os.pathsep)
        unique = os.pathsep.join(dict.fromkeys(p for p in paths if p))
        command = f"PYTHONPATH={shlex.quote(unique)} {command}"
    return command


class _Narrator:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._started = time.monotonic()

    def say(self, text: str = "") -> None:
        self._out.write(f"[{time.monotonic() - self._started:5.1f}s] {text}\n" if text else "\n")
        self._out.flush()

    def block(self, lines: list[str], prefix: str) -> None:
        for line in lines:
            self._out.write(f"{prefix}{line}\n")
        self._out.flush()


def runDemo(options: Any, out: TextIO) -> int:
    """
    Run the demo chosen by C{options}; see the module docstring.

    @return: the exit code.
    """
    if options["load"]:
        return runLoadDemo(options, out)
    return runManholeDemo(options, out)


def runManholeDemo(options: Any, out: TextIO) -> int:
    """
    The talk's demonstration (or, with C{--interactive}, its set-up); see
    the module docstring.

    @return: the exit code.
    """
    try:
        # Checked before anything is announced or started.
        second = findSecondPython(options["python"], childEnvironment())
    except UnusablePython as e:
        out.write(f"python -m migrator demo: {e}\n")
        return 2
    other, otherVersion, found = second.path, second.version, second.found
    narrator = _Narrator(out)
    say = narrator.say
    work = tempfile.mkdtemp(prefix="migrator-demo-")
    os.chmod(work, 0o700)
    control = os.path.join(work, "ctl")
    passwd = os.path.join(work, "users")
    password = secrets.token_urlsafe(9)
    with open(passwd, "w") as f:
        f.write(f"{_USER}:{password}\n")
    os.chmod(passwd, 0o600)
    service = _manhole(passwd)
    processes: list[ServiceProcess] = []
    keepWork = False
    out.write(
        "migrator demo: a Python prompt served by telnet (twistd manhole) moves to a\n"
        "new process, on another Python when there is one, while a telnet session\n"
        "goes on typing in it.  No reconnection, no second login.\n"
        f"Work directory: {work}\n\n"
    )
    try:
        say(found)
        incumbent = startMigrate(
            control,
            service,
            migrateOptions=_DRAIN,
            cwd=work,
            name="generation 0",
        )
        processes.append(incumbent)
        ready = incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(_TELNET_PORT, 10)["port"])
        say(
            f"generation 0: telnet manhole on 127.0.0.1:{port} "
            f"(pid {ready['pid']}, Python {ready['python']})"
        )
        say("  $ twistd " + " ".join(shlex.quote(a) for a in incumbent.argv[3:]))
        if options["interactive"]:
            keepWork = _interactive(narrator, incumbent, port, password, control, service, other)
            return 0
        return _scripted(
            narrator, processes, incumbent, port, password, control, service, other, otherVersion
        )
    except Exception as e:
        out.write(f"\nRESULT: FAILED: {e}\n")
        return 1
    finally:
        for process in reversed(processes):
            process.stop()
        if not keepWork:
            shutil.rmtree(work, ignore_errors=True)


def _scripted(
    narrator: _Narrator,
    processes: list[ServiceProcess],
    incumbent: ServiceProcess,
    port: int,
    password: str,
    control: str,
    service: list[str],
    other: str | None,
    otherVersion: str,
) -> int:
    say = narrator.say
    checks: list[tuple[str, bool]] = []
    session = connect(port)
    try:
        say(session.label)
        if session.label.startswith("telnet client: FALLBACK"):
            say("  (install Debian's telnet, apt-get install telnet, to see the real client)")
        session.login(_USER, password)
        say(f"logged in as {_USER}; typing the talk's lines")
        session.typeTalk()
        before = _PID_VERSION.search(session.line("os.getpid(), sys.version"))
        if before is None:
            raise RuntimeError("the session did not show its pid and version")
        beforePid, beforeVersion = int(before[1]), before[3]
        checks.append(
            (f"the session runs in generation 0 (pid {incumbent.pid})", beforePid == incumbent.pid)
        )
        session.type('greet("yo')
        session.expect("yo")
        say('half a line typed, no Enter yet: greet("yo')
        mark = len(session.screenLines())
        narrator.block(session.screenLines(), "  | ")

        where = f"Python {otherVersion} ({other})" if other else "the same Python, a second process"
        say(f"takeover: starting a successor with --takeover on {where}")
        say(
            "  $ twistd "
            + " ".join(
                shlex.quote(a) for a in twistdCommand(control, service, True, other, _DRAIN)[3:]
            )
        )
        fromLine = len(incumbent.lines)
        started = time.monotonic()
        successor = startMigrate(
            control,
            service,
            takeover=True,
            python=other,
            migrateOptions=_DRAIN,
            cwd=os.path.dirname(control),
            name="generation 1",
        )
        processes.append(successor)
        ready = successor.waitFor(READY, 90)
        incumbent.waitFor(HANDED_OFF, 60)
        code = incumbent.waitForExit(60)
        say(
            f"  generation 1 serves (pid {ready['pid']}, Python {ready['python']}); "
            f"pid {incumbent.pid} handed off and exited with code {code} "
            f"({time.monotonic() - started:.2f}s in all)"
        )
        checks.append((f"generation 0 exited cleanly (code {code})", code == 0))
        say("  the takeover, as generation 0 logged it:")
        narrator.block(
            [_short(line) for line in incumbent.lines[fromLine:] if _TAKEOVER_LOG.search(line)],
            "    gen 0 | ",
        )
        say("  and as generation 1 logged it:")
        narrator.block(
            [_short(line) for line in successor.lines if _TAKEOVER_LOG.search(line)], "    gen 1 | "
        )

        say('back in the same telnet session: finishing the line with  u")  and Enter')
        session.type('u")')
        session.enter()
        session.expect(r"\n>>> ")
        checks.append(
            (
                "the half-typed line finished after the move: 'hello you'",
                "'hello you'" in session.screen.split('greet("yo')[-1],
            )
        )
        after = _PID_VERSION.search(session.line("os.getpid(), sys.version"))
        if after is None:
            raise RuntimeError("the session did not show its pid and version after the move")
        afterPid, afterVersion = int(after[1]), after[3]
        names = session.line('x, greet("me"), p.x, isinstance(p, Point)')
        checks.append(
            (
                "every name intact: x, greet, Point, p",
                "([1, 2, {'a': 3}], 'hello me', 1, True)" in names,
            )
        )
        checks.append(
            (
                f"the pid changed: {beforePid} -> {afterPid}",
                afterPid != beforePid and afterPid == successor.pid,
            )
        )
        checks.append(
            (
                f"the Python version is the successor's: {beforeVersion} -> {afterVersion}",
                afterVersion == otherVersion,
            )
        )
        checks.append(("no second login", "Username:" not in session.screen.split('greet("yo')[-1]))
        narrator.block(session.screenLines()[mark - 1 :], "  | ")
        say()
        for what, held in checks:
            say(f"  [{'ok' if held else 'FAILED'}] {what}")
        ok = all(held for _, held in checks)
        how = f"onto Python {afterVersion}" if other else "(same Python, second process)"
        narrator.block(
            [
                ("RESULT: ok" if ok else "RESULT: FAILED")
                + f": telnet session moved from pid {beforePid} (Python {beforeVersion}) "
                f"to pid {afterPid} (Python {afterVersion}) {how}; "
                f"{sum(h for _, h in checks)}/{len(checks)} checks held"
            ],
            "",
        )
        return 0 if ok else 1
    finally:
        session.close()


def _short(line: str) -> str:
    """
    A log line without its timestamp.
    """
    return re.sub(r"^\S+T\S+ ", "", line)


def _interactive(
    narrator: _Narrator,
    incumbent: ServiceProcess,
    port: int,
    password: str,
    control: str,
    service: list[str],
    other: str | None,
) -> bool:
    """
    Leave the service running and tell the operator what to do, until
    Ctrl-C or an hour has passed.

    @return: whether a successor (not ours to stop) was left running.
    """
    narrator.block(
        [
            "",
            "In another terminal, log in (user admin, password " + password + "):",
            "",
            f"    telnet 127.0.0.1 {port}",
            "",
            "and type the talk's lines, e.g.",
            "",
            "    >>> import sys, os",
            '    >>> x = [1, 2, {"a": 3}]',
            '    >>> def greet(name): return "hello " + name',
            "    ...                               (an empty line ends the block)",
            "    >>> os.getpid(), sys.version",
            "",
            "then, in a third terminal, take over:",
            "",
            "    " + _handCommand(control, service, other),
            "",
            "and go on typing in the same telnet session (os.getpid(), sys.version).",
            "Ctrl-C here stops generation 0 (this demo gives up after an hour).",
            "",
        ],
        "",
    )
    deadline = time.monotonic() + 3600
    handed = False
    try:
        while time.monotonic() < deadline:
            try:
                match = incumbent.waitFor(HANDED_OFF, min(60.0, deadline - time.monotonic()))
            except AssertionError:
                if incumbent.process.poll() is not None:
                    break
                continue
            handed = True
            narrator.say(
                f"generation 0 (pid {incumbent.pid}) handed off to pid {match['pid']}; "
                f"that process is yours now: stop it with kill {match['pid']}"
            )
            break
        if handed:
            threading.Event().wait(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        narrator.say("interrupted")
    if handed:
        narrator.say(f"leaving {os.path.dirname(control)} in place for the successor")
    return handed


def runLoadDemo(options: Any, out: TextIO) -> int:
    """
    Run the web-under-load demo (C{demo --load}); see the module docstring.

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
            loadgenCommand(port, rate, 60 + takeovers * 30, records, stopFile),
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
        from migrator.cli._status import formatStatus

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
