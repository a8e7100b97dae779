"""
Tests for L{migrator.takeover._control}: the control socket's path checks, probing,
peer policy, checked PB brokers, jelly security and atomic publication.

PB conversations run over L{twisted.test.iosim}; sockets are real UNIX
sockets in a private temporary directory, driven by a L{MemoryReactorClock}
where a reactor is needed.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from typing import Any

from twisted.internet import error, unix
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.spread import banana, jelly, pb
from twisted.test import iosim
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from migrator.cli._status import fetchStatus
from migrator.interfaces import IPeerPolicy
from migrator.takeover._control import (
    REFUSED,
    CheckedClientBroker,
    CheckedServerBroker,
    ControlClientFactory,
    ControlPathError,
    ControlRefused,
    ControlServerFactory,
    ControlSocket,
    MalformedJelly,
    PeerPolicy,
    checkControlPath,
    controlSecurity,
    peerCredentials,
    probe,
)

#: What the server of L{CheckedServerBrokerTests} tells a refused peer.
_REFUSAL = REFUSED + b"this control socket serves uid 1000 and root only\n"


def _call(method: bytes, args: Any, kwargs: Any = None) -> bytes:
    """
    The banana bytes of a PB call of C{method} on the root object, with
    already-jellied C{args} and C{kwargs}, answer required.
    """
    if kwargs is None:
        kwargs = [b"dictionary"]
    return banana.encode([b"message", 1, b"root", method, 1, args, kwargs])


class _Arbitrary:
    """
    A class no peer may make the control socket build.
    """

    def __init__(self) -> None:
        self.x = 1


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _credentials(pid: int, uid: int, gid: int) -> Any:
    """
    A credentials seam that answers C{(pid, uid, gid)} and records the
    handles it was asked about.
    """
    handles: list[Any] = []

    def credentials(handle: Any) -> tuple[int, int, int]:
        handles.append(handle)
        return pid, uid, gid

    credentials.handles = handles  # type: ignore[attr-defined]
    return credentials


class _HandleTransport(StringTransport):
    """
    A L{StringTransport} with a C{getHandle}, like a UNIX transport.
    """

    handle = object()

    def getHandle(self) -> Any:
        return self.handle


class _FakeTransport(iosim.FakeTransport):
    """
    An iosim transport with a C{getHandle}, like a UNIX transport.
    """

    def getHandle(self) -> Any:
        return self


class _TempDirMixin:
    def tempdir(self) -> str:
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path, True)  # type: ignore[attr-defined]
        return path

    def boundSocket(self, path: str, listen: bool = True) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)  # type: ignore[attr-defined]
        s.bind(path)
        if listen:
            s.listen(5)
        return s


class CheckControlPathTests(_TempDirMixin, SynchronousTestCase):
    """
    L{checkControlPath} accepts only a private place for the control socket.
    """

    def test_fresh(self) -> None:
        """
        A path that does not exist yet, in a private directory, is accepted
        and returned as is when absolute.
        """
        path = os.path.join(self.tempdir(), "ctl")
        self.assertEqual(checkControlPath(path), path)

    def test_relative(self) -> None:
        """
        A relative path is returned absolute.
        """
        path = os.path.join(self.tempdir(), "ctl")
        relative = os.path.relpath(path)
        self.assertFalse(os.path.isabs(relative))
        self.assertEqual(checkControlPath(relative), path)

    def test_worldWritable(self) -> None:
        """
        A directory others may write to (where they could swap the socket)
        is refused, with its mode in the message.
        """
        directory = self.tempdir()
        os.chmod(directory, 0o777)
        e = self.assertRaises(ControlPathError, checkControlPath, os.path.join(directory, "ctl"))
        self.assertIn("writable by other users", str(e))
        self.assertIn("0777", str(e))

    def test_groupWritable(self) -> None:
        """
        A directory its group may write to is refused like a world-writable
        one (members of the group could swap the socket), with its group and
        mode in the message; set-group-id makes no difference.  A directory
        its group may only read and search is accepted.
        """
        directory = self.tempdir()
        gid = os.stat(directory).st_gid
        for mode in (0o770, 0o2770, 0o730):
            os.chmod(directory, mode)
            e = self.assertRaises(
                ControlPathError, checkControlPath, os.path.join(directory, "ctl")
            )
            self.assertIn(f"control directory {directory} is writable by its group", str(e))
            self.assertIn(f"gid {gid}, mode {mode:04o}", str(e))
        os.chmod(directory, 0o750)
        checkControlPath(os.path.join(directory, "ctl"))

    def test_stickyWorldWritable(self) -> None:
        """
        A world-writable sticky directory such as C{/tmp} is refused too.
        """
        directory = self.tempdir()
        os.chmod(directory, 0o1777)
        self.assertRaises(ControlPathError, checkControlPath, os.path.join(directory, "ctl"))

    def test_otherOwner(self) -> None:
        """
        A directory that belongs to another (non-root) user is refused.
        """
        if os.getuid() != 0:
            raise SkipTest("changing a directory's owner needs root")
        directory = self.tempdir()
        os.chown(directory, 12345, -1)
        e = self.assertRaises(ControlPathError, checkControlPath, os.path.join(directory, "ctl"))
        self.assertIn("belongs to uid 12345", str(e))
        # That user may use it.
        checkControlPath(os.path.join(directory, "ctl"), uid=12345)

    def test_rootOwner(self) -> None:
        """
        A directory that belongs to root is acceptable for any user.
        """
        if os.getuid() != 0:
            raise SkipTest("making a root-owned directory needs root")
        directory = self.tempdir()
        path = os.path.join(directory, "ctl")
        self.assertEqual(checkControlPath(path, uid=12345), path)

    def test_missingDirectory(self) -> None:
        """
        A directory that does not exist is refused, saying why.
        """
        path = os.path.join(self.tempdir(), "nope", "ctl")
        e = self.assertRaises(ControlPathError, checkControlPath, path)
        self.assertIn("No such file or directory", str(e))

    def test_notASocket(self) -> None:
        """
        An existing file that is not a socket is never replaced.
        """
        path = os.path.join(self.tempdir(), "ctl")
        with open(path, "w") as f:
            f.write("important")
        e = self.assertRaises(ControlPathError, checkControlPath, path)
        self.assertIn("is not a socket", str(e))

    def test_symlink(self) -> None:
        """
        A symbolic link at the path is not a socket, even if it leads to one.
        """
        directory = self.tempdir()
        self.boundSocket(os.path.join(directory, "real"))
        os.symlink(os.path.join(directory, "real"), os.path.join(directory, "ctl"))
        self.assertRaises(ControlPathError, checkControlPath, os.path.join(directory, "ctl"))

    def test_existingSocket(self) -> None:
        """
        An existing socket (live or stale) is acceptable: it may be replaced.
        """
        path = os.path.join(self.tempdir(), "ctl")
        self.boundSocket(path)
        self.assertEqual(checkControlPath(path), path)


class ProbeTests(_TempDirMixin, SynchronousTestCase):
    """
    L{probe} tells a live control socket from a stale one.
    """

    def test_absent(self) -> None:
        """
        Nothing at the path is C{"absent"}.
        """
        self.assertEqual(probe(os.path.join(self.tempdir(), "ctl")), "absent")

    def test_stale(self) -> None:
        """
        A socket file whose process is gone is C{"stale"}.
        """
        path = os.path.join(self.tempdir(), "ctl")
        self.boundSocket(path).close()
        self.assertTrue(os.path.exists(path))
        self.assertEqual(probe(path), "stale")

    def test_notListening(self) -> None:
        """
        A socket bound but not listening is C{"stale"}.
        """
        path = os.path.join(self.tempdir(), "ctl")
        self.boundSocket(path, listen=False)
        self.assertEqual(probe(path), "stale")

    def test_live(self) -> None:
        """
        A listening socket is C{"live"}, whether or not it accepts.
        """
        path = os.path.join(self.tempdir(), "ctl")
        self.boundSocket(path)
        self.assertEqual(probe(path), "live")

    def test_backlogFull(self) -> None:
        """
        A listening socket whose backlog is full is still C{"live"}.
        """
        path = os.path.join(self.tempdir(), "ctl")
        server = self.boundSocket(path, listen=False)
        server.listen(0)
        for _ in range(10):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(c.close)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        else:
            self.fail("the backlog never filled")
        self.assertEqual(probe(path, timeout=0.5), "live")

    def test_danglingSymlink(self) -> None:
        """
        A symbolic link to nothing is C{"stale"}, not C{"absent"}: something
        is in the way.
        """
        directory = self.tempdir()
        path = os.path.join(directory, "ctl")
        os.symlink(os.path.join(directory, "gone"), path)
        self.assertEqual(probe(path), "stale")

    def test_socketFactory(self) -> None:
        """
        The probing socket comes from C{socketFactory}, as a UNIX stream
        socket with the timeout given, and is closed.
        """
        path = os.path.join(self.tempdir(), "ctl")
        self.boundSocket(path)
        made: list[Any] = []

        def socketFactory(family: int, kind: int) -> socket.socket:
            s = socket.socket(family, kind)
            made.append((family, kind, s))
            return s

        self.assertEqual(probe(path, timeout=0.25, socketFactory=socketFactory), "live")
        [(family, kind, s)] = made
        self.assertEqual((family, kind), (socket.AF_UNIX, socket.SOCK_STREAM))
        self.assertEqual(s.gettimeout(), 0.25)
        self.assertEqual(s.fileno(), -1)


class PeerPolicyTests(SynchronousTestCase):
    """
    L{PeerPolicy} serves this process's user and root only.
    """

    def check(self, uid: int, peerUid: int) -> tuple[bool, str]:
        credentials = _credentials(12, peerUid, 34)
        transport = _HandleTransport()
        result = PeerPolicy(uid, credentials).check(transport)
        self.assertEqual(credentials.handles, [transport.handle])
        return result

    def test_sameUser(self) -> None:
        """
        A peer of the same uid is allowed, and described for the logs.
        """
        self.assertEqual(self.check(1000, 1000), (True, "pid 12 uid 1000 gid 34"))

    def test_root(self) -> None:
        """
        Root is allowed.
        """
        self.assertEqual(self.check(1000, 0), (True, "pid 12 uid 0 gid 34"))

    def test_otherUser(self) -> None:
        """
        Another user is refused.
        """
        self.assertEqual(self.check(1000, 65534), (False, "pid 12 uid 65534 gid 34"))

    def test_rootServesOnlyRoot(self) -> None:
        """
        A policy for root refuses ordinary users.
        """
        self.assertFalse(self.check(0, 1000)[0])

    def test_unknownPeer(self) -> None:
        """
        If the credentials cannot be read, the peer is refused and the
        reason is in the description.
        """

        def credentials(handle: Any) -> tuple[int, int, int]:
            raise OSError("not a UNIX socket")

        ok, who = PeerPolicy(1000, credentials).check(_HandleTransport())
        self.assertFalse(ok)
        self.assertIn("unknown peer", who)
        self.assertIn("not a UNIX socket", who)

    def test_noHandle(self) -> None:
        """
        A transport without a socket handle is refused.
        """
        ok, who = PeerPolicy(1000, _credentials(1, 1000, 1)).check(StringTransport())
        self.assertFalse(ok)
        self.assertIn("unknown peer", who)

    def test_refusal(self) -> None:
        """
        A refused peer is told which user the socket serves: root too,
        unless root is the one.
        """
        verifyObject(IPeerPolicy, PeerPolicy())
        self.assertEqual(
            PeerPolicy(1000).refusal(), "this control socket serves uid 1000 and root only"
        )
        self.assertEqual(PeerPolicy(0).refusal(), "this control socket serves uid 0 only")

    def test_defaults(self) -> None:
        """
        By default the policy allows this process's user and reads real
        credentials.
        """
        policy = PeerPolicy()
        self.assertEqual(policy.uid, os.getuid())
        self.assertIs(policy.credentials, peerCredentials)

    def test_realCredentials(self) -> None:
        """
        L{peerCredentials} reads the peer's pid, uid and gid of a connected
        UNIX socket, and the default policy allows this process.
        """
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertEqual(peerCredentials(a), (os.getpid(), os.getuid(), os.getgid()))
        transport = _HandleTransport()
        transport.handle = b
        ok, who = PeerPolicy().check(transport)
        self.assertTrue(ok)
        self.assertIn(f"pid {os.getpid()} ", who)


class CheckedServerBrokerTests(SynchronousTestCase):
    """
    The server broker hangs up on refused peers before any PB byte.
    """

    def broker(self, peerUid: int) -> tuple[CheckedServerBroker, _HandleTransport]:
        self.statusCalls: list[Any] = []
        calls = self.statusCalls

        class Root(pb.Root):
            def remote_status(self, *args: Any) -> Any:
                calls.append(args)
                return {"ok": True}

        factory = ControlServerFactory(Root(), PeerPolicy(1000, _credentials(7, peerUid, 7)))
        broker = factory.buildProtocol(None)
        self.assertIsInstance(broker, CheckedServerBroker)
        transport = _HandleTransport()
        broker.makeConnection(transport)
        return broker, transport

    def talking(self) -> tuple[CheckedServerBroker, _HandleTransport]:
        """
        An allowed peer's broker, the dialect chosen, its output so far
        cleared.
        """
        broker, transport = self.broker(1000)
        broker.dataReceived(banana.encode(b"pb"))
        transport.clear()
        return broker, transport

    def test_refused(self) -> None:
        """
        A peer of another user gets no PB byte: it is told why in one line
        of plain text (L{REFUSED}, then which user the socket serves), the
        connection is closed once that is written (not aborted, which would
        discard it), and a warning names the peer.
        """
        with capturedLogs() as events:
            broker, transport = self.broker(2000)
        self.assertEqual(transport.value(), _REFUSAL)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.assertEqual(broker.peer, "refused pid 7 uid 2000 gid 7")
        [warning] = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(warning["peer"], "pid 7 uid 2000 gid 7")

    def test_refusedDataIgnored(self) -> None:
        """
        Bytes a refused peer sends before the connection is gone are never
        parsed and never answered, and losing the connection is clean.
        """
        broker, transport = self.broker(2000)
        broker.dataReceived(b"\x04\x80\x02\x82pb\xff garbage \x00\x87" * 100)
        self.assertEqual(transport.value(), _REFUSAL)
        broker.connectionLost(Failure(error.ConnectionLost()))

    def test_listTypeTag(self) -> None:
        """
        A call whose arguments hold a jelly list whose type tag is itself a
        list gets exactly one log line, a warning saying the input is
        malformed (no traceback, no error logged), no answer at all, and
        only this connection is dropped: the method is not called.
        """
        broker, transport = self.talking()
        with capturedLogs() as events:
            broker.dataReceived(_call(b"status", [[b"list"], 1]))
        self.assertEqual(len(events), 1, events)
        [warning] = events
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertIn("malformed input", warning["log_format"])
        self.assertEqual(warning["peer"], "pid 7 uid 1000 gid 7")
        self.assertIn(MalformedJelly.__name__, warning["error"])
        self.assertIn("a jelly type tag that is a list", warning["error"])
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.statusCalls, [])
        # What follows is ignored too.
        broker.dataReceived(_call(b"status", [b"tuple"]))
        self.assertEqual((transport.value(), self.statusCalls), (b"", []))
        broker.connectionLost(Failure(error.ConnectionAborted()))

    def test_malformedThenValidInOneChunk(self) -> None:
        """
        A valid call that arrives in the same chunk after a malformed one
        is not obeyed.
        """
        broker, transport = self.talking()
        with capturedLogs():
            broker.dataReceived(
                _call(b"status", [b"tuple", [[b"tuple"]]]) + _call(b"status", [b"tuple"])
            )
        self.assertEqual((transport.value(), self.statusCalls), (b"", []))
        self.assertTrue(transport.disconnected)
        broker.connectionLost(Failure(error.ConnectionAborted()))

    def test_otherMalformedJelly(self) -> None:
        """
        Other jelly that does not decode (a dictionary item that is not a
        pair, an empty list, a type tag that is a number, a reference to
        nothing) drops the connection the same way, with one warning each.
        """
        for args in (
            [b"dictionary", 5],
            [b"tuple", []],
            [7, 1],
            [b"tuple", [b"dereference", 99]],
        ):
            broker, transport = self.talking()
            with capturedLogs() as events:
                broker.dataReceived(_call(b"status", args))
            self.assertEqual(
                [e["log_level"] for e in events], [LogLevel.warn], (args, events)
            )
            self.assertIn("malformed input", events[0]["log_format"])
            self.assertEqual(transport.value(), b"", args)
            self.assertTrue(transport.disconnected, args)
            broker.connectionLost(Failure(error.ConnectionAborted()))
        self.assertEqual(self.statusCalls, [])

    def test_insecureJellyAnswered(self) -> None:
        """
        A well-formed call naming a type that is not allowed is not
        malformed: the call fails with an answer, and the session goes on.
        """
        broker, transport = self.talking()
        broker.dataReceived(_call(b"status", [b"tuple", [b"module", b"os"]]))
        self.assertEqual(len(self.flushLoggedErrors(jelly.InsecureJelly)), 1)
        self.assertFalse(transport.disconnected)
        self.assertIn(b"InsecureJelly", transport.value())
        transport.clear()
        broker.dataReceived(_call(b"status", [b"tuple"]))
        self.assertEqual(self.statusCalls, [()])
        self.assertNotEqual(transport.value(), b"")
        broker.connectionLost(Failure(error.ConnectionDone()))

    def test_allowed(self) -> None:
        """
        An allowed peer gets PB's greeting.
        """
        broker, transport = self.broker(1000)
        self.assertFalse(transport.disconnected)
        self.assertEqual(broker.peer, "pid 7 uid 1000 gid 7")
        self.assertNotEqual(transport.value(), b"")
        broker.connectionLost(Failure(error.ConnectionDone()))

    def test_garbageFromAllowedPeer(self) -> None:
        """
        Garbage from an allowed peer is not answered: the broker logs a
        clear line, drops only that connection, and ignores what follows.
        """
        broker, transport = self.broker(1000)
        greeting = transport.value()
        broker.dataReceived(b"\xff" * 100)
        self.assertTrue(broker.peer.startswith("refused "))
        self.assertEqual(transport.value(), greeting)
        broker.dataReceived(b"\x00" * 10)
        self.assertEqual(transport.value(), greeting)
        broker.connectionLost(Failure(error.ConnectionDone()))

    def test_factory(self) -> None:
        """
        L{ControlServerFactory} uses the control security and, by default, a
        policy for this user.
        """
        factory = ControlServerFactory(pb.Root())
        self.assertEqual(factory.policy, PeerPolicy())
        self.assertEqual(factory.security.allowedTypes, controlSecurity().allowedTypes)


class CheckedClientBrokerTests(SynchronousTestCase):
    """
    The client broker refuses to talk to a server of another user, and
    owns the descriptors the server sends it.
    """

    def broker(self, peerUid: int) -> tuple[ControlClientFactory, Any, _HandleTransport]:
        factory = ControlClientFactory(PeerPolicy(1000, _credentials(9, peerUid, 9)))
        broker = factory.buildProtocol(None)
        transport = _HandleTransport()
        broker.makeConnection(transport)
        return factory, broker, transport

    def test_refused(self) -> None:
        """
        A server of another user is hung up on, and the factory records who
        it was.
        """
        with capturedLogs() as events:
            factory, broker, transport = self.broker(2000)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(factory.refused, "pid 9 uid 2000 gid 9")
        self.assertTrue([e for e in events if e.get("log_level") == LogLevel.error])
        broker.connectionLost(Failure(error.ConnectionLost()))

    def test_serverRefusal(self) -> None:
        """
        A server that refuses this client tells it why in a plain line;
        the broker reads it (here one byte at a time) without decoding it
        as PB, records the reason on the factory, logs it, hangs up, and
        whoever waits for the root object gets L{ControlRefused} with the
        reason.
        """
        factory, broker, transport = self.broker(0)
        rootD = factory.getRootObject()
        with capturedLogs() as events:
            for i in range(len(_REFUSAL)):
                self.assertFalse(transport.disconnecting)
                broker.dataReceived(_REFUSAL[i : i + 1])
        reason = "this control socket serves uid 1000 and root only"
        self.assertEqual(factory.refusal, reason)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        [logged] = events
        self.assertEqual((logged["log_level"], logged["reason"]), (LogLevel.error, reason))
        broker.connectionLost(Failure(error.ConnectionDone()))
        factory.clientConnectionLost(None, Failure(error.ConnectionDone()))
        refused = self.failureResultOf(rootD, ControlRefused)
        self.assertEqual(str(refused.value), f"refused by the service: {reason}")

    def test_refusalBounded(self) -> None:
        """
        A refusal line is read up to a bound, whether or not its end of line
        comes, what is not printable is replaced, and nothing the server
        sends after it is read.
        """
        for tail in (b"", b"\n"):
            factory, broker, transport = self.broker(0)
            broker.dataReceived(REFUSED + b"\x1b[2J\xff" + b"x" * 1000 + tail)
            self.assertTrue(transport.disconnecting)
            assert factory.refusal is not None
            self.assertTrue(factory.refusal.startswith("?[2J?xxx"), factory.refusal)
            self.assertEqual(len(factory.refusal), 512 - len(REFUSED))
            broker.dataReceived(b"\xff" * 100)
            self.assertEqual(transport.value(), b"")
            broker.connectionLost(Failure(error.ConnectionDone()))

    def test_greetingIsNotARefusal(self) -> None:
        """
        A real server's greeting, however it is split, goes to PB at once:
        the client answers it with its dialect.
        """
        server = ControlServerFactory(pb.Root(), PeerPolicy(1000, _credentials(1, 1000, 1)))
        serverTransport = _HandleTransport()
        server.buildProtocol(None).makeConnection(serverTransport)
        greeting = serverTransport.value()
        self.assertFalse(greeting.startswith(REFUSED[:2]))
        factory, broker, transport = self.broker(1000)
        for i in range(len(greeting)):
            broker.dataReceived(greeting[i : i + 1])
        self.assertTrue(transport.value().startswith(banana.encode(b"pb")), transport.value())
        self.assertIsNone(factory.refusal)
        self.assertFalse(transport.disconnecting)
        broker.connectionLost(Failure(error.ConnectionDone()))

    def test_descriptors(self) -> None:
        """
        Descriptors received are kept until the connection is lost, then
        closed.
        """
        factory, broker, transport = self.broker(1000)
        self.assertIsNone(factory.refused)
        verifyObject(IFileDescriptorReceiver, broker)
        r, w = os.pipe()
        broker.fileDescriptorReceived(r)
        broker.fileDescriptorReceived(w)
        self.assertEqual(broker.receivedFds, [r, w])
        self.assertTrue(_isOpen(r) and _isOpen(w))
        broker.connectionLost(Failure(error.ConnectionDone()))
        self.assertFalse(_isOpen(r) or _isOpen(w))
        self.assertEqual(broker.receivedFds, [])

    def test_descriptorsTakenAway(self) -> None:
        """
        Descriptors the application took (removed from C{receivedFds}) are
        not closed, and already closed ones are no error.
        """
        factory, broker, transport = self.broker(1000)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        broker.fileDescriptorReceived(r)
        broker.fileDescriptorReceived(w)
        broker.receivedFds.remove(r)
        os.close(w)
        broker.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(_isOpen(r))

    def test_closeFdSeam(self) -> None:
        """
        Descriptors are closed with the broker's C{closeFd}.
        """
        factory, broker, transport = self.broker(1000)
        closed: list[int] = []
        broker.closeFd = closed.append  # type: ignore[method-assign]
        broker.fileDescriptorReceived(1001)
        broker.fileDescriptorReceived(1002)
        broker.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(closed, [1001, 1002])

    def test_class(self) -> None:
        """
        The client factory builds checked brokers with the control security.
        """
        factory = ControlClientFactory()
        self.assertIs(factory.protocol, CheckedClientBroker)
        self.assertEqual(factory.policy, PeerPolicy())
        self.assertEqual(factory.security.allowedTypes, controlSecurity().allowedTypes)


class StatusRefusedTests(_TempDirMixin, SynchronousTestCase):
    """
    C{python -m migrator status} (L{fetchStatus}) says why a service
    refused it.
    """

    def test_refusalReported(self) -> None:
        """
        When the service's control socket refuses this user (its line read
        by the client broker), L{fetchStatus} fails with one message naming
        the control path and the service's reason.
        """
        path = os.path.join(self.tempdir(), "ctl")
        self.boundSocket(path)
        reactor = MemoryReactorClock()
        d = Deferred.fromCoroutine(fetchStatus(reactor, path, timeout=5.0))
        [(address, factory, _, _)] = reactor.unixClients
        self.assertEqual(address, path)
        # The server is root, whom this client talks to; it refuses us.
        factory.policy = PeerPolicy(os.getuid(), _credentials(1, 0, 0))
        broker = factory.buildProtocol(None)
        broker.makeConnection(_HandleTransport())
        with capturedLogs():
            broker.dataReceived(_REFUSAL)
        broker.connectionLost(Failure(error.ConnectionDone()))
        factory.clientConnectionLost(None, Failure(error.ConnectionDone()))
        failure = self.failureResultOf(d, RuntimeError)
        self.assertEqual(
            str(failure.value),
            f"{path}: refused by the service: this control socket serves uid 1000 "
            f"and root only",
        )


class ControlConversationTests(SynchronousTestCase):
    """
    A whole PB conversation between checked brokers, in memory.
    """

    def setUp(self) -> None:
        self.calls: list[Any] = []
        calls = self.calls

        class Root(pb.Root):
            def remote_echo(self, value: Any) -> Any:
                calls.append(value)
                return value

            def remote_arbitrary(self) -> Any:
                return _Arbitrary()

            def remote_fail(self) -> Any:
                raise ValueError("no such thing")

        policy = PeerPolicy(1000, _credentials(1, 1000, 1))
        serverFactory = ControlServerFactory(Root(), policy)
        self.clientFactory = ControlClientFactory(policy)
        self.server = serverFactory.buildProtocol(None)
        self.client = self.clientFactory.buildProtocol(None)
        self.pump = iosim.connect(
            self.server,
            _FakeTransport(self.server, isServer=True),
            self.client,
            _FakeTransport(self.client, isServer=False),
        )
        d = self.clientFactory.getRootObject()
        self.pump.flush()
        self.root = self.successResultOf(d)

    def call(self, name: str, *args: Any) -> Any:
        d = self.root.callRemote(name, *args)
        self.pump.flush()
        return d

    def test_basicTypes(self) -> None:
        """
        Dictionaries, lists, tuples, strings, bytes, numbers, booleans and
        None go both ways.
        """
        value = {"a": [1, "x", (2, 3)], "b": None, "c": True, "d": 1.5, "e": b"b", 7: 2**70}
        self.assertEqual(self.successResultOf(self.call("echo", value)), value)
        self.assertEqual(self.calls, [value])

    def test_arbitraryClassRefused(self) -> None:
        """
        A peer that sends an instance of an arbitrary class (with a jelly
        that allows it) gets an error, and the remote method is not called.
        """
        self.client.security = jelly.DummySecurityOptions()
        f = self.failureResultOf(self.call("echo", _Arbitrary()))
        self.assertIn("InsecureJelly", str(f.type))
        self.assertEqual(self.calls, [])
        self.assertEqual(len(self.flushLoggedErrors(jelly.InsecureJelly)), 1)

    def test_errors(self) -> None:
        """
        An error in a remote method reaches the caller as a copied failure,
        with its type and message.
        """
        f = self.failureResultOf(self.call("fail"))
        self.assertIsInstance(f, pb.CopiedFailure)
        self.assertTrue(f.check("builtins.ValueError"))
        self.assertEqual(f.value, "no such thing")
        self.flushLoggedErrors(ValueError)

    def test_malformedCallDropsConnection(self) -> None:
        """
        A peer whose call holds a jelly list with a list as its type tag
        (sent past its own jelly) gets no answer: the server drops its
        connection with one warning, and the method is not called.  The
        calls before it were answered.
        """
        self.assertEqual(self.successResultOf(self.call("echo", "before")), "before")
        with capturedLogs() as events:
            self.client.sendEncoded(
                [b"message", 99, b"root", b"echo", 1, [[b"list"], 1], [b"dictionary"]]
            )
            self.pump.flush()
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertEqual(self.calls, ["before"])
        self.assertTrue(self.client.disconnected)
        self.assertRaises(pb.DeadReferenceError, self.root.callRemote, "echo", "after")

    def test_arbitraryClassNotSent(self) -> None:
        """
        An arbitrary object in an answer is not sent at all: the sending
        side refuses it, and the caller gets an error instead.
        """
        f = self.failureResultOf(self.call("arbitrary"))
        self.assertTrue(f.check("twisted.spread.jelly.InsecureJelly"))
        self.flushLoggedErrors(jelly.InsecureJelly)


class ControlSecurityTests(SynchronousTestCase):
    """
    L{controlSecurity} unjellies basic types and nothing else.
    """

    def roundTrip(self, value: Any) -> Any:
        return jelly.unjelly(jelly.jelly(value), controlSecurity())

    def test_basicTypes(self) -> None:
        """
        Dictionaries, lists, tuples, strings, bytes, ints, floats, booleans,
        None and shared references are allowed.
        """
        shared = [1, 2]
        for value in (
            {"k": "v", 1: [2, 3]},
            [1, "two", 3.0, None, True, False],
            ("a", (b"b",)),
            "text",
            b"bytes",
            2**100,
            -7,
            0.5,
            None,
        ):
            self.assertEqual(self.roundTrip(value), value)
        both = self.roundTrip([shared, shared])
        self.assertIs(both[0], both[1])

    def test_arbitraryClass(self) -> None:
        """
        An instance of an arbitrary class is refused with
        L{jelly.InsecureJelly}.
        """
        sexp = jelly.jelly(_Arbitrary())
        self.assertRaises(jelly.InsecureJelly, jelly.unjelly, sexp, controlSecurity())

    def test_classAndFunction(self) -> None:
        """
        Classes, functions and modules by name are refused.
        """
        for value in (_Arbitrary, os.path.join, os):
            sexp = jelly.jelly(value)
            self.assertRaises(jelly.InsecureJelly, jelly.unjelly, sexp, controlSecurity())

    def test_remoteReferences(self) -> None:
        """
        Remote references, PB's own plumbing, are allowed.
        """
        self.assertTrue(controlSecurity().isTypeAllowed(b"remote"))


class _UNIXListener:
    """
    A C{listenUNIX} that binds a real UNIX port driven by a memory
    reactor, and records what it was called with and the umask in force.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.reactor = MemoryReactorClock()
        self.calls: list[tuple[str, int, int]] = []
        self._test = test

    def __call__(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> Any:
        umask = os.umask(0)
        os.umask(umask)
        self.calls.append((address, mode, umask))
        port = unix.Port(address, factory, backlog, mode, self.reactor, wantPID)
        port.startListening()
        self._test.addCleanup(port.socket.close)
        return port


class ControlSocketTests(_TempDirMixin, SynchronousTestCase):
    """
    L{ControlSocket} binds privately under a temporary name, publishes
    atomically, and removes only what is still its own.
    """

    def setUp(self) -> None:
        self.directory = self.tempdir()
        self.path = os.path.join(self.directory, "ctl")
        self.listener = _UNIXListener(self)
        self.factory = ServerFactory.forProtocol(Protocol)

    def listen(self) -> ControlSocket:
        control = ControlSocket.listen(self.listener, self.path, self.factory)
        return control

    def test_listen(self) -> None:
        """
        C{listen} binds a temporary name next to the path, created with a
        umask that keeps it private and mode 0600; nothing answers at the
        path yet.
        """
        before = os.umask(0o022)
        self.addCleanup(os.umask, before)
        control = self.listen()
        temp = os.path.join(self.directory, f".ctl.{os.getpid()}.tmp")
        self.assertEqual(self.listener.calls, [(temp, 0o600, 0o177)])
        self.assertEqual(os.umask(0o022), 0o022)
        self.assertEqual(stat.S_IMODE(os.stat(temp).st_mode), 0o600)
        self.assertEqual(probe(self.path), "absent")
        self.assertFalse(control.published)
        self.assertFalse(control.owned())

    def test_staleTemporary(self) -> None:
        """
        A leftover temporary socket of the same name is replaced.
        """
        temp = os.path.join(self.directory, f".ctl.{os.getpid()}.tmp")
        self.boundSocket(temp, listen=False).close()
        self.listen()
        self.assertEqual(probe(temp), "live")

    def test_listenFails(self) -> None:
        """
        If binding fails, the umask is restored.
        """
        before = os.umask(0o022)
        self.addCleanup(os.umask, before)

        def listenUNIX(*args: Any, **kwargs: Any) -> Any:
            raise error.CannotListenError(None, args[0], OSError("no"))

        self.assertRaises(
            error.CannotListenError, ControlSocket.listen, listenUNIX, self.path, self.factory
        )
        self.assertEqual(os.umask(0o022), 0o022)

    def test_publish(self) -> None:
        """
        C{publish} renames the socket into place: it answers at the path,
        the temporary name is gone, and the socket knows it owns the path.
        """
        control = self.listen()
        control.publish()
        self.assertTrue(control.published)
        self.assertTrue(control.owned())
        self.assertEqual(probe(self.path), "live")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.directory), ["ctl"])

    def test_publishReplaces(self) -> None:
        """
        Publishing replaces a predecessor's socket at the path atomically.
        """
        old = self.boundSocket(self.path)
        control = self.listen()
        control.publish()
        self.assertTrue(control.owned())
        # The predecessor still listens, but nobody can reach it by path.
        self.assertEqual(old.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(c.close)
        c.connect(self.path)
        old.setblocking(False)
        self.assertRaises(BlockingIOError, old.accept)

    def test_close(self) -> None:
        """
        Closing a published socket stops it listening and removes the path.
        """
        control = self.listen()
        control.publish()
        control.close()
        self.assertFalse(control.port.connected)
        self.assertEqual(probe(self.path), "absent")
        self.assertEqual(os.listdir(self.directory), [])

    def test_closeUnpublished(self) -> None:
        """
        Closing a socket that was never published removes its temporary
        name and leaves the path alone.
        """
        other = self.boundSocket(self.path)
        control = self.listen()
        control.close()
        self.assertEqual(os.listdir(self.directory), ["ctl"])
        self.assertEqual(other.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        self.assertEqual(probe(self.path), "live")

    def test_closeReplaced(self) -> None:
        """
        If a successor replaced the socket at the path, closing does not
        remove the successor's socket.
        """
        control = self.listen()
        control.publish()
        # The successor binds elsewhere and renames over the path.
        successorTemp = os.path.join(self.directory, ".ctl.successor.tmp")
        self.boundSocket(successorTemp)
        inode = os.stat(successorTemp).st_ino
        os.rename(successorTemp, self.path)
        self.assertFalse(control.owned())
        control.close()
        self.assertEqual(os.stat(self.path).st_ino, inode)
        self.assertEqual(probe(self.path), "live")

    def test_closeRemoved(self) -> None:
        """
        Closing after the path was removed by someone else is no error.
        """
        control = self.listen()
        control.publish()
        os.unlink(self.path)
        self.assertFalse(control.owned())
        control.close()
        self.assertEqual(os.listdir(self.directory), [])

    def test_closeTwice(self) -> None:
        """
        Closing twice is harmless.
        """
        control = self.listen()
        control.publish()
        control.close()
        control.close()
        self.assertFalse(control.owned())
