# -*- test-case-name: tests.test_consolerun -*-
"""
Tests for L{migrator.console._run} (the successor command, and a takeover
run as the console's child with its output followed from a log file) and
L{migrator.console._model} (polling the service while pages watch, events
only on change, attempts and runs followed).  The process and the clock
are in memory; the service is a fake C{call}.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from migrator.console._model import ConsoleModel
from migrator.console._run import (
    ABORTED,
    COMMITTED,
    DRY_RUN,
    FAILED_STATE,
    LAUNCHER,
    PASSED,
    RUNNING,
    CommandError,
    SuccessorRun,
    policyOf,
    serviceCommand,
    takeoverCommand,
)

BASE = ["python", "-c", "run()", "-n", "migrate", "--control", "/run/ctl", "web", "--port", "80"]


class CommandTests(SynchronousTestCase):
    """
    The successor command.
    """

    def test_takeover(self) -> None:
        """
        C{--takeover} goes right after C{migrate}, with the policy and the
        selection asked for; the service's own options stay as they are.
        """
        self.assertEqual(
            takeoverCommand(BASE, "drain", ["k1", "c2.80"]),
            [*BASE[:5], "--takeover", "--unmovable", "drain", "--select", "k1,c2.80", *BASE[5:]],
        )

    def test_replaces(self) -> None:
        """
        A command that already takes over keeps its C{--takeover}; an old
        C{--select} is dropped (always), an old C{--unmovable} when a policy
        is given.
        """
        argv = [*BASE[:5], "--takeover", "--select", "k7", "--unmovable=close", *BASE[5:]]
        self.assertEqual(
            takeoverCommand(argv), [*BASE[:5], "--takeover", "--unmovable=close", *BASE[5:]]
        )
        self.assertEqual(
            takeoverCommand(argv, "refuse"),
            [*BASE[:5], "--unmovable", "refuse", "--takeover", *BASE[5:]],
        )

    def test_dryRun(self) -> None:
        """
        A dry run's command is the takeover's with C{--dry-run} after
        C{--takeover}; a takeover's command never has it.
        """
        self.assertEqual(
            takeoverCommand(BASE, "drain", ["k1"], dryRun=True),
            [
                *BASE[:5],
                "--takeover",
                "--dry-run",
                "--unmovable",
                "drain",
                "--select",
                "k1",
                *BASE[5:],
            ],
        )
        argv = [*BASE[:5], "--dry-run", *BASE[5:]]
        self.assertEqual(takeoverCommand(argv), [*BASE[:5], "--takeover", *BASE[5:]])
        self.assertEqual(
            takeoverCommand(argv, dryRun=True), [*BASE[:5], "--takeover", "--dry-run", *BASE[5:]]
        )

    def test_noMigrate(self) -> None:
        """
        A command without C{migrate} cannot be a successor's.
        """
        self.assertRaises(CommandError, takeoverCommand, ["twistd", "web"])

    def test_policyOf(self) -> None:
        """
        The policy a command asks for, C{refuse} by default.
        """
        self.assertEqual(policyOf(BASE), "refuse")
        self.assertEqual(policyOf([*BASE, "--unmovable", "drain"]), "drain")
        self.assertEqual(policyOf([*BASE, "--unmovable=close"]), "close")

    def test_serviceCommand(self) -> None:
        """
        The running service's command line and directory come from
        C{/proc}; a process that cannot be read is a L{CommandError}.
        """
        # Outside the checkout: a symbolic link there would be packaged.
        proc, site = tempfile.mkdtemp(), tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, proc)
        self.addCleanup(shutil.rmtree, site)
        os.makedirs(os.path.join(proc, "42"))
        with open(os.path.join(proc, "42", "cmdline"), "wb") as f:
            f.write(b"\0".join(a.encode() for a in BASE) + b"\0")
        os.symlink(site, os.path.join(proc, "42", "cwd"))
        self.assertEqual(serviceCommand(42, proc), (BASE, site))
        self.assertRaises(CommandError, serviceCommand, 43, proc)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class ProcessReactor(MemoryReactorClock):
    """
    A memory reactor that records the processes it is asked to spawn.
    """

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self.spawned: list[tuple[Any, ...]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, **kw: Any) -> FakeProcess:
        process = FakeProcess(5000 + len(self.spawned))
        self.spawned.append((protocol, executable, args, kw))
        return process


class RunTests(SynchronousTestCase):
    """
    L{SuccessorRun}.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.log = self.mktemp()
        self.changes = 0
        self.run = SuccessorRun(self.reactor, ["twistd", "migrate"], "/srv", self.log, self.changed)

    def changed(self) -> None:
        self.changes += 1

    def write(self, text: str) -> None:
        with open(self.log, "a") as f:
            f.write(text)

    def test_spawn(self) -> None:
        """
        The command runs through the launcher (a session of its own), in
        its directory, its output going to the log file, nothing on its
        standard input.
        """
        self.run.start()
        [(protocol, executable, args, kw)] = self.reactor.spawned
        self.assertEqual(executable, sys.executable)
        self.assertEqual(args, [sys.executable, "-c", LAUNCHER, "twistd", "migrate"])
        self.assertEqual(kw["path"], "/srv")
        self.assertEqual(sorted(kw["childFDs"]), [0, 1, 2])
        self.assertEqual((self.run.state, self.run.pid), (RUNNING, 5000))
        self.assertTrue(os.path.exists(self.log))

    def test_followsOutput(self) -> None:
        """
        The log is read as it grows, whole lines only; the successor's
        "serving" line with its own pid commits the run.
        """
        self.write("old line of an earlier run\n")
        self.run.start()
        self.write("adopted tcp:80\nmigrate: serving web as generation 4 (pid 5000, Py")
        self.reactor.advance(0.2)
        self.assertEqual([line for _, line in self.run.lines], ["adopted tcp:80"])
        self.assertEqual(self.run.state, RUNNING)
        self.write("thon 3.11.7); control socket /run/ctl\n")
        self.reactor.advance(0.2)
        self.assertEqual(self.run.state, COMMITTED)
        self.assertIn("generation 4", self.run.message)
        record = self.run.asDict(since=1)
        self.assertEqual([n for n, _ in record["lines"]], [2])

    def test_failed(self) -> None:
        """
        A successor that exits non-zero before serving failed; its last
        lines and the reason it printed are kept.
        """
        self.run.start()
        protocol = self.reactor.spawned[0][0]
        self.write("migrate: takeover failed at step begin: refused\n")
        protocol.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertEqual((self.run.state, self.run.exitCode), (FAILED_STATE, 1))
        self.assertEqual(self.run.message, "takeover failed at step begin: refused")
        self.assertFalse(self.reactor.getDelayedCalls())

    def test_abort(self) -> None:
        """
        Aborting stops the successor (TERM, then KILL if it is still there
        5 seconds later); a committed run cannot be aborted.
        """
        self.run.start()
        process = self.run._process
        self.assertIn("stopped", self.run.abort())
        self.assertEqual((self.run.state, process.signals), (ABORTED, ["TERM"]))
        self.reactor.advance(5)
        self.assertEqual(process.signals, ["TERM", "KILL"])
        self.run.state = COMMITTED
        self.assertIn("nothing to abort", self.run.abort())

    def dryRun(self) -> SuccessorRun:
        run = SuccessorRun(
            self.reactor, ["twistd", "migrate"], None, self.log, self.changed, kind=DRY_RUN
        )
        run.start()
        return run

    def test_dryRunPasses(self) -> None:
        """
        A dry run that exits 0 passed; its report (from its first line to
        the verdict) is kept apart, with the verdict as the message; a
        "serving" line or a new generation does not commit it.
        """
        run = self.dryRun()
        self.write(
            "starting\n"
            "migrate: serving web as generation 4 (pid 5000, Python 3)\n"
            "dry run against pid 100 (generation 0, Python 3.11.7):\n"
            "  by class:\n"
            "    tac:Chat: would move 2\n"
            "dry run: every connection would move (2 restored here) (exit 0)\n"
            "Main loop terminated.\n"
        )
        self.reactor.advance(0.2)
        run.committedElsewhere(5)
        self.assertEqual(run.state, RUNNING)
        self.reactor.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.assertEqual((run.state, run.exitCode), (PASSED, 0))
        self.assertEqual(run.message, "every connection would move (2 restored here)")
        record = run.asDict()
        self.assertEqual(record["kind"], DRY_RUN)
        self.assertEqual(
            record["report"],
            [
                "dry run against pid 100 (generation 0, Python 3.11.7):",
                "  by class:",
                "    tac:Chat: would move 2",
                "dry run: every connection would move (2 restored here) (exit 0)",
            ],
        )
        self.assertEqual(len(record["lines"]), 7)

    def test_dryRunFails(self) -> None:
        """
        A dry run that exits non-zero failed, with its verdict (or its exit
        code) as the message; aborting one stops it, and says nothing moved.
        """
        run = self.dryRun()
        self.write("dry run: could not be done: no service answers (exit 1)\n")
        self.reactor.spawned[0][0].processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertEqual(
            (run.state, run.message),
            (FAILED_STATE, "could not be done: no service answers"),
        )
        self.assertEqual(len(run.report), 1)
        run = self.dryRun()
        self.reactor.spawned[1][0].processEnded(Failure(ProcessTerminated(exitCode=2)))
        self.assertEqual((run.state, run.message), (FAILED_STATE, "the dry run exited with code 2"))
        run = self.dryRun()
        self.assertIn("the dry run was stopped", run.abort())
        self.assertEqual((run.state, run._process.signals), (ABORTED, ["TERM"]))
        self.assertIn("nothing to abort: the dry run is aborted", run.abort())

    def test_abortedEndsQuietly(self) -> None:
        """
        A successor that exits after TERM is not killed again.
        """
        self.run.start()
        self.run.abort()
        self.reactor.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.assertEqual(self.run.state, ABORTED)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class Service:
    """
    A fake control socket whose status the test changes.
    """

    def __init__(self) -> None:
        self.status: dict[str, Any] = {
            "service": "web",
            "pid": 100,
            "generation": 1,
            "connections": {"open": 2},
            "takeover": None,
            "last_takeover": None,
        }
        self.calls: list[str] = []

    async def __call__(self, method: str, *args: Any) -> Any:
        self.calls.append(method)
        if method == "status":
            return dict(self.status)
        return {"method": method, "args": list(args)}


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def send(self, event: str, data: str) -> None:
        self.events.append((event, data))


class ModelTests(SynchronousTestCase):
    """
    L{ConsoleModel}.
    """

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.service = Service()
        self.model = ConsoleModel(
            self.reactor, self.service, command=["twistd", "migrate", "web"], logDir=self.mktemp()
        )
        os.makedirs(self.model.logDir)

    def test_pollsWhileWatched(self) -> None:
        """
        Polling starts with the first watcher (status, plan and graph at
        once), asks for the status every second, for the plan every fifth
        time or when something changed, for the graph (which the service
        walks in its reactor) at most every 5 seconds, unless another
        process or generation serves; it stops with the last watcher.
        """
        sink = Sink()
        self.model.subscribe(sink)
        self.assertEqual(self.service.calls, ["status", "plan", "graph"])
        self.reactor.advance(1)
        self.assertEqual(self.service.calls[3:], ["status"])
        self.service.status["connections"] = {"open": 3}
        self.reactor.advance(1)
        self.assertEqual(self.service.calls[4:], ["status", "plan"])
        for _ in range(3):
            self.reactor.advance(1)
        self.assertEqual(self.service.calls[6:], ["status", "status", "status", "plan", "graph"])
        self.service.status["generation"] = 2
        self.reactor.advance(1)
        self.assertEqual(self.service.calls[11:], ["status", "plan", "graph"])
        self.model.unsubscribe(sink)
        calls = len(self.service.calls)
        self.reactor.advance(10)
        self.assertEqual(len(self.service.calls), calls)

    def test_eventsOnChange(self) -> None:
        """
        An event is sent when its data changed only; a new watcher gets the
        latest of each at once.
        """
        first = Sink()
        self.model.subscribe(first)
        names = [e for e, _ in first.events]
        self.assertEqual(sorted(set(names)), ["graph", "plan", "problem", "status"])
        count = len(first.events)
        self.reactor.advance(1)
        self.assertEqual(len(first.events), count)
        second = Sink()
        self.model.subscribe(second)
        self.assertEqual(
            sorted(e for e, _ in second.events), ["graph", "plan", "problem", "status"]
        )

    def test_attempts(self) -> None:
        """
        Each takeover attempt the status reports is remembered once.
        """
        self.model.subscribe(Sink())
        self.service.status["last_takeover"] = {
            "outcome": "abandoned",
            "at": 5.0,
            "step": "capture",
        }
        self.reactor.advance(1)
        self.reactor.advance(1)
        self.assertEqual([a["outcome"] for a in self.model.attempts], ["abandoned"])

    def test_problem(self) -> None:
        """
        A service that does not answer is a C{problem} event, not a crash.
        """

        async def broken(method: str, *args: Any) -> Any:
            raise RuntimeError("no service answers at /run/ctl (missing)")

        self.model.call = broken
        sink = Sink()
        self.model.subscribe(sink)
        [(event, data)] = sink.events
        self.assertEqual(event, "problem")
        self.assertIn("no service answers", data)

    def test_run(self) -> None:
        """
        A run starts the console's successor command with the policy and
        selection asked for; its changes are events; a second one is
        refused while it runs; a new generation in the status commits it.
        """
        sink = Sink()
        self.model.subscribe(sink)
        run = self.model.startRun("drain", ["k1"])
        self.assertEqual(
            run.argv,
            ["twistd", "migrate", "--takeover", "--unmovable", "drain", "--select", "k1", "web"],
        )
        self.assertTrue(run.logPath.startswith(self.model.logDir))
        self.assertEqual(sink.events[-1][0], "run")
        self.assertRaises(CommandError, self.model.startRun, None, [])
        self.service.status["generation"] = 2
        self.reactor.advance(1)
        self.assertEqual(run.state, COMMITTED)
        self.assertRaises(CommandError, self.model.startRun, "sometimes", [])

    def test_dryRun(self) -> None:
        """
        A dry run starts the same command with C{--dry-run}, logging to a
        file of its own; no other run starts while it runs.
        """
        run = self.model.startRun("close", [], dryRun=True)
        self.assertEqual(
            run.argv,
            ["twistd", "migrate", "--takeover", "--dry-run", "--unmovable", "close", "web"],
        )
        self.assertEqual(run.kind, DRY_RUN)
        self.assertTrue(os.path.basename(run.logPath).startswith("dryrun-"))
        error = self.assertRaises(CommandError, self.model.startRun, None, [])
        self.assertIn("a dry run is already running", str(error))
