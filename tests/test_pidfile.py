"""
Tests for L{migrator.takeover._pidfile}: the pidfile that follows the serving
process, and systemd notifications.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from migrator.takeover._pidfile import Pidfile, sdNotify


class PidfileTests(SynchronousTestCase):
    """
    L{Pidfile} names the serving process and is removed only by it.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "twistd.pid")
        self.pidfile = Pidfile(self.path)

    def setContent(self, content: str) -> None:
        with open(self.path, "w") as f:
            f.write(content)

    def content(self) -> str:
        with open(self.path) as f:
            return f.read()

    def test_writeDefault(self) -> None:
        """
        C{write()} names this process, one line.
        """
        self.pidfile.write()
        self.assertEqual(self.content(), f"{os.getpid()}\n")
        self.assertEqual(self.pidfile.read(), os.getpid())

    def test_writeOther(self) -> None:
        """
        C{write(pid)} names the given process.
        """
        self.pidfile.write(4242)
        self.assertEqual(self.content(), "4242\n")

    def test_writeAtomic(self) -> None:
        """
        C{write} replaces the file by renaming a new one over it, so that a
        reader sees the old content or the new, never a partial file, and
        leaves no temporary file behind.
        """
        self.setContent("1\n")
        before = os.stat(self.path).st_ino
        with open(self.path) as reader:
            self.pidfile.write(2)
            # A reader of the old file still sees it whole.
            self.assertEqual(reader.read(), "1\n")
        self.assertNotEqual(os.stat(self.path).st_ino, before)
        self.assertEqual(self.content(), "2\n")
        self.assertEqual(os.listdir(self.directory), ["twistd.pid"])

    def test_readMissing(self) -> None:
        """
        A missing pidfile reads as C{None}.
        """
        self.assertIsNone(self.pidfile.read())

    def test_readGarbage(self) -> None:
        """
        Content that is not a process id reads as C{None}.
        """
        for garbage in ("", "\n", "0\n", "abc\n", "12 34\n", "\x00\x01", "1.5"):
            self.setContent(garbage)
            self.assertIsNone(self.pidfile.read(), repr(garbage))

    def test_readWhitespace(self) -> None:
        """
        Surrounding whitespace is ignored.
        """
        self.setContent("  123 \n\n")
        self.assertEqual(self.pidfile.read(), 123)

    def test_readDirectory(self) -> None:
        """
        A pidfile path that is a directory reads as C{None}.
        """
        os.mkdir(self.path)
        self.assertIsNone(self.pidfile.read())

    def test_noPath(self) -> None:
        """
        Without a path (C{--pidfile=}), there is nothing to read, write or
        remove.
        """
        for empty in (None, ""):
            pidfile = Pidfile(empty)
            self.assertIsNone(pidfile.read())
            pidfile.write()
            self.assertFalse(pidfile.removeIfMine())
        self.assertEqual(os.listdir(self.directory), [])

    def test_removeMine(self) -> None:
        """
        C{removeIfMine} removes a pidfile that names this process.
        """
        self.pidfile.write()
        self.assertTrue(self.pidfile.removeIfMine())
        self.assertFalse(os.path.exists(self.path))

    def test_removeGiven(self) -> None:
        """
        C{removeIfMine(pid)} removes a pidfile that names C{pid}.
        """
        self.pidfile.write(77)
        self.assertTrue(self.pidfile.removeIfMine(77))
        self.assertFalse(os.path.exists(self.path))

    def test_keepSuccessors(self) -> None:
        """
        A pidfile naming another process (a successor) is left alone.
        """
        self.pidfile.write(os.getpid() + 1)
        self.assertFalse(self.pidfile.removeIfMine())
        self.assertEqual(self.pidfile.read(), os.getpid() + 1)

    def test_keepGarbage(self) -> None:
        """
        A pidfile that does not name anybody is left alone.
        """
        self.setContent("garbage")
        self.assertFalse(self.pidfile.removeIfMine())
        self.assertTrue(os.path.exists(self.path))

    def test_removeMissing(self) -> None:
        """
        Removing a pidfile that does not exist returns C{False}.
        """
        self.assertFalse(self.pidfile.removeIfMine())


class _FakeSocket:
    """
    Records what L{sdNotify} does with its socket.
    """

    def __init__(self, log: list[Any], family: int, kind: int, fail: str = "") -> None:
        self.log = log
        self.fail = fail
        log.append(("socket", family, kind))

    def connect(self, address: str) -> None:
        self.log.append(("connect", address))
        if self.fail == "connect":
            raise ConnectionRefusedError()

    def sendall(self, data: bytes) -> None:
        self.log.append(("sendall", data))
        if self.fail == "sendall":
            raise OSError("no buffer space")

    def close(self) -> None:
        self.log.append(("close",))


class SdNotifyTests(SynchronousTestCase):
    """
    L{sdNotify} talks to systemd only when systemd asked for it.
    """

    def factory(self, fail: str = "") -> tuple[list[Any], Any]:
        log: list[Any] = []

        def socketFactory(family: int, kind: int) -> _FakeSocket:
            return _FakeSocket(log, family, kind, fail)

        return log, socketFactory

    def test_noSocket(self) -> None:
        """
        Without C{NOTIFY_SOCKET} (or with it empty), nothing is sent and
        C{False} is returned.
        """
        log, socketFactory = self.factory()
        self.assertFalse(sdNotify("READY=1", {}, socketFactory))
        self.assertFalse(sdNotify("READY=1", {"NOTIFY_SOCKET": ""}, socketFactory))
        self.assertEqual(log, [])

    def test_path(self) -> None:
        """
        A path address gets the message as one UTF-8 datagram, and the
        socket is closed.
        """
        log, socketFactory = self.factory()
        environ = {"NOTIFY_SOCKET": "/run/systemd/notify"}
        self.assertTrue(sdNotify("READY=1\nMAINPID=12", environ, socketFactory))
        self.assertEqual(
            log,
            [
                ("socket", socket.AF_UNIX, socket.SOCK_DGRAM),
                ("connect", "/run/systemd/notify"),
                ("sendall", b"READY=1\nMAINPID=12"),
                ("close",),
            ],
        )

    def test_abstract(self) -> None:
        """
        An address starting with C{@} is in the abstract namespace: the C{@}
        becomes a NUL byte.
        """
        log, socketFactory = self.factory()
        self.assertTrue(sdNotify("READY=1", {"NOTIFY_SOCKET": "@sd/notify"}, socketFactory))
        self.assertIn(("connect", "\0sd/notify"), log)

    def test_unicode(self) -> None:
        """
        The message is encoded as UTF-8.
        """
        log, socketFactory = self.factory()
        sdNotify("STATUS=caf\u00e9", {"NOTIFY_SOCKET": "/x"}, socketFactory)
        self.assertIn(("sendall", b"STATUS=caf\xc3\xa9"), log)

    def test_connectFails(self) -> None:
        """
        If systemd's socket cannot be reached, C{False} is returned, nothing
        is raised, and the socket is closed.
        """
        log, socketFactory = self.factory("connect")
        self.assertFalse(sdNotify("READY=1", {"NOTIFY_SOCKET": "/x"}, socketFactory))
        self.assertEqual(log[-1], ("close",))
        self.assertNotIn("sendall", [entry[0] for entry in log])

    def test_sendFails(self) -> None:
        """
        If sending fails, C{False} is returned and the socket is closed.
        """
        log, socketFactory = self.factory("sendall")
        self.assertFalse(sdNotify("READY=1", {"NOTIFY_SOCKET": "/x"}, socketFactory))
        self.assertEqual(log[-1], ("close",))

    def test_realSocket(self) -> None:
        """
        With the real socket type, a datagram socket listening at
        C{NOTIFY_SOCKET} receives the message.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "notify")
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(path)
        receiver.setblocking(False)
        self.assertTrue(sdNotify("READY=1\nMAINPID=5", {"NOTIFY_SOCKET": path}))
        self.assertEqual(receiver.recv(1024), b"READY=1\nMAINPID=5")

    def test_realAbstractSocket(self) -> None:
        """
        With the real socket type, a datagram socket in the abstract
        namespace receives the message sent to its C{@} address.
        """
        name = f"migrator-test-{os.getpid()}-{id(self)}"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind("\0" + name)
        receiver.setblocking(False)
        self.assertTrue(sdNotify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(receiver.recv(1024), b"WATCHDOG=1")

    def test_realNobodyListening(self) -> None:
        """
        With the real socket type, a stale C{NOTIFY_SOCKET} path gives
        C{False}.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        self.assertFalse(sdNotify("READY=1", {"NOTIFY_SOCKET": os.path.join(directory, "gone")}))
