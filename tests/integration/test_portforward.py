# -*- test-case-name: tests.integration.test_portforward -*-
"""
C{twistd portforward} under migrate: a large download through the forwarder
continues byte-exact across several takeovers, its C{ProxyServer} /
C{ProxyClient} pair (one accepted socket, one outgoing) moving each time
with the bytes the forwarder had not sent yet.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import threading

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) \((?P<size>\d+) bytes of state, "
    r"(?P<pending>\d+) unsent bytes.*?(?P<staying>\d+) stay here"
)
RESTORED = re.compile(r"restored (?P<count>\d+) connection\(s\)")
LISTENING = re.compile(r"ProxyFactory starting on (?P<port>\d+)")
SIZE = 48 * 1024 * 1024
TAKEOVERS = 5
#: Generous per-step bounds for a noisy 2-core machine; a healthy run takes
#: about a second per takeover.
STEP = 60.0

_log = Logger()


class _GatedDownload(threading.Thread):
    """
    Downloads from C{port} on a blocking socket, stopping at each of
    C{stops} (byte offsets) until the test lets it go on, so that the
    forwarder is left holding bytes it cannot send while a takeover happens.

    @ivar reached: one event per stop, set when the client has read exactly
        that many bytes and stopped reading.
    @ivar proceed: one event per stop, set by the test to let it go on.
    """

    def __init__(self, port: int, stops: list[int]) -> None:
        threading.Thread.__init__(self, name="gated-download", daemon=True)
        self.stops = stops
        self.reached = [threading.Event() for _ in stops]
        self.proceed = [threading.Event() for _ in stops]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer keeps the undelivered bytes in the
        # forwarder rather than in this socket.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        self.sock.settimeout(STEP)
        self.sock.connect(("127.0.0.1", port))
        self.received = 0
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self.done = threading.Event()

    def _read(self, limit: int | None) -> bool:
        buffer = bytearray(64 * 1024)
        view = memoryview(buffer)
        while limit is None or self.received < limit:
            want = len(buffer) if limit is None else min(len(buffer), limit - self.received)
            n = self.sock.recv_into(view[:want])
            if n == 0:
                return False
            self.digest.update(view[:n])
            self.received += n
        return True

    def run(self) -> None:
        try:
            for stop, reached, proceed in zip(self.stops, self.reached, self.proceed, strict=True):
                if not self._read(stop):
                    raise AssertionError(f"the download ended early, after {self.received} bytes")
                reached.set()
                if not proceed.wait(STEP * 3):
                    raise AssertionError(f"never told to go on after {stop} bytes")
            self._read(None)
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()
            for event in self.reached:
                event.set()


class PortforwardTests(TestCase):
    """
    A download through C{twistd portforward} across takeovers.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-pf-")
        self.addCleanup(shutil.rmtree, self.work, True)
        os.chmod(self.work, 0o700)
        self.control = os.path.join(self.work, "ctl")

    def startUpstream(self) -> tuple[ServiceProcess, int, str]:
        upstream = ServiceProcess(
            [sys.executable, os.path.join(APPS, "payloadserver.py"), "--size", str(SIZE)],
            env=childEnvironment(),
            name="payloadserver",
        )
        self.addCleanup(upstream.stop)
        ready = upstream.waitFor(
            r"PAYLOADSERVER READY port=(?P<port>\d+) size=\d+ sha256=(?P<sha>[0-9a-f]+)", STEP
        )
        return upstream, int(ready["port"]), ready["sha"]

    def startForwarder(self, destination: int, takeover: bool = False) -> ServiceProcess:
        process = startMigrate(
            self.control,
            [
                "portforward",
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--host",
                "127.0.0.1",
                "--dest_port",
                str(destination),
            ],
            takeover=takeover,
            migrateOptions=["--drain-timeout", "30"],
            cwd=self.work,
        )
        self.addCleanup(process.stop)
        return process

    def test_downloadAcrossTakeovers(self) -> None:
        """
        A 48 MiB download, stopped by its reader at each takeover so the
        forwarder holds unsent bytes, arrives complete and byte-exact
        (sha256) through C{TAKEOVERS} takeovers; each takeover moved exactly
        the forwarder's two connections (its accepted socket and its
        outgoing one) with unsent bytes, none stayed behind, the upstream
        server saw a single connection, and every incumbent exited.
        """
        upstream, destination, expected = self.startUpstream()
        incumbent = self.startForwarder(destination)
        incumbent.waitFor(READY, STEP)
        port = int(incumbent.waitFor(LISTENING, STEP)["port"])
        # Stop in the first half: the second half is more than every buffer
        # between the upstream server and the client can hold, so the
        # upstream is still sending at the last takeover.
        stops = [SIZE * k // (2 * TAKEOVERS) for k in range(1, TAKEOVERS + 1)]
        client = _GatedDownload(port, stops)
        self.addCleanup(client.sock.close)
        for event in client.proceed:
            self.addCleanup(event.set)
        client.start()
        upstream.waitFor(r"PAYLOADSERVER CONNECTION 1", STEP)
        pending = []
        for n in range(TAKEOVERS):
            self.assertTrue(client.reached[n].wait(STEP), f"the client did not reach stop {n}")
            self.assertIsNone(client.error)
            self.assertEqual(client.received, stops[n])
            successor = self.startForwarder(destination, takeover=True)
            ready = successor.waitFor(READY, STEP)
            self.assertEqual(int(ready["generation"]), n + 1)
            froze = incumbent.waitFor(FROZE, STEP)
            self.assertEqual(
                (int(froze["count"]), int(froze["staying"])),
                (2, 0),
                f"takeover {n + 1}: {froze.group(0)}",
            )
            pending.append(int(froze["pending"]))
            self.assertEqual(int(successor.waitFor(RESTORED, STEP)["count"]), 2)
            incumbent.waitFor(HANDED_OFF, STEP)
            self.assertEqual(incumbent.waitForExit(STEP), 0)
            incumbent = successor
            client.proceed[n].set()
        self.assertTrue(client.done.wait(STEP * 2), "the download did not finish")
        client.join(STEP)
        self.assertIsNone(client.error)
        self.assertEqual(client.received, SIZE)
        self.assertEqual(client.digest.hexdigest(), expected)
        self.assertNotIn(0, pending, f"unsent bytes at each takeover: {pending}")
        upstream.waitFor(r"PAYLOADSERVER SENT 1", STEP)
        self.assertEqual(
            [line for line in upstream.lines if "CONNECTION" in line],
            ["PAYLOADSERVER CONNECTION 1"],
        )
        self.assertEqual([line for line in upstream.lines if "ERROR" in line], [])
        _log.info(
            "portforward: {size} bytes byte-exact through {takeovers} takeovers; "
            "unsent bytes carried at each: {pending}",
            size=client.received,
            takeovers=TAKEOVERS,
            pending=pending,
        )
