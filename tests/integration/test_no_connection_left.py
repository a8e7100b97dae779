# -*- test-case-name: tests.integration.test_no_connection_left -*-
"""
No connection left behind: a client opens a connection to the numbered line
app every 5 ms, each served at once and kept open, through three takeovers
in a row.  The incumbent stops accepting before it captures, so the set of
connections it captures is closed: every connection ends up served by the
last successor (or would be reported as staying), none is refused, reset or
closed, and the counts of the incumbents' reports, of C{status} and of the
application agree with what the client opened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile

from twisted.python import log
from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

from ._support import status

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
NUMBERED_TAC = os.path.join(APPS, "numbered.tac")
ADAPTERS = "tests.integration.apps.numbered"
LISTENING = re.compile(r"NumberedFactory starting on (?P<port>\d+)")
#: The incumbent's capture: what it held when it stopped accepting, and
#: what it sent and kept.
CAPTURED = re.compile(
    r"stopped accepting on (?P<paused>\d+) port\(s\) with (?P<held>\d+) connection\(s\) "
    r"open; froze and sent (?P<count>\d+) connection\(s\) .*; (?P<stay>\d+) stay here"
)
#: Bounds for waiting on a noisy 2-core machine.
STEP = 90.0
TAKEOVERS = 3


class ContinuousConnectionsTests(TestCase):
    """
    Connections opened continuously through takeovers.
    """

    def test_everyConnectionMovesOrIsReported(self) -> None:
        """
        Through three takeovers with a new connection every 5 ms, every
        connection the client opened is served, at the end, by the last
        successor; none was refused, reset or closed; at each takeover the
        incumbent sent every connection it held when it stopped accepting
        (none stays), the number held grows from one takeover to the next
        (connections kept coming), and each incumbent exits at once (it had
        nothing left to drain), and C{status} of each successor shows as many
        moved.  The application counted each connection once, and has them
        all open.
        """
        work = tempfile.mkdtemp(prefix="migrator-ncl-")
        os.chmod(work, 0o700)
        self.addCleanup(shutil.rmtree, work, True)
        control = os.path.join(work, "ctl")

        def start(takeover: bool = False, name: str = "") -> ServiceProcess:
            process = startMigrate(
                control,
                ["--tac", NUMBERED_TAC],
                takeover=takeover,
                migrateOptions=["--adapters", ADAPTERS, "--drain-timeout", "30"],
                cwd=work,
                env={"NUMBERED_PAD": "20", "MIGRATOR_FAULT": ""},
                name=name,
            )
            self.addCleanup(process.stop)
            return process

        current = start(name="generation 0")
        current.waitFor(READY, STEP)
        port = int(current.waitFor(LISTENING, STEP)["port"])
        stop = os.path.join(work, "stop")
        argv = [
            sys.executable, os.path.join(APPS, "churnclient.py"),
            "--port", str(port),
            "--interval", "0.005",
            "--max", "4000",
            "--duration", "300",
            "--stop-file", stop,
        ]  # fmt: skip
        churn = ServiceProcess(argv, env=childEnvironment(), name="churnclient")
        self.addCleanup(churn.stop)
        churn.waitFor("CHURN READY", STEP)

        helds = []
        for generation in range(1, TAKEOVERS + 1):
            successor = start(takeover=True, name=f"generation {generation}")
            ready = successor.waitFor(READY, STEP)
            self.assertEqual(int(ready["generation"]), generation)
            captured = current.waitFor(CAPTURED, STEP)
            held, count, stay = (int(captured[k]) for k in ("held", "count", "stay"))
            self.assertEqual((count, stay), (held, 0), captured.string)
            helds.append(held)
            self.assertEqual(int(current.waitFor(HANDED_OFF, STEP)["pid"]), successor.pid)
            self.assertEqual(current.waitForExit(STEP), 0)
            took = status(control)["took_over"]
            self.assertEqual(
                (took["connections"], took["held"], took["staying"]), (held, held, {})
            )
            current = successor

        with open(stop, "w"):
            pass
        self.assertEqual(churn.waitForExit(STEP), 0, churn.output()[-3000:])
        result = json.loads(churn.lines[-1])
        opened = result["opened"]
        self.assertEqual(
            {k: result[k] for k in ("refused", "reset", "closed", "other", "unanswered")},
            {"refused": 0, "reset": 0, "closed": 0, "other": 0, "unanswered": 0},
            result["errors"],
        )
        self.assertEqual(result["pids"], {str(current.pid): opened})
        self.assertEqual(
            (int(result["stats"]["made"]), int(result["stats"]["open"])), (opened, opened)
        )
        # Connections kept coming during the takeovers.
        self.assertEqual(helds, sorted(helds))
        self.assertLess(helds[0], helds[-1])
        self.assertLess(helds[-1], opened)
        line = (
            f"{self.id()}: {opened} connections opened through {TAKEOVERS} takeovers; "
            f"held at each capture: {helds}; all served by the last successor"
        )
        log.msg(line)
        if os.environ.get("MIGRATOR_IT_VERBOSE"):
            sys.stderr.write(line + "\n")
