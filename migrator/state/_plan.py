# -*- test-case-name: tests.test_plan -*-
"""
Never two: before a takeover changes anything, what will become of each of
the incumbent's open connections, counted by class.

Every open connection is of one of four kinds:

  - L{MOVES}: its protocol's class has an adapter here, and one the
    successor reads (same type name, and a version a chain of translation
    steps reaches: L{migrator.state._versions.writeRoute}, as the capture
    decides), which says it can move now;
  - L{HARMLESS}: it will stay with the old process until it closes, and
    its adapter declared that harmless (L{drainsHarmlessly}): an HTTP
    request being answered, a web channel inside TLS, an SSH session, an
    FTP session.  A connection that is already closing is harmless too;
  - L{DECLINED}: its adapter declines to move it now (C{movable} gives a
    reason): it stays and drains, with that reason, as it always did;
  - L{UNKNOWN}: no adapter can move it (its class has none, here or in the
    successor, or it sits inside a wrapper that has none), and nothing
    says leaving it behind is harmless: it would keep the old process's
    copy of the application's state while new connections get the
    successor's, splitting one service in two.  The operator's policy
    (C{--unmovable}) decides: L{REFUSE} the takeover (the default), leave
    them to L{DRAIN} knowingly, or L{CLOSE} them after the move.

The plan only asks each connection's adapter (C{movable}); the capture
itself may still keep back a connection planned to move (its graph reaches
something that cannot move): it then drains like a declined one.
L{DrainingAdapter} is the adapter of a class that never moves and may
always drain harmlessly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

from migrator.interfaces import IAdapter
from migrator.state._graph import GraphError, Unadaptable, typeName
from migrator.state._nodes import neverDeclines
from migrator.state._versions import untranslatable

MOVES = "moves"
HARMLESS = "harmless"
DECLINED = "declined"
UNKNOWN = "unknown"
KINDS = (MOVES, HARMLESS, DECLINED, UNKNOWN)

REFUSE = "refuse"
DRAIN = "drain"
CLOSE = "close"
#: The choices of C{--unmovable}, the default first.
POLICIES = (REFUSE, DRAIN, CLOSE)

#: How many protocol wrappers (TLS, timeouts...) are looked through.
_MAX_WRAPPERS = 4

#: Why a connection that could move stays: the operator chose which
#: connections move this time (C{select}), and not this one.  It then
#: follows the policy as an L{UNKNOWN} one, unless its adapter says staying
#: is harmless.
NOT_SELECTED = "not selected to move"


def drainsHarmlessly(adapter: Any, obj: Any) -> bool:
    """
    Whether C{adapter} declared that C{obj}'s connection may stay with the
    old process without harm: its C{drainsHarmlessly} attribute, either a
    boolean or a method of C{obj} (L{migrator.interfaces.IDrainable}).  A
    method that raises says no.
    """
    flag = getattr(adapter, "drainsHarmlessly", False)
    if callable(flag):
        try:
            return bool(flag(obj))
        except Exception:
            return False
    return bool(flag)


@attrs.frozen
class Verdict:
    """
    What becomes of one connection.

    @ivar kind: one of L{KINDS}.
    @ivar typeName: its class, as counted (a wrapped protocol is named
        C{Wrapper(Inner)}).
    @ivar reason: why it stays, or C{None} if it moves.
    """

    kind: str
    typeName: str
    reason: str | None = None


_ABSENT = object()


@attrs.define
class Classifier:
    """
    Decides what becomes of connections (L{classify}), remembering what
    depends on classes only (the adapter, the successor's version, the name
    to count under), so that only C{movable} and C{drainsHarmlessly} are
    asked per connection.

    @ivar adapters: this process's registry (C{adapterFor(cls)}).
    @ivar successorVersions: the type names the successor reads, with what
        it reads of each (a L{migrator.state._versions.Readable}, or just
        its version); C{None} if unknown (not checked).
    """

    adapters: Any
    successorVersions: Mapping[str, Any] | None = None
    _adapters: dict[type, Any] = attrs.field(factory=dict, init=False)
    _facts: dict[tuple[type, ...], tuple[str, str | None]] = attrs.field(factory=dict, init=False)
    #: The protocol classes that wrap nothing (by class alone), with their
    #: adapter, name and reason (L{_classFacts}): most connections.
    _simple: dict[type, tuple[Any, str, str | None]] = attrs.field(factory=dict, init=False)
    _moves: dict[str, Verdict] = attrs.field(factory=dict, init=False)

    def _adapterFor(self, cls: type) -> Any:
        try:
            return self._adapters[cls]
        except KeyError:
            adapter = self._adapters[cls] = self.adapters.adapterFor(cls)
            return adapter

    def _resolve(self, protocol: Any) -> tuple[Any, Any, tuple[type, ...], list[tuple[Any, Any]]]:
        """
        Look through protocol wrappers: those without an adapter of their
        own, and those whose adapter moves them around the protocol they
        wrap (it has a C{wrapped(protocol)} method, as TLS's has).

        @return: the innermost protocol reached, its adapter (or C{None}),
            the classes on the way (outermost first), and the wrappers that
            have adapters, as C{(adapter, protocol)} pairs.
        """
        chain = [type(protocol)]
        adapter = self._adapterFor(chain[0])
        wrappers: list[tuple[Any, Any]] = []
        while len(chain) <= _MAX_WRAPPERS:
            if adapter is None and isinstance(protocol, ProtocolWrapper):
                inner = getattr(protocol, "wrappedProtocol", None)
            elif adapter is not None and callable(getattr(adapter, "wrapped", None)):
                inner = adapter.wrapped(protocol)
                if inner is not None:
                    wrappers.append((adapter, protocol))
            else:
                break
            if inner is None:
                break
            protocol = inner
            chain.append(type(protocol))
            adapter = self._adapterFor(chain[-1])
        return protocol, adapter, tuple(chain), wrappers

    def _classFacts(self, chain: tuple[type, ...], adapter: Any) -> tuple[str, str | None]:
        """
        @return: the name to count a connection under, and why its classes
            alone keep it from moving (C{None} if they do not).
        """
        try:
            return self._facts[chain]
        except KeyError:
            pass
        name = typeName(chain[-1])
        for wrapper in reversed(chain[:-1]):
            name = f"{typeName(wrapper)}({name})"
        why: str | None = None
        bare = [c for c in chain[:-1] if self._adapterFor(c) is None]
        if adapter is None:
            why = "no adapter"
        elif bare:
            # A wrapper has no adapter: nothing can move this connection.
            why = f"inside a {typeName(bare[-1])}, which has no adapter"
        elif self.successorVersions is not None:
            # The protocol's adapter, then its wrappers'.
            for mine in [adapter] + [self._adapterFor(c) for c in reversed(chain[:-1])]:
                theirs = self.successorVersions.get(mine.typeName, _ABSENT)
                if theirs is _ABSENT:
                    why = "no adapter in the successor"
                    if mine is not adapter:
                        why = f"no adapter in the successor (for {mine.typeName})"
                else:
                    problem = untranslatable(mine, theirs)
                    why = problem.why if problem is not None else None
                if why is not None:
                    break
        self._facts[chain] = (name, why)
        return name, why

    @staticmethod
    def _wrapsNothing(cls: type, adapter: Any) -> bool:
        """
        Whether L{_resolve} never looks inside a C{cls} (whose adapter is
        C{adapter}), whatever the instance.
        """
        if adapter is None:
            return not issubclass(cls, ProtocolWrapper)
        return not callable(getattr(adapter, "wrapped", None))

    def nameOf(self, protocol: Any) -> str:
        """
        The name a connection of C{protocol} is counted under (a wrapped
        protocol's is C{Wrapper(Inner)}), as L{classify} names it.
        """
        simple = self._simple.get(type(protocol))
        if simple is not None:
            return simple[1]
        _, adapter, chain, _ = self._resolve(protocol)
        name, why = self._classFacts(chain, adapter)
        self._noteSimple(chain, adapter, name, why)
        return name

    def classSaysKnown(self, protocol: Any) -> bool:
        """
        Whether the class of C{protocol} alone says that no connection of
        it is L{UNKNOWN} (it wraps nothing, and its classes keep it from
        nothing: most), whatever the instance; C{False} if it cannot say
        (its connections are then looked at one by one).
        """
        try:
            self.nameOf(protocol)
        except Exception:
            return False
        simple = self._simple.get(type(protocol))
        return simple is not None and simple[2] is None

    def _noteSimple(self, chain: tuple[type, ...], adapter: Any, name: str, why: str | None) -> None:
        if len(chain) == 1 and self._wrapsNothing(chain[0], adapter):
            self._simple[chain[0]] = (adapter, name, why)
            if why is None:
                self._moves.setdefault(name, Verdict(MOVES, name))

    def classify(
        self, transport: Any, movable: bool = True, selected: bool = True
    ) -> Verdict | None:
        """
        Decide what becomes of one connection.

        @param movable: if false, only say whether it is L{UNKNOWN} (and
            return C{None} otherwise), without asking its adapter whether
            it can move now.
        @param selected: false if the operator chose which connections move
            and left this one out: one that could move is then L{UNKNOWN}
            (or L{HARMLESS}, if its adapter says staying is), with the
            reason L{NOT_SELECTED}.
        """
        protocol = getattr(transport, "protocol", None)
        if not getattr(transport, "connected", True) or getattr(transport, "disconnecting", False):
            return Verdict(HARMLESS, typeName(type(protocol)), "closing") if movable else None
        simple = self._simple.get(type(protocol))
        if simple is not None:
            adapter, name, why = simple
            if why is None and selected and type(adapter).movable is neverDeclines:
                # (Most connections: nothing to look at per instance.)
                return self._moves[name] if movable else None
            wrappers: list[tuple[Any, Any]] = []
        else:
            protocol, adapter, chain, wrappers = self._resolve(protocol)
            name, why = self._classFacts(chain, adapter)
            self._noteSimple(chain, adapter, name, why)
        if why is not None:
            if adapter is not None and drainsHarmlessly(adapter, protocol):
                return Verdict(HARMLESS, name, why) if movable else None
            return Verdict(UNKNOWN, name, why)
        if not selected:
            if drainsHarmlessly(adapter, protocol):
                return Verdict(HARMLESS, name, NOT_SELECTED) if movable else None
            return Verdict(UNKNOWN, name, NOT_SELECTED)
        if not movable:
            return None
        # The protocol first, then the wrappers around it (innermost first).
        for asked, obj in [(adapter, protocol)] + wrappers[::-1]:
            try:
                why = asked.movable(obj)
            except Exception as e:
                why = f"its adapter failed: {e.__class__.__name__}: {e}"
            if why:
                break
        if not why:
            # (One verdict per class name: most connections move.)
            moves = self._moves.get(name)
            if moves is None:
                moves = self._moves[name] = Verdict(MOVES, name)
            return moves
        if drainsHarmlessly(adapter, protocol):
            return Verdict(HARMLESS, name, why)
        return Verdict(DECLINED, name, why)


def classify(
    transport: Any, adapters: Any, successorVersions: Mapping[str, Any] | None = None
) -> Verdict:
    """
    Decide what becomes of one connection (see L{Classifier}): C{adapters}
    is this process's registry, C{successorVersions} the type names the
    successor reads with the version of each (C{None}: not checked).
    """
    verdict = Classifier(adapters, successorVersions).classify(transport)
    assert verdict is not None
    return verdict


@attrs.frozen
class ClassPlan:
    """
    The connections of one class, by kind.

    @ivar reasons: why those that stay stay, as sorted C{(kind, reason,
        count)} triples.
    """

    typeName: str
    moves: int = 0
    harmless: int = 0
    declined: int = 0
    unknown: int = 0
    reasons: tuple[tuple[str, str, int], ...] = ()

    @property
    def total(self) -> int:
        return self.moves + self.harmless + self.declined + self.unknown

    def reasonsFor(self, kind: str) -> list[str]:
        """
        @return: why the connections of C{kind} stay.
        """
        return [reason for k, reason, _ in self.reasons if k == kind]

    def asDict(self) -> dict[str, Any]:
        return {
            MOVES: self.moves,
            HARMLESS: self.harmless,
            DECLINED: self.declined,
            UNKNOWN: self.unknown,
            "reasons": _nested(self.reasons),
        }


@attrs.frozen
class Plan:
    """
    What becomes of every open connection, by class (sorted by name).

    @ivar unknownTransports: the transports of the L{UNKNOWN} connections,
        with the name of their class (this process only: not in
        L{asDict}).
    """

    classes: tuple[ClassPlan, ...] = ()
    unknownTransports: tuple[tuple[str, Any], ...] = attrs.field(default=(), eq=False, repr=False)

    def count(self, kind: str) -> int:
        """
        @return: how many connections are of C{kind}.
        """
        return sum(getattr(c, kind) for c in self.classes)

    @property
    def total(self) -> int:
        return sum(c.total for c in self.classes)

    def byClass(self, kind: str) -> dict[str, int]:
        """
        @return: the number of connections of C{kind}, by class, for the
            classes that have any.
        """
        return {c.typeName: getattr(c, kind) for c in self.classes if getattr(c, kind)}

    def asDict(self) -> dict[str, Any]:
        """
        The plan as plain data (for the wire and for C{status}).
        """
        record: dict[str, Any] = {kind: self.count(kind) for kind in KINDS}
        record["classes"] = {c.typeName: c.asDict() for c in self.classes}
        return record

    @classmethod
    def fromDict(cls, record: Any) -> Plan:
        """
        The plan L{asDict} made (tolerant: what is malformed is left out).
        """
        classes = []
        items = record.get("classes") if isinstance(record, dict) else None
        if not isinstance(items, dict):
            items = {}
        for name, counts in sorted((k, v) for k, v in items.items() if isinstance(k, str)):
            if not isinstance(counts, dict):
                continue
            reasons = counts.get("reasons")
            classes.append(
                _classPlan(
                    name,
                    {kind: _int(counts.get(kind)) for kind in KINDS},
                    {
                        (str(kind), str(reason)): _int(n)
                        for kind, why in reasons.items()
                        if isinstance(why, dict)
                        for reason, n in why.items()
                    }
                    if isinstance(reasons, dict)
                    else {},
                )
            )
        return cls(tuple(classes))

    def summary(self) -> str:
        """
        One line for the logs: how many connections of each kind, and which
        classes have no adapter.
        """
        text = (
            f"{self.total} open connection(s): {self.count(MOVES)} can move, "
            f"{self.count(HARMLESS)} drain harmlessly, {self.count(DECLINED)} "
            f"declined by their adapters, {self.count(UNKNOWN)} with no adapter "
            f"that can move them"
        )
        unknown = self.byClass(UNKNOWN)
        if unknown:
            text += " (" + ", ".join(f"{name}: {n}" for name, n in unknown.items()) + ")"
        return text


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def planConnections(
    transports: Iterable[Any],
    adapters: Any,
    successorVersions: Mapping[str, Any] | None = None,
    selected: Callable[[Any], bool] | None = None,
) -> Plan:
    """
    Classify every connection of C{transports} (see L{classify}); with
    C{selected}, whether the operator selected a connection (a transport)
    to move this time (see L{Classifier.classify}).
    """
    counts: dict[str, dict[str, int]] = {}
    reasons: dict[str, dict[tuple[str, str], int]] = {}
    unknown: list[tuple[str, Any]] = []
    classifier = Classifier(adapters, successorVersions)
    for transport in transports:
        verdict = classifier.classify(
            transport, selected=True if selected is None else selected(transport)
        )
        assert verdict is not None
        mine = counts.get(verdict.typeName)
        if mine is None:
            mine = counts[verdict.typeName] = dict.fromkeys(KINDS, 0)
        mine[verdict.kind] += 1
        if verdict.reason is not None:
            why = reasons.setdefault(verdict.typeName, {})
            key = (verdict.kind, verdict.reason)
            why[key] = why.get(key, 0) + 1
        if verdict.kind == UNKNOWN:
            unknown.append((verdict.typeName, transport))
    classes = tuple(
        _classPlan(name, counts[name], reasons.get(name, {})) for name in sorted(counts)
    )
    return Plan(classes, tuple(unknown))


def _classPlan(
    name: str, counts: Mapping[str, int], reasons: Mapping[tuple[str, str], int]
) -> ClassPlan:
    return ClassPlan(
        name,
        moves=counts[MOVES],
        harmless=counts[HARMLESS],
        declined=counts[DECLINED],
        unknown=counts[UNKNOWN],
        reasons=tuple(sorted((kind, why, n) for (kind, why), n in reasons.items())),
    )


def _nested(reasons: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for kind, reason, count in reasons:
        result.setdefault(kind, {})[reason] = count
    return result


def emptyCounts() -> dict[str, int]:
    return {"moved": 0, "drained": 0, "closed": 0, "refused": 0}


def refusedCounts(plan: Plan) -> dict[str, dict[str, int]]:
    """
    Per class, for a takeover refused because of L{UNKNOWN} connections:
    how many of each class were the reason (nothing moved, drained or
    closed).
    """
    result: dict[str, dict[str, int]] = {}
    for name, count in plan.byClass(UNKNOWN).items():
        result[name] = emptyCounts()
        result[name]["refused"] = count
    return result


def settledCounts(
    moved: Mapping[str, int], remaining: Plan, policy: str
) -> dict[str, dict[str, int]]:
    """
    Per class, for a committed takeover: how many connections moved, and
    what becomes of those still here (C{remaining}): L{UNKNOWN} ones are
    closed with the L{CLOSE} policy, every other one drains.
    """
    result: dict[str, dict[str, int]] = {}
    for name, count in moved.items():
        result.setdefault(name, emptyCounts())["moved"] += count
    for c in remaining.classes:
        counts = result.setdefault(c.typeName, emptyCounts())
        counts["drained"] += c.moves + c.harmless + c.declined
        counts["closed" if policy == CLOSE else "drained"] += c.unknown
    return dict(sorted(result.items()))


def refusalMessage(plan: Plan, pid: int, step: str = "begin") -> str:
    """
    What an operator is told when a takeover is refused because of
    L{UNKNOWN} connections: each class with its count and reason, and the
    remedies.
    """
    since = "" if step == "begin" else f" (opened since the takeover began; seen at step {step})"
    unselected = any(NOT_SELECTED in c.reasonsFor(UNKNOWN) for c in plan.classes)
    lines = [
        f"{plan.count(UNKNOWN)} open connection(s) have no adapter that can move "
        f"them{' or were not selected to move' if unselected else ''}{since}; left in "
        f"the old process, they would split the service's state in two:"
    ]
    for c in plan.classes:
        if c.unknown:
            why = "; ".join(c.reasonsFor(UNKNOWN))
            lines.append(f"  {c.typeName}: {c.unknown} connection(s) ({why})")
    lines += [
        f"Nothing was changed: pid {pid} keeps serving all its ports and connections.",
        "To take over anyway, do one of:",
        "  - write adapters for these classes (docs/adapters.md) and give them to every "
        "generation: --adapters MODULE, or a registerAdapters(registry) function in the .tac;",
        "  - start the successor with --unmovable drain: they stay in the old process "
        "until they close, and the service's state is then split between two processes;",
        "  - start the successor with --unmovable close: the old process closes them "
        "after the move, as a shutdown would (their clients reconnect to the new process).",
    ]
    return "\n".join(lines)


@implementer(IAdapter)
@attrs.frozen
class DrainingAdapter:
    """
    For a class whose connections never move but may always stay with the
    old process without harm (independent sessions, such as FTP): they
    drain, whatever the operator's C{--unmovable} policy, and the takeover
    log says why.
    """

    cls: type
    why: str
    typeName: str = attrs.field(
        default=attrs.Factory(lambda self: typeName(self.cls), takes_self=True)
    )
    version: int = 1
    drainsHarmlessly: bool = True

    def movable(self, obj: Any) -> str | None:
        return self.why

    def capture(self, obj: Any) -> Any:
        raise Unadaptable(obj, "", self.why)

    def create(self, context: Any) -> Any:
        raise GraphError(f"a {self.typeName} never moves")

    def populate(self, obj: Any, state: Any, context: Any) -> None:
        raise GraphError(f"a {self.typeName} never moves")
