# -*- test-case-name: tests.integration.test_websocket -*-
"""
An Autobahn|Python WebSocket server (L{tests/integration/apps/wsbroadcast.tac})
under C{twistd migrate}, driven by a client library no one here wrote
(C{websockets}, its synchronous client, one sending and one receiving
thread per connection) through ten takeovers: every message is delivered
once and in order, both ways, on one TCP connection per client, and every
old process exits after its commit.

Three clients: on the port the WebSocket factory listens on; through
C{twisted.web}'s C{Site} (autobahn's C{WebSocketResource}); and through the
C{Site} again with permessage-deflate (no context takeover either way).
Every message travels only on loopback; every loop is bounded in count and
time.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, startMigrate

try:
    import autobahn  # noqa: F401
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.sync.client import connect
except ImportError:  # pragma: no cover
    connect = None

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
TAC = os.path.join(APPS, "wsbroadcast.tac")
FROZE = re.compile(r"froze and sent (?P<count>\d+) connection\(s\) .*?(?P<staying>\d+) stay here")
DIRECT = re.compile(r"BroadcastFactory starting on (?P<port>\d+)")
WEB = re.compile(r"Site starting on (?P<port>\d+)")
ECHO = re.compile(
    r"echo (?P<name>\S+) (?P<n>\d+)(?P<frag> frag)? pid=(?P<pid>\d+) peer=(?P<peer>\d+)"
)
#: Generous per-step bound for a noisy 2-core machine.
STEP = 60.0
#: How often each client sends (seconds), and at most how many messages.
PACE = 0.01
MOST = 20_000


class Client:
    """
    One WebSocket connection: a thread sending numbered messages (every
    fifth also broadcast, every seventh in three fragments sent apart)
    until told to stop, and a thread receiving everything.
    """

    def __init__(
        self,
        name: str,
        uri: str,
        go: threading.Event,
        deflate: bool = False,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.go = go
        options: dict[str, Any] = {"proxy": None, "compression": None, "open_timeout": STEP}
        if context is not None:
            options["ssl"] = context
        if deflate:
            options["extensions"] = [
                ClientPerMessageDeflateFactory(
                    server_no_context_takeover=True, client_no_context_takeover=True
                )
            ]
        # Entered as its context (websockets 17 warns when it is not).
        self.ws = connect(uri, **options).__enter__()
        self.local = self.ws.socket.getsockname()
        self.echoes: list[tuple[int, bool, int, int]] = []
        self.casts: dict[str, list[int]] = {}
        self.sent = 0
        self.castsSent: list[int] = []
        self.stop = threading.Event()
        self.expected: dict[str, list[int]] | None = None
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        # The pid of the process that answered the latest echo.
        self.lastPid: int | None = None
        self._echoed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._send, name=f"{name}-send", daemon=True),
            threading.Thread(target=self._receive, name=f"{name}-recv", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _fragments(self, n: int) -> Iterator[str]:
        yield f"echo {self.name} "
        time.sleep(PACE)
        yield f"{n} "
        time.sleep(PACE)
        yield "frag"

    def _send(self) -> None:
        try:
            # Every client is connected before anyone broadcasts.
            self.go.wait(STEP)
            deadline = time.monotonic() + 20 * STEP
            for n in range(MOST):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                if n % 7 == 3:
                    self.ws.send(self._fragments(n))
                else:
                    self.ws.send(f"echo {self.name} {n}")
                if n % 5 == 0:
                    self.ws.send(f"cast {self.name} {n}")
                    self.castsSent.append(n)
                self.sent = n + 1
                time.sleep(PACE)
        except BaseException as e:
            self.errors.append(e)

    def _complete(self) -> bool:
        if self.expected is None or len(self.echoes) < self.sent:
            return False
        return all(len(self.casts.get(k, ())) >= len(v) for k, v in self.expected.items())

    def _receive(self) -> None:
        try:
            deadline = time.monotonic() + 22 * STEP
            while time.monotonic() < deadline and not self._complete():
                try:
                    # Short waits: the end is known only once the sender
                    # stopped (finish()), maybe after the last message.
                    message = self.ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                assert isinstance(message, str), message
                if message.startswith("cast "):
                    _, name, n = message.split()
                    self.casts.setdefault(name, []).append(int(n))
                    continue
                m = ECHO.fullmatch(message)
                assert m is not None and m["name"] == self.name, message
                self.echoes.append((int(m["n"]), bool(m["frag"]), int(m["pid"]), int(m["peer"])))
                with self._echoed:
                    self.lastPid = int(m["pid"])
                    self._echoed.notify_all()
        except BaseException as e:
            self.errors.append(e)
        finally:
            self.done.set()
            with self._echoed:
                self._echoed.notify_all()

    def waitForEchoFrom(self, pid: int, timeout: float) -> bool:
        """
        Wait until an echo answered by process C{pid} has come (or the
        receiver has ended).

        @return: whether one came within C{timeout} seconds.
        """
        with self._echoed:
            self._echoed.wait_for(
                lambda: self.lastPid == pid or self.done.is_set(), timeout
            )
            return self.lastPid == pid

    def finish(self, expected: dict[str, list[int]]) -> None:
        """
        Wait for the sender to have stopped, then for every echo and every
        broadcast in C{expected} (by sender).
        """
        self.expected = expected
        if not self.done.wait(STEP):
            missing = {k: sorted(set(v) - set(self.casts.get(k, ()))) for k, v in expected.items()}
            raise AssertionError(
                f"{self.name}: not everything arrived in time: {len(self.echoes)} of "
                f"{self.sent} echoes, broadcasts missing {missing}, errors {self.errors}"
            )

    def close(self) -> None:
        self.stop.set()
        self.ws.close()
        for t in self._threads:
            t.join(STEP)


def checkClients(test: TestCase, clients: list[Client], pids: list[int]) -> None:
    """
    Stop every client's sender, wait for everything sent to arrive, and
    check that: every echo came back once and in order (fragmented ones
    as such), from generations (C{pids}, in order) that only ever follow
    each other, the last one last, to the client port the client has;
    every broadcast reached every client once and in order; no client's
    connection closed or changed.
    """
    # The last generation answers before the senders stop (so that every
    # client's last echo can come from it, however busy the machine).
    for c in clients:
        test.assertTrue(
            c.waitForEchoFrom(pids[-1], STEP),
            f"{c.name}: no echo from the last generation (pid {pids[-1]}) within {STEP:g} s",
        )
    for c in clients:
        c.stop.set()
    for c in clients:
        c._threads[0].join(STEP)
    expected = {c.name: list(c.castsSent) for c in clients}
    for c in clients:
        c.finish(expected)
    for c in clients:
        got = {k: len(v) for k, v in c.casts.items()}
        want = {k: sorted(set(v) - set(c.casts.get(k, ()))) for k, v in expected.items()}
        test.assertEqual(
            c.errors, [], f"{c.name}: {len(c.echoes)}/{c.sent} echoes, casts {got}/{want}"
        )
        test.assertEqual([e[0] for e in c.echoes], list(range(c.sent)), c.name)
        test.assertEqual([e[1] for e in c.echoes], [k % 7 == 3 for k in range(c.sent)])
        test.assertEqual({e[3] for e in c.echoes}, {c.local[1]}, c.name)
        generations = [pids.index(e[2]) for e in c.echoes]
        test.assertEqual(generations, sorted(generations), c.name)
        test.assertEqual(generations[-1], len(pids) - 1, c.name)
        test.assertEqual(c.casts, expected, c.name)
        test.assertEqual(c.ws.socket.getsockname(), c.local)
        test.assertEqual(c.ws.state.name, "OPEN", c.name)


class WebSocketTakeoverTests(TestCase):
    """
    WebSocket connections move at every takeover, with their messages in
    flight.
    """

    if connect is None:
        skip = "autobahn or websockets is not installed (the test extra)"

    def start(self, takeover: bool = False) -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", TAC],
            takeover=takeover,
            migrateOptions=["--drain-timeout", "30"],
            cwd=self.work,
        )
        self.addCleanup(process.stop)
        return process

    def test_tenTakeovers(self) -> None:
        """
        Three clients send and receive continuously through ten takeovers:
        each takeover froze and sent all three connections and left none
        behind, and each incumbent exited; every echo came back once and in
        order, from generations that only ever follow each other, to the
        client port the client has; every broadcast reached every client
        once and in order; no client's connection closed or changed.
        """
        self.work = tempfile.mkdtemp(prefix="migrator-ws-")
        self.addCleanup(shutil.rmtree, self.work, True)
        os.chmod(self.work, 0o700)
        self.control = os.path.join(self.work, "ctl")
        incumbent = self.start()
        pids = [int(incumbent.waitFor(READY, STEP)["pid"])]
        direct = int(incumbent.waitFor(DIRECT, STEP)["port"])
        web = int(incumbent.waitFor(WEB, STEP)["port"])
        go = threading.Event()
        clients = []
        for name, uri, deflate in [
            ("direct", f"ws://127.0.0.1:{direct}/", False),
            ("site", f"ws://127.0.0.1:{web}/ws", False),
            ("deflate", f"ws://127.0.0.1:{web}/ws", True),
        ]:
            clients.append(Client(name, uri, go, deflate))
            self.addCleanup(clients[-1].close)
        go.set()
        self.assertTrue(clients[2].ws.protocol.extensions, "deflate was not negotiated")
        moved = []
        for n in range(1, 11):
            successor = self.start(takeover=True)
            ready = successor.waitFor(READY, STEP)
            self.assertEqual(int(ready["generation"]), n)
            froze = incumbent.waitFor(FROZE, STEP)
            moved.append((int(froze["count"]), int(froze["staying"])))
            self.assertEqual(moved[-1], (3, 0), froze.string[froze.start() :][:3000])
            incumbent.waitFor(HANDED_OFF, STEP)
            self.assertEqual(incumbent.waitForExit(STEP), 0)
            pids.append(int(ready["pid"]))
            incumbent = successor
        self.assertEqual(moved, [(3, 0)] * 10, incumbent.output()[-3000:])
        checkClients(self, clients, pids)
