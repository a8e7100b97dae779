# -*- test-case-name: tests.integration.test_connections -*-
"""
Established connections and their object graph move with every takeover:
no byte lost or doubled, no second C{connectionMade}.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile

from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
NUMBERED_TAC = os.path.join(APPS, "numbered.tac")
ADAPTERS = "tests.integration.apps.numbered"
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) \((?P<size>\d+) bytes of state, "
    r"(?P<pending>\d+) unsent bytes"
)
PAD = 1000
TAKEOVERS = int(os.environ.get("MIGRATOR_TEST_TAKEOVERS", "50"))


class NumberedLinesTests(TestCase):
    """
    Clients stream numbered lines through many consecutive takeovers while
    reading slowly, so replies are pending in the incumbent when it hands
    over.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-conn-")
        os.chmod(self.work, 0o700)
        self.control = os.path.join(self.work, "ctl")

    def start(self, takeover: bool = False) -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", NUMBERED_TAC],
            takeover=takeover,
            migrateOptions=["--adapters", ADAPTERS, "--drain-timeout", "30"],
            cwd=self.work,
            env={"NUMBERED_PAD": str(PAD)},
        )
        self.addCleanup(process.stop)
        return process

    def test_fiftyTakeoversWithSlowReaders(self) -> None:
        """
        Through C{TAKEOVERS} consecutive takeovers, every connection stays
        open and every numbered reply arrives once, in order and intact;
        C{connectionMade} ran once per connection over the whole run; unsent
        bytes were carried at least once; every incumbent exited.
        """
        incumbent = self.start()
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(r"NumberedFactory starting on (\d+)", 10).group(1))
        stop = os.path.join(self.work, "stop")
        connections = 20
        client = ServiceProcess(
            [
                sys.executable,
                os.path.join(APPS, "lineclient.py"),
                "--port",
                str(port),
                "--connections",
                str(connections),
                "--rate",
                "40",
                "--stop-file",
                stop,
                "--pad",
                str(PAD),
            ],
            env=childEnvironment(),
            name="lineclient",
        )
        self.addCleanup(client.stop)
        client.waitFor("LINECLIENT READY", 30)
        pendingSeen = 0
        moved = []
        for n in range(1, TAKEOVERS + 1):
            successor = self.start(takeover=True)
            ready = successor.waitFor(READY, 60)
            self.assertEqual(int(ready["generation"]), n)
            froze = incumbent.waitFor(FROZE, 30)
            moved.append(int(froze["count"]))
            pendingSeen += int(froze["pending"]) > 0
            incumbent.waitFor(HANDED_OFF, 30)
            self.assertEqual(incumbent.waitForExit(60), 0)
            incumbent = successor
        with open(stop, "w"):
            pass
        self.assertEqual(client.waitForExit(120), 0)
        result = json.loads(client.lines[-1])
        self.assertEqual(result["errors"], [])
        self.assertEqual(result["error_count"], 0)
        self.assertEqual(result["missing_stats"], 0)
        self.assertEqual(result["unanswered"], 0)
        self.assertEqual(result["made"], connections)
        self.assertEqual(moved, [connections] * TAKEOVERS)
        self.assertGreaterEqual(result["min_hops"], TAKEOVERS)
        self.assertGreater(pendingSeen, 0, "no takeover carried unsent bytes")
        self.assertGreater(result["received"], connections * TAKEOVERS)
