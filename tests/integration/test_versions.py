# -*- test-case-name: tests.integration.test_versions -*-
"""
New code takes over live state, and old code takes it back: versioned
state translated up and down across takeovers, with live numbered-line
streams whose replies carry the server's counters (the client checks
them), and Twisted's own C{Versioned} upgrades across a takeover.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from typing import Any

from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

from ._support import APPS, finishLineClient, startLineClient, status

PAD = 1000
CONNECTIONS = 10
FROZE = re.compile(r"froze and sent (?P<count>\d+) connection\(s\)")
STARTING = re.compile(r"(?:Counter|Greeter)Factory starting on (?P<port>\d+)")
FIRST_SEEN = re.compile(r"counter v2 set firstSeen=(?P<line>\d+)")
COUNTER = {
    1: (os.path.join(APPS, "counter_v1.tac"), "tests.integration.apps.counter_v1"),
    2: (os.path.join(APPS, "counter_v2.tac"), "tests.integration.apps.counter_v2"),
}
GREETER_TAC = os.path.join(APPS, "versioned", "greeter.tac")


def serverStats(port: int) -> dict[str, str]:
    """
    Ask the service for its C{stats} on a connection of its own (closed
    at once).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"stats\r\n")
        data = b""
        for _ in range(100):
            if b"\r\n" in data:
                break
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\r\n")[0].decode("ascii")
    if not line.startswith("stats "):
        raise AssertionError(f"not a stats line: {line!r}")
    return dict(kv.split("=") for kv in line[6:].split())


class VersionsTests(TestCase):
    """
    Takeovers between two versions of an application's code.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-versions-")
        self.addCleanup(shutil.rmtree, self.work, True)
        os.chmod(self.work, 0o700)
        self.control = os.path.join(self.work, "ctl")

    def start(
        self, service: list[str], adapters: str | None, takeover: bool, name: str, env: dict[str, str] | None = None
    ) -> ServiceProcess:
        options = ["--drain-timeout", "30"]
        if adapters:
            options += ["--adapters", adapters]
        process = startMigrate(
            self.control,
            service,
            takeover=takeover,
            migrateOptions=options,
            cwd=self.work,
            env={"NUMBERED_PAD": str(PAD), **(env or {})},
            name=name,
        )
        self.addCleanup(process.stop)
        return process

    def takeOver(self, incumbent: ServiceProcess, successor: ServiceProcess, generation: int) -> None:
        """
        Wait for C{successor} to serve as C{generation}, every connection
        moved, and C{incumbent} to exit cleanly.
        """
        ready = successor.waitFor(READY, 60)
        self.assertEqual(int(ready["generation"]), generation)
        self.assertEqual(int(incumbent.waitFor(FROZE, 30)["count"]), CONNECTIONS)
        incumbent.waitFor(HANDED_OFF, 30)
        self.assertEqual(incumbent.waitForExit(60), 0, incumbent.output()[-3000:])

    def test_upDownUp(self) -> None:
        """
        v1 -> v2 -> v1 -> v2 under live streams: every reply arrives once,
        in order, with the connection's counter continuous whichever code
        counted (v1's C{count} is v2's C{seen}); the factory's dictionary
        counted every line once; C{firstSeen}, which only v2 knows, was
        set by the first v2 and survived the stay in v1 (the second v2
        never set it again, and the final C{stats} agree with the first v2
        reply each client saw); the factory's C{v2Lines} too.  Each side
        logs, and the successor's status shows, the steps run per class.
        """
        tac, adapters = COUNTER[1]
        incumbent = self.start(["--tac", tac], adapters, False, "v1-0")
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(STARTING, 30)["port"])
        stop = os.path.join(self.work, "stop")
        client = startLineClient(self, port, CONNECTIONS, stop, pad=PAD, counted=True)
        incumbent.waitFor("counter v1 answered its first line", 30)
        reports: list[dict[str, Any]] = []
        processes = [incumbent]
        for generation, version in enumerate((2, 1, 2), start=1):
            tac, adapters = COUNTER[version]
            successor = self.start(["--tac", tac], adapters, True, f"v{version}-{generation}")
            self.takeOver(incumbent, successor, generation)
            successor.waitFor(f"counter v{version} answered its first line", 30)
            if generation == 1:
                # Every connection got a v2 answer: firstSeen is set on all.
                index = 0
                for _ in range(CONNECTIONS):
                    successor.waitFor(FIRST_SEEN, 30, start=index)
                    index = next(
                        i for i in range(index, len(successor.lines)) if FIRST_SEEN.search(successor.lines[i])
                    ) + 1
            reports.append(status(self.control)["took_over"]["translations"])
            processes.append(successor)
            incumbent = successor
        result = finishLineClient(self, client, stop)
        self.assertGreater(result["tags"].get("v1", 0), 0)
        self.assertGreater(result["tags"].get("v2", 0), 0)
        # The second v2 found firstSeen set on every connection.
        self.assertEqual([line for line in incumbent.lines if FIRST_SEEN.search(line)], [])
        final = serverStats(port)
        self.assertEqual(int(final["lines"]), result["received"])
        self.assertEqual(int(final["v2lines"]), result["tags"]["v2"])

        up = {"up 1->2": CONNECTIONS}
        self.assertEqual(reports[0]["counter.Line"]["steps"], up)
        self.assertEqual(reports[1]["counter.Line"]["steps"], {"down 2->1": CONNECTIONS})
        self.assertEqual(reports[2]["counter.Line"]["steps"], up)
        for report in reports:
            self.assertEqual(report["counter.Line"]["versions"], [1, 2])
            self.assertEqual(report["counter.Line"]["translated"], CONNECTIONS)
            self.assertEqual(report["counter.Factory"]["translated"], 1)
        self.assertIn(
            "state translated between versions: counter.Factory: versions 1, 2, 1 object(s) "
            "translated (up 1->2 x 1)",
            incumbent.output(),
        )
        # The v2 that handed over to v1 downgraded before sending.
        self.assertIn(
            "translated before sending: counter.Factory: versions 1, 2, 1 object(s) "
            "translated (down 2->1 x 1)",
            processes[1].output(),
        )

    def test_versionedUpgrade(self) -> None:
        """
        A C{styles.Versioned} protocol at persistence version 1 moves to
        code at version 2 under the default rule and is upgraded by its
        own C{upgradeToVersion2}: the counter renamed there goes on, and
        every connection says it was upgraded.
        """
        base = childEnvironment()["PYTHONPATH"]

        def code(version: int) -> dict[str, str]:
            here = os.path.join(APPS, "versioned", f"v{version}")
            return {"PYTHONPATH": os.pathsep.join([here, base])}

        incumbent = self.start(["--tac", GREETER_TAC], "vgreeter", False, "greeter-v1", code(1))
        incumbent.waitFor(READY, 60)
        port = int(incumbent.waitFor(STARTING, 30)["port"])
        stop = os.path.join(self.work, "stop")
        client = startLineClient(self, port, CONNECTIONS, stop, pad=PAD, counted=True)
        incumbent.waitFor("greeter v1 answered its first line", 30)
        successor = self.start(["--tac", GREETER_TAC], "vgreeter", True, "greeter-v2", code(2))
        self.takeOver(incumbent, successor, 1)
        successor.waitFor("greeter v2 answered its first line", 30)
        report = status(self.control)["took_over"]["translations"]
        result = finishLineClient(self, client, stop)
        self.assertGreater(result["tags"].get("v1", 0), 0)
        self.assertGreater(result["tags"].get("v2", 0), 0)
        self.assertEqual([s["upgraded"] for s in result["stats"]], ["1"] * len(result["stats"]))
        self.assertEqual(
            report["vgreeter.Greeter"]["steps"], {"vgreeter.Greeter.upgradeToVersion2": CONNECTIONS}
        )
        self.assertIn("Upgrading vgreeter.Greeter", successor.output())
