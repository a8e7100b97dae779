# -*- test-case-name: tests.test_native -*-
"""
A stream's batch in the native form (L{migrator.state._nativeform}),
successor side: L{readNative} unpickles it with the C unpickler, whose
C{find_class} admits the form's four names only, each mapped to a
function of this reader that checks what it is given.  Objects are made
by their adapters' C{create} and populated by their C{populate} once the
batch is read, as the graph reader (L{migrator.state._reader}) does;
their states are translated the same way; transports are built on the
batch's descriptors as for a graph's transport nodes.

Nothing else can be named: no other class, function or module, and no
persistent id.  (A pickle may still apply C{BUILD} to an object it made,
setting its attributes without its adapter: the control channel's peer
is checked to be this user's, who could do as much to this process in
other ways.)
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from migrator._twistedinternals import attachProtocol
from migrator.state import _nativeform as form
from migrator.state._graph import GraphError, GraphReader

#: What a transport's description holds (L{migrator.state._capturehooks}).
_META = frozenset({"fd", "family", "unix", "port", "peer", "pending", "reading", "producerPaused", "streaming"})


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, reader: GraphReader, hooks: Any) -> None:
        self._file = io.BytesIO(data)
        super().__init__(self._file)
        self._reader = reader
        self._hooks = hooks
        self._names = {
            "obj": self._obj,
            "state": self._state,
            "anchor": self._anchor,
            "transport": self._transport,
            "call": self._call,
            "method": self._method,
            "function": self._function,
        }
        #: The objects made and not populated yet, by id, with their
        #: adapter and version; those made, all along; the transports
        #: without their protocol yet, by id.
        self.unpopulated: dict[int, tuple[Any, Any, int]] = {}
        self.made: dict[int, Any] = {}
        self.bare: dict[int, Any] = {}
        #: The anchors and transports named, by id (methods may be theirs).
        self.others: dict[int, Any] = {}

    def position(self) -> int:
        return self._file.tell()

    def find_class(self, module: str, name: str) -> Any:
        if module == form.MODULE and name in form.NAMES:
            return self._names[name]
        raise GraphError(f"refusing to load {module}.{name}: a native batch names only its own calls")

    def persistent_load(self, pid: Any) -> Any:
        raise GraphError("refusing a persistent id in a native batch")

    def _obj(self, typeName: Any, version: Any) -> Any:
        adapter = self._reader.adapterOf(typeName, version)
        obj = adapter.create(self._reader.context)
        self.unpopulated[id(obj)] = (obj, adapter, version)
        self.made[id(obj)] = obj
        return obj

    def _state(self, target: Any, box: Any) -> None:
        if type(box) is not tuple or len(box) != 1:
            raise GraphError("malformed state in a native batch")
        entry = self.unpopulated.pop(id(target), None)
        if entry is not None and entry[0] is target:
            self._reader.queue(entry[1], target, entry[2], box[0])
            return
        t = self.bare.pop(id(target), None)
        if t is not None and t is target:
            protocol = box[0]
            if self.made.get(id(protocol)) is not protocol:
                raise GraphError("a transport's protocol that the native batch did not make")
            attachProtocol(t, protocol)
            return
        raise GraphError("a state for something the native batch did not make, or a second one")

    def _anchor(self, name: Any) -> Any:
        found = self._reader.anchorNamed(name)
        if found is None:
            raise GraphError(f"this process has nothing to match {name!r}")
        self.others[id(found)] = found
        return found

    def _transport(self, meta: Any) -> Any:
        if type(meta) is not dict or not _META <= meta.keys():
            raise GraphError("malformed transport in a native batch")
        try:
            t = self._hooks.buildTransport(meta)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise GraphError(f"malformed transport in a native batch: {e}") from e
        self._hooks.addTransport(t, meta)
        self.bare[id(t)] = t
        self.others[id(t)] = t
        return t

    def _call(self, when: Any, function: Any, args: Any, kw: Any) -> Any:
        # As the graph's call nodes (L{migrator.state._restore}): held by
        # the commit's gate.
        if when is None:
            return self._hooks.cancelledCall()
        if not (
            type(when) in (int, float)
            and callable(function)
            and type(args) is tuple
            and type(kw) is dict
            and all(type(k) is str for k in kw)
        ):
            raise GraphError("malformed scheduled call in a native batch")
        return self._hooks.heldCall(when, function, args, kw)

    def _method(self, target: Any, name: Any) -> Any:
        if type(name) is not str or (
            self.made.get(id(target)) is not target and self.others.get(id(target)) is not target
        ):
            raise GraphError("a method of something the native batch did not make")
        try:
            return getattr(target, name)
        except AttributeError as e:
            raise GraphError(f"malformed method in a native batch: {e}") from e

    def _function(self, name: Any) -> Any:
        function = self._hooks.adapters.functionNamed(name) if type(name) is str else None
        if function is None:
            raise GraphError(f"function {name!r} is not allowed in this process")
        return function


def readNative(data: Any, reader: GraphReader, hooks: Any) -> list[Any]:
    """
    Read a batch in the native form: its objects are made (and queued on
    C{reader} for populating at its C{finish}), its transports built by
    C{hooks} (L{migrator.state._restore._RestoreHooks}: C{buildTransport}
    and C{addTransport}).

    @return: the batch's protocols.
    @raise GraphError: if it is malformed or names anything else.
    """
    if type(data) is not bytes:
        raise GraphError("a native batch that is not bytes")
    unpickler = _Unpickler(data, reader, hooks)
    roots = []
    try:
        # One pickle per protocol, one memo (each load reads at least a
        # byte).
        while unpickler.position() < len(data):
            roots.append(unpickler.load())
    except GraphError:
        raise
    except Exception as e:
        raise GraphError(f"undecodable native batch: {e.__class__.__name__}: {e}") from e
    if unpickler.unpopulated or unpickler.bare:
        raise GraphError("a native batch with objects or transports left without their state")
    return roots
