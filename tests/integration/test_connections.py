# -*- test-case-name: tests.integration.test_connections -*-
"""
Established connections and their object graph move with every takeover:
no byte lost or doubled, no second C{connectionMade}.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, startMigrate

from ._support import NUMBERED_ADAPTERS, NUMBERED_TAC, finishLineClient, slow, startLineClient

ADAPTERS = NUMBERED_ADAPTERS
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) \((?P<size>\d+) bytes of state, "
    r"(?P<pending>\d+) unsent bytes"
)
PAD = 1000
TAKEOVERS = int(os.environ.get("MIGRATOR_TEST_TAKEOVERS", "50"))


@slow
class NumberedLinesTests(TestCase):
    """
    Clients stream numbered lines through many consecutive takeovers while
    reading slowly, so replies are pending in the incumbent when it hands
    over.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-conn-")
        self.addCleanup(shutil.rmtree, self.work, True)
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
        client = startLineClient(self, port, connections, stop, pad=PAD)
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
        result = finishLineClient(self, client, stop)
        self.assertEqual(result["made"], connections)
        self.assertEqual(moved, [connections] * TAKEOVERS)
        self.assertGreaterEqual(result["min_hops"], TAKEOVERS)
        self.assertGreater(pendingSeen, 0, "no takeover carried unsent bytes")
        self.assertGreater(result["received"], connections * TAKEOVERS)
