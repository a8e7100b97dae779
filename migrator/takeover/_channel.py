# -*- test-case-name: tests.test_channel -*-
"""
A framed stream of messages and file descriptors over a UNIX socket pair.

Perspective Broker carries the control conversation of a takeover; the file
descriptors (and, later, bulk state) travel over this channel instead,
because PB cannot batch descriptors and banana is slow and size-limited for
bulk data (FACTS.md).

Wire format: frames of a 9-byte header C{!BII} (type, payload length,
descriptor count) and a payload.

  - C{FDS} frames carry no payload; their descriptors (at most 253, the
    kernel's limit for one C{sendmsg}) ride with the header's bytes.
  - C{MESSAGE} frames carry a payload and announce how many descriptors,
    sent in the C{FDS} frames since the previous message, belong to it.

The receiver checks every count: a batch cut short by the kernel
(C{MSG_CTRUNC}, e.g. when the receiver runs out of descriptors) or a count
that does not match is an error, never a silent loss.

Ownership: descriptors passed to L{FrameChannel.sendMessage} stay the
caller's (the kernel duplicates them into the peer).  Descriptors received
belong to the channel until a message is delivered, then to the receiver of
the message; the channel closes any it still holds when it is closed.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor, IWriteDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

HEADER = struct.Struct("!BII")
FDS = 1
MESSAGE = 2
MAX_FDS_PER_SENDMSG = 253
MAX_PAYLOAD = 512 * 1024 * 1024
MAX_FDS_PER_MESSAGE = 1_000_000
_READ_SIZE = 256 * 1024
_READS_PER_TURN = 64


class ChannelError(Exception):
    """
    The channel broke its framing: truncated descriptors, a bad count, a
    malformed header, or the peer went away mid-message.
    """


def _closeAll(fds: list[int], close: Callable[[int], None] = os.close) -> None:
    for fd in fds:
        try:
            close(fd)
        except OSError:
            pass


@implementer(IReadDescriptor, IWriteDescriptor)
class FrameChannel:
    """
    One end of a frame channel, driven by a reactor.

    @ivar onMessage: called with C{(payload, fds)} for every complete message.
    @ivar onClose: called once with a L{Failure} when the channel closes,
        for any reason.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        sock: socket.socket,
        onMessage: Callable[[bytes, list[int]], None] | None = None,
        onClose: Callable[[Failure], None] | None = None,
        sendFds: Callable[..., int] = socket.send_fds,
        recvFds: Callable[..., Any] = socket.recv_fds,
        close: Callable[[int], None] = os.close,
    ) -> None:
        sock.setblocking(False)
        self._reactor = reactor
        self._sock = sock
        self.onMessage = onMessage
        self.onClose = onClose
        self._sendFds = sendFds
        self._recvFds = recvFds
        self._closeFd = close
        self._out: deque[tuple[bytes | memoryview, list[int], Deferred[None] | None]] = deque()
        self._inBuffer = bytearray()
        self._arrived: deque[int] = deque()
        self._pending: list[int] = []
        self._closed = False
        self._reading = False
        self.bytesSent = 0
        self.bytesReceived = 0

    # -- IReadDescriptor / IWriteDescriptor ------------------------------------

    def fileno(self) -> int:
        return -1 if self._closed else self._sock.fileno()

    def logPrefix(self) -> str:
        return "migrator-channel"

    def connectionLost(self, reason: Failure) -> None:
        self._shutdown(reason)

    # -- sending ----------------------------------------------------------------

    def sendMessage(self, payload: bytes, fds: list[int] = ()) -> Deferred[None]:  # type: ignore[assignment]
        """
        Queue one message with its descriptors.

        @return: a L{Deferred} that fires when the whole message has been
            handed to the kernel, or fails if the channel closes first.
        """
        fds = list(fds)
        if self._closed:
            return fail(ChannelError("channel is closed"))
        for start in range(0, len(fds), MAX_FDS_PER_SENDMSG):
            batch = fds[start : start + MAX_FDS_PER_SENDMSG]
            self._out.append((HEADER.pack(FDS, 0, len(batch)), batch, None))
        done: Deferred[None] = Deferred()
        # Header and payload queued apart: joining them would copy the
        # payload (hundreds of MB for a large state).
        self._out.append((HEADER.pack(MESSAGE, len(payload), len(fds)), [], None))
        self._out.append((payload, [], done))
        self._reactor.addWriter(self)
        return done

    def doWrite(self) -> Any:
        while self._out:
            data, fds, done = self._out[0]
            try:
                if fds:
                    sent = self._sendFds(self._sock, [data], fds)
                else:
                    sent = self._sock.send(data)
            except BlockingIOError:
                return None
            except OSError as e:
                return e
            self.bytesSent += sent
            if sent < len(data):
                # The descriptors went with the first byte; the rest of the
                # data follows without them.  (A view: a slice of the bytes
                # would copy the rest at every partial send, which for a
                # large message is quadratic.)
                self._out[0] = (memoryview(data)[sent:], [], done)
                return None
            self._out.popleft()
            if done is not None:
                done.callback(None)
        self._reactor.removeWriter(self)
        return None

    # -- receiving ----------------------------------------------------------------

    def startReading(self) -> None:
        if not self._closed and not self._reading:
            self._reading = True
            self._reactor.addReader(self)

    def doRead(self) -> Any:
        for _ in range(_READS_PER_TURN):
            if self._closed:
                # A message handler closed the channel.
                return None
            try:
                data, fds, flags, _ = self._recvFds(
                    self._sock, _READ_SIZE, MAX_FDS_PER_SENDMSG
                )
            except BlockingIOError:
                return None
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                return e
            self._arrived.extend(fds)
            if flags & getattr(socket, "MSG_CTRUNC", 0x8):
                return ChannelError(
                    "file descriptors were lost in transit (MSG_CTRUNC): "
                    "is this process out of descriptors (ulimit -n)?"
                )
            if not data:
                if self._inBuffer or self._pending or self._arrived:
                    return ChannelError("peer closed the channel mid-message")
                return ChannelError("peer closed the channel")
            self.bytesReceived += len(data)
            self._inBuffer += data
            error = self._parse()
            if error is not None:
                return error
        return None

    def _parse(self) -> ChannelError | None:
        buf = self._inBuffer
        offset = 0
        try:
            while not self._closed and len(buf) - offset >= HEADER.size:
                kind, length, count = HEADER.unpack_from(buf, offset)
                if kind == FDS:
                    if length or count > MAX_FDS_PER_SENDMSG:
                        return ChannelError(f"bad descriptor frame ({length}, {count})")
                    if len(self._arrived) < count:
                        return ChannelError(
                            f"a batch announced {count} descriptors but only "
                            f"{len(self._arrived)} arrived"
                        )
                    self._pending.extend(self._arrived.popleft() for _ in range(count))
                    offset += HEADER.size
                elif kind == MESSAGE:
                    if length > MAX_PAYLOAD or count > MAX_FDS_PER_MESSAGE:
                        return ChannelError(f"message too large ({length}, {count})")
                    if len(buf) - offset - HEADER.size < length:
                        break
                    start = offset + HEADER.size
                    # One copy (a slice of the bytearray, then bytes of it,
                    # would be two).
                    with memoryview(buf) as view:
                        payload = bytes(view[start : start + length])
                    offset = start + length
                    if count != len(self._pending):
                        return ChannelError(
                            f"a message announced {count} descriptors but "
                            f"{len(self._pending)} arrived"
                        )
                    fds, self._pending = self._pending, []
                    if self.onMessage is None:
                        _closeAll(fds, self._closeFd)
                    else:
                        self.onMessage(payload, fds)
                else:
                    return ChannelError(f"unknown frame type {kind}")
        finally:
            del buf[:offset]
        return None

    # -- closing --------------------------------------------------------------

    def close(self, reason: Failure | None = None) -> None:
        """
        Stop using the channel and close the socket and any descriptors
        received but not delivered.
        """
        self._shutdown(reason or Failure(ChannelError("channel closed")))

    def _shutdown(self, reason: Failure) -> None:
        if self._closed:
            return
        self._reactor.removeReader(self)
        self._reactor.removeWriter(self)
        self._closed = True
        _closeAll(list(self._arrived) + self._pending, self._closeFd)
        self._arrived.clear()
        self._pending = []
        out, self._out = self._out, deque()
        try:
            self._sock.close()
        except OSError:
            pass
        for _, _, done in out:
            if done is not None:
                done.errback(reason)
        if self.onClose is not None:
            onClose, self.onClose = self.onClose, None
            onClose(reason)


def channelPair() -> tuple[socket.socket, socket.socket]:
    """
    A connected pair of non-blocking, close-on-exec UNIX stream sockets.
    """
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    return a, b
