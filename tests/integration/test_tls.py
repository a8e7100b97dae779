# -*- test-case-name: tests.integration.test_tls -*-
"""
C{twistd web --listen ssl:...} under migrate: idle HTTPS keep-alive
connections move to the successor at every takeover, their TLS 1.3
sessions continued by migrator's record layer, with clients no one here
wrote: Python's C{ssl} module, C{curl} and C{openssl s_client} (which also
forces key updates).  A TLS 1.2 session stays and drains.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate
from tests._tlshelpers import writeCertificate

FROZE = re.compile(
    r"froze and sent (?P<count>\d+) connection\(s\) .*?(?P<staying>\d+) stay here"
)
LISTENING = re.compile(r"Site \(TLS\) starting on (?P<port>\d+)")
#: Generous per-step bound for a noisy 2-core machine.
STEP = 60.0
TAKEOVERS = 10

_log = Logger()


class _HTTPSService:
    """
    Starts C{twistd web} on a TLS port under migrate (and its successors),
    answering each request with the pid of the process that served it.
    """

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.work = tempfile.mkdtemp(prefix="migrator-tls-")
        test.addCleanup(shutil.rmtree, self.work, True)
        os.chmod(self.work, 0o700)
        self.control = os.path.join(self.work, "ctl")
        key, cert = writeCertificate(self.work)
        self.service = [
            "web",
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            "--class",
            "tests.integration.apps.webpid.PidResource",
        ]
        #: Seconds from seeing each incumbent hand off to its exit.
        self.exits: list[float] = []

    def start(self, takeover: bool = False, python: str | None = None) -> ServiceProcess:
        process = startMigrate(
            self.control,
            self.service,
            takeover=takeover,
            python=python,
            migrateOptions=["--drain-timeout", "30"],
            cwd=self.work,
        )
        self.test.addCleanup(process.stop)
        return process

    def first(self) -> tuple[ServiceProcess, int, int]:
        """
        The first generation: its process, pid and port.
        """
        process = self.start()
        pid = int(process.waitFor(READY, STEP)["pid"])
        return process, pid, int(process.waitFor(LISTENING, STEP)["port"])

    def takeOver(
        self, incumbent: ServiceProcess, generation: int, connections: int = 1, python: str | None = None
    ) -> tuple[ServiceProcess, int]:
        """
        One takeover: the successor is ready, the incumbent froze and sent
        C{connections} connections with none left behind, and exited (how
        long after handing off is observed in L{exits}, not asserted).

        @return: the successor and its pid.
        """
        successor = self.start(takeover=True, python=python)
        ready = successor.waitFor(READY, STEP)
        self.test.assertEqual(int(ready["generation"]), generation)
        froze = incumbent.waitFor(FROZE, STEP)
        self.test.assertEqual(
            (int(froze["count"]), int(froze["staying"])), (connections, 0), froze.group(0)
        )
        incumbent.waitFor(HANDED_OFF, STEP)
        handedOff = time.monotonic()
        self.test.assertEqual(incumbent.waitForExit(STEP), 0)
        self.exits.append(round(time.monotonic() - handedOff, 3))
        return successor, int(ready["pid"])


def _version(argv: list[str], pattern: str) -> tuple[int, ...]:
    """
    A tool's version, as the numbers C{pattern} finds in the first line it
    prints (C{(0,)} if none).
    """
    out = subprocess.run(argv, capture_output=True, text=True, timeout=STEP).stdout
    match = re.search(pattern, out.splitlines()[0] if out else "")
    return tuple(int(n) for n in match.groups()) if match else (0,)


def _clientContext(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    # The certificate is a throwaway self-signed one.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        context.maximum_version = maximum
    return context


class PythonSSLClientTests(TestCase):
    """
    Python's C{ssl} module (C{http.client.HTTPSConnection}) keeps one
    connection across ten takeovers.
    """

    def test_keepAliveAcrossTakeovers(self) -> None:
        """
        A request after each takeover is answered by the process serving at
        that moment, over the same TLS connection (same socket, same
        session: no new handshake), and every incumbent froze and sent the
        connection and exited.  A second connection, made with the fifth
        generation's OpenSSL, moves through the takeovers after it too.
        """
        web = _HTTPSService(self)
        incumbent, pid, port = web.first()
        first = _Client(self, port)
        self.assertEqual(first.sock.version(), "TLSv1.3")
        seen = [first.ask()]
        expected = [pid]
        second: _Client | None = None
        for n in range(1, TAKEOVERS + 1):
            incumbent, pid = web.takeOver(incumbent, n, connections=1 if second is None else 2)
            expected += [pid, pid]
            seen += [first.ask(), first.ask()]
            if second is not None:
                self.assertEqual(second.ask(), pid)
            if n == 5:
                second = _Client(self, port)
                self.assertEqual(second.ask(), pid)
        self.assertEqual(seen, expected)
        self.assertEqual(len(set(seen)), TAKEOVERS + 1)
        first.sameSocket()
        self.assertIn(
            "connections by class: migrator.adapters.tls._transport.TLSRecordTransport"
            "(twisted.web.http._GenericHTTPChannelProtocol): moved 2",
            incumbent.output(),
        )
        _log.info("incumbents exited {exits} s after handing off", exits=web.exits)

    def test_otherPython(self) -> None:
        """
        A session moves to another Python version and back (the other
        interpreter as the cross-version tests find it; skipped without).
        """
        from tests.integration.test_crosspython import otherPython

        other, version = otherPython()
        web = _HTTPSService(self)
        incumbent, pid, port = web.first()
        client = _Client(self, port)
        seen = [client.ask()]
        for n, python in enumerate((other, None, other), 1):
            incumbent, pid = web.takeOver(incumbent, n, python=python)
            seen.append(client.ask())
            self.assertEqual(seen[-1], pid)
        self.assertIn(f"Python {version}", incumbent.output())
        client.sameSocket()


class _Client:
    """
    An HTTPS keep-alive client of Python's C{ssl} module that never
    reconnects.
    """

    def __init__(self, test: TestCase, port: int) -> None:
        self.test = test
        self.connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=STEP, context=_clientContext()
        )
        # Never reconnect behind the test's back.
        self.connection.auto_open = 0
        self.connection.connect()
        test.addCleanup(self.connection.close)
        sock = self.connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        self.sock = sock
        self.local = sock.getsockname()

    def ask(self) -> int:
        self.connection.request("GET", "/")
        response = self.connection.getresponse()
        body = response.read()
        self.test.assertEqual(response.status, 200)
        self.test.assertIs(self.connection.sock, self.sock)
        return int(body)

    def sameSocket(self) -> None:
        self.test.assertEqual(self.sock.getsockname(), self.local)


class CurlTests(TestCase):
    """
    C{curl} (over OpenSSL) fetches one URL again and again on one
    connection while ten takeovers happen under it.
    """

    def setUp(self) -> None:
        self.curl = shutil.which("curl")
        if self.curl is None:
            raise self.skipTest("curl is not installed")
        version = _version([self.curl, "--version"], r"^curl (\d+)\.(\d+)")
        if version < (7, 84):
            raise self.skipTest(f"curl {version} has no --rate (7.84 and later)")

    def test_oneConnectionThroughout(self) -> None:
        """
        Every one of curl's transfers gets a 200, all from one TCP
        connection (one connect, one local port), answered by each
        generation in turn.
        """
        web = _HTTPSService(self)
        incumbent, pid, port = web.first()
        url = f"https://127.0.0.1:{port}/"
        assert self.curl is not None
        # Paced, so that transfers keep coming while the takeovers run; a
        # transfer during a takeover waits (in the kernel, or as a busy
        # request the incumbent waits for), it never fails.
        client = ServiceProcess(
            [
                self.curl,
                "--silent",
                "--show-error",
                "--insecure",
                "--http1.1",
                "--rate",
                "20/s",
                "--no-buffer",
                "--write-out",
                "%{stderr}CURL code=%{http_code} connects=%{num_connects} port=%{local_port}\n",
                *[url] * 2000,
            ],
            env=childEnvironment(),
            name="curl",
        )
        self.addCleanup(client.stop)
        client.waitFor(rf"^{pid}$", STEP)
        pids = [pid]
        for n in range(1, TAKEOVERS + 1):
            incumbent, pid = web.takeOver(incumbent, n)
            pids.append(pid)
        # One more answered by the last generation, then stop curl.
        client.waitFor(rf"^{pid}$", STEP, start=len(client.lines))
        client.signal(signal.SIGINT)
        client.waitForExit(STEP)
        output = client.output()
        transfers = re.findall(r"CURL code=(\d+) connects=(\d+) port=(\d+)", output)
        self.assertGreater(len(transfers), TAKEOVERS)
        self.assertEqual({code for code, _, _ in transfers}, {"200"}, output[-3000:])
        self.assertEqual([c for _, c, _ in transfers].count("1"), 1)
        self.assertEqual(transfers[0][1], "1")
        self.assertEqual(len({p for _, _, p in transfers}), 1)
        answered = [int(line) for line in client.lines if line.isdigit()]
        self.assertEqual(set(answered), set(pids))
        _log.info(
            "curl through {n} takeovers: {transfers} transfers on port {port}",
            n=TAKEOVERS,
            transfers=len(transfers),
            port=transfers[0][2],
        )


class _Interactive:
    """
    A child process with a pipe to its stdin, and its output collected
    line by line (as L{ServiceProcess} does).
    """

    def __init__(self, argv: list[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=childEnvironment(),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def send(self, text: str) -> int:
        """
        Write C{text}; return the index of the next output line.
        """
        with self._cond:
            start = len(self.lines)
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode("ascii"))
        self.process.stdin.flush()
        return start

    def waitFor(self, pattern: str, start: int) -> re.Match[str]:
        regex = re.compile(pattern)
        index = start
        with self._cond:
            # Bounded: every wait is for at most STEP seconds, and the
            # loop ends at the first line that matches or at the end.
            for _ in range(100_000):
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    index += 1
                    if match:
                        return match
                if self._eof or not self._cond.wait(STEP):
                    break
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))

    def close(self) -> int:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            return self.process.wait(STEP)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)


class KeyUpdateTests(TestCase):
    """
    OpenSSL's C{s_client} forces key updates (its C{K} and C{k} commands)
    before and after takeovers: the session goes on in both directions.
    """

    def setUp(self) -> None:
        self.openssl = shutil.which("openssl")
        if self.openssl is None:
            raise self.skipTest("openssl is not installed")
        version = _version([self.openssl, "version"], r"^OpenSSL (\d+)\.(\d+)\.(\d+)")
        if version < (1, 1, 1):
            raise self.skipTest(f"OpenSSL {version} has no TLS 1.3 key updates (1.1.1 and later)")

    def test_keyUpdates(self) -> None:
        """
        A key update that asks for the server's, answered by OpenSSL in the
        incumbent and followed by migrator; after a takeover, one of each
        kind answered by migrator's record layer; the session still works
        after another takeover (moving migrator's own session), and
        closes cleanly.
        """
        web = _HTTPSService(self)
        incumbent, pid, port = web.first()
        assert self.openssl is not None
        # Not -quiet: it implies -ign_eof, which turns the commands off.
        client = _Interactive(
            [self.openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-crlf", "-brief"]
        )
        self.addCleanup(client.stop)
        client.waitFor(r"Protocol version: TLSv1\.3", 0)

        def ask() -> int:
            start = client.send("GET / HTTP/1.1\nHost: localhost\n\n")
            return int(client.waitFor(r"^(\d+)$", start).group(1))

        def keyUpdate(command: str) -> None:
            client.waitFor(r"^KEYUPDATE$", client.send(command + "\n"))

        self.assertEqual(ask(), pid)
        keyUpdate("K")
        self.assertEqual(ask(), pid)
        incumbent, pid = web.takeOver(incumbent, 1)
        self.assertEqual(ask(), pid)
        keyUpdate("K")
        self.assertEqual(ask(), pid)
        incumbent.waitFor(r"the client updated its key \(1\), ours too", STEP)
        keyUpdate("k")
        self.assertEqual(ask(), pid)
        incumbent.waitFor(r"the client updated its key \(1\), ours stays", STEP)
        incumbent, pid = web.takeOver(incumbent, 2)
        keyUpdate("K")
        self.assertEqual([ask(), ask()], [pid, pid])
        self.assertEqual(client.close(), 0)


class TLS12Tests(TestCase):
    """
    A TLS 1.2 session cannot move: it stays with the incumbent and drains.
    """

    def test_drains(self) -> None:
        """
        The TLS 1.2 connection stays (harmlessly: the takeover goes on),
        is still answered by the old process after the takeover, and the old
        process exits once its client leaves.
        """
        web = _HTTPSService(self)
        incumbent, pid, port = web.first()
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=STEP, context=_clientContext(ssl.TLSVersion.TLSv1_2)
        )
        connection.auto_open = 0
        connection.connect()
        self.addCleanup(connection.close)

        def ask() -> Any:
            connection.request("GET", "/")
            response = connection.getresponse()
            return int(response.read())

        self.assertEqual(ask(), pid)
        successor = web.start(takeover=True)
        successor.waitFor(READY, STEP)
        froze = incumbent.waitFor(FROZE, STEP)
        self.assertEqual((int(froze["count"]), int(froze["staying"])), (0, 1), froze.group(0))
        self.assertIn("it speaks TLS 1.2", froze.string)
        incumbent.waitFor(HANDED_OFF, STEP)
        self.assertEqual(ask(), pid)
        self.assertIsNone(incumbent.process.poll())
        connection.close()
        incumbent.waitFor(r"all connections drained; exiting", STEP)
        self.assertEqual(incumbent.waitForExit(STEP), 0)
