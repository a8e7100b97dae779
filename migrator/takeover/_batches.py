# -*- test-case-name: tests.test_stream -*-
"""
The successor's side of a streamed capture (L{migrator.state._stream}):
the batches are restored as they arrive (not reading until the commit),
and the last one says which batches to drop, because their connections
were captured again in it.  A message in one piece (from an incumbent
that does not stream) is a last batch with nothing to drop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from migrator.state._nativeform import VERSION as NATIVE_FORM
from migrator.state._registry import AdapterRegistry
from migrator.state._translator import mergeTranslations
from migrator.state._turns import eachTurn
from migrator.takeover._inbox import Message
from migrator.takeover._messages import CaptureReport, Streaming
from migrator.takeover._ports import ListenerRegistry

if TYPE_CHECKING:
    from migrator.state._restore import Restored

_log = Logger()


@attrs.define(eq=False)
class Batches:
    """
    The connections restored so far, batch by batch; the same face as one
    L{Restored} (C{count}, C{translations}, C{activate}, C{rollback}).

    @ivar parts: the batches kept, in the order they arrived.
    @ivar done: whether the last one arrived.
    @ivar received: how many batches arrived (dropped ones too).
    @ivar dropped: how many were dropped.
    @ivar bytes: the size of their messages.
    @ivar seconds: the time spent restoring them.
    """

    parts: list[Restored] = attrs.field(factory=list)
    done: bool = False
    received: int = 0
    dropped: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def add(self, part: Restored, size: int, seconds: float) -> None:
        """
        Keep a batch restored; if it is the last one, first let go of the
        batches it drops (close, no shutdown: the incumbent sends their
        connections again in it).
        """
        self.received += 1
        self.bytes += size
        self.seconds += seconds
        if part.last:
            drop = set(part.dropped)
            for old in [p for p in self.parts if p.batch in drop]:
                old.rollback()
                self.parts.remove(old)
                self.dropped += 1
            self.done = True
        self.parts.append(part)

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts)

    @property
    def translations(self) -> dict[str, Any]:
        return mergeTranslations(*(p.translations for p in self.parts))

    def activate(
        self,
        frozenAt: float = 0.0,
        later: Callable[[Callable[[], None]], object] | None = None,
    ) -> Deferred[list[float]]:
        """
        The commit happened: activate the last batch first (it holds the
        connections that were talking when the stream began, frozen the
        shortest), then the others in the order they came.  A batch whose
        activation fails is logged, and the others go on.

        @param frozenAt: when the incumbent froze a batch that does not
            say.
        @param later: if given, runs a function in a later reactor turn:
            each batch after the first is activated in a turn of its own,
            so that the first one's clients are answered meanwhile.
        @return: a L{Deferred} firing, once all are active, with how long
            each connection was frozen, in seconds (from its batch's
            freeze, the incumbent's wall clock, to its activation).
        """
        order = self.parts[-1:] + self.parts[:-1] if self.done else list(self.parts)
        freezes: list[float] = []
        done: Deferred[list[float]] = Deferred()

        def activate(part: Restored) -> None:
            start = part.frozenAt if part.frozenAt is not None else frozenAt
            try:
                freezes.extend(t - start for t in part.activate())
            except Exception:
                _log.failure("takeover committed, but resuming the moved connections failed")

        eachTurn(order, activate, later, lambda: done.callback(freezes))
        return done

    def rollback(self) -> None:
        """
        Let go of every batch (the takeover failed), in the order they came.
        """
        parts, self.parts = self.parts, []
        for part in parts:
            part.rollback()


class ReceivesBatches:
    """
    The part of L{migrator.takeover._successor.Successor} that receives a
    capture's batches while C{capture} is answered.
    """

    # What it uses of the successor (declared here for type checkers).
    _step: str
    _reactor: Any
    registry: ListenerRegistry
    adapters: AdapterRegistry
    clock: Callable[[], float]
    restored: Batches | None
    #: How it asked for the connections (a stream, and in which forms).
    stream: Streaming | None = None
    captureReport: CaptureReport | None
    connectionReport: dict[str, Any]
    #: The chunks of the connections written in slices, by part number,
    #: until their batch comes (L{migrator.state._large}), and the size
    #: of their messages.
    chunks: dict[int, list[list[Any]]]
    chunkBytes: int

    async def _receive(self) -> Message:
        raise NotImplementedError()

    def restore(self, message: Message) -> bool:
        """
        Restore the connections of one of the incumbent's state messages
        (a batch, or the whole in one piece), not reading until
        L{afterCommit}; or keep the chunks of a part message for the
        batch that names them.

        @return: whether it was a batch.
        """
        payload, fds = message
        started = self.clock()
        try:
            # (The restore's modules, imported at the first batch: a
            # successor starts without them, 5 ms sooner.)
            from migrator.state._restore import decodeMessage, partOf, restoreConnections

            data = decodeMessage(payload)
            part = partOf(data)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if part is not None:
            for fd in fds:
                os.close(fd)
            self.chunks.setdefault(part[0], []).extend(part[1])
            self.chunkBytes += len(payload)
            return False
        number = data.decoded.get("parts") if isinstance(data.decoded, dict) else None
        held = self.chunks.pop(number, None) if type(number) is int else None
        restored = restoreConnections(
            self._reactor, self.registry, self.adapters, data, fds, chunks=held,
            native=self.stream is not None and self.stream.native == NATIVE_FORM,
        )
        if self.restored is None:
            self.restored = Batches()
        # (The parts' size is counted with the batch that follows them.)
        size, self.chunkBytes = len(payload) + self.chunkBytes, 0
        self.restored.add(restored, size, self.clock() - started)
        return True

    def restoredReport(self) -> None:
        """
        Log the connections restored, and keep the figures for the result.
        """
        # (The chunks of a connection whose batch never came.)
        self.chunks.clear()
        batches = self.restored
        if batches is None:
            return
        report = self.captureReport
        self.connectionReport = {
            "moved": report.moved if report else {},
            "staying": report.staying if report else {},
            "held": report.held if report else None,
            "bytes": report.bytes if report else batches.bytes,
            "batches": batches.received,
            "batches_dropped": batches.dropped,
            "restore_ms": round(batches.seconds * 1000, 3),
            # Versions seen, steps run (downgrades there, upgrades here).
            "translations": mergeTranslations(
                report.translations if report else None, batches.translations
            ),
        }
        _log.info(
            "restored {count} connection(s) from {size} bytes of state in {ms:.1f} ms "
            "({batches}; not reading until the commit)",
            count=batches.count,
            size=batches.bytes,
            batches=describeBatches(batches),
            ms=self.connectionReport["restore_ms"],
        )

    async def _fault(self, point: str) -> None:
        raise NotImplementedError()

    async def receiveBatches(
        self, answer: Deferred[Any], acknowledge: Callable[[int], object] | None = None
    ) -> Any:
        """
        Restore the batches as they come, until the last one, then wait
        for C{capture}'s answer.

        @param answer: the answer to C{capture} (it comes once the last
            batch is sent).
        @param acknowledge: called with each batch's number once it is
            restored (but the last).
        @return: the answer.
        @raise Exception: what the answer failed with, if it failed first
            (the wait for a batch is cancelled then); what a restore
            raised.
        """
        failed: list[Failure] = []
        waiting: list[Deferred[Message]] = []

        def refused(f: Failure) -> Failure:
            failed.append(f)
            for d in waiting:
                d.cancel()
            return f

        answer.addErrback(refused)
        try:
            await self._batches(failed, waiting, acknowledge)
        except BaseException:
            # Not waited for any more: its failure (the cancellation, or
            # the refusal already raised) is not an unhandled error.
            answer.addErrback(lambda _: None)
            answer.cancel()
            raise
        return await answer

    async def _batches(
        self,
        failed: list[Failure],
        waiting: list[Deferred[Message]],
        acknowledge: Callable[[int], object] | None,
    ) -> None:
        faulted = False
        while self.restored is None or not self.restored.done:
            if failed:
                failed[0].raiseException()
            d = Deferred.fromCoroutine(self._receive())
            waiting[:] = [d]
            try:
                message = await d
            except CancelledError:
                if failed:
                    failed[0].raiseException()
                raise
            finally:
                waiting.clear()
            self._step = "restore"
            if not self.restore(message):
                # A part: its batch comes later.
                self._step = "capture"
                continue
            assert self.restored is not None
            number = self.restored.parts[-1].batch if self.restored.parts else None
            if not self.restored.done and acknowledge is not None and number is not None:
                acknowledge(number)
            if not self.restored.done and not faulted:
                faulted = True
                await self._fault("after-batch")
            self._step = "capture"


def freezeFigures(activated: list[float], frozenAt: float) -> dict[str, Any]:
    """
    The freeze's p50, p99 and max in milliseconds (C{freeze_ms}), from how
    long each connection was frozen, in seconds; nothing if there is none,
    or no freeze time was known.
    """
    if not (activated and frozenAt):
        return {}
    freezes = sorted(t * 1000 for t in activated)
    return {
        "freeze_ms": {
            "p50": round(freezes[len(freezes) // 2], 3),
            "p99": round(freezes[min(len(freezes) - 1, int(len(freezes) * 0.99))], 3),
            "max": round(freezes[-1], 3),
        }
    }


def describeBatches(batches: Batches) -> str:
    """
    For the log: how many batches arrived, and how many were dropped.
    """
    dropped = f", {batches.dropped} dropped and sent again" if batches.dropped else ""
    return f"{batches.received} batch(es){dropped}"
