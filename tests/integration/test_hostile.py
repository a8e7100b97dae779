# -*- test-case-name: tests.integration.test_hostile -*-
"""
Hostile input on a running service's control socket, with real processes:
garbage bytes, a Perspective Broker conversation abandoned half-way, a
payload that only unjellies under jelly's permissive defaults, and peers of
another user.  Whatever they do, the incumbent drops them (with a log line),
keeps serving, answers C{status}, and can still be taken over.

The helpers at the top are shared with L{tests.integration.test_operator}.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import random
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.spread import banana, jelly, pb
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, childEnvironment, startMigrate

# -- helpers shared with test_operator ---------------------------------------

#: twisted.web's log line naming the port it actually listens on.
SITE_STARTING = re.compile(r"\bSite starting on (?P<port>\d+)")

#: How long any one wait may take (the machines are slow and noisy).
TIMEOUT = 60.0


def privateDirectory(case: SynchronousTestCase) -> str:
    """
    A fresh directory of mode 0700 with a short path (UNIX socket paths are
    limited to 107 bytes), removed after the test.
    """
    path = tempfile.mkdtemp(prefix="migr-")
    os.chmod(path, 0o700)
    case.addCleanup(shutil.rmtree, path, True)
    return path


def webRoot(directory: str, marker: str) -> str:
    """
    A document root for C{twistd web} whose index page contains C{marker}.
    """
    root = os.path.join(directory, "www")
    os.mkdir(root, 0o755)
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write(f"<p>{marker}</p>\n")
    return root


def webService(root: str, listen: str = "tcp:0:interface=127.0.0.1") -> list[str]:
    """
    The arguments of C{twistd web} serving C{root} on C{listen}.
    """
    return ["web", "--listen", listen, "--path", root]


def start(
    case: SynchronousTestCase,
    control: str,
    service: list[str],
    takeover: bool = False,
    **kwargs: Any,
) -> tuple[ServiceProcess, re.Match[str]]:
    """
    Start C{twistd migrate} (stopped after the test) and wait until it
    serves.

    @return: the process and its L{READY} line.
    """
    process = startMigrate(control, service, takeover=takeover, **kwargs)
    case.addCleanup(process.stop)
    return process, process.waitFor(READY, TIMEOUT)


def startFailing(
    case: SynchronousTestCase,
    control: str,
    service: list[str],
    takeover: bool = False,
    **kwargs: Any,
) -> tuple[int, ServiceProcess]:
    """
    Start C{twistd migrate} expecting it to give up by itself.

    @return: its exit code and the process (whose output is complete).
    """
    process = startMigrate(control, service, takeover=takeover, **kwargs)
    case.addCleanup(process.stop)
    return process.waitForExit(TIMEOUT), process


def sitePort(process: ServiceProcess, pattern: re.Pattern[str] = SITE_STARTING) -> int:
    """
    The TCP port a process's web site listens on, from its log.
    """
    return int(process.waitFor(pattern, TIMEOUT).group("port"))


def takeOver(
    case: SynchronousTestCase,
    control: str,
    service: list[str],
    incumbent: ServiceProcess,
    generation: int,
    **kwargs: Any,
) -> ServiceProcess:
    """
    Take over from C{incumbent} and check that it worked: the successor
    serves as C{generation}, the incumbent reports the handoff to it and
    exits cleanly.
    """
    successor, ready = start(case, control, service, takeover=True, **kwargs)
    case.assertEqual(int(ready.group("generation")), generation)
    handedOff = incumbent.waitFor(HANDED_OFF, TIMEOUT)
    case.assertEqual(int(handedOff.group("pid")), successor.pid)
    case.assertEqual(incumbent.waitForExit(TIMEOUT), 0, incumbent.output()[-3000:])
    return successor


def runStatus(
    control: str, asJSON: bool = True, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -m migrator status --control CONTROL [--json]}.
    """
    argv = [sys.executable, "-m", "migrator", "status", "--control", control]
    if asJSON:
        argv.append("--json")
    return subprocess.run(
        argv,
        env=childEnvironment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def statusOf(case: SynchronousTestCase, control: str) -> dict[str, Any]:
    """
    The JSON status of the service at C{control}, which must answer.
    """
    result = runStatus(control)
    case.assertEqual(result.returncode, 0, result.stderr)
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def readUntilClosed(skt: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """
    Read from C{skt} until the peer closes it (EOF or reset).

    @raise AssertionError: if it is still open after C{timeout} seconds.
    """
    received = b""
    deadline = time.monotonic() + timeout
    while len(received) < 1 << 24:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        skt.settimeout(remaining)
        try:
            chunk = skt.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(
        f"the peer did not close the connection within {timeout:g}s; received {received[:200]!r}"
    )


def readExactly(skt: socket.socket, size: int, timeout: float = TIMEOUT) -> bytes:
    """
    Read exactly C{size} bytes from C{skt}.

    @raise AssertionError: if they do not arrive within C{timeout} seconds.
    """
    received = b""
    deadline = time.monotonic() + timeout
    while len(received) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {received!r} of {size} bytes arrived")
        skt.settimeout(remaining)
        chunk = skt.recv(size - len(received))
        if not chunk:
            raise AssertionError(f"the peer closed after {received!r}")
        received += chunk
    return received


def httpGet(family: int, address: Any, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """
    C{GET /} over HTTP/1.0 (the server closes after answering).

    @return: the status code and the body.
    """
    with socket.socket(family, socket.SOCK_STREAM) as skt:
        skt.settimeout(timeout)
        skt.connect(address)
        skt.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        raw = readUntilClosed(skt, timeout)
    head, _, body = raw.partition(b"\r\n\r\n")
    statusLine = head.split(b"\r\n", 1)[0]
    return int(statusLine.split(b" ", 2)[1]), body


def assertServes(case: SynchronousTestCase, family: int, address: Any, marker: str) -> None:
    """
    An HTTP request to C{address} succeeds with C{marker} in the body.
    """
    code, body = httpGet(family, address)
    case.assertEqual(code, 200, body[:500])
    case.assertIn(marker.encode("utf-8"), body)


def assertUnaffected(
    case: SynchronousTestCase,
    process: ServiceProcess,
    control: str,
    port: int,
    marker: str,
    generation: int = 0,
) -> dict[str, Any]:
    """
    C{process} still runs, serves HTTP on C{port}, and answers status at
    C{control} as itself, at C{generation}, with no takeover in progress.

    @return: the status.
    """
    case.assertIsNone(process.process.poll(), process.output()[-3000:])
    assertServes(case, socket.AF_INET, ("127.0.0.1", port), marker)
    status = statusOf(case, control)
    case.assertEqual(status["pid"], process.pid)
    case.assertEqual(status["generation"], generation)
    case.assertEqual(status["state"], "serving")
    case.assertIsNone(status["takeover"])
    return status


def connectUNIX(case: SynchronousTestCase, path: str) -> socket.socket:
    """
    A blocking client socket connected to C{path}, closed after the test.
    """
    skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    case.addCleanup(skt.close)
    skt.settimeout(TIMEOUT)
    skt.connect(path)
    return skt


def otherUser() -> pwd.struct_passwd:
    """
    The user C{nobody}, whom a test (running as root) can become.

    @raise SkipTest: if there is no such user or this is not root.
    """
    if os.getuid() != 0:
        raise SkipTest("needs root, to run a client as the user nobody")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise SkipTest("there is no user nobody on this system") from None


# Children that act as another user.  They start as root and drop to that
# user before they connect, rather than being started as it (subprocess's
# user=/group=): the interpreter may live where the other user may not read
# (here, under /root/.pyenv), so everything is imported first.

_DROP = """
import os, sys
def drop(uid, gid):
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    assert os.getuid() == uid and os.geteuid() == uid
"""

#: argv: PATH UID GID PAYLOAD_HEX; prints a JSON report.
CONNECT_AS = (
    _DROP
    + """
import errno, json, socket
path, uid, gid, payload = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
drop(uid, gid)
report = {"pid": os.getpid(), "uid": os.getuid(), "connected": False, "received": b"".hex()}
received = b""
skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
skt.settimeout(30)
try:
    skt.connect(path)
except OSError as e:
    report["error"] = errno.errorcode.get(e.errno, str(e))
else:
    report["connected"] = True
    try:
        if payload:
            skt.sendall(payload)
    except OSError as e:
        # The server may have closed already; what it sent is still there.
        report["send_error"] = errno.errorcode.get(e.errno, str(e))
    try:
        while len(received) < 65536:
            chunk = skt.recv(65536)
            if not chunk:
                report["end"] = "EOF"
                break
            received += chunk
    except TimeoutError:
        report["end"] = "timeout"
    except OSError as e:
        report["end"] = errno.errorcode.get(e.errno, str(e))
skt.close()
report["received"] = received.hex()
print(json.dumps(report))
"""
)

#: argv: PATH UID GID; runs python -m migrator status --json as that user.
STATUS_AS = (
    _DROP
    + """
from migrator import _commands as _cli
from twisted.internet import reactor, task, defer, unix
drop(int(sys.argv[2]), int(sys.argv[3]))
sys.exit(_cli.main(["status", "--control", sys.argv[1], "--json"]))
"""
)


def runAs(user: pwd.struct_passwd, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{script} in a child Python that becomes C{user} before it touches
    the control socket.
    """
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=childEnvironment(),
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


# -- PB on the wire ----------------------------------------------------------


def _greeting() -> bytes:
    """
    The bytes a PB server sends as soon as a client connects: its offer of
    banana dialects.
    """
    transport = StringTransport()
    banana.Banana(isClient=False).makeConnection(transport)
    return transport.value()


#: What a control socket sends to a peer it serves, before anything else.
GREETING = _greeting()


def _version() -> bytes:
    """
    What a PB server sends once the client chose the C{pb} dialect: its
    protocol version.
    """
    transport = StringTransport()
    broker = pb.PBServerFactory(pb.Root()).buildProtocol(None)
    broker.makeConnection(transport)
    transport.clear()
    broker.dataReceived(banana.encode(b"pb"))
    return transport.value()


#: A control socket's answer to a peer that chose the C{pb} dialect.
VERSION = _version()

#: What the incumbent logs about this process when it drops one of its
#: connections for malformed input.
MALFORMED_LOGGED = re.compile(
    rf"dropped a control connection from pid {os.getpid()} uid {os.getuid()} "
    rf"gid \d+: malformed input \(\w+"
)


class PumpedClient:
    """
    A PB client run synchronously over a real, blocking UNIX socket, so a
    test can stop a conversation at any point or send what a well-behaved
    client never would.  No reactor is involved.

    @ivar security: how this client jellies and unjellies: jelly's
        permissive defaults, so that it can send anything.
    """

    def __init__(self, case: SynchronousTestCase, path: str) -> None:
        self.socket = connectUNIX(case, path)
        self.transport = StringTransport()
        self.factory = pb.PBClientFactory(security=jelly.DummySecurityOptions())
        self.broker = self.factory.buildProtocol(None)
        self.broker.makeConnection(self.transport)

    def flush(self) -> None:
        out = self.transport.value()
        self.transport.clear()
        if out:
            self.socket.sendall(out)

    def outgoing(self) -> bytes:
        """
        Take what the broker wants to send, without sending it.
        """
        out = self.transport.value()
        self.transport.clear()
        return out

    def wait(self, d: Deferred[Any], timeout: float = TIMEOUT) -> Any:
        """
        Exchange bytes until C{d} fires.

        @return: its result, or the L{Failure} it failed with.
        """
        results: list[Any] = []
        d.addBoth(results.append)
        deadline = time.monotonic() + timeout
        while not results:
            self.flush()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer within {timeout:g}s")
            self.socket.settimeout(remaining)
            data = self.socket.recv(65536)
            if not data:
                raise AssertionError("the control socket hung up")
            self.broker.dataReceived(data)
        self.flush()
        return results[0]

    def root(self) -> Any:
        root = self.wait(self.factory.getRootObject())
        assert not isinstance(root, Failure), root
        return root

    def call(self, method: str, *args: Any) -> Any:
        """
        Call C{method} on the control root and wait for the answer.
        """
        return self.wait(self.root().callRemote(method, *args))


def remoteError(answer: Any) -> str:
    """
    The qualified name of the exception a remote call failed with, or a
    description of its result if it did not fail.  (A copied failure names
    its type with bytes, and its C{repr()} raises.)
    """
    if not isinstance(answer, Failure):
        return f"no error: answered {answer!r}"
    kind = answer.type
    if isinstance(kind, bytes):
        return kind.decode("utf-8", "replace")
    if kind is None:
        return "a failure without an exception type"
    return f"{kind.__module__}.{kind.__qualname__}"


class Tripwire:
    """
    Writes the file named in its state when it is reconstructed by jelly: a
    payload that proves whether a peer's object was unjellied.
    """

    path = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        with open(self.path, "w") as f:
            f.write("unjellied\n")


def clientHello() -> bytes:
    """
    The first flight of a TLS client: what a TLS client sends to a socket it
    mistook for a TLS server.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# -- tests -------------------------------------------------------------------


class _IncumbentMixin:
    """
    Each test gets a private directory and a C{twistd web} incumbent under
    migrate in it.
    """

    def startIncumbent(self: Any) -> None:
        self.directory = privateDirectory(self)
        self.control = os.path.join(self.directory, "ctl")
        self.marker = f"hostile-{os.getpid()}-{id(self)}"
        self.service = webService(webRoot(self.directory, self.marker))
        self.incumbent, _ = start(self, self.control, self.service)
        self.port = sitePort(self.incumbent)

    def sendGarbage(self: Any, payload: bytes, logged: re.Pattern[str] = MALFORMED_LOGGED) -> None:
        """
        Send C{payload} on a fresh control connection and check that the
        incumbent answers nothing but its greeting, hangs up and logs why
        (a line matching C{logged}).
        """
        mark = len(self.incumbent.lines)
        skt = connectUNIX(self, self.control)
        # Take the greeting first: unread, it could be lost to the reset
        # that closing a socket with unread input causes.
        self.assertEqual(readExactly(skt, len(GREETING)), GREETING)
        try:
            skt.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = readUntilClosed(skt)
        self.assertEqual(received, b"", f"answer to {payload[:80]!r}")
        self.incumbent.waitFor(logged, TIMEOUT, start=mark)

    def assertTakeoverWorks(self: Any) -> ServiceProcess:
        successor = takeOver(self, self.control, self.service, self.incumbent, 1)
        assertServes(self, socket.AF_INET, ("127.0.0.1", self.port), self.marker)
        self.assertEqual(statusOf(self, self.control)["pid"], successor.pid)
        return successor


class GarbageTests(_IncumbentMixin, SynchronousTestCase):
    """
    Bytes that are not a PB conversation.
    """

    def setUp(self) -> None:
        self.startIncumbent()

    def test_randomBytes(self) -> None:
        """
        Random bytes (three fixed seeds, 4 KiB each) on the control socket:
        each connection is dropped and the reason logged; the incumbent
        keeps serving, answers status, and a later takeover succeeds.
        """
        for seed in (1, 2, 3):
            self.sendGarbage(random.Random(seed).randbytes(4096))
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertTakeoverWorks()

    def test_hugeLengthPrefix(self) -> None:
        """
        A banana string and a banana list announcing a length of about 2**63
        (far over banana's 640 KiB limit), and a length prefix longer than
        banana's 64-byte limit: each connection is dropped before anything
        is allocated for it and the reason logged; the incumbent keeps
        serving and can be taken over.
        """
        huge = b"\x7f" * 9
        for payload in (huge + banana.STRING, huge + banana.LIST, b"\x01" * 100):
            self.sendGarbage(payload)
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertTakeoverWorks()

    def test_otherProtocols(self) -> None:
        """
        What an HTTP client and a TLS client send when pointed at the control
        socket by mistake: each connection is dropped with a log line; the
        incumbent keeps serving and can be taken over.
        """
        http = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
        for payload in (http, clientHello()):
            self.sendGarbage(payload)
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertTakeoverWorks()

    def test_unknownDialect(self) -> None:
        """
        Well-formed banana whose first item is not one of the dialects the
        server offered (an unknown name, a list, a number): the connection
        is dropped with a log line; the incumbent keeps serving and can be
        taken over.
        """
        # Twisted's own line, which does not say who the peer was.
        unknown = re.compile(r"selected a protocol the server didn't suggest")
        for first in (b"http/1.1", [b"pb"], 7):
            self.sendGarbage(banana.encode(first), unknown)
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertTakeoverWorks()


class MalformedJellyTests(_IncumbentMixin, SynchronousTestCase):
    """
    PB calls whose arguments are not well-formed jelly.
    """

    def setUp(self) -> None:
        self.startIncumbent()

    def test_listTypeTag(self) -> None:
        """
        A PB call whose arguments hold a jelly list whose type tag is itself
        a list (C{[[b"list"], 1]}, banana-encoded) is not answered: the
        connection is dropped, the incumbent logs the one "malformed input" line and no traceback
        (nothing like "Peer will receive following PB traceback"), keeps
        serving, answers status and can be taken over.
        """
        mark = len(self.incumbent.lines)
        skt = connectUNIX(self, self.control)
        self.assertEqual(readExactly(skt, len(GREETING)), GREETING)
        skt.sendall(banana.encode(b"pb"))
        self.assertEqual(readExactly(skt, len(VERSION)), VERSION)
        skt.sendall(
            banana.encode(
                [b"message", 1, b"root", b"status", 1, [[b"list"], 1], [b"dictionary"]]
            )
        )
        self.assertEqual(readUntilClosed(skt), b"")
        logged = self.incumbent.waitFor(MALFORMED_LOGGED, TIMEOUT, start=mark)
        self.assertIn("a jelly type tag that is a list", logged.string)
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        after = "\n".join(self.incumbent.lines[mark:])
        self.assertNotIn("Traceback", after)
        self.assertNotIn("PB traceback", after)
        self.assertEqual(len(MALFORMED_LOGGED.findall(after)), 1, after)
        self.assertTakeoverWorks()


class HalfConversationTests(_IncumbentMixin, SynchronousTestCase):
    """
    Peers that start a conversation and never finish it.
    """

    def setUp(self) -> None:
        self.startIncumbent()

    def test_halfFinishedDoesNotBlock(self) -> None:
        """
        Control connections left open in every unfinished state (silent; a
        short non-PB banner banana takes for a length prefix; dialect chosen
        and half a message sent; 1 KiB of a 600 KiB string; a PB session that
        sent half a call) block neither status nor a takeover, and do not
        keep the old process alive after the handoff: it exits and they are
        closed.
        """
        held = [connectUNIX(self, self.control)]

        banner = connectUNIX(self, self.control)
        banner.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        held.append(banner)

        partialMessage = connectUNIX(self, self.control)
        partialMessage.sendall(banana.encode(b"pb"))
        # A 7-element "message" list of which 2 elements arrive.
        partialMessage.sendall(
            b"\x07" + banana.LIST + banana.encode(b"message") + b"\x01" + banana.INT
        )
        held.append(partialMessage)

        partialString = connectUNIX(self, self.control)
        partialString.sendall(banana.encode(b"pb"))
        header = bytearray()
        banana.int2b128(600 * 1024, header.extend)
        partialString.sendall(bytes(header) + banana.STRING + b"x" * 1024)
        held.append(partialString)

        client = PumpedClient(self, self.control)
        root = client.root()
        root.callRemote("status")
        call = client.outgoing()
        client.socket.sendall(call[: len(call) // 2])
        held.append(client.socket)

        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertTakeoverWorks()
        for skt in held:
            readUntilClosed(skt)

    def test_malformedTakeoverCalls(self) -> None:
        """
        A same-user PB peer that calls takeover steps out of order, with the
        wrong arguments, or calls methods that do not exist gets an error
        for each, no takeover starts, its session stays usable, and a real
        takeover succeeds afterwards.
        """
        refused = "migrator.takeover._incumbent.TakeoverRefused"
        client = PumpedClient(self, self.control)
        for method, args, error in [
            ("commit", (), refused),
            ("switch", (), refused),
            ("prepared", ({"received": 1},), refused),
            ("begin", ("not a dictionary",), refused),
            ("noSuchMethod", (), "twisted.spread.flavors.NoSuchMethod"),
            ("status", (1, 2, 3), "builtins.TypeError"),
        ]:
            answer = client.call(method, *args)
            self.assertEqual(remoteError(answer), error, f"{method}{args!r}")
        status = client.call("status")
        self.assertEqual(status["pid"], self.incumbent.pid)
        self.assertIsNone(status["takeover"])
        self.assertIsNone(status["last_takeover"])
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertTakeoverWorks()

    def test_unjellyIsAllowListed(self) -> None:
        """
        An object that jelly's permissive defaults would reconstruct (its
        reconstruction writes a file) sent as a call argument is refused
        without being reconstructed: the call fails with InsecureJelly, the
        incumbent logs it, the file is never written, and the session, the
        service and a later takeover all still work.
        """
        tripped = os.path.join(self.directory, "tripped")
        wire = Tripwire()
        wire.path = tripped
        # The payload is armed: jelly's defaults do reconstruct it.
        jelly.unjelly(jelly.jelly(wire))
        self.assertTrue(os.path.exists(tripped))
        os.unlink(tripped)

        client = PumpedClient(self, self.control)
        mark = len(self.incumbent.lines)
        answer = client.call("status", wire)
        self.assertEqual(remoteError(answer), "twisted.spread.jelly.InsecureJelly")
        self.assertIn("Tripwire", answer.getErrorMessage())
        self.incumbent.waitFor("InsecureJelly", TIMEOUT, start=mark)
        self.assertFalse(os.path.exists(tripped))
        self.assertEqual(client.call("status")["pid"], self.incumbent.pid)
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertTakeoverWorks()
        self.assertFalse(os.path.exists(tripped))


class OtherUserTests(_IncumbentMixin, SynchronousTestCase):
    """
    Peers running as another user (C{nobody}).
    """

    def setUp(self) -> None:
        self.user = otherUser()
        self.startIncumbent()

    def connectAs(self, payload: bytes = b"") -> dict[str, Any]:
        result = runAs(
            self.user,
            CONNECT_AS,
            self.control,
            str(self.user.pw_uid),
            str(self.user.pw_gid),
            payload.hex(),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        report: dict[str, Any] = json.loads(result.stdout)
        self.assertEqual(report["uid"], self.user.pw_uid)
        return report

    def test_socketIsPrivate(self) -> None:
        """
        The control socket is mode 0600 in a 0700 directory, so another user
        cannot even connect (EACCES); with the directory opened to 0711, the
        socket's own mode still keeps them out.  Nothing reaches the
        incumbent, which is unaffected.
        """
        self.assertEqual(stat.S_IMODE(os.stat(self.control).st_mode), 0o600)
        self.assertTrue(stat.S_ISSOCK(os.stat(self.control).st_mode))
        self.assertEqual(os.stat(self.control).st_uid, os.getuid())
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        report = self.connectAs()
        self.assertEqual((report["connected"], report.get("error")), (False, "EACCES"))

        os.chmod(self.directory, 0o711)
        report = self.connectAs()
        self.assertEqual((report["connected"], report.get("error")), (False, "EACCES"))

        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertNotIn("refused a control connection", self.incumbent.output())

    def test_peerCredentialsChecked(self) -> None:
        """
        With the permissions relaxed by hand (directory 0711, socket 0666),
        another user connects but is refused by the C{SO_PEERCRED} check
        before any PB byte is exchanged: the incumbent logs its pid and uid,
        sends it no PB byte (not even the banana greeting), only one plain
        line saying why, then closes; it ignores what the peer sent, keeps
        serving, and a later takeover succeeds and publishes a private
        (0600) socket again.
        """
        os.chmod(self.directory, 0o711)
        os.chmod(self.control, 0o666)
        # Everything a client would send to take over: dialect, then a call.
        begin = banana.encode(b"pb") + banana.encode(
            [b"message", 1, b"root", b"begin", 1, [b"tuple"], [b"dictionary"]]
        )
        mark = len(self.incumbent.lines)
        report = self.connectAs(begin)
        self.assertTrue(report["connected"], report)
        self.assertEqual(
            bytes.fromhex(report["received"]),
            f"migrator: refused: this control socket serves uid {os.getuid()} only\n".encode(),
            report,
        )
        self.assertIn(report["end"], ("EOF", "ECONNRESET", "EPIPE"), report)
        self.incumbent.waitFor(
            rf"refused a control connection from pid {report['pid']} "
            rf"uid {self.user.pw_uid}\b",
            TIMEOUT,
            start=mark,
        )
        status = assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
        self.assertIsNone(status["last_takeover"])
        self.assertTakeoverWorks()
        self.assertEqual(stat.S_IMODE(os.stat(self.control).st_mode), 0o600)

    def test_statusAsOtherUser(self) -> None:
        """
        C{python -m migrator status} run by another user fails cleanly: exit
        code 1, one line naming the control path, no traceback, no status
        data.  With the default permissions the line says permission was
        denied (not that nothing runs there); with the permissions relaxed
        the incumbent refuses, logs it, and tells the client why, which the
        line says.  The incumbent is unaffected.
        """
        ids = (str(self.user.pw_uid), str(self.user.pw_gid))
        result = runAs(self.user, STATUS_AS, self.control, *ids)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn(self.control, lines[0])
        self.assertIn(os.strerror(errno.EACCES), lines[0])

        os.chmod(self.directory, 0o711)
        os.chmod(self.control, 0o666)
        mark = len(self.incumbent.lines)
        result = runAs(self.user, STATUS_AS, self.control, *ids)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertNotIn("Traceback", result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertEqual(
            lines[0],
            f"migrator status: {self.control}: refused by the service: this control "
            f"socket serves uid {os.getuid()} only",
        )
        self.incumbent.waitFor(
            rf"refused a control connection from pid \d+ uid {self.user.pw_uid}\b",
            TIMEOUT,
            start=mark,
        )
        assertUnaffected(self, self.incumbent, self.control, self.port, self.marker)
