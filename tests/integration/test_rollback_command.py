# -*- test-case-name: tests.integration.test_rollback_command -*-
"""
C{python -m migrator rollback --control PATH}: after a takeover, one
command brings the previous generation's command line back, with the
numbered-line streams moving along, intact.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

from ._support import (
    EXIT_TIMEOUT,
    NUMBERED_ADAPTERS,
    NUMBERED_TAC,
    START_TIMEOUT,
    finishLineClient,
    startLineClient,
    status,
)

CONNECTIONS = 6
PAD = "300"


def _stopProcess(pid: int) -> None:
    """
    Stop a process this test did not start as a child (the rollback
    started it): SIGTERM, then wait (bounded) until it is gone.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RollbackCommandTests(TestCase):
    """
    Generation 0 runs one command line, generation 1 another; the rollback
    command starts generation 0's again as generation 2.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-back-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.control = os.path.join(self.work, "ctl")

    def start(self, options: list[str], takeover: bool = False, name: str = "") -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", NUMBERED_TAC],
            takeover=takeover,
            migrateOptions=["--adapters", NUMBERED_ADAPTERS, *options],
            cwd=self.work,
            env={"NUMBERED_PAD": PAD},
            name=name,
        )
        self.addCleanup(process.stop)
        return process

    def rollback(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "migrator", "rollback", "--control", self.control, *args],
            env=childEnvironment({"NUMBERED_PAD": PAD}),
            cwd=self.work,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def test_rollbackAfterTakeover(self) -> None:
        """
        After a takeover by another command line, C{rollback} runs the
        first one again as a successor: it exits 0 saying so; generation 2
        runs the first command (with C{--takeover}), and remembers the
        second as its previous one; every stream went through both
        takeovers without a gap, a duplicate or a reconnection.
        """
        first = self.start(["--drain-timeout", "30"], name="generation 0")
        first.waitFor(READY, START_TIMEOUT)
        port = int(first.waitFor(r"NumberedFactory starting on (\d+)", 10).group(1))
        stop = os.path.join(self.work, "stop")
        client = startLineClient(self, port, CONNECTIONS, stop, pad=int(PAD))
        zero = status(self.control)["command"]

        second = self.start(["--drain-timeout", "31"], takeover=True, name="generation 1")
        second.waitFor(READY, START_TIMEOUT)
        first.waitFor(HANDED_OFF, EXIT_TIMEOUT)
        self.assertEqual(first.waitForExit(EXIT_TIMEOUT), 0)
        one = status(self.control)
        self.assertEqual(one["previous_command"], zero)

        shown = self.rollback("--show")
        self.assertEqual(shown.returncode, 0, shown.stdout + shown.stderr)
        self.assertIn("--drain-timeout 30", shown.stdout)
        self.assertEqual(status(self.control)["pid"], second.pid)

        result = self.rollback()
        now = status(self.control)
        self.addCleanup(_stopProcess, now["pid"])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"rollback: done: pid {now['pid']} serves generation 2", result.stdout)
        self.assertEqual(now["generation"], 2)
        self.assertNotEqual(now["pid"], second.pid)
        self.assertEqual(now["command"]["cwd"], zero["cwd"])
        argv = now["command"]["argv"]
        self.assertEqual(argv[argv.index("migrate") + 1], "--takeover")
        self.assertEqual(
            [a for a in argv if a != "--takeover"][1:], zero["argv"][1:]
        )
        self.assertEqual(now["previous_command"], one["command"])
        second.waitFor(HANDED_OFF, EXIT_TIMEOUT)
        self.assertEqual(second.waitForExit(EXIT_TIMEOUT), 0)

        summary = finishLineClient(self, client, stop)
        self.assertEqual(summary["made"], CONNECTIONS)
        self.assertGreaterEqual(summary["min_hops"], 2)

    def test_nothingToGoBackTo(self) -> None:
        """
        The first generation has no previous command: exit 1, saying so,
        and nothing changes.
        """
        first = self.start([], name="generation 0")
        first.waitFor(READY, START_TIMEOUT)
        result = self.rollback()
        self.assertEqual(result.returncode, 1)
        self.assertIn("has no previous command recorded", result.stdout)
        self.assertEqual(status(self.control)["pid"], first.pid)
