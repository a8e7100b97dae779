# -*- test-case-name: tests.test_versions -*-
"""
Versions of adapted state, translated up and down (Erlang/OTP's
C{code_change}, with its up and down instructions, is the model).

Every adapted object is written with its adapter's C{version}.  An adapter
may have translation steps (L{migrator.interfaces.IVersionedAdapter}):
C{upgrades[n]} turns a version-C{n} state into version C{n + 1}, and
C{downgrades[n]} turns version C{n + 1} into C{n}.  Steps compose along the
chain (L{route}): 1 -> 3 runs C{upgrades[1]}, then C{upgrades[2]}; 3 -> 1
runs C{downgrades[2]}, then C{downgrades[1]}.

B{The newer side translates.}  An incumbent whose adapter is newer than
the successor's downgrades before writing, with its own downgrades; a
successor whose adapter is newer upgrades after reading, with its own
upgrades.  The successor tells the incumbent what it reads of each type
name (L{Readable}: its version, the upgrades it has, the
C{persistenceVersion}s of a L{Versioned} class), so the incumbent knows
before writing anything whether a chain of steps reaches the other side
(L{writeRoute}); the plan made at C{begin} asks the same question.  An
object no chain reaches cannot move (L{Untranslatable} says why).

B{Nothing lost on a round trip.}  A step may drop fields the version it
reaches does not know (a downgrade, fields added since; an upgrade, fields
removed since).  After each step, the side translating runs the step back
(if it has it: the newer side has both) on what the step made: every field
the round trip does not give back as it was is I{kept aside} in the
written state, under L{KEPT}: C{{version: {"values": {key: value},
"bases": {key: value}}}}, by the version that knows the fields, with their
values and what the round trip gave instead, if anything.  (Without the
step back, the fields the step dropped are kept.)  The process that reads
the state keeps that record beside the object (L{KeptStore}: by object,
never on the object) and writes it again with the object's state at its
own next takeover.  When a step reaches that version again, each kept
value comes back, unless the state now holds something else for it than
the round trip gave: the code of the other version changed that field
meanwhile, and its change wins.  So up -> down -> up gives the same state,
and a field only the newer version knows survives a stay in an older
process (v2 -> v1 -> v2).  This works for states that are dictionaries
(the default rule's); other states are translated, with nothing kept
aside.

B{Twisted's own convention.}  The default rule captures an instance of a
L{twisted.persisted.styles.Versioned} class as C{Versioned.__getstate__}
does (the C{persistenceVersion} of each class of its hierarchy under
C{"module.Class.persistenceVersion"}, C{persistenceForgets} left out); the
reading side runs its C{upgradeToVersionN} methods once the whole graph is
populated, as Twisted does after unpickling (L{Translator.upgradeVersioned}).
C{Versioned} has no downgrades: a state newer than the reading class
cannot move.

Steps run on live state in the incumbent and must be pure: a step gets a
shallow copy of the state's dictionary (change it freely) and returns the
translated state; it must not change the objects the state refers to (the
incumbent keeps them, and serves on with them if the takeover is
abandoned).  Objects the state refers to may not be populated yet when a
step runs in the successor: do not rely on their state.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.persisted import styles
from twisted.python import reflect

#: The key of the written state under which fields are kept aside.
KEPT = "__migrator_kept__"
#: How a class's persistenceVersion is named in a state (after its name).
PERSISTENCE = ".persistenceVersion"

Step = Callable[[Any], Any]


class Untranslatable(Exception):
    """
    No chain of steps takes a state from one version to another (or a step
    failed).

    @ivar typeName: the state's type name.
    @ivar why: the reason without the type name (e.g. C{"version 3 -> 1:
        no downgrade from 2"}).
    """

    def __init__(self, typeName: str, why: str) -> None:
        self.typeName = typeName
        self.why = why
        Exception.__init__(self, f"{typeName}: {why}")


@attrs.frozen
class Route:
    """
    The steps from one version to another.

    @ivar steps: the keys of the steps, in the order they run (keys of
        C{upgrades} going up, of C{downgrades} going down).
    """

    fromVersion: int
    toVersion: int
    steps: tuple[int, ...] = ()

    @property
    def up(self) -> bool:
        return self.toVersion > self.fromVersion

    def labels(self) -> list[str]:
        """
        @return: one label per step, C{"up 1->2"} or C{"down 2->1"}.
        """
        if self.up:
            return [f"up {n}->{n + 1}" for n in self.steps]
        return [f"down {n + 1}->{n}" for n in self.steps]


def route(
    typeName: str,
    fromVersion: Any,
    toVersion: Any,
    upgrades: Iterable[int],
    downgrades: Iterable[int],
    where: str = "",
) -> Route:
    """
    The chain of steps from C{fromVersion} to C{toVersion}.

    @param upgrades: the keys of the upgrades available.
    @param downgrades: the keys of the downgrades available.
    @param where: said after a missing step (e.g. C{" in the successor"}).
    @raise Untranslatable: if a step is missing, or a version is not an
        C{int}.
    """
    if type(fromVersion) is not int or type(toVersion) is not int:
        raise Untranslatable(typeName, f"malformed version {fromVersion!r} -> {toVersion!r}")
    if fromVersion == toVersion:
        return Route(fromVersion, toVersion)
    up = toVersion > fromVersion
    have = frozenset(upgrades if up else downgrades)
    steps: list[int] = []
    n = fromVersion if up else fromVersion - 1
    # Bounded by the steps there are: the first missing one ends it.
    while (n < toVersion) if up else (n >= toVersion):
        if n not in have:
            missing = f"no upgrade from {n}" if up else f"no downgrade from {n + 1}"
            raise Untranslatable(
                typeName, f"version {fromVersion} -> {toVersion}: {missing}{where}"
            )
        steps.append(n)
        n += 1 if up else -1
    return Route(fromVersion, toVersion, tuple(steps))


def stepsOf(adapter: Any) -> tuple[Mapping[int, Step], Mapping[int, Step]]:
    """
    @return: C{adapter}'s upgrades and downgrades (empty if it has none).
    """
    ups = getattr(adapter, "upgrades", None)
    downs = getattr(adapter, "downgrades", None)
    return (
        ups if isinstance(ups, Mapping) else {},
        downs if isinstance(downs, Mapping) else {},
    )


def checkSteps(version: int, steps: Mapping[int, Any], what: str) -> None:
    """
    @raise ValueError: unless every key of C{steps} is an C{int} below
        C{version} and every value callable.
    """
    for n, step in steps.items():
        if type(n) is not int or n >= version:
            raise ValueError(
                f"{what}[{n!r}]: a step key is a version below {version}, the adapter's"
            )
        if not callable(step):
            raise ValueError(f"{what}[{n}] is not callable")


# -- Twisted's Versioned -------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _versionedSpec(cls: type) -> tuple[frozenset[str], tuple[tuple[str, int], ...]] | None:
    """
    What C{Versioned.__getstate__} does for instances of C{cls}: the names
    it forgets, and the C{persistenceVersion} of each class of the
    hierarchy that sets one, superclasses first.  C{None} unless C{cls} is
    a L{styles.Versioned}.
    """
    if not (isinstance(cls, type) and issubclass(cls, styles.Versioned)):
        return None
    bases = [
        b
        for b in reversed(inspect.getmro(cls))
        if b is not styles.Versioned and issubclass(b, styles.Versioned)
    ]
    forgets: set[str] = set()
    versions: list[tuple[str, int]] = []
    for base in bases:
        forgets.update(base.__dict__.get("persistenceForgets", ()))
        if "persistenceVersion" in base.__dict__:
            versions.append((reflect.qual(base), base.__dict__["persistenceVersion"]))
    return frozenset(forgets), tuple(versions)


def persistenceVersions(cls: type) -> dict[str, int] | None:
    """
    @return: the C{persistenceVersion} of each class of C{cls}'s hierarchy
        that sets one, by qualified name, or C{None} unless C{cls} is a
        L{styles.Versioned}.
    """
    spec = _versionedSpec(cls)
    return None if spec is None else dict(spec[1])


def versionedState(cls: type, state: dict[str, Any]) -> dict[str, Any]:
    """
    Make C{state} (a fresh instance dictionary of a C{cls}) what
    C{Versioned.__getstate__} would: C{persistenceForgets} left out, the
    hierarchy's C{persistenceVersion}s added.  Other classes' states are
    returned as they are.
    """
    spec = _versionedSpec(cls)
    if spec is None:
        return state
    forgets, versions = spec
    for name in forgets:
        state.pop(name, None)
    for qual, version in versions:
        state[qual + PERSISTENCE] = version
    return state


# -- what the reading side reads ----------------------------------------------


@attrs.frozen
class Readable:
    """
    What a process reads of one type name, as it tells the other side.

    @ivar version: its adapter's version.
    @ivar upgrades: the keys of its upgrades.
    @ivar persistence: for a L{styles.Versioned} class under the default
        rule, the C{persistenceVersion}s of its hierarchy, else C{None}.
    """

    version: int
    upgrades: frozenset[int] = frozenset()
    persistence: Mapping[str, int] | None = attrs.field(default=None, hash=False)

    @classmethod
    def of(cls, adapter: Any) -> Readable:
        getter = getattr(adapter, "persistenceVersions", None)
        return cls(
            adapter.version,
            frozenset(stepsOf(adapter)[0]),
            getter() if callable(getter) else None,
        )

    def asDict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "upgrades": sorted(self.upgrades),
            "persistence": dict(self.persistence) if self.persistence is not None else None,
        }

    @classmethod
    def fromDict(cls, record: Any) -> Readable | None:
        """
        The L{Readable} L{asDict} made, or C{None} if C{record} is
        malformed (a bare C{int} is a version without upgrades).
        """
        if type(record) is int:
            return cls(record)
        if not isinstance(record, dict) or type(record.get("version")) is not int:
            return None
        ups = record.get("upgrades")
        persistence = record.get("persistence")
        return cls(
            record["version"],
            frozenset(n for n in ups if type(n) is int) if isinstance(ups, list) else frozenset(),
            {k: v for k, v in persistence.items() if isinstance(k, str) and type(v) is int}
            if isinstance(persistence, dict)
            else None,
        )


def readableTypes(adapters: Any) -> dict[str, dict[str, Any]]:
    """
    What a successor tells an incumbent it reads: every type name of
    C{adapters} (a registry) with its L{Readable}, as plain data.
    """
    return {name: Readable.of(adapters.adapterNamed(name)).asDict() for name in adapters.typeNames()}


def readableFrom(info: Any) -> dict[str, Readable] | None:
    """
    What the other side reads, from its C{begin} info or C{capture}
    request: its C{readable} record, or else its C{versions} (an older
    successor: versions without upgrades); C{None} if it sent neither.
    Malformed entries are left out (as types it cannot read).
    """
    if not isinstance(info, dict):
        return None
    for key in ("readable", "versions"):
        records = info.get(key)
        if isinstance(records, dict):
            result = {}
            for name, record in records.items():
                readable = Readable.fromDict(record)
                if isinstance(name, str) and readable is not None:
                    result[name] = readable
            return result
    return None


def writeRoute(adapter: Any, theirs: Any) -> Route:
    """
    How this process's C{adapter} gets its state to what the other side
    reads (C{theirs}, a L{Readable} or a bare version): the newer side
    translates, so a route going down runs here, with C{adapter}'s
    downgrades, and one going up runs there, with the upgrades it has.

    @raise Untranslatable: if no chain of steps reaches it.
    """
    name = adapter.typeName
    if type(theirs) is int:
        theirs = Readable(theirs)
    elif not isinstance(theirs, Readable):
        raise Untranslatable(name, f"the successor's version is malformed: {theirs!r}")
    mine = adapter.version
    if type(mine) is int and mine > theirs.version:
        result = route(name, mine, theirs.version, (), stepsOf(adapter)[1])
    else:
        result = route(name, mine, theirs.version, theirs.upgrades, (), " in the successor")
    getter = getattr(adapter, "persistenceVersions", None)
    ours = getter() if callable(getter) else None
    if ours and theirs.persistence is not None:
        for qual, version in ours.items():
            other = theirs.persistence.get(qual)
            if type(other) is int and version > other:
                raise Untranslatable(
                    name,
                    f"{qual}{PERSISTENCE} {version} -> {other}: "
                    f"twisted.persisted.styles.Versioned has no downgrades",
                )
    return result


def untranslatable(adapter: Any, theirs: Any) -> Untranslatable | None:
    """
    Why C{adapter}'s state cannot reach what the other side reads
    (L{writeRoute}), or C{None} if it can.
    """
    try:
        writeRoute(adapter, theirs)
    except Untranslatable as e:
        return e
    return None


# -- translating a state, keeping aside what a version cannot hold -------------


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def keptOf(raw: Any) -> dict[int, Any]:
    """
    The kept fields of a state's L{KEPT} entry (what is malformed is left
    out).
    """
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if type(k) is int and isinstance(v, dict)}


def _merge(state: dict[Any, Any], entry: Any) -> None:
    """
    Give C{state} back the fields of a kept C{entry}: each value comes back
    unless the state now holds something else for it than the round trip
    gave when it was kept (the code of the other version changed it:
    that change wins).
    """
    if not isinstance(entry, dict):
        return
    values = entry.get("values")
    bases = entry.get("bases")
    if not isinstance(bases, dict):
        bases = {}
    for key, value in values.items() if isinstance(values, dict) else ():
        if key not in state or (key in bases and _same(state[key], bases[key])):
            state[key] = value


def _step(step: Step, back: Step | None, leaving: int, reaching: int, state: Any) -> Any:
    """
    One step, from version C{leaving} to the next one, C{reaching}: what
    C{reaching} had kept aside comes back, and what it cannot hold is kept
    aside for C{leaving}.  C{back} is the step the other way, if this side
    has it: the fields it does not give back as they were are kept (with
    what it gave instead); without it, the fields C{step} drops.
    """
    if type(state) is not dict:
        return step(state)
    before = dict(state)
    kept = keptOf(before.pop(KEPT, None))
    after = step(dict(before))
    if type(after) is not dict:
        return after
    after = dict(after)
    _merge(after, kept.pop(reaching, None))
    again = back(dict(after)) if back is not None else None
    values: dict[Any, Any] = {}
    bases: dict[Any, Any] = {}
    for key, value in before.items():
        if type(again) is dict:
            if key in again:
                if _same(again[key], value):
                    continue
                bases[key] = again[key]
        elif key in after:
            continue
        values[key] = value
    if values:
        kept[leaving] = {"values": values, "bases": bases}
    if kept:
        after[KEPT] = kept
    return after


def translate(adapter: Any, state: Any, steps: Route) -> Any:
    """
    Run the steps of C{steps}, with C{adapter}'s upgrades and downgrades,
    keeping aside what a version cannot hold (see the module docstring).

    @raise Untranslatable: if a step is missing or fails.
    """
    upgrades, downgrades = stepsOf(adapter)
    for n, label in zip(steps.steps, steps.labels(), strict=True):
        try:
            if steps.up:
                state = _step(upgrades[n], downgrades.get(n), n, n + 1, state)
            else:
                state = _step(downgrades[n], upgrades.get(n), n + 1, n, state)
        except Exception as e:
            raise Untranslatable(
                adapter.typeName,
                f"version {steps.fromVersion} -> {steps.toVersion}: step {label} "
                f"failed: {e.__class__.__name__}: {e}",
            ) from e
    return state


class KeptStore:
    """
    Fields kept aside for this process's live objects (see the module
    docstring), by object: weakly, so that an entry goes with its object;
    an object that cannot be weakly referenced is held until it is
    restored again or the process ends.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, bool, dict[int, Any]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, obj: Any) -> dict[int, Any] | None:
        entry = self._entries.get(id(obj))
        if entry is None:
            return None
        ref, weak, kept = entry
        return kept if (ref() if weak else ref) is obj else None

    def put(self, obj: Any, kept: dict[int, Any]) -> None:
        key = id(obj)
        try:
            ref: Any = weakref.ref(obj, functools.partial(self._gone, key))
            weak = True
        except TypeError:
            ref, weak = obj, False
        self._entries[key] = (ref, weak, kept)

    def discard(self, obj: Any) -> None:
        if self.get(obj) is not None:
            del self._entries[id(obj)]

    def _gone(self, key: int, ref: Any) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            del self._entries[key]
