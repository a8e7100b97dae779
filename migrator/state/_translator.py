# -*- test-case-name: tests.test_versions -*-
"""
One takeover's translating of versioned state (the rules are in
L{migrator.state._versions}): the writing side's L{Translator} refuses what
no chain of steps reaches and downgrades where it is newer; the reading
side's upgrades where it is newer and runs Twisted's C{Versioned}
upgrades; both carry the fields kept aside for live objects.  A
L{TranslationLog} records, per type name, the versions seen, the steps run
and their time, for the takeover's log and status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.persisted import styles
from twisted.python import reflect

from migrator.state._versions import (
    KEPT,
    PERSISTENCE,
    KeptStore,
    Readable,
    Route,
    Untranslatable,
    keptOf,
    persistenceVersions,
    route,
    stepsOf,
    translate,
    writeRoute,
)


@attrs.define
class TranslationLog:
    """
    Per type name: the versions seen, the steps run, how many objects were
    translated and how long it took (for the takeover's log and status).

    @ivar clock: measures the time the steps take.
    @ivar seen: how many objects of each type name and version were read.
    """

    clock: Callable[[], float] = time.perf_counter
    seen: dict[tuple[str, int], int] = attrs.field(factory=dict)
    _events: list[tuple[str, tuple[int, ...], tuple[str, ...], float]] = attrs.field(factory=list)

    def ran(self, name: str, versions: tuple[int, ...], labels: Iterable[str], seconds: float) -> None:
        """
        One object of C{name} was translated between C{versions} by the
        steps C{labels}, in C{seconds}.
        """
        self._events.append((name, versions, tuple(labels), seconds))

    def mark(self) -> int:
        return len(self._events)

    def rollback(self, mark: int) -> None:
        """
        Forget what was translated since L{mark} (objects that then did not
        move after all).
        """
        del self._events[mark:]

    def asDict(self) -> dict[str, dict[str, Any]]:
        """
        C{{typeName: {"versions": [...], "objects": N, "translated": N,
        "steps": {label: N}, "ms": T}}}: C{objects} counts the objects
        read (none on the writing side), the others what was translated.
        """
        result: dict[str, dict[str, Any]] = {}
        for (name, version), count in self.seen.items():
            record = _entry(result, name)
            record["objects"] += count
            if version not in record["versions"]:
                record["versions"].append(version)
        for name, versions, labels, seconds in self._events:
            record = _entry(result, name)
            record["translated"] += 1
            record["ms"] += seconds * 1000
            for version in versions:
                if version not in record["versions"]:
                    record["versions"].append(version)
            for label in labels:
                record["steps"][label] = record["steps"].get(label, 0) + 1
        for record in result.values():
            record["versions"].sort()
            record["ms"] = round(record["ms"], 3)
        return dict(sorted(result.items()))


def _entry(result: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return result.setdefault(
        name, {"versions": [], "objects": 0, "translated": 0, "steps": {}, "ms": 0.0}
    )


def mergeTranslations(*reports: Any) -> dict[str, dict[str, Any]]:
    """
    The reports of both sides (L{TranslationLog.asDict}: the incumbent's
    downgrades, the successor's reading) as one; what is malformed is left
    out (one of them comes from the other process).
    """
    result: dict[str, dict[str, Any]] = {}
    for report in reports:
        for name, record in report.items() if isinstance(report, dict) else ():
            if not isinstance(name, str) or not isinstance(record, dict):
                continue
            mine = _entry(result, name)
            versions = record.get("versions")
            for v in versions if isinstance(versions, list) else ():
                if type(v) is int and v not in mine["versions"]:
                    mine["versions"].append(v)
            for key in ("objects", "translated"):
                if type(record.get(key)) is int:
                    mine[key] += record[key]
            if type(record.get("ms")) in (int, float):
                mine["ms"] = round(mine["ms"] + record["ms"], 3)
            steps = record.get("steps")
            for label, count in steps.items() if isinstance(steps, dict) else ():
                if isinstance(label, str) and type(count) is int:
                    mine["steps"][label] = mine["steps"].get(label, 0) + count
    for record in result.values():
        record["versions"].sort()
    return dict(sorted(result.items()))


def describeTranslations(report: Any) -> str | None:
    """
    One line for the logs: per type name that was translated, the
    versions seen, the steps run and their time; C{None} if nothing was.
    """
    parts = []
    for name, record in report.items() if isinstance(report, dict) else ():
        if not isinstance(record, dict) or not record.get("steps"):
            continue
        steps = ", ".join(f"{label} x {n}" for label, n in record["steps"].items())
        versions = ", ".join(str(v) for v in record.get("versions", ()))
        parts.append(
            f"{name}: versions {versions or '-'}, {record.get('translated', 0)} "
            f"object(s) translated ({steps}) in {record.get('ms', 0)} ms"
        )
    return "; ".join(parts) or None


@attrs.frozen
class Refusing:
    """
    Stands in for an adapter whose state cannot reach what the other side
    reads: its objects cannot move, and say why.
    """

    adapter: Any
    problem: Untranslatable

    @property
    def typeName(self) -> str:
        return str(self.adapter.typeName)

    @property
    def version(self) -> Any:
        return self.adapter.version

    def capture(self, obj: Any) -> Any:
        raise Untranslatable(self.problem.typeName, self.problem.why)

    def movable(self, obj: Any) -> str | None:
        return self.problem.why


@attrs.define(eq=False)
class Translator:
    """
    One side's translating of one takeover's graph.

    @ivar readable: on the writing side, what the reading side reads, by
        type name; C{None} if not known (every state is then written at its
        adapter's version, and read as it can be).
    @ivar kept: this process's fields kept aside (its registry's), or
        C{None} (they then stay in the states, as an older migrator left
        them).
    @ivar log: what was translated.
    @ivar writes: whether L{write} may change anything (a route down was
        found, or there are kept fields): the writer skips it otherwise.
    """

    readable: Mapping[str, Readable] | None = None
    kept: KeptStore | None = None
    log: TranslationLog = attrs.field(factory=TranslationLog)
    _routes: dict[int, Route | Untranslatable | None] = attrs.field(factory=dict, init=False)
    _readRoutes: dict[tuple[str, int], Route] = attrs.field(factory=dict, init=False)
    # The adapters routed, so that their ids stay theirs.
    _adapters: list[Any] = attrs.field(factory=list, init=False)
    writes: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        # Nothing is added to the store while a graph is written.
        self.writes = bool(self.kept)

    # -- writing ---------------------------------------------------------------

    def writing(self, adapter: Any) -> Any:
        """
        The adapter to write C{adapter}'s objects with: itself, or a
        L{Refusing} one if no chain of steps reaches what the other side
        reads of its type name.  (A type name the other side does not read
        at all is the caller's to decide.)
        """
        if self.readable is None:
            return adapter
        key = id(adapter)
        if key not in self._routes:
            self._adapters.append(adapter)
            theirs = self.readable.get(adapter.typeName)
            found: Route | Untranslatable | None = None
            if theirs is not None:
                try:
                    found = writeRoute(adapter, theirs)
                except Untranslatable as e:
                    found = e
                else:
                    # Going up, the other side translates.
                    found = found if found.steps and not found.up else None
                    self.writes = self.writes or found is not None
            self._routes[key] = found
        found = self._routes[key]
        if isinstance(found, Untranslatable):
            return Refusing(adapter, found)
        return adapter

    def write(self, adapter: Any, obj: Any, state: Any) -> tuple[int, Any]:
        """
        The version and state to write for C{obj}: its kept fields added,
        downgraded if this side is newer.

        @raise Untranslatable: if a step fails.
        """
        kept = self.kept.get(obj) if self.kept else None
        found = self._routes.get(id(adapter)) if self._routes else None
        if kept is not None and type(state) is dict:
            state = {**state, KEPT: kept}
        if not isinstance(found, Route):
            return adapter.version, state
        started = self.log.clock()
        state = translate(adapter, state, found)
        self.log.ran(
            adapter.typeName,
            (found.fromVersion, found.toVersion),
            found.labels(),
            self.log.clock() - started,
        )
        return found.toVersion, state

    # -- reading ---------------------------------------------------------------

    def readRoute(self, adapter: Any, version: Any) -> Route:
        """
        @return: the steps of C{adapter} from C{version} to its own.
        @raise Untranslatable: if there is no such chain.
        """
        key = (adapter.typeName, version)
        found = self._readRoutes.get(key)
        if found is None:
            upgrades, downgrades = stepsOf(adapter)
            found = route(adapter.typeName, version, adapter.version, upgrades, downgrades)
            self._readRoutes[key] = found
        return found

    def read(self, adapter: Any, obj: Any, version: int, state: Any) -> Any:
        """
        The state to populate C{obj} with: translated to C{adapter}'s
        version, and its kept fields set aside (for C{obj}).

        @raise Untranslatable: if there is no chain of steps, or one fails.
        """
        if version != adapter.version:
            found = self.readRoute(adapter, version)
            started = self.log.clock()
            state = translate(adapter, state, found)
            self.log.ran(
                adapter.typeName, (version, adapter.version), found.labels(),
                self.log.clock() - started,
            )
        if self.kept is not None and type(state) is dict and KEPT in state:
            state = dict(state)
            kept = keptOf(state.pop(KEPT))
            if kept:
                self.kept.put(obj, kept)
        return state

    def upgradeVersioned(self, populated: Iterable[tuple[str, Any, Any]]) -> None:
        """
        Run the C{upgradeToVersionN} methods of the L{styles.Versioned}
        objects just populated whose states carried their hierarchy's
        C{persistenceVersion}s, as Twisted does after unpickling: each
        class of the hierarchy from the version written to its own, the
        superclasses' first; an upgrade may call C{styles.requireUpgrade}
        on another object to have it upgraded first.

        @param populated: C{(typeName, obj, state)} of each such object.
        @raise Untranslatable: if a state is newer than its class, or an
            upgrade fails.
        """
        todo: list[tuple[str, Any, list[str]]] = []
        for name, obj, state in populated:
            written = {
                k[: -len(PERSISTENCE)]: v
                for k, v in state.items()
                if type(k) is str and k.endswith(PERSISTENCE)
            }
            if not written:
                continue
            labels = []
            for qual, current in (persistenceVersions(type(obj)) or {}).items():
                was = written.get(qual) or 0
                if type(was) is not int or was < 0:
                    raise Untranslatable(name, f"malformed {qual}{PERSISTENCE}: {was!r}")
                if was > current:
                    raise Untranslatable(
                        name,
                        f"{qual}{PERSISTENCE} {was} -> {current}: "
                        f"twisted.persisted.styles.Versioned has no downgrades",
                    )
                labels += [f"{qual}.upgradeToVersion{n}" for n in range(was + 1, current + 1)]
            todo.append((name, obj, labels))
        if not todo:
            return
        # Twisted's own bookkeeping, so that requireUpgrade works between
        # them; only these objects' entries are touched.
        for _, obj, _ in todo:
            styles.versionedsToUpgrade[id(obj)] = obj
        try:
            for name, obj, labels in todo:
                started = self.log.clock()
                try:
                    styles.requireUpgrade(obj)
                except Exception as e:
                    raise Untranslatable(
                        name,
                        f"upgrading a {reflect.qual(type(obj))} failed: "
                        f"{e.__class__.__name__}: {e}",
                    ) from e
                if labels:
                    self.log.ran(name, (), labels, self.log.clock() - started)
        finally:
            for _, obj, _ in todo:
                styles.versionedsToUpgrade.pop(id(obj), None)
                styles.upgraded.pop(id(obj), None)
