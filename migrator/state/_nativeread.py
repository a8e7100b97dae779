# -*- test-case-name: tests.test_native -*-
"""
A stream's batch in the native form (L{migrator.state._nativeform}),
successor side: L{readNative} unpickles it with an unpickler that
resolves the form's markers, and nothing else, to its own functions
(no other class, function or module, no persistent id): adapted objects
are made by their adapters' C{create} as they are met, and populated by
their C{populate} once the batch is read, their states translated, as
the graph reader (L{migrator.state._reader}) does; transports are built
on the batch's descriptors and scheduled calls held until the commit, as
for a graph's nodes.  What the markers call while the batch is decoded
is what the graph reader would call while reading it, each call's
arguments checked first.  A pickle's own opcodes can act on the objects
the unpickler holds (see docs/adapters.md, I{Security}): the anchors, this
process's own objects, are checked unchanged once it is read
(L{_Batch.guardAnchors}).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from migrator._twistedinternals import attachProtocol
from migrator.state import _nativeform as form
from migrator.state._graph import GraphError, GraphReader

#: (See L{_Batch.guardAnchors}.)
_NUMBERS = (int, float)

#: What a transport's description holds (L{migrator.state._capturehooks}).
_META = frozenset({"fd", "family", "unix", "port", "peer", "pending", "reading", "producerPaused", "streaming"})


class _Batch:
    """
    The objects of one batch as it is read: the markers' meanings.
    """

    def __init__(self, reader: GraphReader, hooks: Any) -> None:
        self.reader = reader
        self.hooks = hooks
        #: The objects made, by id: their adapter and version, until they
        #: are queued for populating (then C{None}).
        self.made: dict[int, tuple[Any, int] | None] = {}
        #: The transports built, by id: their slot among the restored ones,
        #: until they are given their protocol (then C{None}).
        self.built: dict[int, int | None] = {}
        self._kept: list[Any] = []
        #: The calls restored cancelled, to cancel once it is read.
        self.cancelled: list[Any] = []
        #: The anchors named, by id: each with its attributes as they
        #: were (see L{check}).
        self.anchors: dict[int, tuple[Any, dict[str, Any] | None]] = {}

    def markers(self) -> dict[str, Any]:
        return {
            "OBJECT": self.object,
            "POPULATE": self.populate,
            "ANCHOR": self.anchor,
            "TRANSPORT": self.transport,
            "ATTACH": self.attach,
            "CALL": self.call,
        }

    def object(self, typeName: Any, version: Any, empty: Any = False) -> Any:
        if type(typeName) is not str or type(version) is not int or type(empty) is not bool:
            raise GraphError("malformed object in a native batch")
        adapter = self.reader.adapterOf(typeName, version)
        obj = adapter.create(self.reader.context)
        # (Kept alive, so that its id stays its own while the batch is read.)
        self._kept.append(obj)
        if empty:
            # Its state is None (which pickle writes as no state at all).
            self.made[id(obj)] = None
            self.reader.queue(adapter, obj, version, None)
        else:
            self.made[id(obj)] = (adapter, version)
        return obj

    def populate(self, obj: Any, state: Any) -> None:
        made = self.made.get(id(obj))
        if made is None:
            raise GraphError("a native batch populates what it did not make, or twice")
        self.made[id(obj)] = None
        adapter, version = made
        self.reader.queue(adapter, obj, version, state)

    def anchor(self, name: Any) -> Any:
        found = self.reader.anchorNamed(name) if type(name) is str else None
        if found is None:
            raise GraphError(f"a native batch refers to nothing: {name!r}")
        if id(found) not in self.anchors:
            # This process's own object: the batch may refer to it, not
            # change it (a pickle's opcodes could: see check).
            attributes = getattr(found, "__dict__", None)
            self.anchors[id(found)] = (found, None if attributes is None else dict(attributes))
        return found

    def transport(self, meta: Any) -> Any:
        if type(meta) is not dict or not _META <= meta.keys():
            raise GraphError("malformed transport in a native batch")
        t = self.hooks.buildTransport(meta)
        self.built[id(t)] = self.hooks.addTransport(t, meta)
        return t

    def attach(self, t: Any, state: Any) -> None:
        slot = self.built.get(id(t))
        if slot is None or type(state) is not tuple or len(state) != 2:
            raise GraphError("malformed transport in a native batch")
        protocol, producer = state
        if id(protocol) not in self.made:
            raise GraphError("a transport's protocol that the native batch does not hold")
        self.built[id(t)] = None
        attachProtocol(t, protocol)
        if producer is not None:
            # (Registered at the commit, as a graph's.)
            self.hooks.producers[slot] = producer

    def call(self, when: Any, function: Any, args: Any, kw: Any) -> Any:
        # As the graph's call nodes (L{migrator.state._restore}).
        if when is None:
            # Cancelled once the batch is read (L{readNative}): a reactor
            # compacts its calls after enough cancellations, which would
            # look like a change of an anchor (L{guardAnchors}).
            call = self.hooks.reactor.callLater(0, _nothing)
            self.cancelled.append(call)
            return call
        if not (
            type(when) in (int, float)
            and type(function) is tuple
            and type(args) is tuple
            and type(kw) is dict
            and all(type(k) is str for k in kw)
        ):
            raise GraphError("malformed scheduled call in a native batch")
        if len(function) == 3 and function[0] == form.METHOD and type(function[2]) is str:
            held = id(function[1])
            if held not in self.made and held not in self.built and held not in self.anchors:
                raise GraphError("a scheduled call of a method of what the native batch does not hold")
            try:
                f = getattr(function[1], function[2])
            except AttributeError as e:
                raise GraphError(f"malformed method in a native batch: {e}") from e
        elif len(function) == 2 and function[0] == form.FUNCTION:
            f = self.hooks.adapters.functionNamed(function[1]) if type(function[1]) is str else None
            if f is None:
                raise GraphError(f"function {function[1]!r} is not allowed in this process")
        else:
            raise GraphError("malformed scheduled call's function in a native batch")
        if not callable(f):
            raise GraphError("a scheduled call of something not callable in a native batch")
        return self.hooks.heldCall(when, f, args, kw)

    def cancel(self) -> None:
        for call in self.cancelled:
            call.cancel()
        self.cancelled = []

    def check(self) -> None:
        """
        No anchor changed (see L{guardAnchors}), every object made was
        populated, every transport given its protocol.
        """
        self.guardAnchors()
        if any(m is not None for m in self.made.values()) or any(
            s is not None for s in self.built.values()
        ):
            raise GraphError("a native batch left an object without its state, or a transport without its protocol")

    def guardAnchors(self) -> None:
        """
        No anchor's attributes changed: a pickle's C{BUILD} can change the
        objects the unpickler holds, and the anchors are this process's
        own (its reactor, its ports' factories).  What changed is put
        back, and the batch refused.  (A number may change: the reactor
        counts the calls cancelled, and the batch's own cancelled calls
        are.)
        """
        for found, before in self.anchors.values():
            now = getattr(found, "__dict__", None)
            if now is not None and before is not None and (
                now.keys() != before.keys()
                or any(
                    now[k] is not v and not (type(v) in _NUMBERS and type(now[k]) in _NUMBERS)
                    for k, v in before.items()
                )
            ):
                now.clear()
                now.update(before)
                raise GraphError("a native batch changed an object of this process's own")


def _nothing() -> None:
    pass


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, markers: dict[str, Any]) -> None:
        super().__init__(file)
        self._markers = markers

    def find_class(self, module: str, name: str) -> Any:
        if module == form.__name__:
            found = self._markers.get(name)
            if found is not None:
                return found
        raise GraphError(f"refusing to load {module}.{name}: a native batch names its markers only")

    def persistent_load(self, pid: Any) -> Any:
        raise GraphError("refusing a persistent id in a native batch")


def readNative(data: Any, reader: GraphReader, hooks: Any) -> None:
    """
    Read a batch in the native form: its objects are made (and queued on
    C{reader} for populating at its C{finish}), its transports built and
    its calls held by C{hooks} (L{migrator.state._restore._RestoreHooks}:
    C{buildTransport}, C{addTransport}, C{heldCall}, and its C{reactor}
    for the calls restored cancelled).

    @raise GraphError: if it is malformed or names anything this process
        does not allow.
    """
    if type(data) is not bytes:
        raise GraphError("a native batch that is not bytes")
    batch = _Batch(reader, hooks)
    stream = io.BytesIO(data)
    unpickler = _Unpickler(stream, batch.markers())
    try:
        # One pickle per connection, one memo (each load reads at least a
        # byte).
        while stream.tell() < len(data):
            unpickler.load()
    except Exception as e:
        try:
            batch.guardAnchors()
        finally:
            batch.cancel()
        if isinstance(e, GraphError):
            raise
        raise GraphError(f"malformed native batch: {e.__class__.__name__}: {e}") from e
    try:
        batch.check()
    finally:
        batch.cancel()
