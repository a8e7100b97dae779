# -*- test-case-name: tests.test_incumbent -*-
"""
One takeover in progress, on the incumbent's side: what it holds (the
frame channel and the successor's end of it, the ports' records, the frozen
connections, the step's timeout) and how it lets go of them.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall

from migrator.interfaces import IBusyAware
from migrator.state._capture import Captured, captureConnections
from migrator.state._large import Part
from migrator.state._registry import AdapterRegistry
from migrator.state._settling import Settling
from migrator.state._stream import Stream
from migrator.state._versions import Readable
from migrator.takeover._channel import FrameChannel, channelPair
from migrator.takeover._connections import Arrivals
from migrator.takeover._messages import BeginRequest, CaptureReport, CaptureRequest, PreparedReport
from migrator.takeover._ports import ListenerRegistry
from migrator.takeover._steps import IDLE


def restorableTypes(adapters: AdapterRegistry, request: CaptureRequest) -> frozenset[str]:
    """
    The type names a successor (or a dry run's staging process) can
    restore, as its capture request says.  Versions are not filtered here:
    the newer side translates (L{migrator.state._versions}), and a state no
    chain of steps reaches stays, with the reason, at the capture.
    """
    return frozenset(request.types)


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
    @ivar pausedAt: when accepting stopped (just before the capture), if
        it did.
    @ivar paused: on how many ports.
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
    captured: Captured | Stream | None = None
    #: Whether busy connections still here at the commit are closed.
    closeBusy: bool = False
    #: How many batches of the stream the successor restored (in order).
    acked: int = 0
    #: Called when the successor says it restored a batch (the stream's
    #: last turn, waiting for it to catch up, goes on at once).
    onAcked: Callable[[], None] | None = None
    settling: Settling | None = None
    pausedAt: float | None = None
    paused: int = 0
    sent: Deferred[None] | None = None
    #: Whether it paused the garbage collector (L{pauseCollector}).
    _collecting: bool = False
    report: PreparedReport | None = None
    _timeout: IDelayedCall | None = None
    #: The open connections listed at C{begin} (for the plan), and the
    #: registry's note of those added since, until C{capture} takes them.
    _listed: tuple[list[Any], Arrivals] | None = None

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

    def startSettling(
        self,
        reactor: Any,
        registry: ListenerRegistry,
        adapters: AdapterRegistry,
        timeout: float,
        connections: list[Any] | None = None,
    ) -> Deferred[int] | None:
        """
        Before capturing, wait (at most C{timeout} seconds) for the busy
        connections to go idle; see L{Settling}.

        @param connections: the open connections, just listed (see
            L{Settling.start}).
        @return: C{None} if none is busy, else a L{Deferred} that fires when
            the wait is over (then call L{capture} in that reactor turn).
        """
        settling = Settling(reactor, registry, adapters, timeout, claimed=self.claimed())
        waiting = settling.start(connections)
        if waiting is not None:
            self.settling = settling
        return waiting

    def endSettling(self) -> Settling | None:
        """
        End the wait for busy connections, if there was one: the
        connections it paused read again.

        @return: the wait, for its figures.
        """
        settling, self.settling = self.settling, None
        if settling is not None:
            settling.resume()
        return settling

    def capture(
        self,
        reactor: Any,
        registry: ListenerRegistry,
        adapters: AdapterRegistry,
        types: frozenset[str],
        now: float,
        readable: Mapping[str, Readable] | None = None,
        selected: Callable[[Any], bool] | None = None,
        check: Callable[[], None] | None = None,
    ) -> CaptureReport:
        """
        In one reactor turn: stop accepting (so that no connection is
        accepted between the capture and the commit: the kernel's backlog
        queues new ones, for whichever process accepts next), capture and
        freeze every connection that can move, and send their state and
        descriptors on the channel.

        @param types: the type names the successor can restore.
        @param now: the incumbent's clock.
        @param readable: what the successor reads of each type name
            (versions, upgrades), or C{None} (not said).
        @param selected: whether the operator selected a connection to move
            (C{None}: all), see L{migrator.state._capture.captureConnections}.
        @param check: called once accepting has stopped, before anything is
            captured: it may raise to refuse the takeover (then nothing was
            captured, and L{undo} resumes accepting).
        @return: the report for the successor.
        @raise Exception: if capturing fails (accepting stays paused until
            L{undo}).
        """
        self.paused = registry.pauseAccepting()
        self.pausedAt = now
        if check is not None:
            check()
        held = registry.connectionCount()
        captured = self.captured = captureConnections(
            reactor, registry, adapters, self.claimed(), types, readable, selected
        )
        assert self.channel is not None
        self.sent = self.channel.sendMessage(captured.payload, captured.fds)
        # Abandoned before it went out: the abort is logged on its own.
        self.sent.addErrback(lambda _: None)
        return CaptureReport(
            connections=captured.count,
            bytes=len(captured.payload),
            moved=captured.moved,
            staying=captured.staying,
            frozenAt=captured.frozenAt,
            held=held,
            translations=captured.translations,
        )

    def startStream(
        self,
        reactor: Any,
        registry: ListenerRegistry,
        adapters: AdapterRegistry,
        types: frozenset[str],
        readable: Mapping[str, Readable] | None,
        selected: Callable[[Any], bool] | None,
        maxBatch: int,
        slices: bool = False,
        native: bool = False,
    ) -> Stream:
        """
        Make the stream of a capture in batches (L{migrator.state._stream}),
        for the caller to start: from now on L{undo} thaws every batch
        sent.

        @param slices: whether a connection too large for a batch is
            written in slices (the successor reads parts).
        @param native: whether batches may be in the native form (the
            successor reads it).
        """
        stream = Stream(
            reactor, registry, adapters, self.claimed(), types, readable, selected, maxBatch,
            slices=slices,
            native=native,
        )
        self.captured = stream
        if self._collecting:
            # The stream resumes it, once it has let go of what it wrote.
            self._collecting = False
            stream.ownCollector()
        return stream

    def send(self, captured: Captured | Part) -> None:
        """
        Send a capture's message (state and descriptors) on the channel.
        """
        assert self.channel is not None
        self.sent = self.channel.sendMessage(captured.payload, captured.fds)
        # Abandoned before it went out: the abort is logged on its own.
        self.sent.addErrback(lambda _: None)

    def closeBusyLeft(
        self, registry: ListenerRegistry, adapters: AdapterRegistry, leaving: frozenset[int]
    ) -> int:
        """
        After the commit, if the successor asked: close (as a shutdown
        would) the connections still busy here.

        @param leaving: the ids of the transports that moved.
        @return: how many.
        """
        closed = 0
        for t in list(registry.openConnections()) if self.closeBusy else ():
            if id(t) in leaving:
                continue
            adapter = adapters.adapterFor(type(t.protocol))
            if IBusyAware.providedBy(adapter) and adapter.busy(t.protocol):
                t.loseConnection()
                closed += 1
        return closed

    def keepListed(self, listed: list[Any], arrivals: Arrivals) -> None:
        """
        Keep the connections listed at C{begin} (held until C{capture} or
        the end), with the note of those added since, for L{openNow}.
        """
        self._listed = (listed, arrivals)

    def openNow(self, registry: ListenerRegistry) -> list[Any]:
        """
        The connections open now, or closed since they were listed: those
        kept at C{begin} and those added since (one may be in both: the
        stream's first look takes each once), or else the registry's
        (listing tens of thousands takes milliseconds).
        """
        if self._listed is None:
            return list(registry.openConnections())
        (listed, arrivals), self._listed = self._listed, None
        added = arrivals.take()
        arrivals.close()
        return listed + added if added else listed

    def status(self, now: float) -> dict[str, Any]:
        """
        @return: this takeover in progress for C{status}: successor, step,
            start, elapsed seconds.
        """
        return {
            "successor_pid": self.successorPid,
            "step": self.state,
            "started": self.startedAt,
            "elapsed": round(now - self.startedAt, 3),
        }

    def committedRecord(self, now: float, portsMoved: int) -> dict[str, Any]:
        """
        @return: the record of this takeover, committed at C{now}, for the
            incumbent's C{status} (C{last_takeover}).
        """
        return {
            "outcome": "committed",
            "successor_pid": self.successorPid,
            "at": now,
            "ports_moved": portsMoved,
            "connections_moved": self.captured.count if self.captured else 0,
            "connections_staying": dict(self.captured.staying) if self.captured else {},
            "accept_paused_ms": round((now - (self.pausedAt or now)) * 1000, 3),
            "total_ms": round((now - self.startedAt) * 1000, 3),
        }

    def undo(self, registry: ListenerRegistry) -> int:
        """
        Put everything back as it was before the takeover: accept again,
        let the connections paused for the wait read, thaw the frozen ones.

        @return: on how many ports accepting resumed.
        """
        resumed = registry.resumeAccepting() if self.pausedAt is not None else 0
        self.endSettling()
        if self.captured is not None:
            self.captured.thaw()
        return resumed

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

    def pauseCollector(self) -> None:
        """
        Pause the garbage collector until L{close} (or the stream this
        starts, which resumes it once it has let go of what it wrote): a
        full collection of a large heap (a connection holding a million
        objects) is one long reactor turn, which the takeover's own
        allocations would otherwise bring about while every client waits.
        """
        if gc.isenabled():
            gc.disable()
            self._collecting = True

    def resumeCollector(self) -> None:
        if self._collecting:
            self._collecting = False
            gc.enable()

    def close(
        self, reactor: Any = None, farewell: bytes | None = None, bound: float = 5.0
    ) -> Deferred[None]:
        """
        Close the frame channel (both ends) and cancel the timeout.

        @param farewell: a last message to send first (then the channel
            closes once it is handed to the kernel, or after C{bound}
            seconds, whichever comes first).
        @param reactor: schedules the bound (needed with C{farewell}).
        @return: a L{Deferred} that fires once the channel is closed.
        """
        self.disarm()
        if self._listed is not None:
            self._listed[1].close()
            self._listed = None
        self.resumeCollector()
        if self.peerEnd is not None:
            # By now the descriptor has long been sent (it rode with the
            # answer to begin); our copy can go.
            self.peerEnd.close()
            self.peerEnd = None
        channel, self.channel = self.channel, None
        if channel is None:
            return succeed(None)
        if farewell is None or reactor is None:
            channel.close()
            return succeed(None)
        closed: Deferred[None] = Deferred()
        ending: list[bool] = []

        def done(_: object = None) -> None:
            # (Closing the channel fails the farewell's send if it is still
            # queued, which calls this again: once is enough.)
            if ending:
                return
            ending.append(True)
            if bounded.active():
                bounded.cancel()
            channel.close()
            closed.callback(None)

        bounded = reactor.callLater(bound, done)
        channel.sendMessage(farewell).addBoth(done)
        return closed
