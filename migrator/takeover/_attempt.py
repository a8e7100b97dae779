# -*- test-case-name: tests.test_incumbent -*-
"""
One takeover in progress, on the incumbent's side: what it holds (the
frame channel and the successor's end of it, the ports' records, the frozen
connections, the step's timeout) and how it lets go of them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall

from migrator.state._capture import Captured, Settling
from migrator.takeover._channel import FrameChannel, channelPair
from migrator.takeover._messages import BeginRequest, PreparedReport
from migrator.takeover._steps import IDLE


class Peer(Protocol):
    """
    The successor's end of the control connection, as the incumbent uses
    it (L{migrator.takeover._session.ControlSession}).
    """

    def sendFileDescriptor(self, fd: int) -> None:
        """
        Send C{fd} (the kernel duplicates it into the peer) with the next
        bytes written to the peer.
        """

    def hangUp(self) -> None:
        """
        Close the control connection.
        """


@attrs.define(eq=False)
class Attempt:
    """
    One takeover in progress.

    Descriptors: the attempt owns both ends of the frame channel until it
    is closed (L{close}, at the commit or the abort); the successor's end
    is sent (the kernel duplicates it) with the answer to C{begin}.

    @ivar session: the successor's connection.
    @ivar successorPid: the successor's pid, as it said.
    @ivar request: its C{begin} request.
    @ivar startedAt: when C{begin} came (the incumbent's clock).
    @ivar state: the step reached (see L{migrator.takeover._steps}).
    @ivar sentPorts: how many port descriptors were sent.
    @ivar records: the ports' records, as sent.
    @ivar captured: the connections captured and frozen, once they are.
    @ivar settling: the wait for busy connections, while it lasts.
    @ivar pausedAt: when accepting stopped, if it did.
    @ivar report: the successor's C{prepared} report.
    """

    session: Peer
    successorPid: int
    request: BeginRequest
    startedAt: float
    state: str = IDLE
    channel: FrameChannel | None = None
    peerEnd: socket.socket | None = None
    sentPorts: int = 0
    records: list[dict[str, Any]] = attrs.field(factory=list)
    captured: Captured | None = None
    settling: Settling | None = None
    pausedAt: float | None = None
    report: PreparedReport | None = None
    _timeout: IDelayedCall | None = None

    def openChannel(self, reactor: Any) -> int:
        """
        Make the frame channel.

        @return: the descriptor of the successor's end, to send it (it
            stays the attempt's).
        """
        ours, theirs = channelPair()
        self.peerEnd = theirs
        self.channel = FrameChannel(reactor, ours, onClose=lambda reason: None)
        return theirs.fileno()

    def claimed(self) -> frozenset[str]:
        """
        The keys of the ports the successor declared.
        """
        unclaimed = set(self.report.unclaimed if self.report is not None else ())
        return frozenset(r["key"] for r in self.records) - unclaimed

    def arm(self, reactor: Any, seconds: float, expired: Callable[[], None]) -> None:
        """
        Call C{expired} in C{seconds} unless L{disarm} is called first
        (replacing any timeout armed before).
        """
        self.disarm()

        def fire() -> None:
            self._timeout = None
            expired()

        self._timeout = reactor.callLater(seconds, fire)

    def disarm(self) -> None:
        """
        Cancel the timeout, if one is armed.
        """
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def close(self) -> None:
        """
        Close the frame channel (both ends) and cancel the timeout.
        """
        self.disarm()
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.peerEnd is not None:
            # By now the descriptor has long been sent (it rode with the
            # answer to begin); our copy can go.
            self.peerEnd.close()
            self.peerEnd = None
