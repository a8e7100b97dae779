"""
Tests for L{migrator.takeover._channel}: the framed stream of messages and file
descriptors.

Every test drives L{FrameChannel.doWrite} and L{FrameChannel.doRead} by hand
over a real UNIX socket pair, registered with a L{MemoryReactor}, doing what
a reactor does when one of them returns an error (calling
C{connectionLost}).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from migrator.takeover._channel import (
    FDS,
    HEADER,
    MAX_FDS_PER_SENDMSG,
    MAX_PAYLOAD,
    MESSAGE,
    ChannelError,
    FrameChannel,
    channelPair,
)


def _drive(selectable: Any, method: Callable[[], Any]) -> Any:
    """
    Call C{doRead} or C{doWrite} as a reactor does: an error it returns
    disconnects the selectable.
    """
    why = method()
    if why is not None:
        selectable.connectionLost(Failure(why))
    return why


class _Trickle:
    """
    A socket that hands the kernel at most C{limit} bytes per C{send}, and
    can be told to refuse a number of sends with C{EAGAIN}.
    """

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        self.refusals = 0
        self.sends: list[bytes] = []

    def send(self, data: bytes) -> int:
        if self.refusals:
            self.refusals -= 1
            raise BlockingIOError(errno.EAGAIN, "try again")
        chunk = bytes(data[: self.limit])
        self.sends.append(chunk)
        return self.sock.send(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _Recorder:
    """
    Collects what a channel delivers and closes: messages, close reasons,
    and descriptors closed through the channel's C{close} seam.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.messages: list[tuple[bytes, list[int]]] = []
        self.reasons: list[Failure] = []
        self.closed: list[int] = []
        self._test = test

    def onMessage(self, payload: bytes, fds: list[int]) -> None:
        for fd in fds:
            self._test.addCleanup(_closeQuietly, fd)
        self.messages.append((payload, fds))

    def onClose(self, reason: Failure) -> None:
        self.reasons.append(reason)

    def close(self, fd: int) -> None:
        self.closed.append(fd)
        os.close(fd)


def _closeQuietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _isOpen(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _ChannelTestMixin:
    """
    Builds channels over real socket pairs and pumps bytes between them.
    """

    def socketPair(self) -> tuple[socket.socket, socket.socket]:
        a, b = channelPair()
        self.addCleanup(a.close)  # type: ignore[attr-defined]
        self.addCleanup(b.close)  # type: ignore[attr-defined]
        return a, b

    def pipes(self, n: int) -> list[int]:
        """
        C{2 * n} distinct descriptors (both ends of C{n} pipes), closed at
        cleanup.
        """
        fds: list[int] = []
        for _ in range(n):
            r, w = os.pipe()
            self.addCleanup(_closeQuietly, r)  # type: ignore[attr-defined]
            self.addCleanup(_closeQuietly, w)  # type: ignore[attr-defined]
            fds += [r, w]
        return fds

    def receiver(
        self, reactor: MemoryReactor, sock: socket.socket, **kwargs: Any
    ) -> tuple[FrameChannel, _Recorder]:
        recorder = _Recorder(self)  # type: ignore[arg-type]
        kwargs.setdefault("close", recorder.close)
        channel = FrameChannel(reactor, sock, recorder.onMessage, recorder.onClose, **kwargs)
        channel.startReading()
        return channel, recorder

    def pump(self, reactor: MemoryReactor, sender: FrameChannel, receiver: FrameChannel) -> None:
        """
        Write and read until the sender has nothing left to write and the
        receiver has read everything.
        """
        for _ in range(10_000):
            if sender in reactor.writers:
                self.assertIsNone(_drive(sender, sender.doWrite))  # type: ignore[attr-defined]
            if receiver in reactor.readers:
                _drive(receiver, receiver.doRead)
            if sender not in reactor.writers:
                if receiver in reactor.readers:
                    _drive(receiver, receiver.doRead)
                return
        raise AssertionError("the channel never finished writing")

    def assertSameFiles(self, received: list[int], sent: list[int]) -> None:
        """
        Each received descriptor is a new descriptor for the file of the
        sent one at the same position.
        """
        self.assertEqual(len(received), len(sent))  # type: ignore[attr-defined]
        for mine, theirs in zip(received, sent, strict=True):
            self.assertNotIn(mine, sent)  # type: ignore[attr-defined]
            a, b = os.fstat(mine), os.fstat(theirs)
            self.assertEqual((a.st_dev, a.st_ino), (b.st_dev, b.st_ino))  # type: ignore[attr-defined]


class FrameChannelDeliveryTests(_ChannelTestMixin, SynchronousTestCase):
    """
    Messages and their descriptors arrive whole and in order.
    """

    def roundTrip(self, count: int, payload: bytes = b"payload") -> None:
        reactor = MemoryReactor()
        a, b = self.socketPair()
        calls: list[int] = []

        def sendFds(sock: socket.socket, buffers: list[bytes], fds: list[int]) -> int:
            calls.append(len(fds))
            return socket.send_fds(sock, buffers, fds)

        sender = FrameChannel(reactor, a, sendFds=sendFds)
        receiver, got = self.receiver(reactor, b)
        fds = self.pipes(count // 2) + self.pipes(1)[: count % 2]
        d = sender.sendMessage(payload, fds)
        self.assertIn(sender, reactor.writers)
        self.pump(reactor, sender, receiver)

        self.assertIsNone(self.successResultOf(d))
        self.assertNotIn(sender, reactor.writers)
        self.assertEqual([p for p, _ in got.messages], [payload])
        self.assertSameFiles(got.messages[0][1], fds)
        expectedBatches = [
            min(MAX_FDS_PER_SENDMSG, count - start)
            for start in range(0, count, MAX_FDS_PER_SENDMSG)
        ]
        self.assertEqual(calls, expectedBatches)
        self.assertEqual(got.reasons, [])
        self.assertEqual(got.closed, [])

    def test_noDescriptors(self) -> None:
        """
        A message without descriptors is delivered with an empty list and
        sent without C{sendmsg} ancillary data.
        """
        self.roundTrip(0)

    def test_oneDescriptor(self) -> None:
        """
        A single descriptor arrives with its message and refers to the same
        file as the one sent.
        """
        self.roundTrip(1)

    def test_fullBatch(self) -> None:
        """
        253 descriptors, the kernel's limit for one C{sendmsg}, travel in a
        single batch.
        """
        self.roundTrip(253)

    def test_oneMoreThanABatch(self) -> None:
        """
        254 descriptors are split into batches of 253 and 1 and arrive as one
        message, in order.
        """
        self.roundTrip(254)

    def test_manyBatches(self) -> None:
        """
        600 descriptors travel in three batches and arrive as one message,
        in order.
        """
        self.roundTrip(600)

    def test_emptyPayload(self) -> None:
        """
        A message may have an empty payload.
        """
        self.roundTrip(2, payload=b"")

    def test_largePayload(self) -> None:
        """
        A payload larger than one read (and than the socket buffer) arrives
        whole, with its descriptors.
        """
        self.roundTrip(3, payload=os.urandom(1024 * 1024 + 7))

    def test_severalMessages(self) -> None:
        """
        Consecutive messages each get exactly their own descriptors, even when
        they are read in one go.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        sender = FrameChannel(reactor, a)
        receiver, got = self.receiver(reactor, b)
        first, second = self.pipes(2), self.pipes(1)
        d1 = sender.sendMessage(b"one", first)
        d2 = sender.sendMessage(b"two")
        d3 = sender.sendMessage(b"three", second)
        # Everything is written before anything is read.
        while sender in reactor.writers:
            self.assertIsNone(sender.doWrite())
        self.assertIsNone(_drive(receiver, receiver.doRead))

        for d in (d1, d2, d3):
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual([p for p, _ in got.messages], [b"one", b"two", b"three"])
        self.assertSameFiles(got.messages[0][1], first)
        self.assertEqual(got.messages[1][1], [])
        self.assertSameFiles(got.messages[2][1], second)

    def test_bothWays(self) -> None:
        """
        Each end of a channel can send and receive.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        left, gotLeft = self.receiver(reactor, a)
        right, gotRight = self.receiver(reactor, b)
        fds = self.pipes(1)
        left.sendMessage(b"ping", fds[:1])
        self.pump(reactor, left, right)
        right.sendMessage(b"pong", fds[1:])
        self.pump(reactor, right, left)
        self.assertEqual([p for p, _ in gotRight.messages], [b"ping"])
        self.assertEqual([p for p, _ in gotLeft.messages], [b"pong"])
        self.assertSameFiles(gotRight.messages[0][1], fds[:1])
        self.assertSameFiles(gotLeft.messages[0][1], fds[1:])

    def test_sentDescriptorsStayOpen(self) -> None:
        """
        The descriptors given to C{sendMessage} stay the caller's: the channel
        does not close them.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        closed: list[int] = []
        sender = FrameChannel(reactor, a, close=closed.append)
        receiver, _ = self.receiver(reactor, b)
        fds = self.pipes(2)
        sender.sendMessage(b"x", fds)
        self.pump(reactor, sender, receiver)
        sender.close()
        self.assertEqual(closed, [])
        self.assertTrue(all(_isOpen(fd) for fd in fds))

    def test_noHandler(self) -> None:
        """
        Without an C{onMessage} handler, the descriptors of a message are
        closed rather than leaked.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        closed: list[int] = []

        def close(fd: int) -> None:
            closed.append(fd)
            os.close(fd)

        sender = FrameChannel(reactor, a)
        receiver = FrameChannel(reactor, b, close=close)
        receiver.startReading()
        fds = self.pipes(1)
        sender.sendMessage(b"nobody listens", fds)
        self.pump(reactor, sender, receiver)
        self.assertEqual(len(closed), 2)
        self.assertFalse(any(_isOpen(fd) for fd in closed))

    def test_byteCounters(self) -> None:
        """
        C{bytesSent} and C{bytesReceived} count framing and payload bytes.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        sender = FrameChannel(reactor, a)
        receiver, _ = self.receiver(reactor, b)
        sender.sendMessage(b"12345", self.pipes(1))
        self.pump(reactor, sender, receiver)
        expected = HEADER.size * 2 + 5
        self.assertEqual(sender.bytesSent, expected)
        self.assertEqual(receiver.bytesReceived, expected)

    def test_descriptor(self) -> None:
        """
        L{FrameChannel} is a reactor read and write descriptor whose C{fileno}
        is its socket's until it is closed, then -1.
        """
        reactor = MemoryReactor()
        a, _ = self.socketPair()
        channel = FrameChannel(reactor, a)
        verifyObject(IReadDescriptor, channel)
        verifyObject(IWriteDescriptor, channel)
        self.assertEqual(channel.fileno(), a.fileno())
        self.assertIsInstance(channel.logPrefix(), str)
        channel.close()
        self.assertEqual(channel.fileno(), -1)

    def test_startReadingOnce(self) -> None:
        """
        C{startReading} registers the channel with the reactor once, and not
        at all once it is closed.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        added: list[Any] = []
        reactor.addReader = added.append  # type: ignore[method-assign]
        channel = FrameChannel(reactor, a)
        channel.startReading()
        channel.startReading()
        self.assertEqual(added, [channel])
        closedOne = FrameChannel(reactor, b)
        closedOne.close()
        closedOne.startReading()
        self.assertEqual(added, [channel])

    def test_channelPair(self) -> None:
        """
        L{channelPair} returns two connected, non-blocking UNIX stream sockets.
        """
        a, b = channelPair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        for s in (a, b):
            self.assertEqual(s.family, socket.AF_UNIX)
            self.assertEqual(s.type, socket.SOCK_STREAM)
            self.assertFalse(s.getblocking())
            self.assertFalse(s.get_inheritable())
        a.send(b"x")
        self.assertEqual(b.recv(1), b"x")


class FrameChannelPartialWriteTests(_ChannelTestMixin, SynchronousTestCase):
    """
    Short writes and a full socket buffer never lose or duplicate bytes or
    descriptors.
    """

    def test_trickle(self) -> None:
        """
        When the kernel takes one byte per C{sendmsg} with descriptors and
        three per plain C{send}, the message and its descriptors still arrive
        exactly, descriptors going with the first byte of their frame only, and
        the message's L{Deferred} fires only once the last byte is sent.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        trickle = _Trickle(a, 3)
        withFds: list[tuple[bytes, int]] = []

        def sendFds(sock: Any, buffers: list[bytes], fds: list[int]) -> int:
            withFds.append((bytes(buffers[0][:1]), len(fds)))
            return socket.send_fds(sock.sock, [buffers[0][:1]], fds)

        sender = FrameChannel(reactor, trickle, sendFds=sendFds)  # type: ignore[arg-type]
        receiver, got = self.receiver(reactor, b)
        fds = self.pipes(130)  # 260 descriptors: two batches
        payload = b"0123456789" * 5
        d = sender.sendMessage(payload, fds)

        self.assertIsNone(sender.doWrite())
        self.assertNoResult(d)
        self.assertIn(sender, reactor.writers)
        self.pump(reactor, sender, receiver)

        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(withFds, [(bytes([FDS]), 253), (bytes([FDS]), 7)])
        self.assertTrue(all(len(chunk) <= 3 for chunk in trickle.sends))
        self.assertEqual(
            sum(len(c) for c in trickle.sends) + len(withFds),
            3 * HEADER.size + len(payload),
        )
        self.assertEqual([p for p, _ in got.messages], [payload])
        self.assertSameFiles(got.messages[0][1], fds)

    def test_wouldBlock(self) -> None:
        """
        A send refused with C{EAGAIN} leaves the channel waiting to write, and
        the next C{doWrite} sends the whole message.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        trickle = _Trickle(a, 1 << 20)
        trickle.refusals = 1
        sender = FrameChannel(reactor, trickle)  # type: ignore[arg-type]
        receiver, got = self.receiver(reactor, b)
        d = sender.sendMessage(b"later")
        self.assertIsNone(sender.doWrite())
        self.assertNoResult(d)
        self.assertIn(sender, reactor.writers)
        self.pump(reactor, sender, receiver)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(got.messages, [(b"later", [])])

    def test_sendFdsWouldBlock(self) -> None:
        """
        A C{sendmsg} with descriptors refused with C{EAGAIN} is retried with
        the same descriptors.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        attempts: list[list[int]] = []

        def sendFds(sock: socket.socket, buffers: list[bytes], fds: list[int]) -> int:
            attempts.append(list(fds))
            if len(attempts) == 1:
                raise BlockingIOError(errno.EAGAIN, "try again")
            return socket.send_fds(sock, buffers, fds)

        sender = FrameChannel(reactor, a, sendFds=sendFds)
        receiver, got = self.receiver(reactor, b)
        fds = self.pipes(1)
        d = sender.sendMessage(b"m", fds)
        self.pump(reactor, sender, receiver)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(attempts, [fds, fds])
        self.assertSameFiles(got.messages[0][1], fds)

    def test_fullSocketBuffer(self) -> None:
        """
        A message larger than the socket buffer is written over several
        C{doWrite} calls as the peer reads, and arrives whole.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        sender = FrameChannel(reactor, a)
        receiver, got = self.receiver(reactor, b)
        payload = os.urandom(4 * 1024 * 1024)
        d = sender.sendMessage(payload)
        self.assertIsNone(sender.doWrite())
        self.assertNoResult(d)
        self.pump(reactor, sender, receiver)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(got.messages, [(payload, [])])

    def test_partialSendsDoNotCopy(self) -> None:
        """
        What a partial send leaves of a payload is a view of it, not a copy
        (copying the rest at every partial send is quadratic in the size of
        a large message: seconds for 100 MB); the message arrives whole.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        trickle = _Trickle(a, 1000)
        sender = FrameChannel(reactor, trickle)  # type: ignore[arg-type]
        receiver, got = self.receiver(reactor, b)
        payload = os.urandom(100_000)
        d = sender.sendMessage(payload)
        self.assertIsNone(sender.doWrite())
        rest = sender._out[0][0]
        self.assertIsInstance(rest, memoryview)
        assert isinstance(rest, memoryview)
        self.assertIs(rest.obj, payload)
        self.pump(reactor, sender, receiver)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(got.messages, [(payload, [])])

    def test_sendError(self) -> None:
        """
        A send that fails returns the error to the reactor, which disconnects
        the channel: pending messages fail with that reason.
        """
        reactor = MemoryReactor()
        a, _ = self.socketPair()

        def sendFds(sock: socket.socket, buffers: list[bytes], fds: list[int]) -> int:
            raise OSError(errno.EPIPE, "broken pipe")

        recorder = _Recorder(self)
        sender = FrameChannel(reactor, a, onClose=recorder.onClose, sendFds=sendFds)
        d1 = sender.sendMessage(b"a", self.pipes(1))
        d2 = sender.sendMessage(b"b")
        why = _drive(sender, sender.doWrite)
        self.assertIsInstance(why, OSError)
        self.assertEqual(self.failureResultOf(d1, OSError).value.errno, errno.EPIPE)
        self.failureResultOf(d2, OSError)
        self.assertEqual(len(recorder.reasons), 1)
        self.assertNotIn(sender, reactor.writers)
        self.assertEqual(a.fileno(), -1)


class FrameChannelErrorTests(_ChannelTestMixin, SynchronousTestCase):
    """
    Anything that breaks the framing closes the channel with a
    L{ChannelError}, and no descriptor is leaked.
    """

    def assertBroken(self, channel: FrameChannel, got: _Recorder, text: str) -> None:
        why = _drive(channel, channel.doRead)
        self.assertIsInstance(why, ChannelError)
        self.assertIn(text, str(why))
        self.assertEqual(len(got.reasons), 1)
        got.reasons[0].trap(ChannelError)
        self.assertEqual(channel.fileno(), -1)
        self.assertNotIn(channel, channel._reactor.readers)

    def test_truncatedDescriptors(self) -> None:
        """
        A read flagged C{MSG_CTRUNC} (the kernel dropped descriptors) closes
        the channel with a L{ChannelError} that says so, and the descriptors
        that did arrive are closed, once each.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        arrived: list[int] = []

        def recvFds(sock: socket.socket, size: int, maxfds: int) -> Any:
            data, fds, flags, address = socket.recv_fds(sock, size, maxfds)
            arrived.extend(fds)
            return data, fds, flags | socket.MSG_CTRUNC, address

        receiver, got = self.receiver(reactor, b, recvFds=recvFds)
        socket.send_fds(a, [HEADER.pack(FDS, 0, 3)], self.pipes(2)[:3])
        self.assertBroken(receiver, got, "MSG_CTRUNC")
        self.assertEqual(len(arrived), 3)
        self.assertEqual(sorted(got.closed), sorted(arrived))
        self.assertEqual(got.messages, [])

    def test_fewerDescriptorsThanAnnounced(self) -> None:
        """
        A descriptor frame announcing more descriptors than arrived with it
        is an error; those that arrived are closed.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        socket.send_fds(a, [HEADER.pack(FDS, 0, 2)], self.pipes(1)[:1])
        self.assertBroken(receiver, got, "announced 2 descriptors but only 1 arrived")
        self.assertEqual(len(got.closed), 1)

    def test_messageCountMismatch(self) -> None:
        """
        A message announcing more descriptors than its descriptor frames
        carried is an error, and is not delivered; the descriptors held are
        closed.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        socket.send_fds(a, [HEADER.pack(FDS, 0, 1)], self.pipes(1)[:1])
        a.send(HEADER.pack(MESSAGE, 2, 3) + b"hi")
        self.assertBroken(receiver, got, "announced 3 descriptors but 1 arrived")
        self.assertEqual(got.messages, [])
        self.assertEqual(len(got.closed), 1)

    def test_messageWithUnannouncedDescriptors(self) -> None:
        """
        A message announcing fewer descriptors than were sent for it is an
        error too.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        socket.send_fds(a, [HEADER.pack(FDS, 0, 2)], self.pipes(1))
        a.send(HEADER.pack(MESSAGE, 0, 0))
        self.assertBroken(receiver, got, "announced 0 descriptors but 2 arrived")
        self.assertEqual(got.messages, [])
        self.assertEqual(len(got.closed), 2)

    def test_unknownFrameType(self) -> None:
        """
        A header with an unknown frame type is an error.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        a.send(HEADER.pack(7, 0, 0))
        self.assertBroken(receiver, got, "unknown frame type 7")

    def test_garbage(self) -> None:
        """
        Bytes that are not frames at all close the channel.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        a.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertBroken(receiver, got, "unknown frame type")

    def test_descriptorFrameWithPayload(self) -> None:
        """
        A descriptor frame may carry no payload.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        a.send(HEADER.pack(FDS, 4, 0) + b"abcd")
        self.assertBroken(receiver, got, "bad descriptor frame")

    def test_descriptorFrameTooBig(self) -> None:
        """
        A descriptor frame may announce at most 253 descriptors.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        a.send(HEADER.pack(FDS, 0, MAX_FDS_PER_SENDMSG + 1))
        self.assertBroken(receiver, got, "bad descriptor frame")

    def test_messageTooLarge(self) -> None:
        """
        A message announcing a payload over the limit is refused from its
        header, before the channel buffers it.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        a.send(HEADER.pack(MESSAGE, MAX_PAYLOAD + 1, 0))
        self.assertBroken(receiver, got, "message too large")

    def test_peerClosed(self) -> None:
        """
        The peer closing between messages closes the channel with a
        L{ChannelError} saying so.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        a.close()
        self.assertBroken(receiver, got, "peer closed the channel")
        self.assertNotIn("mid-message", str(got.reasons[0].value))

    def test_peerClosedMidMessage(self) -> None:
        """
        The peer closing in the middle of a message is reported as such.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        a.send((HEADER.pack(MESSAGE, 10, 0) + b"abc")[:5])
        a.close()
        self.assertBroken(receiver, got, "mid-message")
        self.assertEqual(got.messages, [])

    def test_peerClosedAfterDescriptors(self) -> None:
        """
        The peer closing after sending descriptors but before the message
        they belong to is reported mid-message, and the descriptors are
        closed.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        socket.send_fds(a, [HEADER.pack(FDS, 0, 2)], self.pipes(1))
        a.close()
        self.assertBroken(receiver, got, "mid-message")
        self.assertEqual(len(got.closed), 2)
        self.assertFalse(any(_isOpen(fd) for fd in got.closed))

    def test_readError(self) -> None:
        """
        A read that fails returns the error to the reactor; C{EINTR} is
        retried.
        """
        reactor = MemoryReactor()
        _, b = self.socketPair()
        errors = [errno.EINTR, errno.ECONNRESET]

        def recvFds(sock: socket.socket, size: int, maxfds: int) -> Any:
            raise OSError(errors.pop(0), "oops")

        receiver, got = self.receiver(reactor, b, recvFds=recvFds)
        why = _drive(receiver, receiver.doRead)
        self.assertIsInstance(why, OSError)
        self.assertEqual(why.errno, errno.ECONNRESET)
        self.assertEqual(errors, [])
        self.assertEqual(len(got.reasons), 1)

    def test_nothingToRead(self) -> None:
        """
        A read with nothing available leaves the channel open.
        """
        reactor = MemoryReactor()
        _, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        self.assertIsNone(_drive(receiver, receiver.doRead))
        self.assertIn(receiver, reactor.readers)
        self.assertEqual(got.reasons, [])


class FrameChannelCloseTests(_ChannelTestMixin, SynchronousTestCase):
    """
    Closing a channel fails what is pending and closes what it holds, once.
    """

    def test_sendAfterClose(self) -> None:
        """
        C{sendMessage} on a closed channel returns a failed L{Deferred} and
        registers nothing with the reactor.
        """
        reactor = MemoryReactor()
        a, _ = self.socketPair()
        channel = FrameChannel(reactor, a)
        channel.close()
        d = channel.sendMessage(b"too late", self.pipes(1))
        self.failureResultOf(d, ChannelError)
        self.assertNotIn(channel, reactor.writers)

    def test_closeFailsPending(self) -> None:
        """
        Messages not yet handed to the kernel fail with the close reason;
        the socket is closed and the reactor forgets the channel.
        """
        reactor = MemoryReactor()
        a, _ = self.socketPair()
        recorder = _Recorder(self)
        channel = FrameChannel(reactor, a, onClose=recorder.onClose)
        channel.startReading()
        d = channel.sendMessage(b"never sent", self.pipes(1))
        channel.close(Failure(ValueError("stop")))
        self.failureResultOf(d, ValueError)
        self.assertEqual(a.fileno(), -1)
        self.assertNotIn(channel, reactor.readers)
        self.assertNotIn(channel, reactor.writers)
        self.assertEqual([r.type for r in recorder.reasons], [ValueError])

    def test_defaultCloseReason(self) -> None:
        """
        C{close()} without a reason closes with a L{ChannelError}.
        """
        reactor = MemoryReactor()
        a, _ = self.socketPair()
        recorder = _Recorder(self)
        channel = FrameChannel(reactor, a, onClose=recorder.onClose)
        d = channel.sendMessage(b"x")
        channel.close()
        self.failureResultOf(d, ChannelError)
        recorder.reasons[0].trap(ChannelError)

    def test_closeUndelivered(self) -> None:
        """
        Descriptors received for a message that has not arrived are closed
        when the channel closes, exactly once even if it is closed again or
        the reactor reports the connection lost afterwards.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        receiver, got = self.receiver(reactor, b)
        sent = self.pipes(2)
        socket.send_fds(a, [HEADER.pack(FDS, 0, 3)], sent[:3])
        # A second batch that arrives but whose frame header is never read.
        socket.send_fds(a, [HEADER.pack(FDS, 0, 1)[:1]], sent[3:])
        self.assertIsNone(_drive(receiver, receiver.doRead))
        self.assertEqual(got.closed, [])
        receiver.close()
        receiver.close()
        receiver.connectionLost(Failure(ChannelError("again")))
        self.assertEqual(len(got.closed), 4)
        self.assertEqual(len(set(got.closed)), 4)
        self.assertFalse(any(_isOpen(fd) for fd in got.closed))
        self.assertEqual(len(got.reasons), 1)
        self.assertEqual(got.messages, [])

    def test_deliveredNotClosed(self) -> None:
        """
        Descriptors delivered with a message belong to its receiver: closing
        the channel later leaves them open.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        sender = FrameChannel(reactor, a)
        receiver, got = self.receiver(reactor, b)
        sender.sendMessage(b"yours", self.pipes(1))
        self.pump(reactor, sender, receiver)
        receiver.close()
        self.assertEqual(got.closed, [])
        self.assertTrue(all(_isOpen(fd) for fd in got.messages[0][1]))

    def test_onCloseOnce(self) -> None:
        """
        C{onClose} is called once however the channel is closed.
        """
        reactor = MemoryReactor()
        a, _ = self.socketPair()
        recorder = _Recorder(self)
        channel = FrameChannel(reactor, a, onClose=recorder.onClose)
        channel.connectionLost(Failure(ChannelError("lost")))
        channel.close()
        self.assertEqual(len(recorder.reasons), 1)

    def test_closeInHandler(self) -> None:
        """
        A message handler that closes the channel gets no further message,
        even one already read, and the descriptors read with it are closed.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        sender = FrameChannel(reactor, a)
        delivered: list[bytes] = []
        closed: list[int] = []

        def close(fd: int) -> None:
            closed.append(fd)
            os.close(fd)

        def onMessage(payload: bytes, fds: list[int]) -> None:
            delivered.append(payload)
            receiver.close()

        receiver = FrameChannel(reactor, b, onMessage, close=close)
        receiver.startReading()
        sender.sendMessage(b"first")
        sender.sendMessage(b"second")
        sender.sendMessage(b"third", self.pipes(1))
        while sender in reactor.writers:
            self.assertIsNone(sender.doWrite())
        _drive(receiver, receiver.doRead)
        self.assertEqual(delivered, [b"first"])
        self.assertEqual(receiver.fileno(), -1)
        self.assertFalse(any(_isOpen(fd) for fd in closed))

    def test_closeError(self) -> None:
        """
        A descriptor that is already closed when the channel closes does
        not stop it from closing the others.
        """
        reactor = MemoryReactor()
        a, b = self.socketPair()
        attempts: list[int] = []

        def close(fd: int) -> None:
            attempts.append(fd)
            if len(attempts) == 1:
                os.close(fd)
                raise OSError(errno.EBADF, "bad")
            os.close(fd)

        receiver, got = self.receiver(reactor, b, close=close)
        socket.send_fds(a, [HEADER.pack(FDS, 0, 2)], self.pipes(1))
        _drive(receiver, receiver.doRead)
        receiver.close()
        self.assertEqual(len(attempts), 2)
        self.assertFalse(any(_isOpen(fd) for fd in attempts))
        self.assertEqual(len(got.reasons), 1)
