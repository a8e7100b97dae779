# -*- test-case-name: tests.test_stream -*-
"""
The incumbent's C{capture} step: the connections are captured, frozen and
sent on the frame channel, either streamed in batches while this process
keeps accepting and serving (L{migrator.state._stream}; what a successor
of this version asks for), or in one reactor turn after a bounded wait for
busy connections (what an older successor gets).  Either way the last
capture happens in the turn in which accepting stops, so that every
connection held then is either sent or counted as staying.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from migrator.state._nativeform import VERSION as NATIVE_FORM
from migrator.state._registry import AdapterRegistry
from migrator.state._stream import Stream
from migrator.state._translator import describeTranslations
from migrator.state._versions import readableFrom
from migrator.takeover._attempt import Attempt, Peer, restorableTypes
from migrator.takeover._messages import CaptureReport, CaptureRequest, Streaming
from migrator.takeover._ports import ListenerRegistry
from migrator.takeover._steps import CAPTURING, Faults
from migrator.takeover._unmovable import UnmovableGuard

_log = Logger()

#: How often a stream looks again for busy connections turned idle.
BUSY_INTERVAL = 0.01

#: How often the last turn looks whether the successor caught up.
ACK_INTERVAL = 0.002

#: How many batches the stream may send ahead of the successor's restore.
AHEAD = 16


class CapturesConnections:
    """
    The part of L{migrator.takeover._incumbent.Incumbent} that answers
    C{capture}.
    """

    #: The error a refused step raises to the successor (the incumbent's
    #: C{TakeoverRefused}, whose name PB sends).
    Refused: type[Exception] = Exception

    # What it uses of the incumbent (declared here for type checkers).
    _reactor: Any
    registry: ListenerRegistry
    adapters: AdapterRegistry
    current: Attempt | None
    takeoverTimeout: float
    settleTimeout: float
    clock: Callable[[], float]
    faults: Faults
    unmovable: UnmovableGuard
    _hangs: list[Deferred[None]]

    def _expect(self, session: Peer, step: str) -> Attempt:
        raise NotImplementedError()

    def _advance(self, attempt: Attempt, step: str) -> None:
        raise NotImplementedError()

    def _refuseUnmovable(
        self, step: str, session: Peer | None = None, rest: list[Any] | None = None
    ) -> None:
        raise NotImplementedError()

    def _refuse(
        self, attempt: Attempt, message: str, told: str | None = None, from_: BaseException | None = None
    ) -> NoReturn:
        raise NotImplementedError()

    def capture(
        self, session: Peer, request: CaptureRequest
    ) -> CaptureReport | Deferred[CaptureReport]:
        """
        Capture and freeze every connection that can move, and send them
        over the channel.  If some connections are busy (see L{Settling}),
        first wait for them, a bounded time.

        @param session: the successor's connection.
        @param request: the type names (and versions) the successor has
            adapters for.
        @return: the report, or (after a wait) a L{Deferred} firing with it.
        @raise TakeoverRefused: (and the takeover is abandoned) if the step
            is out of order or capturing fails; the L{Deferred} fails with
            it too.
        """
        attempt = self._expect(session, "capture")
        self._advance(attempt, "capture")
        if request.stream is not None:
            return self._stream(attempt, request, request.stream)
        timeout = min(self.settleTimeout, self.takeoverTimeout / 3)
        waiting = attempt.startSettling(self._reactor, self.registry, self.adapters, timeout)
        if waiting is None:
            return self._capture(attempt, request)
        _log.info(
            "waiting up to {timeout:g} s for {busy} busy connection(s) to finish "
            "before capturing",
            timeout=timeout,
            busy=attempt.settling.busy if attempt.settling else 0,
        )
        return waiting.addCallback(lambda _: self._capture(attempt, request))

    def _capture(
        self, attempt: Attempt, request: CaptureRequest
    ) -> CaptureReport | Deferred[CaptureReport]:
        """
        The capture itself, in one reactor turn: stop accepting, so that the
        set of connections is closed (the kernel's backlog queues new ones
        for the successor, none is refused), then capture, freeze and send
        (L{Attempt.capture}).  Every connection held at that moment is
        either sent or counted as staying, with its reason.

        @raise TakeoverRefused: if the takeover was abandoned meanwhile, or
            capturing fails (which abandons it).
        """
        settling = attempt.endSettling()
        if settling is not None:
            _log.info(
                "waited {ms:.1f} ms for busy connections; {busy} still busy",
                ms=settling.waited * 1000,
                busy=settling.busy,
            )
        if self.current is not attempt or attempt.state != CAPTURING:
            raise self.Refused("capture: the takeover was abandoned while waiting")
        types = restorableTypes(self.adapters, request)
        started = self.clock()
        try:
            report = attempt.capture(
                self._reactor, self.registry, self.adapters, types, started,
                # Versions: the newer side translates (state/_versions.py).
                readableFrom(request.toWire()),
                selected=self.unmovable.selected,
                # Accepting has stopped: the last look at what would stay.
                check=lambda: self._refuseUnmovable("capture", attempt.session),
            )
        except self.Refused:
            raise
        except Exception as e:
            _log.failure("capturing connections failed")
            self._refuse(attempt, f"capturing connections failed: {e}", from_=e)
        self._advance(attempt, "captured")
        assert attempt.captured is not None
        self._logCaptured(attempt, report, attempt.captured.pendingBytes, self.clock() - started)
        return self._afterSent(attempt, report)

    def _logCaptured(
        self, attempt: Attempt, report: CaptureReport, pending: int, seconds: float, more: str = ""
    ) -> None:
        """
        Log what the capture froze and sent, and what stays (with C{more}
        said after it), and what it translated.
        """
        staying = report.staying
        _log.info(
            "stopped accepting on {paused} port(s) with {held} connection(s) "
            "open; froze and sent {count} connection(s) ({size} bytes of state, "
            "{pending} unsent bytes, captured in {ms:.1f} ms); {stay} stay "
            "here and drain{why}{more}",
            paused=attempt.paused,
            held=report.held,
            count=report.connections,
            pending=pending,
            size=report.bytes,
            ms=seconds * 1000,
            stay=sum(staying.values()),
            why=(": " + "; ".join(f"{n} x {r}" for r, n in sorted(staying.items())))
            if staying
            else "",
            more=more,
        )
        if translated := describeTranslations(report.translations):
            _log.info("translated before sending: {translated}", translated=translated)

    def _afterSent(
        self, attempt: Attempt, report: CaptureReport
    ) -> CaptureReport | Deferred[CaptureReport]:
        """
        The answer to C{capture}, after a drill's fault at C{state-sent} if
        one is set (once the state has left).
        """
        if not self.faults:
            return report
        assert attempt.sent is not None
        return attempt.sent.addCallback(
            lambda _: Deferred.fromCoroutine(self.faults.at("state-sent", self._hangs, self._reactor))
        ).addCallback(lambda _: report)


    def _stream(
        self, attempt: Attempt, request: CaptureRequest, streaming: Streaming
    ) -> Deferred[CaptureReport]:
        """
        The capture in batches (L{migrator.state._stream}): one batch per
        reactor turn while this process accepts and serves the rest; a busy
        connection moves once it is idle, until the successor's deadline
        (at most a third of C{takeoverTimeout}); then the last batch, in
        the turn in which accepting stops (L{_lastBatch}).

        @return: a L{Deferred} firing with the report once the last batch
            is sent, or failing with the refusal (the takeover abandoned:
            every batch sent is thawed, in order).
        """
        # (One list of the connections, made at begin with those added
        # since, serves the stream's first look, in the next turn; what
        # arrives meanwhile is noted.)
        held = attempt.openNow(self.registry)
        stream = attempt.startStream(
            self._reactor,
            self.registry,
            self.adapters,
            restorableTypes(self.adapters, request),
            readableFrom(request.toWire()),
            self.unmovable.selected,
            streaming.maxBatch,
            streaming.parts,
            # (Only the version this process writes.)
            streaming.native == NATIVE_FORM,
        )
        stream.listed(held, self.unmovable.suspects())
        started = self.clock()
        now = begun = self._reactor.seconds()
        bound = now + self.takeoverTimeout / 3
        deadline = now + min(streaming.busyDeadline, self.takeoverTimeout / 3)
        done: Deferred[CaptureReport] = Deferred()
        # Whether the stream waited for busy connections (from its start).
        waited = False

        def fail(e: Exception) -> None:
            if isinstance(e, self.Refused):
                done.errback(e)
                return
            _log.failure("capturing connections failed", failure=Failure(e))
            try:
                self._refuse(attempt, f"capturing connections failed: {e}", from_=e)
            except self.Refused as refused:
                done.errback(refused)

        def abandoned() -> bool:
            if self.current is not attempt or attempt.state != CAPTURING:
                attempt.endSettling()
                done.errback(self.Refused("capture: the takeover was abandoned while streaming"))
                return True
            return False

        def last(_: object = None, unsent: tuple[list[Any], int] | None = None) -> None:
            # The turn in which accepting stops: the connections the wait
            # for busy ones paused read again (they are captured now, and
            # the successor starts them reading).
            settling = attempt.endSettling()
            if abandoned():
                return
            if waited or settling is not None:
                # Since the stream began (the busy ones were waited for
                # from then on), else the last batch's wait alone.
                _log.info(
                    "waited {ms:.1f} ms for busy connections; {busy} still busy",
                    ms=(self._reactor.seconds() - begun) * 1000 if waited
                    else settling.waited * 1000,  # type: ignore[union-attr]
                    busy=settling.busy if settling is not None else stream.waiting(),
                )
            try:
                report = self._lastBatch(attempt, stream, started, streaming, unsent)
            except Exception as e:
                fail(e)
                return
            done.callback(report)

        # The wait for the successor to catch up, if one is armed.
        caughtUp: Any = None

        def acked() -> None:
            if caughtUp is not None and caughtUp.active():
                # (Its own turn, as every other step of the stream.)
                caughtUp.reset(0)

        attempt.onAcked = acked

        def turn() -> None:
            nonlocal waited, caughtUp
            if abandoned():
                return
            try:
                now = self._reactor.seconds()
                # Batches the successor has not said it restored.
                ahead = len(stream.batches) - attempt.acked if streaming.acks else 0
                batch = stream.next() if now < bound and ahead < AHEAD else None
                if batch is not None:
                    attempt.send(batch)
                    self._reactor.callLater(0, turn)
                    return
                if stream.walking and now < bound and ahead < AHEAD:
                    # A large connection's slices go on.
                    self._reactor.callLater(0, turn)
                    return
                if ahead and now < bound:
                    # The successor still restores: the last turn waits,
                    # so that what it freezes is not held behind that
                    # (until its next acknowledgement, or a short while).
                    caughtUp = self._reactor.callLater(ACK_INTERVAL, turn)
                    return
                if stream.waiting() and now < min(deadline, bound):
                    if not waited:
                        waited = True
                        _log.info(
                            "waiting up to {timeout:g} s for {busy} busy connection(s) "
                            "to finish; the others move meanwhile",
                            timeout=min(deadline, bound) - now,
                            busy=stream.waiting(),
                        )
                    self._reactor.callLater(BUSY_INTERVAL, turn)
                    return
                # What goes in the last batch (the talking connections) may
                # be busy right now: as before streaming, a bounded wait
                # for them, the idle ones not reading meanwhile.
                remaining = max(0.0, min(deadline, bound) - now)
                # (One list of the connections in no batch serves the
                # wait's first check and, if nothing is busy, the last
                # batch in this same turn.  Those in a batch are frozen:
                # nothing there is waited for.)
                unsent = self._unsent(stream)
                settling = attempt.startSettling(
                    self._reactor, self.registry, self.adapters, remaining, unsent[0]
                )
            except Exception as e:
                fail(e)
                return
            if settling is None:
                last(unsent=unsent)
                return
            _log.info(
                "waiting up to {timeout:g} s for {busy} busy connection(s) to finish "
                "before the last batch",
                timeout=remaining,
                busy=attempt.settling.busy if attempt.settling else 0,
            )
            settling.addCallback(last)

        def begin() -> None:
            # The stream's start (a look at every connection) in a turn of
            # its own, after the never-two check's, and the first batch in
            # the next: three shorter turns, with the clients served between.
            if abandoned():
                return
            try:
                stream.start()
                # Never two: what cannot move is known before anything is
                # frozen; the first look (which freezes nothing) gave those
                # whose class alone does not say they can (one look at
                # every connection, not two: tens of thousands take
                # milliseconds each time).
                self._refuseUnmovable("capture", attempt.session, stream.suspects)
            except Exception as e:
                fail(e)
                return
            self._reactor.callLater(0, turn)

        self._reactor.callLater(0, begin)
        return done.addCallback(lambda report: self._afterSent(attempt, report))

    def _lastBatch(
        self,
        attempt: Attempt,
        stream: Stream,
        started: float,
        streaming: Streaming,
        unsent: tuple[list[Any], int] | None = None,
    ) -> CaptureReport:
        """
        The stream's last turn: stop accepting, look again at what would
        stay (never two), capture and send the rest.

        @param unsent: the open connections in no batch and how many are
            open (L{_unsent}), if found earlier in this same turn (nothing
            was accepted since).
        """
        attempt.paused = self.registry.pauseAccepting()
        attempt.pausedAt = self.clock()
        rest, held = self._unsent(stream) if unsent is None else unsent
        self._refuseUnmovable("capture", attempt.session, rest)
        last = stream.finish(rest)
        attempt.send(last)
        attempt.closeBusy = streaming.closeBusy
        self._advance(attempt, "captured")
        report = CaptureReport(
            connections=stream.count,
            bytes=stream.sentBytes,
            moved=stream.moved,
            staying=stream.staying,
            frozenAt=stream.frozenAt,
            held=held,
            translations=stream.translations,
        )
        dropped = len(stream.dropped)
        self._logCaptured(
            attempt,
            report,
            stream.pendingBytes,
            stream.seconds,
            f"; streamed in {len(stream.batches) + 1} batch(es)"
            + (f" ({stream.nativeBatches} in the native form)" if stream.nativeBatches else "")
            + f" over "
            f"{(self.clock() - started) * 1000:.1f} ms, the last one "
            f"{(self.clock() - (attempt.pausedAt or 0.0)) * 1000:.1f} ms after accepting stopped"
            + (f" ({dropped} batch(es) sent again in it)" if dropped else ""),
        )
        return report

    def _unsent(self, stream: Stream) -> tuple[list[Any], int]:
        """
        The open connections in no batch of C{stream}, and how many
        connections the registry counts open: without a look at every one
        if the stream can tell (L{Stream.unsent}), else from the
        registry's list.
        """
        found = stream.unsent()
        if found is not None:
            rest, counted = found
            return rest, counted + len(rest)
        held = list(self.registry.openConnections())
        streamed = stream.streamed
        return [t for t in held if id(t) not in streamed], len(held)

    def batchRestored(self, session: Peer, number: int) -> None:
        """
        The successor restored batch C{number} of the stream in progress
        (not a step; ignored if it is not the current takeover's).
        """
        attempt = self.current
        if attempt is not None and attempt.session is session:
            attempt.acked = max(attempt.acked, number + 1)
            if attempt.onAcked is not None:
                attempt.onAcked()
