# -*- test-case-name: tests.test_namespace -*-
"""
Restoring an interactive session's namespace (L{migrator.adapters.namespace._namespace}):
the namespace reader's hook, which re-runs the session's definitions,
imports modules, re-creates session instances and binds placeholders for
what could not move, collecting the notices to show the session.
"""

from __future__ import annotations

import importlib
import types
import warnings
from collections.abc import Mapping
from typing import Any

from migrator.adapters.namespace._history import CONSOLE, futureFlags
from migrator.adapters.namespace._objects import _MAKE, _MISSING, _plainLayout, _resolve
from migrator.adapters.namespace._placeholders import NotMoved, _notice, _placeholdersIn, _shortRepr
from migrator.state._graph import GraphError, GraphReader


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
