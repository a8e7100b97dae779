# -*- test-case-name: tests.test_namespace -*-
"""
An interactive session's namespace (a manhole's C{namespace} dictionary) as
plain data, and back, possibly in another Python version.

Nothing compiled crosses: no C{marshal}, no code objects, no pickled
functions (C{marshal} output of one Python version crashed another one).
The state is atoms, tuples, lists and dictionaries; what a namespace holds
travels as follows.

  - B{Plain values} by value, through a L{GraphWriter}/L{GraphReader} pair
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

For the manhole adapter (which will also carry C{historyLines},
C{lineBuffer} and the interpreter's C{buffer}): the state is plain data
that any graph writer, or L{migrator._graph.dumpsPlain}, carries as it is;
the block being typed travels in it (L{pendingLines}, reported by
L{restoreNamespace} as not run yet), and L{sessionFutures} names the
C{__future__} features the session's compiler had turned on, for the
successor's interpreter (L{futureFlags}).
"""

from __future__ import annotations
import __future__

import ast
import codeop
import enum
import functools
import importlib
import io
import socket
import sys
import types
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from ._adapters import AdapterRegistry, _slotted
from ._graph import GraphError, GraphReader, GraphWriter, Unadaptable

FORMAT = 1
"""The version of the state's layout, checked by L{restoreNamespace}."""

CONSOLE = "<console>"
"""The file name the manhole's interpreter compiles the user's lines with."""

_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_MISSING = object()
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, type)
# Builtin values the object graph has no node for: how to write them, and
# (by type name) how to make them again.
_VALUES: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    complex: lambda v: (v.real, v.imag),
    range: lambda v: (v.start, v.stop, v.step),
    slice: lambda v: (v.start, v.stop, v.step),
    type(Ellipsis): lambda v: (),
    type(NotImplemented): lambda v: (),
}
_MAKE: dict[str, Callable[..., Any]] = {
    "complex": complex,
    "range": range,
    "slice": slice,
    "ellipsis": lambda: Ellipsis,
    "NotImplementedType": lambda: NotImplemented,
}
# Py_TPFLAGS_HEAPTYPE: a class made by a class statement (not a builtin type).
_HEAPTYPE = 1 << 9


class _PlainInstance:
    """
    The layout of an instance whose whole state is its C{__dict__}.
    """


# -- placeholders -----------------------------------------------------------


class NotMovedError(Exception):
    """
    Something was done with a L{NotMoved} placeholder.
    """


class NotMovedAttributeError(NotMovedError, AttributeError):
    """
    An attribute of a L{NotMoved} placeholder was looked up (also an
    C{AttributeError}, so that C{hasattr} and C{getattr(o, n, default)}
    answer as for any object without that attribute).
    """


class NotMoved:
    """
    Stands, in the successor, for a value that could not move.  Its C{repr}
    says what the value was and why it stayed behind; any attribute lookup
    or call raises L{NotMovedError} saying the same.
    """

    __slots__ = ("_label", "_what", "_why")

    def __init__(self, label: str, what: str, why: str) -> None:
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_what", what)
        object.__setattr__(self, "_why", why)

    def __repr__(self) -> str:
        return f"<not moved: {self._label!r} was {self._what}: {self._why}>"

    __str__ = __repr__

    def __getattr__(self, name: str) -> Any:
        raise NotMovedAttributeError(f"{self!r} (looking up {name!r})")

    def __setattr__(self, name: str, value: Any) -> None:
        raise NotMovedAttributeError(f"{self!r} (setting {name!r})")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotMovedError(f"{self!r} (calling it)")


def _notice(placeholder: NotMoved) -> str:
    """
    The line printed to the session about a placeholder after the move.
    """
    return f"not moved: {placeholder._label!r} was {placeholder._what}: {placeholder._why}"


def _shortRepr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as e:
        text = f"<{type(value).__name__} whose repr failed: {e.__class__.__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


# -- replaying the history --------------------------------------------------


def _text(line: str | bytes) -> str:
    if isinstance(line, bytes):
        return line.decode("utf-8", "replace")
    return line


def futureFeatures(flags: int) -> list[str]:
    """
    The names of the C{__future__} features that compiler C{flags} turn on.
    """
    return [
        name
        for name in __future__.all_feature_names
        if flags & getattr(__future__, name).compiler_flag
    ]


def futureFlags(names: Iterable[str]) -> int:
    """
    The compiler flags of the C{__future__} features C{names} (those this
    Python knows; the others are mandatory here, or gone).
    """
    flags = 0
    for name in names:
        flag = getattr(getattr(__future__, str(name), None), "compiler_flag", None)
        if isinstance(flag, int):
            flags |= flag
    return flags


@attrs.frozen
class _Block:
    """
    One group of lines the interpreter compiled together (and ran).

    @ivar lines: the lines, the empty one that closed the block included.
    @ivar code: what the interpreter's compiler made of them.
    @ivar futures: the C{__future__} features in effect for them.
    @ivar defines: the name bound, if the block is a single C{def} or
        C{class} statement.
    @ivar node: that statement.
    @ivar codes: every code object compiled from the block.
    @ivar imports: the C{(module, name)} pairs its C{from module import
        name} statements imported.
    """

    lines: tuple[str, ...]
    code: types.CodeType = attrs.field(repr=False)
    futures: tuple[str, ...]
    defines: str | None
    node: ast.stmt | None = attrs.field(eq=False, repr=False)
    codes: list[types.CodeType] = attrs.field(eq=False, repr=False)
    imports: tuple[tuple[str, str], ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def source(self) -> str:
        return "\n".join(self.lines)


def _codesIn(code: types.CodeType) -> list[types.CodeType]:
    found: list[types.CodeType] = []
    todo = [code]
    while todo:
        for const in todo.pop().co_consts:
            if isinstance(const, types.CodeType):
                found.append(const)
                todo.append(const)
    return found


class _Replay:
    """
    Groups history lines into the blocks the interpreter ran, with the
    interpreter's own compiler (which also remembers C{__future__}
    imports).
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.compiler = codeop.CommandCompiler()

    @property
    def flags(self) -> int:
        return int(getattr(self.compiler.compiler, "flags", 0))

    def _attempt(self, lines: list[str]) -> types.CodeType | None | Exception:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return self.compiler("\n".join(lines), self.filename, "single")
            except (SyntaxError, OverflowError, ValueError) as e:
                return e

    def _block(self, lines: list[str], code: types.CodeType, flags: int) -> _Block:
        defines: str | None = None
        node: ast.stmt | None = None
        imports: list[tuple[str, str]] = []
        try:
            tree = ast.parse("\n".join(lines), self.filename, mode="single")
        except (SyntaxError, ValueError):
            tree = None
        if isinstance(tree, ast.Interactive):
            if len(tree.body) == 1 and isinstance(tree.body[0], _DEFINITIONS):
                node = tree.body[0]
                defines = node.name
            for sub in ast.walk(tree):
                if isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                    imports += [(sub.module, a.name) for a in sub.names if a.name != "*"]
        return _Block(
            tuple(lines),
            code,
            tuple(futureFeatures(flags)),
            defines,
            node,
            _codesIn(code),
            tuple(imports),
        )

    def feed(self, lines: Sequence[str]) -> tuple[list[_Block], list[str]]:
        """
        Replay C{lines}.

        @return: the complete blocks, and the lines of the block still open
            at the end.
        """
        blocks: list[_Block] = []
        queue = deque(lines)
        buffer: list[str] = []
        while queue:
            line = queue.popleft()
            flags = self.flags
            result = self._attempt(buffer + [line])
            if isinstance(result, types.CodeType):
                blocks.append(self._block(buffer + [line], result, flags))
                buffer = []
            elif result is None:
                buffer.append(line)
            elif not buffer:
                pass  # a line the interpreter refused: nothing ran
            else:
                # The line cannot continue the open block: an empty line
                # (never kept in history) closed that block before it.
                closed = self.close(buffer)
                if closed is not None:
                    blocks.append(closed)
                    queue.appendleft(line)
                else:
                    # Not a block after all (a line that was recalled but
                    # never entered, say): start again one line further.
                    queue.extendleft(reversed(buffer[1:] + [line]))
                buffer = []
        return blocks, buffer

    def close(self, buffer: list[str]) -> _Block | None:
        """
        The block C{buffer} is, closed by an empty line, or C{None} if that
        does not compile.
        """
        if not buffer:
            return None
        flags = self.flags
        result = self._attempt(buffer + [""])
        if isinstance(result, types.CodeType):
            return self._block(buffer + [""], result, flags)
        return None


def _definitionTimeNames(node: ast.stmt) -> list[str]:
    """
    The names a C{def} or C{class} statement looks up when it runs (not
    when the function it makes is called): decorators, defaults,
    annotations, bases, keywords, and the class body outside its methods.
    """
    names: list[str] = []

    def collect(tree: ast.AST | None) -> None:
        if tree is None:
            return
        for sub in ast.walk(tree):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                if sub.id not in names:
                    names.append(sub.id)

    def visit(stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = stmt.args
            expressions: list[ast.expr | None] = [
                *stmt.decorator_list,
                *arguments.defaults,
                *arguments.kw_defaults,
            ]
            for expr in expressions:
                collect(expr)
            for arg in [
                *arguments.posonlyargs,
                *arguments.args,
                *arguments.kwonlyargs,
                arguments.vararg,
                arguments.kwarg,
            ]:
                if arg is not None:
                    collect(arg.annotation)
            collect(stmt.returns)
        elif isinstance(stmt, ast.ClassDef):
            for expr in [*stmt.decorator_list, *stmt.bases]:
                collect(expr)
            for keyword in stmt.keywords:
                collect(keyword.value)
            for inner in stmt.body:
                visit(inner)
        else:
            collect(stmt)

    visit(node)
    return names


# -- what an object is --------------------------------------------------------


def _resolve(module: str, qualname: str) -> Any:
    """
    Import C{module} and look C{qualname} up in it (a submodule, if it is
    not an attribute yet: C{from twisted.internet import reactor}).
    """
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            if not isinstance(target, types.ModuleType):
                raise
            target = importlib.import_module(f"{target.__name__}.{part}")
    return target


def _importableName(value: Any) -> tuple[str, str] | None:
    """
    The module and qualified name that find C{value} again, if it is a
    function or class (or builtin) that importing finds.
    """
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module not in sys.modules:
        return None
    target: Any = sys.modules[module]
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except AttributeError:
        return None
    return (module, qualname) if target is value else None


def _boundAs(owner: Any, name: Any, method: Any) -> bool:
    """
    Whether C{method} is what looking C{name} up on C{owner} gives.
    """
    if owner is None or isinstance(owner, types.ModuleType) or not isinstance(name, str):
        return False
    try:
        return bool(getattr(owner, name) == method)
    except Exception:
        return False


def _plainLayout(cls: type) -> bool:
    """
    Whether all the state of an instance of C{cls} is in its C{__dict__}.
    """
    return (
        cls.__basicsize__ == _PlainInstance.__basicsize__
        and cls.__itemsize__ == 0
        and not _slotted(cls)
    )


def _functionsIn(value: Any, limit: int = 64) -> Iterator[types.FunctionType]:
    """
    Functions reachable from a decorated definition's result: itself, what
    it wraps, its closure.
    """
    seen: set[int] = set()
    todo: deque[tuple[Any, int]] = deque([(value, 0)])
    while todo and len(seen) < limit:
        obj, depth = todo.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            yield obj
            for cell in obj.__closure__ or ():
                try:
                    todo.append((cell.cell_contents, depth + 1))
                except ValueError:
                    pass
        if depth < 4:
            for name in ("__wrapped__", "__func__", "fget", "fset", "fdel", "func"):
                try:
                    inner = getattr(obj, name, None)
                except Exception:
                    inner = None
                if inner is not None:
                    todo.append((inner, depth + 1))


def _bodyFunction(cls: type, value: Any) -> types.FunctionType | None:
    """
    The function C{value} (a class dictionary entry) is, if the class
    statement of C{cls} made it.
    """
    if not isinstance(value, (types.FunctionType, staticmethod, classmethod, property)):
        return None
    value = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
    if isinstance(value, types.FunctionType) and value.__qualname__.startswith(
        cls.__qualname__ + "."
    ):
        return value
    return None


def _fromClassStatement(cls: type, name: str, value: Any) -> bool:
    """
    Whether the class dictionary entry C{name} is class machinery or made
    by the class statement (methods, nested classes): not state.
    """
    if name.startswith("__") and name.endswith("__"):
        return True
    if _bodyFunction(cls, value) is not None:
        return True
    if isinstance(value, type) and value.__qualname__.startswith(cls.__qualname__ + "."):
        return True
    return False


# -- capture ----------------------------------------------------------------


@attrs.define
class _Definition:
    """
    A session definition to re-run in the successor.

    @ivar current: whether the object is what its name is bound to in the
        namespace (else the statement runs without changing that binding).
    """

    index: int
    name: str
    block: _Block
    current: bool
    decorated: bool
    deps: list[str]

    def plain(self) -> list[Any]:
        kind = "class" if isinstance(self.block.node, ast.ClassDef) else "function"
        return [self.name, kind, self.block.source, list(self.block.futures), self.current]


class _NamespaceWriter(GraphWriter):
    """
    A L{GraphWriter} for which some objects, containers included, stand
    for the successor's own, whatever adapters their classes have: the
    service's own entries of the namespace (anchors without state: the
    successor's entries of the same names stand for them) and what the
    session imported by name from a module (C{from twisted.internet import
    reactor}: the successor's C{reactor}).
    """

    def __init__(
        self,
        adapterFor: Callable[[type], Any],
        provided: dict[int, str],
        imported: dict[int, tuple[str, str]],
        special: Callable[[Any, GraphWriter, str], Any],
    ) -> None:
        GraphWriter.__init__(self, adapterFor, None, special)
        self._provided = provided
        self._imported = imported

    def _writeNew(self, value: Any, kind: type) -> Any:
        anchor = self._provided.get(id(value))
        if anchor is not None:
            return ("a", self._remember(value), anchor, None, None, None)
        imported = self._imported.get(id(value))
        if imported is not None and not isinstance(value, types.ModuleType):
            return ("x", "ref", imported)
        return GraphWriter._writeNew(self, value, kind)


def _importedObjects(blocks: Iterable[_Block], keep: list[Any]) -> dict[int, tuple[str, str]]:
    """
    The objects that the blocks' C{from module import name} statements
    bound, as this process has them now (nothing is imported here).
    """
    found: dict[int, tuple[str, str]] = {}
    for block in blocks:
        for module, name in block.imports:
            owner = sys.modules.get(module)
            value = getattr(owner, name, _MISSING) if owner is not None else _MISSING
            if value is _MISSING:
                value = sys.modules.get(f"{module}.{name}", _MISSING)
            if value is not _MISSING and type(value) not in _ATOMS:
                keep.append(value)
                found[id(value)] = (module, name)
    return found


def _paths(root: Any, rootLabel: str, limit: int = 20000) -> dict[int, str]:
    """
    Where each object inside C{root} is, as a Python-ish expression
    (breadth first, so the shortest; only computed when something in
    C{root} cannot move).
    """
    found = {id(root): rootLabel}
    todo: deque[tuple[Any, str]] = deque([(root, rootLabel)])
    while todo and len(found) < limit:
        obj, label = todo.popleft()
        children: list[tuple[Any, str]] = []
        if isinstance(obj, (list, tuple)):
            children = [(v, f"{label}[{i}]") for i, v in enumerate(obj)]
        elif isinstance(obj, dict):
            children = [
                (v, f"{label}[{k!r}]" if type(k) in _ATOMS else f"{label}[...]")
                for k, v in obj.items()
            ]
        elif isinstance(obj, (set, frozenset)):
            children = [(v, f"{label} (a member)") for v in obj]
        elif not isinstance(obj, (types.ModuleType, NotMoved)):
            if isinstance(obj, types.FunctionType):
                children = [
                    (v, f"{label}.__defaults__[{i}]") for i, v in enumerate(obj.__defaults__ or ())
                ]
                children += [(v, f"{label}.{k}") for k, v in (obj.__kwdefaults__ or {}).items()]
            if isinstance(obj, types.MethodType):
                children.append((obj.__self__, f"{label}.__self__"))
            state = getattr(obj, "__dict__", None)
            if isinstance(state, (dict, types.MappingProxyType)):
                children += [(v, f"{label}.{k}") for k, v in state.items()]
        for child, childLabel in children:
            if id(child) not in found and type(child) not in _ATOMS:
                found[id(child)] = childLabel
                todo.append((child, childLabel))
    return found


class _Capture:
    """
    The namespace writer's C{special} hook, and what it learns on the way:
    the definitions to re-run.
    """

    def __init__(
        self,
        namespace: Mapping[str, Any],
        blocks: list[_Block],
        filename: str,
    ) -> None:
        self._namespace = namespace
        self._filename = filename
        self.definitions: list[_Definition] = []
        self._byObject: dict[int, _Definition | None] = {}
        self._keep: list[Any] = []
        self._blocksNamed: dict[str, list[_Block]] = {}
        for block in blocks:
            if block.defines is not None:
                self._blocksNamed.setdefault(block.defines, []).append(block)
        name = namespace.get("__name__")
        self._modules = {"builtins", "__main__", "__console__"} | (
            {name} if isinstance(name, str) else set()
        )
        self._root = ""
        self._paths: dict[int, str] | None = None

    @property
    def root(self) -> str:
        """
        The name whose value is being written.
        """
        return self._root

    @root.setter
    def root(self, name: str) -> None:
        self._root = name
        self._paths = None

    # -- finding definitions --------------------------------------------------

    def _sessionFunction(self, value: Any) -> bool:
        return isinstance(value, types.FunctionType) and (
            value.__globals__ is self._namespace or value.__code__.co_filename == self._filename
        )

    def _sessionClass(self, value: Any) -> bool:
        if (
            not isinstance(value, type)
            or not value.__flags__ & _HEAPTYPE
            or _importableName(value) is not None
        ):
            return False
        if value.__module__ in self._modules:
            return True
        return any(
            f.__code__.co_filename == self._filename
            for f in map(functools.partial(_bodyFunction, value), vars(value).values())
            if f is not None
        )

    def _classMatches(self, cls: type, block: _Block) -> bool:
        mine = [
            f
            for f in map(functools.partial(_bodyFunction, cls), vars(cls).values())
            if f is not None and f.__code__.co_filename == self._filename
        ]
        # A class without methods of its own can only be told by its name.
        return all(f.__code__ in block.codes for f in mine)

    def _matches(self, value: Any, block: _Block) -> bool:
        """
        Whether C{value} is what C{block} made (compared by compiled code:
        in one process, the same text compiled alike gives equal code).
        """
        node = block.node
        if isinstance(node, ast.ClassDef):
            if isinstance(value, type):
                return self._classMatches(value, block)
            if not node.decorator_list:
                return False
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.decorator_list:
                # The def's own code, not a nested function's.
                return isinstance(value, types.FunctionType) and value.__code__ in [
                    c for c in block.code.co_consts if isinstance(c, types.CodeType)
                ]
        else:
            return False
        return any(f.__code__ in block.codes for f in _functionsIn(value))

    def definitionOf(self, value: Any, names: Iterable[str]) -> _Definition | None:
        """
        The definition of C{value}: the latest block defining one of
        C{names} (or the name C{value} calls itself) that made it.
        """
        key = id(value)
        if key in self._byObject:
            return self._byObject[key]
        own = getattr(value, "__name__", None)
        candidates = list(names) + ([own] if isinstance(own, str) else [])
        found: _Definition | None = None
        for name in candidates:
            for block in reversed(self._blocksNamed.get(name, ())):
                if self._matches(value, block):
                    assert block.node is not None
                    found = _Definition(
                        index=len(self.definitions),
                        name=name,
                        block=block,
                        current=self._namespace.get(name, _MISSING) is value,
                        decorated=bool(getattr(block.node, "decorator_list", ())),
                        deps=_definitionTimeNames(block.node),
                    )
                    self.definitions.append(found)
                    break
            if found is not None:
                break
        self._byObject[key] = found
        self._keep.append(value)
        return found

    def topLevel(self, name: str, value: Any) -> _Definition | None:
        """
        The definition of a top-level name, if its value is a session
        definition (a decorated definition's result can be anything).
        """
        blocks = self._blocksNamed.get(name)
        if not blocks:
            return None
        if type(value) in _ATOMS or isinstance(value, (types.ModuleType, NotMoved)):
            return None
        if not (
            self._sessionFunction(value)
            or self._sessionClass(value)
            or any(b.node is not None and getattr(b.node, "decorator_list", None) for b in blocks)
        ):
            return None
        return self.definitionOf(value, [name])

    def expandDeps(self, definition: _Definition) -> None:
        """
        Add to a definition's names those that the session functions and
        classes it names use when called (a decorator's body, a base
        class's C{__init_subclass__}): running the definition may call
        them.
        """
        names = definition.deps
        i = 0
        while i < len(names) and len(names) < 1000:
            value = self._namespace.get(names[i], _MISSING)
            i += 1
            codes: list[types.CodeType] = []
            if self._sessionFunction(value):
                codes.append(value.__code__)
            elif self._sessionClass(value):
                for klass in value.__mro__:
                    codes += [
                        f.__code__
                        for f in map(functools.partial(_bodyFunction, klass), vars(klass).values())
                        if f is not None and f.__code__.co_filename == self._filename
                    ]
            for code in codes:
                for inner in [code, *_codesIn(code)]:
                    names += [n for n in inner.co_names if n not in names]

    # -- the hook ----------------------------------------------------------------

    def __call__(self, value: Any, writer: GraphWriter, path: str) -> Any:
        definition = self._byObject.get(id(value))
        if definition is not None:
            return self._definitionNode(definition, value, writer)
        if isinstance(value, NotMoved):
            ident, _ = writer.rememberSpecial(value)
            return ("x", "gone", (ident, self._root, value._label, value._what, value._why))
        if isinstance(value, types.ModuleType):
            name = getattr(value, "__name__", None)
            if isinstance(name, str) and sys.modules.get(name) is value:
                return ("x", "module", name)
            return self._gone(
                value, writer, f"a module ({_shortRepr(value)})", "it cannot be imported by its name"
            )
        if isinstance(value, _FUNCTION_TYPES):
            reference = _importableName(value)
            if reference is not None:
                return ("x", "ref", reference)
        if self._sessionFunction(value) or self._sessionClass(value):
            definition = self.definitionOf(value, ())
            if definition is not None:
                return self._definitionNode(definition, value, writer)
            inside = self._inside(value)
            if inside is not None:
                outer, attributes = inside
                return ("x", "attr", (writer.write(outer), attributes))
        cls = type(value)
        if self._sessionClass(cls):
            return self._instance(value, cls, writer)
        if isinstance(value, (types.MethodType, types.BuiltinMethodType)):
            owner = getattr(value, "__self__", None)
            name = getattr(value, "__name__", None)
            if _boundAs(owner, name, value):
                return ("x", "method", (writer.write(owner), name))
        if cls in _VALUES:
            return ("x", "value", (cls.__name__, writer.write(_VALUES[cls](value))))
        what, why = self._describe(value)
        return self._gone(value, writer, what, why)

    def _inside(self, value: Any) -> tuple[Any, list[str]] | None:
        """
        The top-level object of the namespace and the attribute path that
        find C{value} (a class nested in a class, a method's function), if
        its qualified name names them.
        """
        qualname = getattr(value, "__qualname__", "")
        if not isinstance(qualname, str) or "<" in qualname or "." not in qualname:
            return None
        head, *path = qualname.split(".")
        outer = self._namespace.get(head, _MISSING)
        target = outer
        try:
            for part in path:
                target = getattr(target, part)
        except Exception:
            return None
        return (outer, path) if target is value else None

    def _definitionNode(self, definition: _Definition, value: Any, writer: GraphWriter) -> Any:
        ident, _ = writer.rememberSpecial(value)
        state: Any = None
        if not definition.decorated:
            if isinstance(value, types.FunctionType):
                state = {
                    "defaults": value.__defaults__,
                    "kwdefaults": value.__kwdefaults__,
                    "dict": dict(value.__dict__),
                }
            elif isinstance(value, type) and not issubclass(value, enum.Enum):
                state = {
                    "attributes": {
                        k: v
                        for k, v in vars(value).items()
                        if isinstance(k, str) and not _fromClassStatement(value, k, v)
                    }
                }
        return ("x", "def", (ident, definition.index, writer.write(state)))

    def _instance(self, value: Any, cls: type, writer: GraphWriter) -> Any:
        what = f"an instance of {cls.__qualname__} ({_shortRepr(value)})"
        definition = self.definitionOf(cls, ())
        index: int | None = None
        classNode: Any = None
        if definition is not None:
            index = definition.index
        elif self._inside(cls) is not None:
            # A class nested in a session class: found through it.
            classNode = writer.write(cls)
        else:
            return self._gone(
                value,
                writer,
                what,
                f"the class statement of {cls.__qualname__} was not found in the session's history",
            )
        if isinstance(value, enum.Enum):
            return ("x", "member", (index, classNode, value.name))
        if not _plainLayout(cls) or not isinstance(getattr(value, "__dict__", None), dict):
            return self._gone(
                value, writer, what, "it keeps state outside its __dict__ (slots, or a builtin base class)"
            )
        ident, _ = writer.rememberSpecial(value)
        state = writer.write(dict(vars(value)))
        return ("x", "instance", (ident, index, classNode, state))

    def _describe(self, value: Any) -> tuple[str, str]:
        shown = _shortRepr(value)
        if isinstance(value, socket.socket):
            return (
                f"a socket ({shown})",
                "sockets move only as a service's connections, not from a namespace",
            )
        if isinstance(value, io.IOBase):
            return f"an open file ({shown})", "files cannot move between processes"
        if isinstance(value, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            return (
                f"a generator ({shown})",
                "a suspended generator or coroutine is a frame, which cannot move",
            )
        if isinstance(value, (types.FrameType, types.TracebackType)):
            return f"a frame ({shown})", "frames belong to this interpreter's stack"
        if isinstance(value, types.CodeType):
            return (
                f"a code object ({shown})",
                "compiled code is specific to one Python version",
            )
        if isinstance(value, types.FunctionType):
            if value.__name__ == "<lambda>":
                return (
                    f"a lambda ({shown})",
                    "only functions made by a def statement typed in the session "
                    "(or importable ones) can move",
                )
            if "<locals>" in value.__qualname__:
                return (
                    f"a nested function ({shown})",
                    "only functions made by a top-level def typed in the session "
                    "(or importable ones) can move",
                )
            if self._sessionFunction(value):
                return (
                    f"a function defined in the session ({shown})",
                    "its def statement was not found in the session's history",
                )
            return f"a function ({shown})", "it cannot be imported by its name"
        if isinstance(value, type):
            if self._sessionClass(value):
                return (
                    f"a class defined in the session ({shown})",
                    "its class statement was not found in the session's history",
                )
            return f"a class ({shown})", "it cannot be imported by its name"
        cls = type(value)
        return (
            f"a {cls.__module__}.{cls.__qualname__} ({shown})",
            "no adapter is registered for that type",
        )

    def _gone(self, value: Any, writer: GraphWriter, what: str, why: str) -> Any:
        ident, _ = writer.rememberSpecial(value)
        if self._paths is None:
            try:
                self._paths = _paths(self._namespace.get(self._root), self._root)
            except Exception:
                self._paths = {}
        label = self._paths.get(id(value), f"part of {self._root}")
        return ("x", "gone", (ident, self._root, label, what, why))


def _splitPending(
    history: list[str], pending: list[str] | None
) -> tuple[list[str], list[str] | None]:
    """
    The history lines that ran, and the pending block's lines (C{None}:
    unknown).  The pending block's non-empty lines end the history.
    """
    if pending is None:
        return history, None
    typed = [line for line in pending if line]
    if typed and history[-len(typed) :] == typed:
        return history[: -len(typed)], pending
    return history, pending


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


class _Restore:
    """
    The namespace reader's C{special} hook, and the re-running of
    definitions.
    """

    def __init__(self, state: Mapping[str, Any], namespace: dict[str, Any]) -> None:
        self._namespace = namespace
        self._filename = str(state.get("filename", CONSOLE))
        self._definitions = list(state.get("definitions", ()))
        self._made: dict[int, Any] = {}
        self._making: set[int] = set()
        self._imports: dict[str, Any] = {}
        self._placeholders: dict[int, tuple[str, NotMoved]] = {}

    def placeholder(self, label: str, what: str, why: str, root: str | None = None) -> NotMoved:
        """
        A new placeholder, to be reported under the name C{root} (default:
        C{label}).
        """
        value = NotMoved(label, what, why)
        self._placeholders[id(value)] = (label if root is None else root, value)
        return value

    def dismiss(self, value: Any) -> None:
        """
        Forget the notice of a placeholder that is not used after all.
        """
        self._placeholders.pop(id(value), None)

    def notices(self) -> list[str]:
        """
        One line per name with placeholders in it.
        """
        byName: dict[str, list[NotMoved]] = {}
        for root, value in self._placeholders.values():
            byName.setdefault(root, []).append(value)
        notices = []
        for root, values in byName.items():
            notice = _notice(values[0])
            if len(values) > 1:
                notice += f" (and {len(values) - 1} more in {root!r})"
            notices.append(notice)
        return notices

    def define(self, index: Any) -> Any:
        """
        Run definition C{index} (once), and return what it made.
        """
        if not isinstance(index, int) or not 0 <= index < len(self._definitions):
            raise GraphError(f"no definition number {index!r}")
        if index in self._made:
            return self._made[index]
        try:
            name, kind, source, futures, current = self._definitions[index]
        except (TypeError, ValueError) as e:
            raise GraphError(f"malformed definition: {e}") from e
        if not isinstance(name, str) or not isinstance(source, str):
            raise GraphError(f"malformed definition of {name!r}")
        what = f"a {kind!s} defined in the session"
        if index in self._making:
            return self.placeholder(name, what, "its definition needs itself")
        self._making.add(index)
        namespace = self._namespace
        previous = namespace.get(name, _MISSING)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                code = compile(
                    source, self._filename, "single", futureFlags(futures), dont_inherit=True
                )
            exec(code, namespace)
            made = namespace[name]
        except Exception as e:
            made = self.placeholder(
                name,
                what,
                f"its definition could not be re-run here: {e.__class__.__name__}: {e}",
            )
        finally:
            self._making.discard(index)
        if not current:
            # An earlier version, still referred to: leave the name alone.
            if previous is _MISSING:
                namespace.pop(name, None)
            else:
                namespace[name] = previous
        self._made[index] = made
        return made

    def __call__(self, kind: str, payload: Any, reader: GraphReader) -> Any:
        if kind in ("module", "ref"):
            key = str(payload) if kind == "module" else ".".join(map(str, payload))
            if key not in self._imports:
                try:
                    if kind == "module":
                        self._imports[key] = importlib.import_module(key)
                    else:
                        self._imports[key] = _resolve(str(payload[0]), str(payload[1]))
                except Exception as e:
                    self._imports[key] = self.placeholder(
                        key,
                        f"the module {key}" if kind == "module" else key,
                        f"it cannot be imported here: {e.__class__.__name__}: {e}",
                    )
            return self._imports[key]
        if kind == "def":
            ident, index, stateNode = payload
            made = self.define(index)
            reader.remember(ident, made)
            self._apply(made, reader.read(stateNode))
            return made
        if kind == "instance":
            ident, index, classNode, stateNode = payload
            cls = self._class(index, classNode, reader)
            obj: Any
            if isinstance(cls, type) and _plainLayout(cls):
                obj = object.__new__(cls)
            else:
                name = self._definitions[index][0] if index is not None else "a nested class"
                obj = self.placeholder(
                    f"an instance of {name}",
                    "an instance of a class defined in the session",
                    f"its class could not be re-created as it was: {cls!r}",
                )
            reader.remember(ident, obj)
            state = reader.read(stateNode)
            if not isinstance(state, dict):
                raise GraphError("malformed instance state")
            if not isinstance(obj, NotMoved):
                obj.__dict__.update(state)
            return obj
        if kind == "member":
            index, classNode, name = payload
            cls = self._class(index, classNode, reader)
            try:
                return cls[name]
            except Exception as e:
                return self.placeholder(
                    str(name),
                    "a member of an enumeration defined in the session",
                    f"the re-created enumeration has no such member ({e.__class__.__name__})",
                )
        if kind == "method":
            ownerNode, name = payload
            owner = reader.read(ownerNode)
            try:
                return getattr(owner, str(name))
            except Exception as e:
                return self.placeholder(
                    f"{name}", f"a bound method {name!r}", f"{e.__class__.__name__}: {e}"
                )
        if kind == "attr":
            outerNode, path = payload
            target = reader.read(outerNode)
            try:
                for part in path:
                    target = getattr(target, str(part))
            except Exception as e:
                return self.placeholder(
                    ".".join(map(str, path)),
                    "a class or function defined inside a session class",
                    f"the re-created class has no such attribute ({e.__class__.__name__}: {e})",
                )
            return target
        if kind == "value":
            name, argsNode = payload
            make = _MAKE.get(name)
            args = reader.read(argsNode)
            if make is None or not isinstance(args, tuple):
                raise GraphError(f"unknown value kind {name!r}")
            return make(*args)
        if kind == "gone":
            ident, root, label, what, why = payload
            value = self.placeholder(str(label), str(what), str(why), str(root))
            if ident is not None:
                reader.remember(ident, value)
            return value
        raise GraphError(f"unknown special value {kind!r} in a namespace")

    def _class(self, index: Any, classNode: Any, reader: GraphReader) -> Any:
        """
        The re-created class of an instance: a definition, or found through
        one (a nested class).
        """
        return self.define(index) if index is not None else reader.read(classNode)

    def _keepFresh(self, value: Any, fresh: bool) -> bool:
        """
        Whether a carried value with placeholders in it should give way to
        what re-running the definition made (then its notices are moot).
        """
        if not fresh:
            return False
        found = list(_placeholdersIn(value))
        for placeholder in found:
            self.dismiss(placeholder)
        return bool(found)

    def _apply(self, made: Any, state: Any) -> None:
        """
        Give a re-created function or class the state it had acquired.
        """
        if state is None or isinstance(made, NotMoved):
            for placeholder in _placeholdersIn(state):
                self.dismiss(placeholder)
            return
        if not isinstance(state, dict):
            raise GraphError("malformed definition state")
        if isinstance(made, types.FunctionType):
            defaults = state.get("defaults")
            if not self._keepFresh(defaults, True):
                made.__defaults__ = defaults
            kwdefaults = state.get("kwdefaults")
            if not self._keepFresh(kwdefaults, True):
                made.__kwdefaults__ = kwdefaults
            for key, value in (state.get("dict") or {}).items():
                if not self._keepFresh(value, key in made.__dict__):
                    made.__dict__[key] = value
        elif isinstance(made, type):
            for key, value in (state.get("attributes") or {}).items():
                if self._keepFresh(value, key in vars(made)):
                    continue
                try:
                    setattr(made, key, value)
                except Exception as e:
                    self.placeholder(
                        f"{made.__qualname__}.{key}",
                        f"a class attribute ({_shortRepr(value)})",
                        f"it cannot be set on the re-created class: {e}",
                    )


def _placeholdersIn(value: Any, limit: int = 10000) -> Iterator[NotMoved]:
    """
    The placeholders in C{value} and the containers in it.
    """
    todo = [value]
    seen: set[int] = set()
    while todo and len(seen) < limit:
        obj = todo.pop()
        if isinstance(obj, NotMoved):
            yield obj
        elif isinstance(obj, (list, tuple, set, frozenset, dict)) and id(obj) not in seen:
            seen.add(id(obj))
            todo.extend(obj.values() if isinstance(obj, dict) else obj)


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
