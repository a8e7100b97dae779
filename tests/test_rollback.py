# -*- test-case-name: tests.test_rollback -*-
"""
Tests for L{migrator.cli._rollback} (C{python -m migrator rollback}) with a
fake status, a fake child process and a log file in a temporary
directory; and for how C{status} shows the recorded command lines and the
last dry run (L{migrator.cli._status.formatStatus}).
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from migrator.cli._rollback import Rollback, RollbackOptions
from migrator.cli._status import formatStatus

PY = "/opt/v1/bin/python3"
PREVIOUS = {
    "argv": ["python3", "-m", "twisted", "-n", "migrate", "--control", "/run/s/ctl", "--tac", "v1.tac"],
    "cwd": "/srv/site",
    "executable": PY,
    "stdout": None,
}
EXPECTED = [PY, "-m", "twisted", "-n", "migrate", "--takeover", "--control", "/run/s/ctl",
            "--tac", "v1.tac"]


def status(pid: int, generation: int, previous: Any = PREVIOUS, **more: Any) -> dict[str, Any]:
    return {"pid": pid, "generation": generation, "previous_command": previous, **more}


@attrs.define
class FakeChild:
    """
    The child the rollback started: its exit codes, one per C{poll}.
    """

    pid: int = 5555
    codes: list[int | None] = attrs.field(factory=list)
    killed: bool = False

    def poll(self) -> int | None:
        return self.codes.pop(0) if len(self.codes) > 1 else (self.codes[0] if self.codes else None)

    def kill(self) -> None:
        self.killed = True


class RollbackTests(SynchronousTestCase):
    """
    L{Rollback} starts the previous generation's command as a successor
    and reports the takeover's outcome.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.mkdir(self.dir)
        self.control = os.path.join(self.dir, "ctl")
        self.out = io.StringIO()
        self.statuses: list[Any] = []
        self.spawned: list[tuple[list[str], dict[str, Any]]] = []
        self.child = FakeChild()
        self.now = 1000.0
        self.onPoll: list[Any] = []

    def status(self) -> Deferred[dict[str, Any]]:
        item = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(item, Exception):
            return fail(item)
        return succeed(item)

    def spawn(self, argv: list[str], **kw: Any) -> FakeChild:
        self.spawned.append((argv, kw))
        return self.child

    def sleep(self, seconds: float) -> Deferred[None]:
        self.now += seconds
        if self.onPoll:
            self.onPoll.pop(0)()
        return succeed(None)

    def rollback(self, **kw: Any) -> int:
        rollback = Rollback(
            self.control,
            kw.pop("timeout", 30.0),
            self.out,
            status=self.status,
            spawn=self.spawn,
            sleep=self.sleep,
            clock=lambda: self.now,
            **kw,
        )
        return self.successResultOf(Deferred.fromCoroutine(rollback.run(**self.flags)))

    flags: dict[str, bool] = {}

    def lines(self) -> Iterator[str]:
        return iter(self.out.getvalue().splitlines())

    def test_noPreviousCommand(self) -> None:
        """
        A first generation (no previous command): exit 1, saying so.
        """
        self.statuses = [status(10, 0, previous=None)]
        self.assertEqual(self.rollback(), 1)
        self.assertIn("has no previous command recorded", self.out.getvalue())
        self.assertEqual(self.spawned, [])

    def test_noService(self) -> None:
        """
        Nothing at the control socket: exit 1 with the reason.
        """
        self.statuses = [RuntimeError("no service answers at /x (absent)")]
        self.assertEqual(self.rollback(), 1)
        self.assertIn("FAILED: no service answers", self.out.getvalue())

    def test_show(self) -> None:
        """
        C{--show} prints the command and runs nothing.
        """
        self.statuses = [status(10, 2)]
        self.flags = {"show": True}
        self.assertEqual(self.rollback(), 0)
        self.assertIn("  " + " ".join(EXPECTED), self.out.getvalue())
        self.assertEqual(self.spawned, [])

    def test_success(self) -> None:
        """
        The previous command runs again with C{--takeover}, in its
        directory, in a session of its own, its output appended to the log
        file; once another process serves the next generation, exit 0.
        """
        self.statuses = [status(10, 2), status(10, 2), RuntimeError("busy"), status(20, 3)]
        self.assertEqual(self.rollback(log=os.path.join(self.dir, "out.log")), 0)
        [(argv, kw)] = self.spawned
        self.assertEqual(argv, EXPECTED)
        self.assertEqual(kw["cwd"], "/srv/site")
        self.assertTrue(kw["start_new_session"])
        self.assertEqual(kw["stderr"], subprocess.STDOUT)
        self.assertEqual(kw["stdout"].name, os.path.join(self.dir, "out.log"))
        self.assertIn("rollback: done: pid 20 serves generation 3", self.out.getvalue())

    def test_failedLine(self) -> None:
        """
        The successor's failure line in its output: exit 1, with the reason
        and the end of the log.
        """
        log = os.path.join(self.dir, "gen.log")
        with open(log, "w") as f:
            f.write("migrate: takeover failed at step begin: an old failure\n")
        self.statuses = [status(10, 2, previous={**PREVIOUS, "stdout": log})]
        self.child.codes = [None, 1]

        def fails() -> None:
            with open(log, "a") as f:
                f.write("migrate: takeover failed at step check: the health check exited 1\n")

        self.onPoll = [fails]
        self.assertEqual(self.rollback(), 1)
        text = self.out.getvalue()
        self.assertIn("FAILED: migrate: takeover failed at step check: the health check", text)
        self.assertNotIn("an old failure", text)
        self.assertIn("pid 10 keeps serving (generation 2)", text)
        self.assertIn(f"its output goes to {log}", text)

    def test_incumbentSaysAbandoned(self) -> None:
        """
        A daemonized command (its parent exits 0) whose takeover the
        incumbent abandoned: exit 1 with the incumbent's reason.
        """
        previous = {**PREVIOUS, "argv": [a for a in PREVIOUS["argv"] if a != "-n"]}
        self.statuses = [
            status(10, 2, previous=previous),
            status(10, 2, last_takeover={"outcome": "abandoned", "at": 999.0, "reason": "old"}),
            status(10, 2, last_takeover={"outcome": "abandoned", "at": 1000.5, "reason": "why"}),
        ]
        self.child.codes = [0]
        self.assertEqual(self.rollback(), 1)
        self.assertIn("FAILED: why", self.out.getvalue())
        self.assertEqual(
            self.spawned[0][1]["stdout"].name, os.path.join(self.dir, "rollback.log")
        )

    def test_exitsBeforeServing(self) -> None:
        """
        A foreground command that exits before serving: exit 1.
        """
        self.statuses = [status(10, 2)]
        self.child.codes = [2]
        self.assertEqual(self.rollback(), 1)
        self.assertIn("the command exited 2 before serving", self.out.getvalue())

    def test_timeout(self) -> None:
        """
        No outcome in time: exit 1, the child left running.
        """
        self.statuses = [status(10, 2)]
        self.assertEqual(self.rollback(timeout=1.0), 1)
        self.assertIn("no outcome within 1 s; pid 5555 is still running", self.out.getvalue())
        self.assertFalse(self.child.killed)

    def test_dryRun(self) -> None:
        """
        C{--dry-run} runs the previous command with C{--dry-run}, in the
        foreground, and exits with its code.
        """
        self.statuses = [status(10, 2)]
        self.flags = {"dryRun": True}
        self.child.codes = [None, 2]
        self.assertEqual(self.rollback(), 2)
        [(argv, kw)] = self.spawned
        self.assertEqual(argv[:6], [PY, "-m", "twisted", "-n", "migrate", "--dry-run"])
        self.assertNotIn("stdout", kw)
        self.assertIn("the dry run of the previous command exited 2", self.out.getvalue())

    def test_unwritableLog(self) -> None:
        """
        Exit 1, saying why, and nothing started.
        """
        self.statuses = [status(10, 2)]
        self.assertEqual(self.rollback(log="/nonexistent/dir/out.log"), 1)
        self.assertIn("FAILED: [Errno 2] No such file or directory", self.out.getvalue())
        self.assertEqual(self.spawned, [])


class RollbackOptionsTests(SynchronousTestCase):
    """
    C{python -m migrator rollback}'s options.
    """

    def test_options(self) -> None:
        """
        C{--control} is required; C{--dry-run} and C{--show} exclude each
        other; the timeout is positive.
        """
        from twisted.python import usage

        self.assertRaises(usage.UsageError, RollbackOptions().parseOptions, [])
        options = RollbackOptions()
        options.parseOptions(["--control", "/c"])
        self.assertEqual(options["timeout"], 120.0)
        self.assertRaises(
            usage.UsageError, RollbackOptions().parseOptions, ["-c", "/c", "--dry-run", "--show"]
        )
        self.assertRaises(
            usage.UsageError, RollbackOptions().parseOptions, ["-c", "/c", "--timeout", "0"]
        )


class StatusViewTests(SynchronousTestCase):
    """
    C{status} shows this generation's command, the previous one (with the
    command that brings it back) and the last dry run.
    """

    def test_view(self) -> None:
        """
        The command lines are shell-quoted with their directory; the dry
        run's outcome and counts per class follow.
        """
        record = {
            "pid": 20,
            "python": "3.11.7",
            "generation": 3,
            "started": 0,
            "connections": {"open": 0},
            "control": "/run/s/ctl",
            "command": {"argv": ["python3", "-c", "run()", "migrate"], "cwd": "/srv"},
            "previous_command": PREVIOUS,
            "last_dry_run": {
                "outcome": "failed",
                "at": 0,
                "by": 77,
                "connections": 3,
                "message": "FAILED: app.Bad",
                "classes": {"app.Bad": {"restored": 0, "failed": 3, "staying": 0}},
            },
        }
        text = formatStatus(record)
        self.assertIn("command     python3 -c 'run()' migrate  (in /srv)", text)
        self.assertIn("previous    python3 -m twisted -n migrate --control /run/s/ctl", text)
        self.assertIn("(python -m migrator rollback --control /run/s/ctl)", text)
        self.assertIn("by pid 77: 3 connection(s) snapshotted; FAILED: app.Bad", text)
        self.assertIn("restored 0, failed 3, staying 0", text)

