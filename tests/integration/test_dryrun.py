# -*- test-case-name: tests.integration.test_dryrun -*-
"""
C{twistd migrate --dry-run}: new code tried on a snapshot of the live
state, in a staging process, while numbered-line streams run through the
service: the report, the exit code, and a service left exactly as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from twisted.trial.unittest import TestCase

from migrator.testing import READY, ServiceProcess, startMigrate

from ._support import (
    NUMBERED_ADAPTERS,
    NUMBERED_TAC,
    START_TIMEOUT,
    finishLineClient,
    startLineClient,
    status,
)

CONNECTIONS = 8
LINE = "tests.integration.apps.numbered.NumberedLine"
#: Logged by the incumbent when it took the snapshot.
SNAPSHOT = re.compile(
    r"dry run by pid (?P<pid>\d+) \(Python [^)]*\): captured (?P<count>\d+) of (?P<held>\d+) "
    r"connection\(s\).*and thawed them in the same reactor turn; nothing changed hands"
)


class DryRunTests(TestCase):
    """
    A dry run changes nothing in the running service: its pid, generation
    and streams go on; only C{status}'s C{last_dry_run} says it happened.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-dry-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.control = os.path.join(self.work, "ctl")
        self.incumbent = self.start([NUMBERED_ADAPTERS], name="incumbent")
        self.incumbent.waitFor(READY, START_TIMEOUT)
        port = int(self.incumbent.waitFor(r"NumberedFactory starting on (\d+)", 10).group(1))
        self.stop = os.path.join(self.work, "stop")
        self.client = startLineClient(self, port, CONNECTIONS, self.stop, pad=200)

    def start(
        self, adapters: list[str], dryRun: bool = False, name: str = ""
    ) -> ServiceProcess:
        options = [option for module in adapters for option in ("--adapters", module)]
        if dryRun:
            options.append("--dry-run")
        process = startMigrate(
            self.control,
            ["--tac", NUMBERED_TAC],
            migrateOptions=options,
            cwd=self.work,
            env={"NUMBERED_PAD": "200"},
            name=name,
        )
        self.addCleanup(process.stop)
        return process

    def dryRun(self, adapters: str) -> tuple[int, str]:
        staging = self.start([adapters], dryRun=True, name="staging")
        code = staging.waitForExit(START_TIMEOUT)
        return code, staging.output()

    def assertUnchanged(self) -> dict[str, Any]:
        """
        The incumbent serves on as generation 0 with its own pid, no
        takeover was attempted, and every stream went on without a gap or
        a duplicate (the line client checks each reply) and without moving.

        @return: its C{last_dry_run}.
        """
        now = status(self.control)
        self.assertEqual(
            (now["pid"], now["generation"], now["state"]), (self.incumbent.pid, 0, "serving")
        )
        self.assertIsNone(now["takeover"])
        self.assertIsNone(now["last_takeover"])
        self.assertEqual(now["connections"]["open"], CONNECTIONS)
        result = finishLineClient(self, self.client, self.stop)
        self.assertEqual(result["made"], CONNECTIONS)
        self.assertEqual(result["min_hops"], 0)
        self.assertGreater(result["received"], 0)
        self.assertIsNone(self.incumbent.process.poll())
        last: dict[str, Any] = now["last_dry_run"]
        return last

    def test_populateRaises(self) -> None:
        """
        New code whose C{populate} raises: the dry run exits 1 naming the
        class and the error, and the service is unchanged; the incumbent
        records the failed dry run.
        """
        code, output = self.dryRun("tests.integration.apps.brokennumbered")
        self.assertEqual(code, 1, output)
        self.assertIn(f"{LINE}: FAILED {CONNECTIONS} of {CONNECTIONS}: ", output)
        self.assertIn("RuntimeError: this version cannot read a NumberedLine's state", output)
        self.assertIn(f"dry run: FAILED: {LINE} (exit 1)", output)
        snapshot = self.incumbent.waitFor(SNAPSHOT, 10)
        self.assertEqual(int(snapshot["count"]), CONNECTIONS)
        last = self.assertUnchanged()
        self.assertEqual((last["outcome"], last["failed"]), ("failed", [LINE]))
        self.assertEqual(
            last["classes"][LINE], {"restored": 0, "failed": CONNECTIONS, "staying": 0}
        )
        # The staging process bound nothing and wrote nothing: the control
        # socket is the incumbent's, no temporary one is left.
        self.assertEqual(sorted(os.listdir(self.work)), ["ctl", "stop"])

    def test_good(self) -> None:
        """
        New code that reads the state, whose C{checkRestored} passes for
        every connection: exit 0 with the report; the service is unchanged.
        """
        code, output = self.dryRun("tests.integration.apps.checkednumbered")
        self.assertEqual(code, 0, output)
        self.assertIn(f"{LINE}: would move {CONNECTIONS}", output)
        self.assertIn("then checkRestored)", output)
        self.assertIn("tcp:0:127.0.0.1#0 (would be adopted)", output)
        self.assertIn(
            f"dry run: every connection would move ({CONNECTIONS} restored here) (exit 0)",
            output,
        )
        last = self.assertUnchanged()
        self.assertEqual(last["outcome"], "ok")
        self.assertEqual(last["connections"], CONNECTIONS)
