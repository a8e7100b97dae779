# -*- test-case-name: tests.test_namespace -*-
"""
Capturing an interactive session's namespace (L{migrator.adapters.namespace._namespace}):
the session definitions that made its functions and classes, what each
one needs bound before it runs, and the namespace writer's hook that
writes definitions, modules, references, session instances and
placeholders for what cannot move.
"""

from __future__ import annotations

import ast
import enum
import functools
import io
import socket
import sys
import types
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from migrator.adapters.namespace._history import _Block, _codesIn, _definitionTimeNames
from migrator.adapters.namespace._objects import (
    _ATOMS,
    _FUNCTION_TYPES,
    _HEAPTYPE,
    _MISSING,
    _VALUES,
    _bodyFunction,
    _boundAs,
    _fromClassStatement,
    _functionsIn,
    _importableName,
    _plainLayout,
)
from migrator.adapters.namespace._placeholders import NotMoved, _shortRepr
from migrator.state._graph import GraphWriter


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
