# -*- test-case-name: tests.integration.test_connection_rollback -*-
"""
Failed takeovers after the incumbent has frozen its connections and sent
them: the successor is killed (or raises) once it has restored them, after
the switch, or just before the commit.  The incumbent must thaw every
connection and serve on as if nothing happened (no error, no gap, no
duplicate, no second C{connectionMade}), and a later takeover must move
them.

The service is the numbered line app (L{tests.integration.apps.numbered}),
streamed to by C{lineclient.py} (which checks every reply) while it reads
slowly, so replies are pending in the incumbent when it freezes; two more
connections, driven by the test, check the thawed incumbent directly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time

from twisted.python import log
from twisted.trial.unittest import TestCase

from migrator.testing import (
    FAILED,
    HANDED_OFF,
    READY,
    ServiceProcess,
    childEnvironment,
    startMigrate,
)

from . import test_graph_semantics as graph
from ._support import ABANDONED, FAULT, status

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
NUMBERED_TAC = os.path.join(APPS, "numbered.tac")
ADAPTERS = "tests.integration.apps.numbered"
LISTENING = re.compile(r"NumberedFactory starting on (?P<port>\d+)")
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) \((?P<size>\d+) bytes of state, "
    r"(?P<pending>\d+) unsent bytes"
)
#: The numbered app's padding of every reply (the client checks it).
PAD = 1000
#: Connections of the line client; the test's own probes make two more.
CONNECTIONS = 8
#: Lines the probe sends before the takeover without reading the replies.
BACKLOG = 200
#: Objects added to the scheduled app's graph so that freezing it takes
#: longer than one tick of its loop.
BALLAST = 150_000
#: Bounds for waiting on a noisy 2-core machine (a wait ends as soon as its
#: line arrives).
STEP = 60.0


def lineIndex(process: ServiceProcess, pattern: re.Pattern[str], start: int = 0) -> int:
    """
    Wait for a line of C{process} matching C{pattern} from index C{start}
    on.

    @return: the index of the line after it.
    """
    process.waitFor(pattern, STEP, start=start)
    lines = process.lines
    return next(i for i in range(start, len(lines)) if pattern.search(lines[i])) + 1


class Probe:
    """
    One blocking connection to the numbered app, driven by the test: it
    sends C{N probe-N} and checks the reply, or asks for C{stats}.
    """

    def __init__(self, case: TestCase, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        case.addCleanup(self.sock.close)
        # A small receive buffer keeps unread replies in the server.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(STEP)
        self.sock.connect(("127.0.0.1", port))
        self._buffer = b""
        self.number = 0

    def send(self) -> int:
        """
        Send the next numbered line (without waiting for its reply).

        @return: its number.
        """
        number = self.number
        self.number += 1
        self.sock.sendall(b"%d probe-%d\r\n" % (number, number))
        return number

    def _line(self) -> bytes:
        deadline = time.monotonic() + STEP
        while b"\r\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line within {STEP:g} s; have {self._buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the server closed the probe; have {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def reply(self, number: int) -> None:
        """
        Read the reply to line C{number}, and check it.
        """
        expected = b"%d %s %s" % (number, (b"probe-%d" % number)[::-1], b"." * PAD)
        line = self._line()
        if line != expected:
            raise AssertionError(f"expected the reply to {number}, got {line[:80]!r}")

    def awaitMark(self, name: str) -> None:
        """
        Wait until the line C{mark NAME} has been processed on some
        connection (see L{tests.integration.apps.numbered}): every line
        sent on that connection before it has been answered.
        """
        self.sock.sendall(b"await %s\r\n" % (name.encode("ascii"),))
        line = self._line()
        if line != b"marked " + name.encode("ascii"):
            raise AssertionError(f"expected the mark {name!r}, got {line[:80]!r}")

    def stats(self) -> dict[str, int]:
        """
        The app's C{stats} as seen through this connection.
        """
        self.sock.sendall(b"stats\r\n")
        line = self._line()
        if not line.startswith(b"stats "):
            raise AssertionError(f"expected stats, got {line[:80]!r}")
        return {k: int(v) for k, v in (kv.split("=") for kv in line[6:].decode().split())}


class _Fixture:
    """
    The numbered app under migrate, the line client, a probe, and a
    successor with a fault.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-crb-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, True)  # type: ignore[attr-defined]
        self.control = os.path.join(self.work, "ctl")

    def start(
        self, takeover: bool = False, fault: str = "", name: str = "", extra: tuple[str, ...] = ()
    ) -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", NUMBERED_TAC],
            takeover=takeover,
            migrateOptions=["--adapters", ADAPTERS, "--drain-timeout", "30", *extra],
            cwd=self.work,
            env={"NUMBERED_PAD": str(PAD), "MIGRATOR_FAULT": fault},
            name=name,
        )
        self.addCleanup(process.stop)  # type: ignore[attr-defined]
        return process

    def failedTakeover(self, fault: str, step: str) -> tuple[ServiceProcess, ServiceProcess, str]:
        """
        Start the incumbent, the line client and two probes, then a
        successor with C{fault}.  Check that the incumbent froze and sent
        every connection (with a quiet probe's unread replies pending),
        then abandoned the takeover at C{step}, thawed them and serves on:
        the quiet probe gets its pending replies without sending anything
        more, the other probe the answer to a line sent during (or just
        after) the freeze; C{status} shows the incumbent (generation 0)
        with all the connections open and the attempt abandoned.  Then take
        over normally, and check that every connection moved, served by
        the successor, and that the line client saw no error at all.

        @return: the incumbent, the faulty successor, and the reason the
            incumbent gave.
        """
        case: TestCase = self  # type: ignore[assignment]
        incumbent = self.start(name="incumbent")
        ready = incumbent.waitFor(READY, STEP)
        case.assertEqual((int(ready["generation"]), int(ready["pid"])), (0, incumbent.pid))
        port = int(incumbent.waitFor(LISTENING, STEP)["port"])
        stop = os.path.join(self.work, "stop")
        argv = [
            sys.executable, os.path.join(APPS, "lineclient.py"),
            "--port", str(port),
            "--connections", str(CONNECTIONS),
            "--rate", "100",
            "--stop-file", stop,
            "--pad", str(PAD),
            "--duration", "1800",  # a bound: the stop file ends it
        ]  # fmt: skip
        client = ServiceProcess(argv, env=childEnvironment(), name="lineclient")
        case.addCleanup(client.stop)
        client.waitFor("LINECLIENT READY", STEP)
        probe = Probe(case, port)
        probe.reply(probe.send())
        quiet = Probe(case, port)
        quiet.reply(quiet.send())
        total = CONNECTIONS + 2
        # Replies the quiet probe does not read yet: they are pending in
        # the incumbent when it freezes, and must come out after the thaw
        # with nothing more sent on that connection to wake it up.
        backlog = [quiet.send() for _ in range(BACKLOG)]
        # The incumbent has answered them all (the replies wait in its
        # buffer) before the successor starts: an event, not the
        # successor's start time outlasting the incumbent's work.
        quiet.sock.sendall(b"mark backlog\r\n")
        probe.awaitMark("backlog")

        faulty = self.start(takeover=True, fault=fault, name="faulty successor")
        action, _, point = fault.partition(":")
        frozeAt = lineIndex(incumbent, FROZE)
        froze = FROZE.search(incumbent.lines[frozeAt - 1])
        assert froze is not None
        case.assertEqual(int(froze["count"]), total)
        frozenPending = int(froze["pending"])
        case.assertGreater(frozenPending, BACKLOG * PAD // 2, froze.string)
        # Sent while the connection is frozen (or just thawed): it waits in
        # the kernel and is answered by the incumbent once thawed.
        duringFreeze = probe.send()
        injected = faulty.waitFor(FAULT, STEP)
        case.assertEqual(injected.group("action", "point"), (action, point))
        abandonedAt = lineIndex(incumbent, ABANDONED, frozeAt)
        abandoned = ABANDONED.search(incumbent.lines[abandonedAt - 1])
        assert abandoned is not None
        case.assertEqual(
            (int(abandoned["pid"]), abandoned["step"]), (faulty.pid, step), abandoned.string
        )

        for number in backlog:
            quiet.reply(number)
        quiet.reply(quiet.send())
        probe.reply(duringFreeze)
        probe.reply(probe.send())
        now = status(self.control)
        case.assertEqual(
            (now["pid"], now["generation"], now["state"], now["takeover"]),
            (incumbent.pid, 0, "serving", None),
        )
        case.assertEqual(now["connections"]["open"], total)
        last = now["last_takeover"]
        case.assertEqual(
            (last["outcome"], last["successor_pid"], last["step"]),
            ("abandoned", faulty.pid, step),
        )
        seen = probe.stats()
        case.assertEqual((seen["made"], seen["open"], seen["hops"]), (total, total, 0))
        case.assertIsNone(incumbent.process.poll())

        # A normal takeover now moves every connection.
        successor = self.start(takeover=True, name="successor")
        ready = successor.waitFor(READY, STEP)
        case.assertEqual((int(ready["generation"]), int(ready["pid"])), (1, successor.pid))
        froze = incumbent.waitFor(FROZE, STEP, start=abandonedAt)
        case.assertEqual(int(froze["count"]), total)
        case.assertEqual(int(incumbent.waitFor(HANDED_OFF, STEP)["pid"]), successor.pid)
        case.assertEqual(incumbent.waitForExit(STEP), 0)
        probe.reply(probe.send())
        seen = probe.stats()
        case.assertEqual((seen["made"], seen["open"], seen["hops"]), (total, total, 1))
        case.assertEqual(status(self.control)["pid"], successor.pid)

        with open(stop, "w"):
            pass
        case.assertEqual(client.waitForExit(STEP), 0, client.output()[-3000:])
        result = json.loads(client.lines[-1])
        case.assertEqual(result["errors"], [])
        case.assertEqual(result["error_count"], 0)
        case.assertEqual(result["missing_stats"], 0)
        case.assertEqual(result["unanswered"], 0)
        case.assertEqual(result["connections"], CONNECTIONS)
        # connectionMade ran once per connection (the probes are the +2).
        case.assertEqual(result["made"], total)
        # Served by the incumbent, then by the successor only: the faulty
        # successor never served them.
        case.assertEqual(result["min_hops"], 1)
        case.assertEqual({s["hops"] for s in result["stats"]}, {"1"})
        case.assertGreater(result["received"], 0)
        line = (
            f"{case.id()}: {frozenPending} unsent bytes frozen at the failed takeover; "
            f"{result['received']} replies checked by the line client"
        )
        log.msg(line)
        if os.environ.get("MIGRATOR_IT_VERBOSE"):
            sys.stderr.write(line + "\n")
        return incumbent, faulty, abandoned["reason"]


class KillAfterFreezeTests(_Fixture, TestCase):
    """
    The successor is killed (SIGKILL) after the incumbent froze and sent
    its connections.
    """

    def _killedAt(self, point: str, step: str) -> None:
        _, faulty, reason = self.failedTakeover(f"kill:{point}", step)
        self.assertEqual(faulty.waitForExit(STEP), -signal.SIGKILL)
        self.assertEqual(reason, "the successor disconnected")

    def test_killAfterRestore(self) -> None:
        """
        Killed once it has restored the connections (before confirming):
        the incumbent abandons at step C{captured}, thaws every connection
        and serves on; a later takeover moves them; nothing was lost,
        doubled or reconnected.
        """
        self._killedAt("after-restore", "captured")

    def test_killAfterSwitch(self) -> None:
        """
        Killed right after the switch (the incumbent stopped accepting):
        the incumbent abandons at step C{switched}, accepts again, thaws
        every connection and serves on; a later takeover moves them;
        nothing was lost, doubled or reconnected.
        """
        self._killedAt("after-switch", "switched")

    def test_killBeforeCommit(self) -> None:
        """
        Killed just before asking to commit: the incumbent abandons at step
        C{switched}, thaws every connection and serves on; a later takeover
        moves them; nothing was lost, doubled or reconnected.
        """
        self._killedAt("before-commit", "switched")


class RaiseAfterFreezeTests(_Fixture, TestCase):
    """
    The successor fails with an exception after the incumbent froze and
    sent its connections.
    """

    def test_raiseAfterRestore(self) -> None:
        """
        A successor that raises once it has restored the connections lets
        them go (without closing them for the incumbent), exits non-zero
        saying at which step and why it failed; the incumbent abandons at
        step C{captured}, thaws every connection and serves on; a later
        takeover moves them; nothing was lost, doubled or reconnected.
        """
        _, faulty, reason = self.failedTakeover("raise:after-restore", "captured")
        self.assertEqual(reason, "the successor gave up: injected fault at after-restore")
        failed = faulty.waitFor(FAILED, STEP)
        self.assertEqual(
            failed.group("step", "reason"), ("restore", "injected fault at after-restore")
        )
        self.assertNotEqual(faulty.waitForExit(STEP), 0)
        self.assertIn(
            "migrate: takeover failed at step restore: injected fault at after-restore",
            faulty.output(),
        )
        self.assertIn("the running service was not changed and keeps serving", faulty.output())


class TimersThawTests(TestCase):
    """
    Scheduled work the incumbent suspended when it froze its connections
    resumes, in the incumbent, when the takeover fails.
    """

    def test_timersResumeAfterKill(self) -> None:
        """
        With the scheduled app (L{tests.integration.apps.scheduled}), a
        successor killed once it has restored a running C{LoopingCall} and a
        pending C{DelayedCall}: the incumbent thaws both.  The loop ticks
        on from the incumbent, numbers running on with no gap or
        duplicate, with its start time and interval, its next call on its
        original grid; the call is pending again with its original
        deadline and, made due (the test's gate), fires exactly once, in
        the incumbent, and is then no longer pending.

        No delay has to outlast the failed takeover: the call's deadline is
        beyond any bound of the test.  How close to its deadline a thawed
        call fires by itself, and how regular the ticks are around the
        freeze, are figures of C{benchmarks/timers.py}.
        """
        work = tempfile.mkdtemp(prefix="migrator-crb-")
        os.chmod(work, 0o700)
        self.addCleanup(shutil.rmtree, work, True)
        control = os.path.join(work, "ctl")

        def start(fault: str = "", takeover: bool = False) -> ServiceProcess:
            process = startMigrate(
                control,
                ["--tac", graph.SCHEDULED_TAC],
                takeover=takeover,
                migrateOptions=["--adapters", graph.ADAPTERS],
                cwd=work,
                env={"MIGRATOR_FAULT": fault},
            )
            self.addCleanup(process.stop)
            return process

        incumbent = start()
        incumbent.waitFor(READY, STEP)
        port = int(incumbent.waitFor(graph.LISTENING, STEP)["port"])
        a = graph.LineConnection(self, port)
        # A graph big enough that the freeze outlasts an interval.
        self.assertEqual(a.ask(f"ballast {BALLAST}", "ballast")[2], str(BALLAST))
        self.assertEqual(a.ask(f"loop {graph.INTERVAL}", "looping")[1], str(incumbent.pid))
        a.waitTicks(incumbent.pid, 4)
        deadline = float(a.ask(f"schedule {graph.FAR}", "scheduled")[2])
        starttime, interval, _ = graph.loopInfo(a, incumbent.pid)

        faulty = start("kill:after-restore", takeover=True)
        self.assertEqual(int(incumbent.waitFor(FROZE, STEP)["count"]), 1)
        abandonedAt = lineIndex(incumbent, ABANDONED)
        self.assertEqual(faulty.waitForExit(STEP), -signal.SIGKILL)

        # Thawed: the call is pending again, at its deadline, and the loop
        # is back on its grid.
        when = a.ask("when", "when")
        self.assertEqual(when[1], str(incumbent.pid))
        self.assertLess(abs(float(when[2]) - deadline), graph.SAME_DEADLINE, (when, deadline))
        a.waitTicks(incumbent.pid, len(a.ticks) + 4)
        thawed = graph.loopInfo(a, incumbent.pid)
        self.assertEqual(thawed[:2], (starttime, interval))
        assert thawed[2] is not None
        self.assertLess(graph.offGrid(starttime, interval, thawed[2]), graph.ON_GRID, thawed)

        self.assertEqual(a.ask("due", "due")[1], str(incumbent.pid))
        fired = a.expect("fired")
        self.assertEqual(fired[1], str(incumbent.pid))
        self.assertEqual(a.ask("when", "when"), ["when", str(incumbent.pid), "inactive"])
        # Four more ticks (a second firing would be an unexpected line).
        a.waitTicks(incumbent.pid, len(a.ticks) + 4)
        self.assertEqual(
            [fields[0] for fields in a.lines],
            [
                "ballast",
                "looping",
                "scheduled",
                "loopinfo",
                "when",
                "loopinfo",
                "due",
                "fired",
                "when",
            ],
        )
        self.assertEqual(
            len([line for line in incumbent.lines[abandonedAt:] if graph.FIRED_LOG.search(line)]),
            1,
        )

        numbers = [n for n, _, _ in a.ticks]
        self.assertEqual(numbers, list(range(1, len(numbers) + 1)))
        self.assertEqual({pid for _, _, pid in a.ticks}, {incumbent.pid})
        times = [t for _, t, _ in a.ticks]
        intervals = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        line = f"{self.id()}: tick intervals (ms): " + " ".join(
            f"{gap * 1000:.0f}" for gap in intervals
        )
        log.msg(line)
        if os.environ.get("MIGRATOR_IT_VERBOSE"):
            sys.stderr.write(line + "\n")


class StreamRollbackTests(_Fixture, TestCase):
    """
    A streamed capture abandoned after some batches were sent.
    """

    def test_raiseAfterFirstBatch(self) -> None:
        """
        The successor fails once the first of several batches (two
        connections each) is restored: the incumbent abandons, thaws every batch sent, and serves every connection,
        quiet ones and talking ones, nothing lost; a later takeover moves
        them all, each once.
        """
        incumbent = self.start(name="incumbent")
        port = int(incumbent.waitFor(LISTENING, STEP)["port"])
        talking = Probe(self, port)
        talking.reply(talking.send())
        quiet = [Probe(self, port) for _ in range(6)]
        for probe in quiet:
            probe.reply(probe.send())
        total = 1 + len(quiet)
        self.assertEqual(talking.stats()["open"], total)

        stream = ("--stream-batch", "2")
        faulty = self.start(takeover=True, fault="raise:after-batch", name="faulty", extra=stream)
        injected = faulty.waitFor(FAULT, STEP)
        self.assertEqual(injected.group("action", "point"), ("raise", "after-batch"))
        abandoned = incumbent.waitFor(ABANDONED, STEP)
        # (Still streaming, or done with so few connections.)
        self.assertEqual(int(abandoned["pid"]), faulty.pid)
        self.assertIn(abandoned["step"], ("capturing", "captured"))
        faulty.waitFor(FAILED, STEP)
        # Every connection is served by the incumbent again, with its state.
        for probe in [talking, *quiet]:
            probe.reply(probe.send())
        seen = talking.stats()
        self.assertEqual((seen["made"], seen["open"], seen["hops"]), (total, total, 0))
        self.assertEqual(status(self.control)["pid"], incumbent.pid)

        successor = self.start(takeover=True, name="successor", extra=stream)
        successor.waitFor(READY, STEP)
        self.assertEqual(int(incumbent.waitFor(FROZE, STEP)["count"]), total)
        self.assertEqual(incumbent.waitForExit(STEP), 0)
        for probe in [talking, *quiet]:
            probe.reply(probe.send())
        seen = talking.stats()
        self.assertEqual((seen["made"], seen["open"], seen["hops"]), (total, total, 1))
