# -*- test-case-name: tests.test_stream -*-
"""
L{Owned}: which batch of a stream (L{migrator.state._stream}) sent each
object, so that no object is sent twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any


class Owned:
    """
    The ids (C{id(obj)}) of the objects the batches of a stream sent, with
    the batch's number: one by one for the batches; as their writers for
    the connections written in slices (L{migrator.state._large}), whose
    millions of ids are never copied (a dictionary of a million entries
    takes 50 ms to grow, or to fill at once).

    @ivar ids: the objects of the batches, by id.
    @ivar layers: C{[writer, number]} per connection written in slices
        (its number is L{migrator.state._walk.WALKING} while it is
        written); a writer says what it wrote with C{wroteAny}.
    """

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.layers: list[list[Any]] = []

    def __bool__(self) -> bool:
        return bool(self.ids or self.layers)

    def add(self, ids: Iterable[int], number: int) -> None:
        """
        The objects C{ids} were sent in batch C{number}.
        """
        self.ids.update(dict.fromkeys(ids, number))

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

    def owners(self, ids: Iterable[int], skip: list[Any] | None = None) -> set[int]:
        """
        @return: the numbers of the batches that sent any of C{ids}
            (leaving out the layer C{skip}).
        """
        get = self.ids.get
        if not self.layers:
            return {n for n in map(get, ids) if n is not None}
        ids = list(ids)
        found = {n for n in map(get, ids) if n is not None}
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
        return kept

    def clear(self) -> None:
        self.ids.clear()
        self.layers.clear()
