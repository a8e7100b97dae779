# -*- test-case-name: tests.test_namespace -*-
"""
An interactive session's namespace (a manhole's C{namespace} dictionary) as
plain data, and back, possibly in another Python version.

Nothing compiled crosses: no C{marshal}, no code objects, no pickled
functions (C{marshal} output of one Python version crashed another one).
The state is atoms, tuples, lists and dictionaries; what a namespace holds
travels as follows.

  - B{Plain values} by value, through a L{migrator.state._graph.GraphWriter}/L{GraphReader} pair
    of the namespace's own: one writer for all the names, so nested
    containers, shared references and cycles arrive as they were, across
    names.  Objects of importable classes go through the adapters
    registered for them, as everywhere in migrator (the registry stays the
    allow-list).
  - B{Modules} by name, imported again in the successor.  Functions and
    classes that importing finds (C{len}, C{os.path.join}) by module and
    qualified name, and so is any object a C{from module import name} in
    the history bound (C{from twisted.internet import reactor}: the
    successor's reactor, not a copy).
  - B{Functions and classes defined in the session} by their source text.
    The history (the manhole's C{historyLines}) is replayed, without
    running anything, through L{codeop.CommandCompiler} as the interpreter
    grouped it into blocks (history omits empty lines: where a line cannot
    continue the open block, an empty line is taken to have closed it; a
    block that never compiles is dropped a line at a time).  A block that
    is a single C{def}/C{class} statement (decorators included) defines
    that name.  A session-defined object's definition is the latest block
    of its name whose compiled code is I{equal} to the object's own (the
    function's; every method's of a class; for a decorated definition, a
    function reachable from the result through C{__wrapped__}, C{__func__}
    or its closure): equal code means the same text compiled alike, so a
    later block that failed, or an unrelated object bound to the name, is
    never taken for it.  The successor re-executes exactly those
    statements, in the new namespace, and binds what they make.  Classes
    and functions nested in a session class travel as that class and an
    attribute path.
  - The state a definition acquired after it ran: a function's default
    values and attributes, a class's non-dunder attributes (set or changed
    since), carried as values and set on the re-created object (where the
    carried value cannot move but re-running the definition made one, a
    lock in a class body say, the new one is kept, silently).
  - B{Instances of session classes} as instances of the re-created class,
    their C{__dict__} as state (members of a session C{Enum} by name);
    bound methods as their object and the method's name.
  - B{Anything else} (a socket, an open file, a generator, a frame, a
    lambda, a closure, an object without adapter) is bound in the successor
    to a L{NotMoved} placeholder, where it was (a top-level name or deep in
    a value; the rest of the value moves), whose C{repr}, attribute lookup
    and call say what it was and why it could not move.
    L{restoreNamespace} returns one notice per placeholder, to be shown to
    the session.

Definitions run in the successor's namespace as restored so far, so what a
C{def} or C{class} statement evaluates when it runs (decorators, default
values, annotations, bases, the class body) must be bound first.  The
capture computes those names with L{ast} (plus, for the session functions
and classes among them, the globals their code uses: a decorator's body
runs too) and orders the state as steps: the definitions in the order they
were typed, each preceded by the values of the names it needs (a name
bound to another current definition makes that definition run first,
whatever order it was typed in); then all other names.  Function bodies
look their globals up when called, in the restored namespace, as before.
A definition that cannot run in the successor (it needs a value that
refers back to the definition itself, as C{@registry.add} does; a module
the successor lacks; syntax its Python does not have) is bound to a
placeholder naming the error, as are the instances of a class that could
not be re-created.  Re-running a definition runs its decorators again,
with their side effects.

Entries the service put in the namespace (C{provided}) are not carried:
references to them stand for the successor's entries of the same names.
C{__builtins__} is not carried (the successor's interpreter adds its own).

For the manhole adapter (L{migrator.adapters._manhole}, which also carries
C{historyLines}, C{lineBuffer} and the interpreter's C{buffer}): the state is plain data
that any graph writer, or L{migrator.state._graph.dumpsPlain}, carries as it is;
the block being typed travels in it (L{pendingLines}, reported by
L{restoreNamespace} as not run yet), and L{sessionFutures} names the
C{__future__} features the session's compiler had turned on, for the
successor's interpreter (L{futureFlags}).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from migrator.adapters.namespace._capture import (
    _Capture,
    _Definition,
    _importedObjects,
    _NamespaceWriter,
)
from migrator.adapters.namespace._history import (
    CONSOLE,
    _Replay,
    _splitPending,
    _text,
    futureFeatures,
    futureFlags,
)
from migrator.adapters.namespace._objects import _ATOMS, _MISSING
from migrator.adapters.namespace._placeholders import (
    NotMoved,
    NotMovedAttributeError,
    NotMovedError,
    _shortRepr,
)
from migrator.adapters.namespace._restore import _Restore
from migrator.state._graph import GraphError, GraphReader, Unadaptable
from migrator.state._registry import AdapterRegistry

FORMAT = 1
"""The version of the state's layout, checked by L{restoreNamespace}."""


# -- capture ----------------------------------------------------------------


def captureNamespace(
    namespace: Mapping[str, Any],
    history: Sequence[str | bytes],
    registry: AdapterRegistry,
    *,
    pending: Sequence[str | bytes] | None = None,
    provided: Mapping[str, Any] | None = None,
    filename: str = CONSOLE,
) -> dict[str, Any]:
    """
    Capture an interactive session's namespace as plain data.  Nothing the
    user typed is executed here.

    @param namespace: the session's namespace (a manhole's C{namespace}).
    @param history: every line the user entered, in order (a manhole's
        C{historyLines}, C{bytes} or C{str}).
    @param registry: the adapters for objects of importable classes.
    @param pending: the lines of the block being typed, not run yet (the
        interpreter's C{buffer}).  If C{None}, a block left open at the end
        of C{history} counts as run only if it is a definition of an object
        in C{namespace}.
    @param provided: what the service put in the namespace (a manhole
        factory's C{namespace}): entries still bound to these objects are not
        carried, and references to them stand for the successor's own.
    @param filename: what the interpreter compiled the lines as.
    @return: the state: plain data for L{restoreNamespace}.
    """
    lines = [_text(line) for line in history]
    executed, waiting = _splitPending(
        lines, None if pending is None else [_text(line) for line in pending]
    )
    replay = _Replay(filename)
    blocks, trailing = replay.feed(executed)
    if trailing:
        closed = replay.close(trailing)
        if waiting is not None:
            if closed is not None:
                blocks.append(closed)
        elif (
            closed is not None
            and closed.defines is not None
            and _Capture(namespace, [closed], filename).topLevel(
                closed.defines, namespace.get(closed.defines, _MISSING)
            )
            is not None
        ):
            blocks.append(closed)
            waiting = []
        else:
            waiting = trailing
    provided = provided or {}
    providedNames: list[str] = []
    carried: list[str] = []
    skipped: list[str] = []
    for name, value in namespace.items():
        if not isinstance(name, str):
            skipped.append(_shortRepr(name))
        elif name == "__builtins__":
            continue
        elif name in provided and (
            provided[name] is value or (type(value) in _ATOMS and provided[name] == value)
        ):
            providedNames.append(name)
        else:
            carried.append(name)

    capture = _Capture(namespace, blocks, filename)
    for name in carried:
        capture.topLevel(name, namespace[name])
    for definition in capture.definitions:
        capture.expandDeps(definition)
    anchors = {
        id(value): name
        for name, value in provided.items()
        if isinstance(name, str) and type(value) not in _ATOMS
    }
    keep: list[Any] = []
    writer = _NamespaceWriter(
        registry.adapterFor, anchors, _importedObjects(blocks, keep), capture
    )

    def root(name: str) -> Any:
        capture.root = name
        writer.checkpoint()
        try:
            node = writer.write(namespace[name], name)
        except Unadaptable as e:
            writer.rollback()
            what = f"a {type(e.obj).__qualname__} ({_shortRepr(e.obj)})"
            return ("x", "gone", (None, name, e.path, what, e.why))
        writer.release()
        return node

    steps: list[Any] = []
    carriedSet = set(carried)
    written: set[str] = set()
    scheduled: set[int] = set()
    currentNamed = {d.name: d for d in capture.definitions if d.current}

    def bind(names: list[str]) -> None:
        names = [n for n in names if n not in written]
        if names:
            written.update(names)
            nodes: list[Any] = []
            for name in names:
                nodes += [name, root(name)]
            steps.append(["bind", nodes])

    def schedule(definition: _Definition) -> None:
        if definition.index in scheduled:
            return
        scheduled.add(definition.index)
        for dep in definition.deps:
            other = currentNamed.get(dep)
            if other is not None and other is not definition:
                schedule(other)
        bind([d for d in definition.deps if d in carriedSet and d != definition.name])
        steps.append(["define", definition.index])

    position = {id(block): i for i, block in enumerate(blocks)}
    for definition in sorted(currentNamed.values(), key=lambda d: position[id(d.block)]):
        schedule(definition)
    bind(carried)
    return {
        "format": FORMAT,
        "python": sys.version.split()[0],
        "filename": filename,
        # Definitions found while writing values follow those of names.
        "definitions": [d.plain() for d in capture.definitions],
        "steps": steps,
        "order": carried,
        "provided": providedNames,
        "skipped": skipped,
        "pending": list(waiting or []),
        "futures": futureFeatures(replay.flags),
    }


# -- restore ----------------------------------------------------------------


def pendingLines(state: Mapping[str, Any]) -> list[str]:
    """
    The lines of the block the user was typing, not run yet (for the
    successor's interpreter C{buffer}).
    """
    return [str(line) for line in state.get("pending", ())]


def sessionFutures(state: Mapping[str, Any]) -> list[str]:
    """
    The C{__future__} features the session's compiler had turned on (for
    the successor's interpreter's compiler; see L{futureFlags}).
    """
    return [str(name) for name in state.get("futures", ())]


def restoreNamespace(
    state: Mapping[str, Any],
    registry: AdapterRegistry,
    *,
    provided: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """
    Rebuild a namespace captured by L{captureNamespace}, possibly by
    another Python version.  The session's definitions are re-run here;
    modules it had imported are imported.  Only call this with a state from
    the incumbent (over the takeover's authenticated control channel): it
    runs the code the session's user typed, with the successor's rights.

    @param registry: the adapters of this process (the allow-list for
        objects of importable classes).
    @param provided: what this service puts in a new session's namespace:
        its entries come first, and stand for the incumbent's entries of
        the same names.
    @return: the namespace, and one line per thing the user should know:
        each value that could not move (now bound to a L{NotMoved}), each
        definition that could not be re-run, the block left half typed.
    @raise GraphError: if C{state} is malformed or of another format.
    """
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise GraphError(
            f"not a namespace state of format {FORMAT}: "
            f"{state.get('format') if isinstance(state, Mapping) else type(state).__name__!r}"
        )
    namespace: dict[str, Any] = dict(provided or {})
    hooks = _Restore(state, namespace)
    anchors: dict[str, Any] = {}
    for name in state.get("provided", ()):
        if name in namespace:
            anchors[name] = namespace[name]
        else:
            anchors[name] = namespace[name] = hooks.placeholder(
                name,
                "an entry the service provided",
                "the new service provides nothing under that name",
            )
    reader = GraphReader(registry.adapterNamed, anchors, hooks)
    try:
        for step in state.get("steps", ()):
            what, payload = step
            if what == "define":
                hooks.define(payload)
            elif what == "bind":
                values = []
                for i in range(0, len(payload), 2):
                    values.append((str(payload[i]), reader.read(payload[i + 1])))
                reader.finish()
                namespace.update(values)
            else:
                raise GraphError(f"unknown step {what!r}")
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise GraphError(f"malformed namespace state: {e.__class__.__name__}: {e}") from e
    for name in state.get("order", ()):
        if name in namespace:
            namespace[name] = namespace.pop(name)
    notices = hooks.notices()
    for key in state.get("skipped", ()):
        notices.append(f"not moved: the entry {key} (the namespace key is not a string)")
    pending = pendingLines(state)
    if pending:
        first = next((line for line in pending if line.strip()), pending[0])
        notices.append(
            f"not run yet: the block being typed ({first.strip()!r}, "
            f"{len(pending)} line{'s' if len(pending) != 1 else ''})"
        )
    return namespace, notices


__all__ = [
    "CONSOLE",
    "FORMAT",
    "NotMoved",
    "NotMovedAttributeError",
    "NotMovedError",
    "captureNamespace",
    "futureFeatures",
    "futureFlags",
    "pendingLines",
    "restoreNamespace",
    "sessionFutures",
]
