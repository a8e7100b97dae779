# -*- test-case-name: tests.integration.test_incumbent_death -*-
"""
Never none: the incumbent is killed (C{SIGKILL}) at each step of a
takeover, under load, and the successor completes the takeover on its own;
and an incumbent asked to stop (C{SIGTERM}) in the middle of a takeover
finishes handing over first.

The service is the numbered line app on a fixed loopback port (so that a
successor that received no port can bind it as a fresh start would), with
a client opening a connection every 5 ms and keeping it (which counts
refused and lost connections) and, once the connections' state has left
the incumbent, a line client streaming numbered lines both ways (which
checks that the moved streams lose nothing).  The successor stops at each
point with a C{hang} fault (its reactor still runs) until the test has
killed the incumbent; the incumbent's own C{state-sent} point kills it
after it sent the state and before it answered.  The refused and lost
counts of each kill point are logged (C{MIGRATOR_IT_VERBOSE} prints them),
not asserted as figures: see docs/operators.md for them.
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

from twisted.python import log
from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

from ._support import (
    FAULT,
    Load,
    Workspace,
    assertAllOk,
    reportLoad,
    sitePort,
    startService,
    status,
    waitServing,
)

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
NUMBERED_TAC = os.path.join(APPS, "numbered.tac")
ADAPTERS = "tests.integration.apps.numbered"
ALONE = re.compile(
    r"the incumbent \(pid (?P<pid>\d+)\) died during step (?P<step>\S+); this process "
    r"completed the takeover on its own: accepting on (?P<ports>\d+) port\(s\) "
    r"\((?P<adopted>\d+) adopted from the incumbent, (?P<bound>\d+) bound afresh\), "
    r"(?P<moved>\d+) connection\(s\) moved with their state, (?P<lost>.+?) whose state "
    r"did not arrive"
)
STOPPING = re.compile(r"asked to stop during a takeover by pid (?P<pid>\d+) \(step (?P<step>\S+)\)")
STEP = 90.0
PAD = 200


def freePort() -> int:
    """
    A loopback port nobody listens on now.
    """
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def whoServes(port: int) -> int:
    """
    The pid of the process that serves a new connection to C{port}.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as s:
        s.sendall(b"pid\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(1024)
            if not chunk:
                raise AssertionError(f"closed before answering: {data!r}")
            data += chunk
    line = data.split(b"\r\n", 1)[0]
    assert line.startswith(b"pid "), line
    return int(line[4:])


class _Killing:
    """
    The numbered app under migrate on a fixed port, with its clients.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-die-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, True)  # type: ignore[attr-defined]
        self.control = os.path.join(self.work, "ctl")
        self.port = freePort()

    def start(self, takeover: bool = False, fault: str = "", name: str = "") -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", NUMBERED_TAC],
            takeover=takeover,
            migrateOptions=["--adapters", ADAPTERS, "--drain-timeout", "30"],
            cwd=self.work,
            env={
                "NUMBERED_PAD": str(PAD),
                "NUMBERED_LISTEN": f"tcp:{self.port}:interface=127.0.0.1",
                "MIGRATOR_FAULT": fault,
            },
            name=name,
        )
        self.addCleanup(process.stop)  # type: ignore[attr-defined]
        return process

    def client(self, script: str, *args: str) -> tuple[ServiceProcess, str]:
        stop = os.path.join(self.work, f"stop-{script}")
        argv = [sys.executable, os.path.join(APPS, script), "--port", str(self.port),
                "--stop-file", stop, *args]  # fmt: skip
        process = ServiceProcess(argv, env=childEnvironment(), name=script)
        self.addCleanup(process.stop)  # type: ignore[attr-defined]
        return process, stop

    def finish(self, process: ServiceProcess, stop: str) -> dict[str, object]:
        with open(stop, "w"):
            pass
        case: TestCase = self  # type: ignore[assignment]
        case.assertEqual(process.waitForExit(STEP), 0, process.output()[-3000:])
        result: dict[str, object] = json.loads(process.lines[-1])
        return result

    def killedAt(self, point: str, step: str, moved: bool) -> None:
        """
        Kill the incumbent at C{point} under load; the successor must
        complete the takeover on its own (saying that the incumbent died
        during C{step}), serve the port, and, if C{moved} (the state had
        left), lose nothing of the streams it moved.
        """
        case: TestCase = self  # type: ignore[assignment]
        incumbentFault = "kill:state-sent" if point == "state-sent" else ""
        incumbent = self.start(fault=incumbentFault, name="incumbent")
        case.assertEqual(int(incumbent.waitFor(READY, STEP)["generation"]), 0)
        churn, churnStop = self.client("churnclient.py", "--interval", "0.005", "--max", "3000",
                                       "--duration", "300")  # fmt: skip
        churn.waitFor("CHURN READY", STEP)
        streams = None
        if moved:
            streams, streamsStop = self.client(
                "lineclient.py", "--connections", "4", "--rate", "100", "--pad", str(PAD),
                "--duration", "300",
            )  # fmt: skip
            streams.waitFor("LINECLIENT READY", STEP)

        successorFault = "" if point == "state-sent" else f"hang:{point}"
        successor = self.start(takeover=True, fault=successorFault, name="successor")
        if successorFault:
            injected = successor.waitFor(FAULT, STEP)
            case.assertEqual(injected.group("action", "point"), ("hang", point))
            incumbent.signal(signal.SIGKILL)
        case.assertEqual(incumbent.waitForExit(STEP), -signal.SIGKILL)
        alone = successor.waitFor(ALONE, STEP)
        case.assertEqual((int(alone["pid"]), alone["step"]), (incumbent.pid, step), alone.string)
        ready = successor.waitFor(READY, STEP)
        generation = 0 if point == "connected" else 1
        case.assertEqual((int(ready["generation"]), int(ready["pid"])), (generation, successor.pid))
        case.assertEqual(int(alone["ports"]), 1)
        case.assertEqual(whoServes(self.port), successor.pid)
        now = status(self.control)
        case.assertEqual((now["pid"], now["generation"]), (successor.pid, generation))
        case.assertEqual(now["took_over"]["alone"]["pid"], incumbent.pid)

        churned = self.finish(churn, churnStop)
        lost = int(churned["closed"]) + int(churned["reset"])  # type: ignore[call-overload]
        case.assertEqual(churned["other"], 0, churned["errors"])
        case.assertEqual(churned["unanswered"], 0, churned["errors"])
        case.assertEqual(churned["pids"], {str(successor.pid): churned["answered"]})
        line = (
            f"{case.id()}: killed at {point}: {churned['refused']} refused, {lost} of "
            f"{churned['opened']} connections lost (state not sent: {alone['lost']}), "
            f"{alone['moved']} moved"
        )
        if streams is not None:
            streamed = self.finish(streams, streamsStop)
            # The moved streams lose nothing: every line answered, in order,
            # by the incumbent and then the successor.
            case.assertEqual(
                (streamed["error_count"], streamed["unanswered"], streamed["missing_stats"]),
                (0, 0, 0),
                streamed["errors"],
            )
            case.assertEqual(streamed["min_hops"], 1)
            case.assertEqual(lost, 0, churned["errors"])
            case.assertEqual(churned["refused"], 0)
            line += f"; streams: {streamed['received']} replies checked, 0 lost"
        elif point != "connected":
            # The ports had arrived: the backlog held new connections.
            case.assertEqual(churned["refused"], 0)
        log.msg(line)
        if os.environ.get("MIGRATOR_IT_VERBOSE"):
            sys.stderr.write(line + "\n")


class IncumbentKilledTests(_Killing, TestCase):
    """
    The incumbent is killed at each step of a takeover.
    """

    def test_killedBeforeBegin(self) -> None:
        """
        Killed once the successor has connected, before C{begin}: no port
        arrived, so the successor binds the port itself (generation 0) and
        serves; the connections the incumbent held end with it, and those
        made while nothing listened were refused.
        """
        self.killedAt("connected", "connect", moved=False)

    def test_killedBeforeAdopt(self) -> None:
        """
        Killed once the ports arrived, before the successor adopted them:
        it adopts them (the kernel's backlog held new connections: none
        refused) and serves as generation 1.
        """
        self.killedAt("before-adopt", "adopt", moved=False)

    def test_killedAfterAdopt(self) -> None:
        """
        Killed after the successor adopted the ports, before it reported
        C{prepared}: it serves them; nothing refused.
        """
        self.killedAt("after-adopt", "adopt", moved=False)

    def test_killedAfterSendingState(self) -> None:
        """
        Killed once it has sent the connections' state, before answering
        C{capture}: the successor restores what arrived, and the streams
        lose nothing.
        """
        self.killedAt("state-sent", "capture", moved=True)

    def test_killedAfterRestore(self) -> None:
        """
        Killed once the successor restored the connections: it activates
        them; nothing is refused or lost.
        """
        self.killedAt("after-restore", "restore", moved=True)

    def test_killedAfterSwitch(self) -> None:
        """
        Killed after the switch: the successor accepts and activates the
        connections; nothing is refused or lost.
        """
        self.killedAt("after-switch", "switch", moved=True)

    def test_killedBeforeCommit(self) -> None:
        """
        Killed just before the successor asks to commit: as after the
        switch.
        """
        self.killedAt("before-commit", "commit", moved=True)


class StoppedMidTakeoverTests(TestCase):
    """
    The incumbent gets C{SIGTERM} in the middle of a takeover.
    """

    def test_sigtermFinishesTheTakeover(self) -> None:
        """
        Stock C{twistd web} under load; the successor waits at a gate once
        it has restored (the incumbent has stopped accepting and frozen its
        connections); the incumbent gets C{SIGTERM}: it says it finishes
        the takeover first, and does not close its port.  Once the gate
        opens the takeover commits, the incumbent exits (as twistd does on
        C{SIGTERM}) without ever saying it keeps serving, and not one request of the load failed.
        """
        workspace = Workspace(self)
        gate = workspace.file("gate")
        incumbent = startService(self, workspace, name="incumbent")
        waitServing(incumbent, 0)
        load = Load(self, workspace, sitePort(incumbent))
        successor = startService(
            self,
            workspace,
            takeover=True,
            fault="gate:after-restore",
            env={"MIGRATOR_FAULT_GATE": gate},
            name="successor",
        )
        injected = successor.waitFor(FAULT, STEP)
        self.assertEqual(injected.group("action", "point"), ("gate", "after-restore"))
        incumbent.signal(signal.SIGTERM)
        stopping = incumbent.waitFor(STOPPING, STEP)
        self.assertEqual((int(stopping["pid"]), stopping["step"]), (successor.pid, "captured"))
        with open(gate, "w"):
            pass
        waitServing(successor, 1)
        self.assertEqual(int(incumbent.waitFor(HANDED_OFF, STEP)["pid"]), successor.pid)
        # twistd ends a process stopped by a signal with that signal.
        self.assertEqual(incumbent.waitForExit(STEP), -signal.SIGTERM)
        self.assertNotIn("keeps serving", incumbent.output())
        self.assertEqual(status(workspace.control)["pid"], successor.pid)
        summary = load.finish()
        reportLoad(self, "sigterm mid-takeover", summary)
        assertAllOk(self, summary)
