# -*- test-case-name: tests.test_families -*-
"""
L{roundTrip}: an object graph through capture, the wire format and
restore, in one process, for people who write adapters (public through
L{migrator.testing}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.interfaces import ITransport
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from migrator.interfaces import IRestoreContext
from migrator.state._graph import GraphReader, GraphWriter, dumpsPlain, loadsPlain
from migrator.state._registry import AdapterRegistry
from migrator.state._translator import Translator
from migrator.state._versions import readableFrom, readableTypes


def roundTrip(
    value: Any,
    adapters: AdapterRegistry,
    anchors: Mapping[str, tuple[Any, Any]] | None = None,
    restoreWith: AdapterRegistry | None = None,
) -> Any:
    """
    Write C{value} as the incumbent would, encode and decode it, and read it
    back as the successor would.

    Transports met on the way (anything providing L{ITransport}) come back
    as fresh L{StringTransport}s, one per original, so that a restored
    protocol can be fed bytes and its output inspected.  What adapters ask
    to run after the commit (C{context.whenActive}, see
    L{migrator.interfaces.IRestoreContext}) runs before this returns.
    Scheduled calls and other special values are not supported here (the
    integration tests cover them with real processes).

    @param adapters: the incumbent's registry.
    @param anchors: C{{name: (old, new)}}: C{old} in the incumbent's graph
        stands for C{new} in the successor's (e.g. a port's factory).
    @param restoreWith: the successor's registry, if it differs (new code):
        states are translated between the two registries' versions as in
        a takeover (the newer side translates; what no chain of steps
        reaches cannot be written).
    @return: the restored value.
    @raise migrator.state._graph.Unadaptable: if something in C{value} cannot be
        written.
    @raise migrator.state._graph.GraphError: if it cannot be read back.
    """
    anchors = dict(anchors or {})
    transports: dict[int, StringTransport] = {}

    def special(obj: Any, writer: GraphWriter, path: str) -> Any:
        if ITransport.providedBy(obj):
            ident, _ = writer.rememberSpecial(obj)
            return ("x", "transport", ident)
        return None

    def restoreSpecial(kind: str, payload: Any, reader: GraphReader) -> Any:
        if kind != "transport":
            return None
        transport = transports.setdefault(payload, StringTransport())
        reader.remember(payload, transport)
        return transport

    registry = restoreWith or adapters
    translator = Translator(
        readableFrom({"readable": readableTypes(registry)}), adapters.kept
    )

    def adapterFor(cls: type) -> Any:
        adapter = adapters.adapterFor(cls)
        return translator.writing(adapter) if adapter is not None else None

    writer = GraphWriter(
        adapterFor, {id(old): name for name, (old, _) in anchors.items()}, special, translator
    )
    wire = dumpsPlain(writer.write(value))
    later: list[Any] = []

    @implementer(IRestoreContext)
    class _Context:
        # As RestoreContext: what adapters defer to "after the commit" runs
        # once everything is restored.
        whenActive = staticmethod(later.append)

    reader = GraphReader(
        registry.adapterNamed,
        {name: new for name, (_, new) in anchors.items()},
        restoreSpecial,
        _Context(),
        Translator(None, registry.kept),
    )
    restored = reader.read(loadsPlain(wire))
    reader.finish()
    for f in later:
        f()
    return restored
