# -*- test-case-name: tests.test_stream -*-
"""
Which connections a stream (L{migrator.state._stream}) may put in a
batch now: asked of each connection when it is picked (and again of
one that was busy), tens of thousands of times per takeover.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrator._twistedinternals import isClosing
from migrator.interfaces import IBusyAware, IPortRegistry
from migrator.state._nodes import neverDeclines

#: (Not looked up yet.)
_UNKNOWN = object()


class ChoosesConnections:
    """
    The part of L{migrator.state._stream.Stream} that says whether a
    connection may go in a batch (L{_eligible}).
    """

    # What it uses of the stream (declared here for type checkers).
    adapters: Any
    ports: IPortRegistry
    claimed: frozenset[str]
    restorable: frozenset[str]
    selected: Callable[[Any], bool] | None
    _kinds: dict[type, Any]
    _claimedBy: dict[int, bool]

    def _kind(self, cls: type) -> Any:
        """
        C{(adapter, busy, whether to ask it movable)} for a protocol class
        (C{None} if no adapter the successor reads), looked up once.
        """
        try:
            return self._kinds[cls]
        except KeyError:
            adapter = self.adapters.adapterFor(cls)
            if adapter is None or adapter.typeName not in self.restorable:
                found = None
            else:
                found = (
                    adapter,
                    adapter.busy if IBusyAware.providedBy(adapter) else None,
                    # (The default rule's never declines: not asked.)
                    type(adapter).movable is not neverDeclines,
                )
            self._kinds[cls] = found
            return found

    def _claimed(self, t: Any) -> bool:
        server = getattr(t, "server", None)
        if server is None:
            return False
        try:
            return self._claimedBy[id(server)]
        except KeyError:
            # (Ports stay open, so their ids are not reused, while this
            # runs.)
            claimed = self._claimedBy[id(server)] = self.ports.keyOf(server) in self.claimed
            return claimed

    def _eligible(self, t: Any) -> bool | None:
        """
        C{True}: may go in a batch now; C{None}: busy (later, maybe);
        C{False}: left for the last turn.
        """
        # (Asked of each connection when it is picked: tens of thousands of
        # times per takeover.)
        if isClosing(t):
            return False
        claimed = self._claimedBy.get(id(getattr(t, "server", None)))
        if not (claimed or claimed is None and self._claimed(t)):
            return False
        protocol = t.protocol
        kind = self._kinds.get(type(protocol), _UNKNOWN)
        if kind is _UNKNOWN:
            kind = self._kind(type(protocol))
        if kind is None:
            return False
        adapter, busy, asks = kind
        if busy is not None and busy(protocol):
            return None
        if asks and adapter.movable(protocol):
            return False
        selected = self.selected
        return selected is None or bool(selected(t))
