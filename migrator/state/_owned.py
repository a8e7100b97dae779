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
    The ids (C{id(obj)}) of the objects the batches of a stream sent, with
    the batch's number: one by one for the graph writer's batches; as one
    set per batch in the native form (its pickler's objects, no values),
    all of them pooled in one set too (one look per id, in C: a batch is a
    few thousand ids); as their writers for the connections written in
    slices
    (L{migrator.state._large}), whose millions of ids are never copied (a
    dictionary of a million entries takes 50 ms to grow, or to fill at
    once).

    @ivar ids: the objects of the graph writer's batches, by id.
    @ivar layers: C{[writer, number]} per connection written in slices
        (its number is L{migrator.state._walk.WALKING} while it is
        written); a writer says what it wrote with C{wroteAny}.
    """

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.layers: list[list[Any]] = []
        #: C{(number, ids)} per native batch (its writer keeps the
        #: objects alive).
        self._natives: list[tuple[int, AbstractSet[int]]] = []
        #: The ids of every native batch, in one set (for one look per id;
        #: a set's entries are half a dictionary's, and each look is a
        #: cache miss).
        self._pool: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.ids or self.layers or self._natives)

    def add(self, ids: Iterable[int], number: int) -> None:
        """
        The objects C{ids} were sent in batch C{number}.
        """
        self.ids.update(dict.fromkeys(ids, number))

    def addNative(self, ids: AbstractSet[int], number: int) -> None:
        """
        The objects C{ids} (no values: see L{VALUES}) were sent in the
        native batch C{number}, whose writer keeps them alive as long as
        the batch is; C{ids} is kept, unchanged.
        """
        self._natives.append((number, ids))
        self._pool.update(ids)

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
        # (One look per id, in C.)
        if not self._pool.isdisjoint(ids) or not self.ids.keys().isdisjoint(ids):
            return True
        return bool(self.layers and self.owners(ids))

    def owners(self, ids: Iterable[int], skip: list[Any] | None = None) -> set[int]:
        """
        @return: the numbers of the batches that sent any of C{ids}
            (values, L{VALUES}, are never among what a batch sent),
            leaving out the layer C{skip}.
        """
        get = self.ids.get
        if not self.layers and not self._natives:
            return {n for n in map(get, ids) if n is not None}
        ids = list(ids)
        found = {n for n in map(get, ids) if n is not None}
        for i in self._pool.intersection(ids) if self._pool else ():
            found.update(n for n, native in self._natives if i in native)
        for layer in self.layers:
            if layer is not skip and layer[0].wroteAny(ids):
                found.add(layer[1])
        return found

    def keeping(self, numbers: AbstractSet[int]) -> Owned:
        """
        @return: those of the batches C{numbers} only.
        """
        kept = Owned()
        kept.ids = {i: n for i, n in self.ids.items() if n in numbers}
        kept.layers = [layer for layer in self.layers if layer[1] in numbers]
        for n, native in self._natives:
            if n in numbers:
                kept.addNative(native, n)
        return kept

    def clear(self) -> None:
        self.ids.clear()
        self.layers.clear()
        self._natives.clear()
        self._pool.clear()
