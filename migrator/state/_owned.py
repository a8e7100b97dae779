# -*- test-case-name: tests.test_stream -*-
"""
L{Owned}: which batch of a stream (L{migrator.state._stream}) sent each
object, so that no object is sent twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any

#: Objects of these types are values (immutable, no identity to keep):
#: never another batch's, even when two batches hold the same one.
VALUES = frozenset({type(None), bool, int, float, str, bytes, tuple, frozenset})


class Owned:
    """
    The ids (C{id(obj)}) of the objects the batches of a stream sent: one
    set per batch (never a value's: see L{VALUES}), all of them pooled in
    one set too, so that a look at an id is one, in C (a batch is a few
    thousand ids; a set's entries are half a dictionary's, and each look
    at a pool of a few hundred thousand is a cache miss); and, for the
    connections written in slices (L{migrator.state._large}), their
    writers, whose millions of ids are never copied (a dictionary of a
    million entries takes 50 ms to grow, or to fill at once).

    @ivar layers: C{[writer, number]} per connection written in slices
        (its number is L{migrator.state._walk.WALKING} while it is
        written); a writer says what it wrote with C{wroteAny}.
    """

    def __init__(self) -> None:
        self.layers: list[list[Any]] = []
        #: C{(number, ids)} per batch (its writer keeps the objects alive).
        self._batches: list[tuple[int, AbstractSet[int]]] = []
        self._pool: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._batches or self.layers)

    def add(self, ids: Iterable[int], number: int) -> None:
        """
        The objects C{ids} (no values) were sent in batch C{number}, whose
        writer keeps them alive as long as the batch is; a set is kept as
        it is, unchanged.
        """
        kept = ids if isinstance(ids, (set, frozenset)) else set(ids)
        self._batches.append((number, kept))
        self._pool.update(kept)

    def addWriter(self, writer: Any, number: int) -> list[Any]:
        """
        What C{writer} writes is sent in batch C{number}.

        @return: its layer (to renumber, or remove).
        """
        layer = [writer, number]
        self.layers.append(layer)
        return layer

    def remove(self, layer: list[Any]) -> None:
        self.layers = [kept for kept in self.layers if kept is not layer]

    def holdsAnyOf(self, ids: AbstractSet[int]) -> bool:
        """
        Does a batch sent hold any of the objects C{ids} (no values)?
        """
        if not self._pool.isdisjoint(ids):
            return True
        return bool(self.layers and self.owners(ids))

    def owners(self, ids: Iterable[int], skip: list[Any] | None = None) -> set[int]:
        """
        @return: the numbers of the batches that sent any of C{ids}
            (values, L{VALUES}, are never among what a batch sent),
            leaving out the layer C{skip}.
        """
        ids = list(ids)
        found: set[int] = set()
        met = self._pool.intersection(ids) if self._pool else None
        if met:
            # (One look per batch, in C: a factory's list of its protocols
            # meets every batch sent.)
            found.update(n for n, sent in self._batches if not sent.isdisjoint(met))
        for layer in self.layers:
            if layer is not skip and layer[0].wroteAny(ids):
                found.add(layer[1])
        return found

    def keeping(self, numbers: AbstractSet[int]) -> Owned:
        """
        @return: those of the batches C{numbers} only.
        """
        kept = Owned()
        kept.layers = [layer for layer in self.layers if layer[1] in numbers]
        for n, sent in self._batches:
            if n in numbers:
                kept.add(sent, n)
        return kept

    def clear(self) -> None:
        self.layers.clear()
        self._batches.clear()
        self._pool.clear()
