# -*- test-case-name: tests.integration.test_dns -*-
"""
The stock C{twistd dns} under C{twistd migrate}, with real processes: its
UDP and TCP ports move at each takeover, and a client sending UDP queries
throughout gets every one answered.

The zone is a Python zone file written by the test; its C{who.example.test}
TXT record is the serving process's pid, so that each answer says which
generation gave it.  Queries use dnspython (the C{test} extra); C{dig} is
used too when it is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

from twisted.python import log
from twisted.trial.unittest import SkipTest, TestCase

from migrator.testing import ServiceProcess, startMigrate

from ._support import (
    ABANDONED,
    EXIT_TIMEOUT,
    FAULT,
    START_TIMEOUT,
    Workspace,
    expectHandedOff,
    waitServing,
)

try:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype
except ImportError:  # pragma: no cover - the test extra installs it
    dns = None

#: The name whose TXT record is the answering process's pid.
WHO = "who.example.test"

#: How many takeovers the load test performs.
TAKEOVERS = 3
#: How long one attempt of a query waits for its answer, and how many more
#: attempts a query gets after the first.
QUERY_TIMEOUT = 2.0
RETRIES = 2
#: Bounds of the load, whatever happens: queries per client thread, and
#: seconds.
MAX_QUERIES = 50_000
MAX_DURATION = 180.0
#: Concurrent query clients (each one sends its next query when the last
#: one is answered).
CLIENTS = 4
#: Answers each client must have had from a generation before the test
#: moves on (so that every generation serves some of the load).
SETTLE = 50

_ZONE = """\
import os

zone = [
    SOA(
        "example.test",
        mname="ns1.example.test",
        rname="root.example.test",
        serial=1,
        refresh=3600,
        retry=600,
        expire=86400,
        minimum=60,
    ),
    A("www.example.test", "10.0.0.2"),
    TXT("who.example.test", str(os.getpid()).encode("ascii")),
]
"""

#: The ports of C{twistd dns} in migrate's readiness line.
_PORTS = re.compile(
    r"tcp:0:127\.0\.0\.1#0=127\.0\.0\.1:(?P<tcp>\d+), udp:0:127\.0\.0\.1#0=127\.0\.0\.1:(?P<udp>\d+)"
)


def dnsService(zone: str) -> list[str]:
    """
    The argv of C{twistd dns} serving C{zone} on loopback, UDP and TCP, on
    ports the kernel picks (C{--port 0}: each of the two gets its own; a
    successor declaring C{--port 0} again adopts both).
    """
    return ["dns", "--port", "0", "--interface", "127.0.0.1", "--pyzone", zone]


def whoAnswered(response: Any) -> int:
    """
    The pid in an answer to the C{who.example.test} TXT query.
    """
    [rrset] = response.answer
    [rdata] = list(rrset)
    return int(b"".join(rdata.strings))


def ask(port: int, tcp: bool = False) -> int:
    """
    One C{who.example.test} TXT query, on UDP (or TCP).

    @return: the pid of the process that answered.
    """
    query = dns.message.make_query(WHO, dns.rdatatype.TXT)
    send = dns.query.tcp if tcp else dns.query.udp
    return whoAnswered(send(query, "127.0.0.1", timeout=QUERY_TIMEOUT, port=port))


class QueryLoad:
    """
    L{CLIENTS} threads, each sending one UDP query at a time to C{port}
    until L{finish}: every query waits L{QUERY_TIMEOUT} for its answer and
    is sent again (a new query, from a new socket) at most L{RETRIES}
    times.

    @ivar records: one per query: C{(started, attempts, pid)}, C{pid} being
        C{None} if no attempt was answered.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.records: list[tuple[float, int, int | None]] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + MAX_DURATION
        self._threads = [
            threading.Thread(target=self._run, name=f"dns-client-{i}", daemon=True)
            for i in range(CLIENTS)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        for _ in range(MAX_QUERIES):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            started = time.time()
            pid = None
            attempts = 0
            while pid is None and attempts <= RETRIES:
                attempts += 1
                try:
                    pid = ask(self.port)
                except dns.exception.Timeout:
                    continue
                except Exception as e:  # a wrong answer: recorded, fails the test
                    with self._cond:
                        self.errors.append(f"{type(e).__name__}: {e}")
            with self._cond:
                self.records.append((started, attempts, pid))
                self._cond.notify_all()

    def waitForAnswers(self, pid: int, count: int, timeout: float = START_TIMEOUT) -> None:
        """
        Wait until C{count} queries per client have been answered by C{pid}.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for r in self.records if r[2] == pid) < count * CLIENTS:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not any(t.is_alive() for t in self._threads):
                    raise AssertionError(
                        f"fewer than {count * CLIENTS} answers from pid {pid}: "
                        f"{self.summary(0, time.time())}"
                    )
                self._cond.wait(min(remaining, 1.0))

    def finish(self) -> None:
        """
        Stop sending and wait for the queries in flight (each bounded by
        its attempts' timeouts).
        """
        self._stop.set()
        for thread in self._threads:
            thread.join(QUERY_TIMEOUT * (RETRIES + 1) + 10)
            if thread.is_alive():
                raise AssertionError(f"{thread.name} did not stop")

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """
        The counts of the queries first sent between wall-clock times
        C{start} and C{end}: C{queries}, C{first_try} (answered at the first
        attempt), C{retried} (answered after one or more retries),
        C{unanswered}, C{retries} (attempts beyond the first, all queries)
        and C{by_pid} (answers per answering process).
        """
        with self._cond:
            window = [r for r in self.records if start <= r[0] < end]
        byPid: dict[int, int] = {}
        for _, _, pid in window:
            if pid is not None:
                byPid[pid] = byPid.get(pid, 0) + 1
        return {
            "queries": len(window),
            "first_try": sum(1 for r in window if r[2] is not None and r[1] == 1),
            "retried": sum(1 for r in window if r[2] is not None and r[1] > 1),
            "unanswered": sum(1 for r in window if r[2] is None),
            "retries": sum(r[1] - 1 for r in window),
            "by_pid": byPid,
        }


def report(case: TestCase, label: str, summary: dict[str, Any]) -> None:
    """
    Keep the query counts in the test log, and on stderr when
    C{MIGRATOR_IT_VERBOSE} is set.
    """
    line = f"{case.id()} {label}: " + " ".join(f"{k}={v}" for k, v in summary.items())
    log.msg(line)
    if os.environ.get("MIGRATOR_IT_VERBOSE"):
        sys.stderr.write(line + "\n")


class DNSTakeoverTests(TestCase):
    """
    C{twistd dns} moves with its UDP port.
    """

    def setUp(self) -> None:
        if dns is None:
            raise SkipTest("dnspython is not installed (it is in the test extra)")
        self.workspace = Workspace(self)
        self.zone = os.path.join(self.workspace.path, "zone.py")
        with open(self.zone, "w") as f:
            f.write(_ZONE)

    def spawn(self, generation: int, fault: str = "") -> ServiceProcess:
        """
        Start generation C{generation} of the DNS service (a takeover if it
        is not the first), with the C{MIGRATOR_FAULT} C{fault}.
        """
        process = startMigrate(
            self.workspace.control,
            dnsService(self.zone),
            takeover=generation > 0,
            env={"MIGRATOR_FAULT": fault},
            name=f"dns-{generation}",
        )
        self.addCleanup(process.stop)
        return process

    def start(self, generation: int) -> tuple[ServiceProcess, int, int]:
        """
        Start generation C{generation} of the DNS service (a takeover if it
        is not the first) and wait until it serves.

        @return: the process and its TCP and UDP ports.
        """
        process = self.spawn(generation)
        ready = waitServing(process, generation)
        ports = _PORTS.search(ready.string)
        self.assertIsNotNone(ports, ready.string)
        assert ports is not None
        return process, int(ports.group("tcp")), int(ports.group("udp"))

    def test_takeoversUnderUDPLoad(self) -> None:
        """
        Four clients each sending one UDP query at a time through 3
        takeovers get every query answered, each by the process serving
        at the time, with no query unanswered within its retry budget
        (the counts, retries included, are in the test log).  Each
        successor adopts the same UDP and TCP ports (the same socket, so a
        query waiting in it is read by whoever reads next), and answers on
        both.
        """
        incumbent, tcpPort, udpPort = self.start(0)
        self.assertEqual(ask(udpPort), incumbent.pid)
        load = QueryLoad(udpPort)
        self.addCleanup(load.finish)
        load.waitForAnswers(incumbent.pid, SETTLE)

        windows = []
        chain = [incumbent]
        for generation in range(1, TAKEOVERS + 1):
            began = time.time()
            successor, tcpNow, udpNow = self.start(generation)
            expectHandedOff(self, chain[-1], successor)
            windows.append((generation, began, time.time()))
            self.assertEqual((tcpNow, udpNow), (tcpPort, udpPort))
            load.waitForAnswers(successor.pid, SETTLE)
            self.assertEqual(ask(tcpPort, tcp=True), successor.pid)
            chain.append(successor)
        load.finish()

        whole = load.summary(0, time.time())
        report(self, "whole run", whole)
        for generation, began, ended in windows:
            report(self, f"takeover {generation}", load.summary(began, ended))
        self.assertEqual(load.errors, [])
        self.assertEqual(whole["unanswered"], 0, whole)
        self.assertEqual(whole["first_try"] + whole["retried"], whole["queries"], whole)
        # Every generation answered, and nobody else did.
        self.assertEqual(set(whole["by_pid"]), {p.pid for p in chain}, whole)

    def test_rollbackAfterSwitch(self) -> None:
        """
        A successor killed right after the switch (its UDP port adopted and
        reading, the incumbent's paused) leaves the incumbent serving: it
        resumes reading the same socket, answers what waited in it, and
        every query of a load running throughout is answered.
        """
        incumbent, _, udpPort = self.start(0)
        load = QueryLoad(udpPort)
        self.addCleanup(load.finish)
        load.waitForAnswers(incumbent.pid, SETTLE)

        began = time.time()
        successor = self.spawn(1, fault="kill:after-switch")
        fault = successor.waitFor(FAULT, START_TIMEOUT)
        self.assertEqual(fault.group("action", "point"), ("kill", "after-switch"))
        self.assertNotEqual(successor.waitForExit(EXIT_TIMEOUT), 0)
        abandoned = incumbent.waitFor(ABANDONED, EXIT_TIMEOUT)
        self.assertEqual(abandoned.group("step"), "switched")
        ended = time.time()
        # Then the incumbent answers more queries, by itself.
        answered = load.summary(0, time.time())["by_pid"].get(incumbent.pid, 0)
        load.waitForAnswers(incumbent.pid, answered // CLIENTS + SETTLE)
        load.finish()

        whole = load.summary(0, time.time())
        report(self, "whole run", whole)
        report(self, "rollback", load.summary(began, ended))
        self.assertEqual(load.errors, [])
        self.assertEqual(whole["unanswered"], 0, whole)
        self.assertEqual(set(whole["by_pid"]), {incumbent.pid}, whole)
        self.assertEqual(ask(udpPort), incumbent.pid)

    def test_dig(self) -> None:
        """
        C{dig} gets its answer from the incumbent, then from the successor,
        on the same UDP port.
        """
        dig = shutil.which("dig")
        if dig is None:
            raise SkipTest("dig is not installed")
        incumbent, _, udpPort = self.start(0)

        def digWho() -> int:
            result = subprocess.run(
                [dig, "@127.0.0.1", "-p", str(udpPort), WHO, "TXT", "+short",
                 "+notcp", f"+time={int(QUERY_TIMEOUT)}", f"+tries={RETRIES + 1}"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=START_TIMEOUT,
                check=True,
            )
            return int(result.stdout.decode("ascii").strip().strip('"'))

        self.assertEqual(digWho(), incumbent.pid)
        successor, _, udpNow = self.start(1)
        expectHandedOff(self, incumbent, successor)
        self.assertEqual(udpNow, udpPort)
        self.assertEqual(digWho(), successor.pid)
