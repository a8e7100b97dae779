# -*- test-case-name: tests.test_successor -*-
"""
The successor's end of the frame channel: the incumbent's messages, in
order, one L{Deferred} at a time; and the incumbent's L{Farewell}, set
aside as soon as it arrives.

Descriptors: those of a message belong to the inbox until L{Inbox.next}
or L{Inbox.take} hands the message out; L{Inbox.close} closes those of the
messages nobody took.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from migrator.takeover._channel import FrameChannel
from migrator.takeover._messages import Farewell, MalformedMessage

_log = Logger()

Message = tuple[bytes, list[int]]


class Inbox:
    """
    Messages from the incumbent's frame channel, in order.

    @ivar farewell: the incumbent's farewell, once it has arrived.
    @ivar closed: whether the channel has closed (the incumbent closed its
        end, or died).
    @ivar onFarewell: called with the farewell when it arrives.
    """

    def __init__(
        self,
        reactor: Any,
        sock: socket.socket,
        onFarewell: Callable[[Farewell], None] | None = None,
    ) -> None:
        self._queue: list[Message] = []
        self._waiting: list[Deferred[Message]] = []
        self._closed: Failure | None = None
        self.farewell: Farewell | None = None
        self.onFarewell = onFarewell
        self.channel = FrameChannel(reactor, sock, self._message, self._close)
        self.channel.startReading()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def _message(self, payload: bytes, fds: list[int]) -> None:
        try:
            farewell = Farewell.fromBytes(payload)
        except MalformedMessage as e:
            _log.warn("ignored a malformed farewell from the incumbent: {e}", e=str(e))
            farewell = Farewell("(malformed farewell)")
        if farewell is not None:
            for fd in fds:
                os.close(fd)
            self.farewell = farewell
            if self.onFarewell is not None:
                self.onFarewell(farewell)
            return
        if self._waiting:
            self._waiting.pop(0).callback((payload, fds))
        else:
            self._queue.append((payload, fds))

    def _close(self, reason: Failure) -> None:
        self._closed = reason
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(reason)

    def next(self) -> Deferred[Message]:
        """
        @return: a L{Deferred} firing with the next message (its
            descriptors are then the caller's), or failing once the channel
            has closed with none left.  Cancelling it gives up the wait.
        """
        if self._queue:
            return succeed(self._queue.pop(0))
        if self._closed is not None:
            return fail(self._closed)

        def cancel(d: Deferred[Message]) -> None:
            if d in self._waiting:
                self._waiting.remove(d)

        d: Deferred[Message] = Deferred(cancel)
        self._waiting.append(d)
        return d

    def take(self) -> Message | None:
        """
        @return: the next message if one has arrived (its descriptors are
            then the caller's), else C{None}.
        """
        return self._queue.pop(0) if self._queue else None

    def putBack(self, message: Message) -> None:
        """
        Give back a message taken but not used: it is the next one again.
        """
        self._queue.insert(0, message)

    def close(self) -> None:
        """
        Close the channel and the descriptors of the messages not taken.
        """
        for _, fds in self._queue:
            for fd in fds:
                os.close(fd)
        self._queue = []
        self.channel.close()
