# -*- test-case-name: tests.test_stream -*-
"""
What a stream's batches add up to (L{migrator.state._stream}): the
connections, classes, bytes and translations of the batches kept and the
last one.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

from migrator.interfaces import IPortRegistry
from migrator.state._capture import Captured
from migrator.state._translator import mergeTranslations


class BatchTotals:
    """
    The totals of a L{migrator.state._stream.Stream}'s batches.
    """

    # What it reads of the stream (declared here for type checkers).
    ports: IPortRegistry
    batches: list[Any]
    final: Captured | None
    partBytes: int
    _streamed: set[int]
    _dirty: set[int]

    def unsent(self) -> tuple[list[Any], int] | None:
        """
        The open connections in no batch, for the last turn, when they can
        be known without looking at every connection the registry counts:
        if nothing touched a batch since it was sent (no batch goes again),
        and the registry counts no more connections than the batches hold,
        there are none.  (With tens of thousands held, a look at each is
        milliseconds of the turn that stops accepting.)

        @return: the connections (the registry's others, if it counts
            more), and how many of the batches' connections the registry
            counts (open: frozen since they were sent); or C{None} if a
            batch was touched, or how many of its connections the registry
            counts is not known: the caller lists them all.
        """
        if self._dirty or any(b.tainted for b in self.batches):
            return None
        counts = [b.captured.ported for b in self.batches]
        if any(n < 0 for n in counts):
            return None
        counted = sum(counts)
        return self.ports.openConnectionsBesides(self._streamed, counted), counted

    @property
    def dropped(self) -> list[int]:
        """
        The numbers of the batches dropped (their connections are in the
        last one).
        """
        return [b.number for b in self.batches if b.tainted]

    @property
    def ported(self) -> int:
        """
        How many of the connections of the batches kept and the last one
        have a port (the registry counts them), or -1 if not known.
        """
        counts = [part.ported for part in self._parts()]
        return -1 if any(n < 0 for n in counts) else sum(counts)

    def _parts(self) -> list[Captured]:
        parts = [b.captured for b in self.batches if not b.tainted]
        return parts + ([self.final] if self.final is not None else [])

    @property
    def count(self) -> int:
        return sum(c.count for c in self._parts())

    @property
    def streamed(self) -> AbstractSet[int]:
        """
        The ids of the transports sent in a batch (before the last).
        """
        return self._streamed

    @property
    def transports(self) -> list[Any]:
        """
        The transports sent in the batches kept and the last one.
        """
        return [t for part in self._parts() for t in part.transports]

    @property
    def moved(self) -> dict[str, int]:
        moved: dict[str, int] = {}
        for part in self._parts():
            for name, n in part.moved.items():
                moved[name] = moved.get(name, 0) + n
        return moved

    @property
    def staying(self) -> dict[str, int]:
        # Only the last batch says: a batch leaves what it cannot take.
        return dict(self.final.staying) if self.final is not None else {}

    @property
    def pendingBytes(self) -> int:
        return sum(c.pendingBytes for c in self._parts())

    @property
    def frozenAt(self) -> float:
        parts = self._parts()
        return min(c.frozenAt for c in parts) if parts else 0.0

    @property
    def translations(self) -> dict[str, Any]:
        return mergeTranslations(*(c.translations for c in self._parts()))

    @property
    def sentBytes(self) -> int:
        """
        The size of every message sent (dropped batches and parts too).
        """
        sent = self.partBytes + sum(len(b.captured.payload) for b in self.batches)
        return sent + (len(self.final.payload) if self.final is not None else 0)
