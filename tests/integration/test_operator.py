# -*- test-case-name: tests.integration.test_operator -*-
"""
What an operator meets, with real processes: starting a second copy by
mistake, stale and unsafe control paths, C{--tac} services with TCP and UNIX
ports, IPv6, UDP, ports only one side declares, the pidfile, and
the text of C{python -m migrator status}.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from migrator.testing import ServiceProcess, childEnvironment

from .test_hostile import (
    SITE_STARTING,
    TIMEOUT,
    assertServes,
    assertUnaffected,
    otherUser,
    privateDirectory,
    runStatus,
    sitePort,
    start,
    startFailing,
    statusOf,
    takeOver,
    webRoot,
    webService,
)

# -- helpers -------------------------------------------------------------------

_TAC_HEADER = """\
from twisted.application import internet, service, strports
from twisted.internet import protocol
from twisted.web import server, static


# Distinct names, so that each port's "... starting on" log line says
# which site it is.
class MainSite(server.Site):
    pass


class ExtraSite(server.Site):
    pass


class UnixSite(server.Site):
    pass


class Page(static.Data):
    # The same page at every path, "/" included.
    isLeaf = True


class EchoDatagram(protocol.DatagramProtocol):
    def datagramReceived(self, data, address):
        self.transport.write(data, address)


application = service.Application("migrator-test")
"""


def writeTac(directory: str, name: str, ports: list[str]) -> str:
    """
    Write a .tac file whose application is C{ports}: lines of Python adding
    services to C{application}.

    @return: its path.
    """
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(_TAC_HEADER)
        f.writelines(line + "\n" for line in ports)
    return path


def siteOn(siteClass: str, description: str, body: str) -> str:
    """
    A .tac line serving C{body} at every path with a C{siteClass} site on
    the strports C{description}.
    """
    return (
        f"strports.service({description!r}, {siteClass}(Page("
        f"{body.encode()!r}, 'text/plain'))).setServiceParent(application)"
    )


def udpEcho(interface: str = "127.0.0.1") -> str:
    """
    A .tac line adding a UDP echo server on port 0.
    """
    return (
        f"internet.UDPServer(0, EchoDatagram(), interface={interface!r})"
        f".setServiceParent(application)"
    )


def portOf(process: ServiceProcess, name: str) -> int:
    """
    The TCP or UDP port a tac's C{name} site or protocol listens on.
    """
    return sitePort(process, re.compile(rf"\b{name} starting on (?P<port>\d+)"))


def assertRefused(case: SynchronousTestCase, address: tuple[str, int]) -> None:
    """
    Nothing listens on C{address}: a connection attempt is refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as skt:
        skt.settimeout(TIMEOUT)
        case.assertRaises(ConnectionRefusedError, skt.connect, address)


def udpEchoes(port: int) -> bytes:
    """
    Send a datagram to the echo server on C{port} and return its echo.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as skt:
        skt.settimeout(TIMEOUT)
        skt.sendto(b"ping", ("127.0.0.1", port))
        data, _ = skt.recvfrom(1024)
    return data


def keyedPorts(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """
    A status's ports by declared key.
    """
    return {port["key"]: port for port in status["ports"]}


def bindable(family: int, host: str) -> bool:
    """
    Can a socket of C{family} be bound to C{host} here?
    """
    try:
        with socket.socket(family, socket.SOCK_STREAM) as skt:
            skt.bind((host, 0))
    except OSError:
        return False
    return True


def staleSocket(path: str) -> int:
    """
    Leave a UNIX socket file at C{path} that nobody listens on.

    @return: its inode.
    """
    skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        skt.bind(path)
    finally:
        skt.close()
    return os.lstat(path).st_ino


class _Fixture:
    """
    A private directory, a control path in it, and a web root whose index
    page carries a marker.
    """

    def makeFixture(self: Any) -> None:
        self.directory = privateDirectory(self)
        self.control = os.path.join(self.directory, "ctl")
        self.marker = f"operator-{os.getpid()}-{id(self)}"
        self.root = webRoot(self.directory, self.marker)
        self.service = webService(self.root)


# -- tests ---------------------------------------------------------------------


class StartupTests(_Fixture, SynchronousTestCase):
    """
    Starting a service where one runs, ran, or does not run.
    """

    def setUp(self) -> None:
        self.makeFixture()

    def test_secondStartWithoutTakeover(self) -> None:
        """
        Starting a second service at the control path of a live one, without
        C{--takeover}, fails with a clear error naming the path and
        suggesting C{--takeover}, exits non-zero before binding anything, and
        leaves the incumbent and its control socket untouched.
        """
        incumbent, _ = start(self, self.control, self.service)
        port = sitePort(incumbent)
        inode = os.stat(self.control).st_ino

        code, second = startFailing(self, self.control, self.service)
        self.assertNotEqual(code, 0)
        self.assertIn(
            f"a service is already running at {self.control}; use --takeover",
            second.output(),
        )
        self.assertIsNone(SITE_STARTING.search(second.output()))
        self.assertEqual(os.stat(self.control).st_ino, inode)
        assertUnaffected(self, incumbent, self.control, port, self.marker)

    def test_staleSocketReplaced(self) -> None:
        """
        A socket file left at the control path with nobody listening (a
        service that was killed) is replaced on start: the new service
        answers there, on a private (0600) socket.
        """
        staleSocket(self.control)
        # (Not the inode: the new socket may well reuse the stale one's.)
        os.chmod(self.control, 0o644)
        incumbent, _ = start(self, self.control, self.service)
        port = sitePort(incumbent)
        published = os.lstat(self.control)
        self.assertTrue(stat.S_ISSOCK(published.st_mode))
        self.assertEqual(stat.S_IMODE(published.st_mode), 0o600)
        assertUnaffected(self, incumbent, self.control, port, self.marker)

    def test_takeoverWithNothingRunning(self) -> None:
        """
        C{--takeover} with no service at the control path (no file, then a
        stale socket) fails with a clear error, exits non-zero without
        binding anything, and leaves the path as it found it.
        """
        code, successor = startFailing(self, self.control, self.service, takeover=True)
        self.assertNotEqual(code, 0)
        self.assertIn(
            f"--takeover: no service answers at {self.control} (absent)",
            successor.output(),
        )
        self.assertIsNone(SITE_STARTING.search(successor.output()))
        self.assertFalse(os.path.lexists(self.control))

        inode = staleSocket(self.control)
        code, successor = startFailing(self, self.control, self.service, takeover=True)
        self.assertNotEqual(code, 0)
        self.assertIn(
            f"--takeover: no service answers at {self.control} (stale)",
            successor.output(),
        )
        self.assertIsNone(SITE_STARTING.search(successor.output()))
        self.assertEqual(os.lstat(self.control).st_ino, inode)


class ControlDirectoryTests(_Fixture, SynchronousTestCase):
    """
    Control paths that are not safe to use.
    """

    def setUp(self) -> None:
        self.makeFixture()

    def assertRefusedToStart(self, control: str, message: str) -> None:
        """
        Neither a first start nor a C{--takeover} at C{control} gets going:
        both exit non-zero with C{message}, before binding anything.
        """
        for takeover in (False, True):
            code, process = startFailing(self, control, self.service, takeover=takeover)
            self.assertNotEqual(code, 0)
            self.assertIn(message, process.output())
            self.assertIsNone(SITE_STARTING.search(process.output()))

    def test_worldWritableDirectory(self) -> None:
        """
        A control directory writable by other users (plain 0777 or sticky
        1777, like /tmp) is refused with a message saying so; no socket is
        created in it.
        """
        unsafe = os.path.join(self.directory, "shared")
        os.mkdir(unsafe)
        for mode in (0o777, 0o1777):
            os.chmod(unsafe, mode)
            self.assertRefusedToStart(
                os.path.join(unsafe, "ctl"),
                f"control directory {unsafe} is writable by other users",
            )
            self.assertEqual(os.listdir(unsafe), [])

    def test_groupWritableDirectory(self) -> None:
        """
        A control directory writable by its group (0770) is refused like a
        world-writable one, with a message saying so; no socket is created
        in it.
        """
        unsafe = os.path.join(self.directory, "team")
        os.mkdir(unsafe)
        os.chmod(unsafe, 0o770)
        self.assertRefusedToStart(
            os.path.join(unsafe, "ctl"),
            f"control directory {unsafe} is writable by its group",
        )
        self.assertEqual(os.listdir(unsafe), [])

    def test_directoryOfAnotherUser(self) -> None:
        """
        A control directory that belongs to another (non-root) user is
        refused, even when only its owner may write to it.
        """
        user = otherUser()
        theirs = os.path.join(self.directory, "theirs")
        os.mkdir(theirs, 0o700)
        os.chown(theirs, user.pw_uid, user.pw_gid)
        self.assertRefusedToStart(
            os.path.join(theirs, "ctl"),
            f"control directory {theirs} belongs to uid {user.pw_uid}",
        )
        self.assertEqual(os.listdir(theirs), [])

    def test_controlPathNotASocket(self) -> None:
        """
        A control path that names something other than a socket (here a
        regular file) is refused and left as it was.
        """
        with open(self.control, "w") as f:
            f.write("precious\n")
        self.assertRefusedToStart(self.control, f"{self.control} exists and is not a socket")
        with open(self.control) as f:
            self.assertEqual(f.read(), "precious\n")


class PortKindsTests(_Fixture, SynchronousTestCase):
    """
    Kinds of listening port: TCP with UNIX (from a .tac), IPv6, UDP.
    """

    def setUp(self) -> None:
        self.makeFixture()

    def test_tacWithTCPAndUNIX(self) -> None:
        """
        A C{--tac} service with a TCP port and a UNIX stream port (mode 0640)
        is taken over twice: both ports keep answering (the UNIX socket also
        after its previous owners exited), the UNIX socket is the same file
        with its mode kept, and status lists both as adopted.
        """
        unixPath = os.path.join(self.directory, "web.sock")
        tac = writeTac(
            self.directory,
            "web.tac",
            [
                siteOn("MainSite", "tcp:0:interface=127.0.0.1", "tac over tcp"),
                siteOn("UnixSite", f"unix:{unixPath}:mode=640", "tac over unix"),
            ],
        )
        options: dict[str, Any] = {"migrateOptions": ["--tac", tac]}
        process, _ = start(self, self.control, [], **options)
        port = portOf(process, "MainSite")
        inode = os.stat(unixPath).st_ino
        self.assertEqual(stat.S_IMODE(os.stat(unixPath).st_mode), 0o640)
        assertServes(self, socket.AF_UNIX, unixPath, "tac over unix")

        for generation in (1, 2):
            process = takeOver(self, self.control, [], process, generation, **options)
            process.waitFor(
                rf"adopted {re.escape(f'unix:{unixPath}#0')} from the incumbent", TIMEOUT
            )
            assertServes(self, socket.AF_INET, ("127.0.0.1", port), "tac over tcp")
            assertServes(self, socket.AF_UNIX, unixPath, "tac over unix")
            unixStat = os.stat(unixPath)
            self.assertTrue(stat.S_ISSOCK(unixStat.st_mode))
            self.assertEqual(unixStat.st_ino, inode)
            self.assertEqual(stat.S_IMODE(unixStat.st_mode), 0o640)
            status = statusOf(self, self.control)
            self.assertEqual((status["pid"], status["generation"]), (process.pid, generation))
            ports = keyedPorts(status)
            self.assertEqual(
                {key: p["adopted"] for key, p in ports.items()},
                {"tcp:0:127.0.0.1#0": True, f"unix:{unixPath}#0": True},
            )
            self.assertEqual(ports[f"unix:{unixPath}#0"]["address"], unixPath)

    def startIntruder(self, unixPath: str) -> str:
        """
        Start a plain C{twistd web} (not under migrate) on the UNIX path
        C{unixPath}, serving other content, and wait until it either fails
        to take Twisted's lock on the path or has taken it.

        @return: C{"Cannot acquire lock"} or C{"Starting factory"}.
        """
        other = tempfile.mkdtemp(prefix="intruder-", dir=self.directory)
        intruder = ServiceProcess(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "web",
                "--listen",
                f"unix:{unixPath}",
                "--path",
                webRoot(other, "intruder"),
            ],
            env=childEnvironment(),
            name="intruder",
        )
        self.addCleanup(intruder.stop)
        # The port logs "starting on" before it takes the lock; its factory
        # starts only once it holds it.
        outcome = intruder.waitFor(r"Cannot acquire lock|Starting factory", TIMEOUT)
        return outcome.group(0)

    def test_unixLockFollowsSuccessor(self) -> None:
        """
        A UNIX port declared with Twisted's lock file (the strports default)
        stays protected after a takeover as before it: once the incumbent
        has exited, a second, unrelated C{twistd web} on the same path
        cannot acquire the lock, and the successor keeps the path.
        """
        unixPath = os.path.join(self.directory, "web.sock")
        service = ["web", "--listen", f"unix:{unixPath}", "--path", self.root]
        incumbent, _ = start(self, self.control, service)
        self.assertEqual(self.startIntruder(unixPath), "Cannot acquire lock")
        assertServes(self, socket.AF_UNIX, unixPath, self.marker)

        takeOver(self, self.control, service, incumbent, 1)
        self.assertEqual(self.startIntruder(unixPath), "Cannot acquire lock")
        assertServes(self, socket.AF_UNIX, unixPath, self.marker)


    def test_ipv6(self) -> None:
        """
        A C{tcp6:0:interface=\\:\\:1} port is taken over: the same port on ::1
        answers, served by the successor, and status shows the IPv6 address.
        """
        if not (socket.has_ipv6 and bindable(socket.AF_INET6, "::1")):
            raise SkipTest("IPv6 loopback (::1) is not available here")
        service = webService(self.root, listen=r"tcp6:0:interface=\:\:1")
        incumbent, _ = start(self, self.control, service)
        port = sitePort(incumbent)
        assertServes(self, socket.AF_INET6, ("::1", port), self.marker)
        self.assertEqual(
            keyedPorts(statusOf(self, self.control))["tcp:0:::1#0"]["address"],
            f"[::1]:{port}",
        )

        successor = takeOver(self, self.control, service, incumbent, 1)
        assertServes(self, socket.AF_INET6, ("::1", port), self.marker)
        status = statusOf(self, self.control)
        self.assertEqual(status["pid"], successor.pid)
        self.assertEqual(
            {
                key: (p["kind"], p["address"], p["adopted"], p["family"])
                for key, p in keyedPorts(status).items()
            },
            {"tcp:0:::1#0": ("tcp", f"[::1]:{port}", True, socket.AF_INET6)},
        )

    def test_udpMoves(self) -> None:
        """
        A service with a UDP port (from a .tac) is taken over: the
        successor's protocol starts on the same UDP port (it adopted the
        socket), echoes there, and status lists the port as adopted, with
        its family; the site moves too.
        """
        tac = writeTac(
            self.directory,
            "udp.tac",
            [siteOn("MainSite", "tcp:0:interface=127.0.0.1", "with udp"), udpEcho()],
        )
        options: dict[str, Any] = {"migrateOptions": ["--tac", tac]}
        incumbent, _ = start(self, self.control, [], **options)
        port = portOf(incumbent, "MainSite")
        udpPort = portOf(incumbent, "EchoDatagram")
        self.assertEqual(udpEchoes(udpPort), b"ping")

        successor = takeOver(self, self.control, [], incumbent, 1, **options)
        self.assertEqual(portOf(successor, "EchoDatagram"), udpPort)
        self.assertEqual(udpEchoes(udpPort), b"ping")
        assertServes(self, socket.AF_INET, ("127.0.0.1", port), "with udp")
        status = statusOf(self, self.control)
        self.assertEqual(status["pid"], successor.pid)
        self.assertEqual(
            keyedPorts(status)["udp:0:127.0.0.1#0"],
            {
                "key": "udp:0:127.0.0.1#0",
                "kind": "udp",
                "address": f"127.0.0.1:{udpPort}",
                "adopted": True,
                "family": socket.AF_INET,
            },
        )


class DeclaredPortsTests(_Fixture, SynchronousTestCase):
    """
    Incumbent and successor that do not declare the same ports: the
    successor's code decides what is served.
    """

    def setUp(self) -> None:
        if not bindable(socket.AF_INET, "127.0.0.2"):
            raise SkipTest("the loopback address 127.0.0.2 is not usable here")
        self.makeFixture()

    def test_portOnlyInIncumbent(self) -> None:
        """
        Ports that only the incumbent declares (TCP and UNIX) are closed
        once the takeover commits (connections to them are refused), when
        the successor is started with C{--close-undeclared-ports} (without
        it the takeover is refused: see
        L{tests.integration.test_check.UndeclaredPortTests}), and both
        processes log them by their declared addresses; the shared port
        moves to the successor's code.
        """
        oldPath = os.path.join(self.directory, "old.sock")
        before = writeTac(
            self.directory,
            "before.tac",
            [
                siteOn("MainSite", "tcp:0:interface=127.0.0.1", "old main"),
                siteOn("ExtraSite", "tcp:0:interface=127.0.0.2", "old extra"),
                siteOn("UnixSite", f"unix:{oldPath}", "old unix"),
            ],
        )
        after = writeTac(
            self.directory,
            "after.tac",
            [siteOn("MainSite", "tcp:0:interface=127.0.0.1", "new main")],
        )
        incumbent, _ = start(self, self.control, [], migrateOptions=["--tac", before])
        main = portOf(incumbent, "MainSite")
        extra = portOf(incumbent, "ExtraSite")
        assertServes(self, socket.AF_INET, ("127.0.0.2", extra), "old extra")
        assertServes(self, socket.AF_UNIX, oldPath, "old unix")

        successor = takeOver(
            self,
            self.control,
            [],
            incumbent,
            1,
            migrateOptions=["--close-undeclared-ports", "--tac", after],
        )
        dropped = re.escape(f"tcp:0:127.0.0.2#0, unix:{oldPath}#0")
        successor.waitFor(
            rf"the incumbent listens on {dropped}, which this service does not declare",
            TIMEOUT,
        )
        incumbent.waitFor(rf"not declared by the successor and closed: {dropped}", TIMEOUT)
        assertRefused(self, ("127.0.0.2", extra))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as skt:
            skt.settimeout(TIMEOUT)
            self.assertRaises((ConnectionRefusedError, FileNotFoundError), skt.connect, oldPath)
        assertServes(self, socket.AF_INET, ("127.0.0.1", main), "new main")
        ports = keyedPorts(statusOf(self, self.control))
        self.assertEqual(list(ports), ["tcp:0:127.0.0.1#0"])
        self.assertTrue(ports["tcp:0:127.0.0.1#0"]["adopted"])

    def test_portOnlyInSuccessor(self) -> None:
        """
        A port that only the successor declares is bound fresh by it and
        answers after the takeover, while the shared port is adopted.
        """
        before = writeTac(
            self.directory,
            "before.tac",
            [siteOn("MainSite", "tcp:0:interface=127.0.0.1", "old main")],
        )
        after = writeTac(
            self.directory,
            "after.tac",
            [
                siteOn("MainSite", "tcp:0:interface=127.0.0.1", "new main"),
                siteOn("ExtraSite", "tcp:0:interface=127.0.0.2", "new extra"),
            ],
        )
        incumbent, _ = start(self, self.control, [], migrateOptions=["--tac", before])
        main = portOf(incumbent, "MainSite")

        successor = takeOver(
            self,
            self.control,
            [],
            incumbent,
            1,
            migrateOptions=["--close-undeclared-ports", "--tac", after],
        )
        extra = portOf(successor, "ExtraSite")
        assertServes(self, socket.AF_INET, ("127.0.0.1", main), "new main")
        assertServes(self, socket.AF_INET, ("127.0.0.2", extra), "new extra")
        ports = keyedPorts(statusOf(self, self.control))
        self.assertEqual(
            {key: (p["adopted"], p["address"]) for key, p in ports.items()},
            {
                "tcp:0:127.0.0.1#0": (True, f"127.0.0.1:{main}"),
                "tcp:0:127.0.0.2#0": (False, f"127.0.0.2:{extra}"),
            },
        )


class PidfileTests(_Fixture, SynchronousTestCase):
    """
    twistd's C{--pidfile} across a takeover.
    """

    def setUp(self) -> None:
        self.makeFixture()

    def readPidfile(self) -> int:
        with open(self.pidfile) as f:
            return int(f.read().strip())

    def test_pidfileNamesSuccessor(self) -> None:
        """
        With C{twistd --pidfile}, the pidfile names the incumbent, does not
        stop the takeover, names the successor once it serves, is not
        removed by the incumbent when it exits, and is removed by the
        successor when it stops.
        """
        self.pidfile = os.path.join(self.directory, "twistd.pid")
        options: dict[str, Any] = {"twistdOptions": ["--pidfile", self.pidfile]}
        incumbent, _ = start(self, self.control, self.service, **options)
        self.assertEqual(self.readPidfile(), incumbent.pid)

        successor = takeOver(self, self.control, self.service, incumbent, 1, **options)
        # takeOver waited for the incumbent to exit.
        self.assertEqual(self.readPidfile(), successor.pid)
        self.assertEqual(statusOf(self, self.control)["pid"], successor.pid)

        # twistd ends by re-raising the signal that stopped it.
        self.assertIn(successor.stop(), (0, -signal.SIGTERM))
        successor.waitFor(r"Main loop terminated", TIMEOUT)
        self.assertFalse(os.path.exists(self.pidfile))


class StatusTextTests(_Fixture, SynchronousTestCase):
    """
    The human-readable output of C{python -m migrator status}.
    """

    def setUp(self) -> None:
        self.makeFixture()

    def statusText(self) -> str:
        result = runStatus(self.control, asJSON=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        return result.stdout

    def test_statusText(self) -> None:
        """
        The text status shows the pid, the Python version, the generation and
        each listening port (declared key, actual address, bound or adopted),
        before and after a takeover; afterwards it also names the
        predecessor.
        """
        incumbent, ready = start(self, self.control, self.service)
        port = sitePort(incumbent)
        text = self.statusText()
        self.assertIn(f"pid {incumbent.pid}, Python {ready.group('python')}", text)
        self.assertRegex(text, r"(?m)^generation\s+0$")
        self.assertRegex(text, r"(?m)^ports\s+1$")
        self.assertRegex(text, rf"(?m)^\s+tcp:0:127\.0\.0\.1#0\s+127\.0\.0\.1:{port}\s+\(bound\)$")

        successor = takeOver(self, self.control, self.service, incumbent, 1)
        text = self.statusText()
        self.assertIn(f"pid {successor.pid}, Python ", text)
        self.assertRegex(text, r"(?m)^generation\s+1$")
        self.assertRegex(
            text, rf"(?m)^\s+tcp:0:127\.0\.0\.1#0\s+127\.0\.0\.1:{port}\s+\(adopted\)$"
        )
        self.assertIn(f"predecessor pid {incumbent.pid}", text)
