# -*- test-case-name: tests.test_native -*-
"""
A stream's batch in the native form (L{migrator.state._nativeform}),
successor side: L{readNative} decodes its records with the unpickler of
every other message, which names no class and no function (plain data
only, L{migrator.state._nodes.loadsPlain}), then makes its objects:
adapted objects by their adapters' C{create}, populated by their
C{populate} once the batch is read, their states translated, as the
graph reader (L{migrator.state._reader}) does; transports on the batch's
descriptors and scheduled calls held until the commit, as for a graph's
nodes.  Nothing is called while the records are decoded, and afterwards
only what the graph reader would call.
"""

from __future__ import annotations

import io
from typing import Any

from migrator._twistedinternals import attachProtocol
from migrator.state import _nativeform as form
from migrator.state._graph import GraphError, GraphReader
from migrator.state._nodes import plainUnpickler

#: What a transport's description holds (L{migrator.state._capturehooks}).
_META = frozenset({"fd", "family", "unix", "port", "peer", "pending", "reading", "producerPaused", "streaming"})


def _records(data: Any) -> list[Any]:
    if type(data) is not bytes:
        raise GraphError("a native batch that is not bytes")
    stream = io.BytesIO(data)
    unpickler = plainUnpickler(stream)
    records: list[Any] = []
    try:
        # One pickle per connection, one memo (each load reads at least a
        # byte).
        while stream.tell() < len(data):
            part = unpickler.load()
            if type(part) is not list:
                raise GraphError("a native batch's part that is not a list of records")
            records.extend(part)
    except GraphError:
        raise
    except Exception as e:
        raise GraphError(f"undecodable native batch: {e.__class__.__name__}: {e}") from e
    return records


class _Batch:
    def __init__(self, records: list[Any], reader: GraphReader, hooks: Any) -> None:
        self.records = records
        self.reader = reader
        self.hooks = hooks
        self.objects: list[Any] = [None] * len(records)
        self.adapters: list[Any] = [None] * len(records)
        #: Each transport's slot among the restored ones (for its producer).
        self.slots: dict[int, int] = {}

    def resolve(self, ref: Any) -> Any:
        """
        What a reference stands for: a record's object, or an anchor.
        """
        if type(ref) is int and 0 <= ref < len(self.records):
            found = self.objects[ref]
            if found is not None:
                return found
        elif type(ref) is str:
            found = self.reader.anchorNamed(ref)
            if found is not None:
                return found
        raise GraphError(f"a native batch refers to nothing: {ref!r}")

    def make(self) -> None:
        """
        Make every object and transport (the calls, which may be of their
        methods, after).
        """
        reader, hooks = self.reader, self.hooks
        for i, record in enumerate(self.records):
            kind = record[0] if type(record) is tuple and record else None
            if kind == form.OBJECT and len(record) == 5:
                adapter = reader.adapterOf(record[1], record[2])
                self.adapters[i] = adapter
                self.objects[i] = adapter.create(reader.context)
            elif kind == form.TRANSPORT and len(record) == 4:
                meta = record[1]
                if type(meta) is not dict or not _META <= meta.keys():
                    raise GraphError("malformed transport in a native batch")
                t = hooks.buildTransport(meta)
                self.slots[i] = hooks.addTransport(t, meta)
                self.objects[i] = t
            elif kind != form.CALL or len(record) != 5:
                raise GraphError("malformed record in a native batch")
        for i, record in enumerate(self.records):
            if record[0] == form.CALL:
                self.objects[i] = self.call(*record[1:])

    def call(self, when: Any, function: Any, args: Any, kw: Any) -> Any:
        # As the graph's call nodes (L{migrator.state._restore}).
        if when is None:
            return self.hooks.cancelledCall()
        if not (
            type(when) in (int, float)
            and type(function) is tuple
            and type(args) is tuple
            and type(kw) is dict
            and all(type(k) is str for k in kw)
        ):
            raise GraphError("malformed scheduled call in a native batch")
        if len(function) == 3 and function[0] == form.METHOD and type(function[2]) is str:
            try:
                f = getattr(self.resolve(function[1]), function[2])
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

    def populate(self) -> None:
        """
        Give every object its state and every transport its protocol; the
        objects are queued for populating in the order the graph reader
        would queue them: an object after those its state refers to
        (depth first, in its entries' order), as their states end first.
        """
        records, seen = self.records, [False] * len(self.records)
        n = len(records)
        OBJECT, queue, follow = form.OBJECT, self.reader.queue, self._follow
        for first, record in enumerate(records):
            if record[0] != OBJECT or seen[first]:
                continue
            seen[first] = True
            refs = follow(first)
            if not any(type(j) is int and 0 <= j < n and not seen[j] for j in refs):
                # (Most: a protocol refers to its factory, and its
                # transport, met already.)
                queue(self.adapters[first], self.objects[first], record[2], record[3])
                continue
            stack = [(first, iter(refs))]
            while stack:
                i, pending = stack[-1]
                for j in pending:
                    if type(j) is int and 0 <= j < n and not seen[j]:
                        seen[j] = True
                        stack.append((j, iter(follow(j))))
                        break
                else:
                    stack.pop()
                    if records[i][0] == OBJECT:
                        _, _, version, state, _ = records[i]
                        queue(self.adapters[i], self.objects[i], version, state)
        for i, record in enumerate(records):
            if record[0] == form.TRANSPORT:
                protocol = record[2]
                if not (
                    type(protocol) is int
                    and 0 <= protocol < len(self.records)
                    and self.adapters[protocol] is not None
                ):
                    raise GraphError("a transport's protocol that the native batch does not hold")
                attachProtocol(self.objects[i], self.objects[protocol])
                if record[3] is not None:
                    # (Registered at the commit, as a graph's.)
                    self.hooks.producers[self.slots[i]] = self.resolve(record[3])

    def _follow(self, i: int) -> list[Any]:
        """
        What the graph reader would read inside record C{i}'s node: an
        object's references (put in its state), a transport's protocol and
        producer, a call's method's object.
        """
        record = self.records[i]
        kind = record[0]
        if kind == form.OBJECT:
            return self._references(i)
        if kind == form.TRANSPORT:
            return [record[2], record[3]]
        function = record[2]
        return [function[1]] if type(function) is tuple and function[0] == form.METHOD else []

    def _references(self, i: int) -> list[Any]:
        """
        Put the objects an object's state refers to in it, in its entries'
        places; return the references (for the populate order).
        """
        _, _, _, state, refs = self.records[i]
        if refs is None:
            return []
        if type(refs) is not dict or type(state) is not dict:
            raise GraphError("malformed references in a native batch")
        for key, ref in refs.items():
            if key not in state:
                raise GraphError("a reference without its entry in a native batch")
            state[key] = self.resolve(ref)
        return list(refs.values())


def readNative(data: Any, reader: GraphReader, hooks: Any) -> None:
    """
    Read a batch in the native form: its objects are made (and queued on
    C{reader} for populating at its C{finish}), its transports built and
    its calls held by C{hooks} (L{migrator.state._restore._RestoreHooks}:
    C{buildTransport}, C{addTransport}, C{heldCall}, C{cancelledCall}).

    @raise GraphError: if it is malformed or names anything this process
        does not allow.
    """
    batch = _Batch(_records(data), reader, hooks)
    try:
        batch.make()
        batch.populate()
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
        raise GraphError(f"malformed native batch: {e.__class__.__name__}: {e}") from e
