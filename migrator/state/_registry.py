# -*- test-case-name: tests.test_adapters -*-
"""
Adapters: how an application object becomes plain state in the incumbent,
and an instance of the successor's (possibly new) class again.

Adapters live beside the application, not inside it: a module given to
C{twistd migrate --adapters MODULE} defines C{registerAdapters(registry)}
and registers one adapter per class.  The registry is the allow-list: the
successor reconstructs nothing whose type name has no adapter registered in
its own registry.

An adapter provides L{migrator.interfaces.IAdapter}:

  - C{typeName}, C{version}: written with the state; the successor finds
    its adapter by C{typeName}; a state of another version is translated
    by the newer side's steps (C{upgrades}, C{downgrades}: see
    L{migrator.interfaces.IVersionedAdapter} and
    L{migrator.state._versions});
  - C{capture(obj)}: the state, any value the graph can carry (plain data,
    other adapted objects, transports, scheduled calls...);
  - C{create(context)}: a new, empty instance of the successor's class,
    without running C{__init__};
  - C{populate(obj, state, context)}: fill it in (references in C{state}
    may point to objects not populated yet: cycles are allowed);
  - C{movable(obj)}: C{None}, or the reason this object must stay (the
    connection then drains in the incumbent).

Optionally (see L{migrator.adapters._web} for both):

  - C{busy(protocol)}: whether a connection's protocol declines only for
    now (a request in progress); the incumbent then waits a bounded time
    for it before capturing (L{migrator.state._capture.Settling});
  - C{anchorOnly}: if true, objects of the class are only ever matched
    onto the successor's own (a port's factory), never created from state.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from zope.interface import implementer

from migrator.interfaces import IAdapter, IVersionedAdapter
from migrator.state._graph import typeName as _typeName
from migrator.state._plan import DrainingAdapter
from migrator.state._versions import (
    KeptStore,
    Step,
    checkSteps,
    persistenceVersions,
    versionedState,
)


@functools.lru_cache(maxsize=1024)
def _slotted(cls: type) -> bool:
    """
    Whether instances of C{cls} keep state in slots (C{__dict__} and
    C{__weakref__} slots hold none).
    """
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        if any(name not in ("__dict__", "__weakref__") for name in slots):
            return True
    return False


def _steps(steps: Mapping[int, Step] | None) -> dict[int, Step]:
    return dict(steps or {})


@implementer(IAdapter, IVersionedAdapter)
@attrs.frozen
class InstanceAdapter:
    """
    The default rule: an object's state is its instance dictionary, minus
    C{exclude}; restored with C{cls.__new__(cls)} and a dictionary update.
    Suits protocols and factories whose state is plain attributes, and the
    buffered protocol families (C{LineReceiver._buffer},
    C{IntNStringReceiver.recvd}, C{NetstringReceiver}'s parser state all
    live in the instance dictionary).

    An instance of a L{twisted.persisted.styles.Versioned} class is
    captured as C{Versioned.__getstate__} would (its hierarchy's
    C{persistenceVersion}s added, C{persistenceForgets} left out), and
    upgraded by its own C{upgradeToVersionN} methods in the successor.

    @ivar cls: the class, in this process.
    @ivar exclude: attribute names never carried.
    @ivar keep: attribute names whose value in the successor's own object
        wins (only matters for anchored objects, such as a port's factory,
        which the successor already built with its new code).
    @ivar upgrades: C{upgrades[n]} turns a version-C{n} state (a
        dictionary) into version C{n + 1}.
    @ivar downgrades: C{downgrades[n]} turns a version-C{n + 1} state into
        version C{n}.
    """

    cls: type
    typeName: str = attrs.field(default=attrs.Factory(lambda self: _typeName(self.cls), takes_self=True))
    version: int = 1
    exclude: frozenset[str] = frozenset()
    keep: frozenset[str] = frozenset()
    #: Whether a connection of this class that stays with the old process
    #: (see L{migrator.interfaces.IDrainable}) does so harmlessly.
    drainsHarmlessly: bool = False
    upgrades: dict[int, Step] = attrs.field(factory=dict, converter=_steps, hash=False)
    downgrades: dict[int, Step] = attrs.field(factory=dict, converter=_steps, hash=False)
    #: Whether the class is a Versioned (decided once: capture is hot).
    _versioned: bool = attrs.field(init=False, default=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        checkSteps(self.version, self.upgrades, "upgrades")
        checkSteps(self.version, self.downgrades, "downgrades")
        object.__setattr__(self, "_versioned", persistenceVersions(self.cls) is not None)

    def capture(self, obj: Any) -> dict[str, Any]:
        exclude = self.exclude
        if not hasattr(obj, "__dict__") or _slotted(type(obj)):  # type: ignore[arg-type]
            # With state in slots (beside a __dict__ or instead of one) the
            # instance dictionary is not the whole state.
            raise TypeError(f"{self.typeName} uses __slots__: write an adapter for it")
        state = {k: v for k, v in vars(obj).items() if k not in exclude}
        return versionedState(type(obj), state) if self._versioned else state

    def persistenceVersions(self) -> dict[str, int] | None:
        """
        @return: the C{persistenceVersion}s of the class's hierarchy if it
            is a L{twisted.persisted.styles.Versioned}, else C{None}.
        """
        return persistenceVersions(self.cls)

    def create(self, context: Any) -> Any:
        cls: Any = self.cls
        return cls.__new__(cls)

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        keep = self.keep
        if keep:
            state = {k: v for k, v in state.items() if k not in keep or k not in vars(obj)}
        obj.__dict__.update(state)

    def movable(self, obj: Any) -> str | None:
        return None


def factoryAdapter(
    cls: type,
    keep: Iterable[str] = (),
    exclude: Iterable[str] = (),
    version: int = 1,
    typeName: str | None = None,
    upgrades: Mapping[int, Step] | None = None,
    downgrades: Mapping[int, Step] | None = None,
) -> InstanceAdapter:
    """
    An L{InstanceAdapter} for a factory: C{numPorts} (the successor's own
    port count) is never carried, and C{keep} names the attributes the
    successor's new code sets that must not be overwritten (configuration).
    C{typeName}, C{version}, C{upgrades} and C{downgrades} are as for
    L{InstanceAdapter}.
    """
    return InstanceAdapter(
        cls,
        typeName=typeName or _typeName(cls),
        version=version,
        exclude=frozenset(exclude) | {"numPorts"},
        keep=frozenset(keep),
        upgrades=_steps(upgrades),
        downgrades=_steps(downgrades),
    )


class AdapterRegistry:
    """
    Adapters by exact class (to capture) and by type name (to restore).

    @ivar kept: the fields kept aside for this process's live objects,
        written again with their states (see L{migrator.state._versions}).
    """

    def __init__(self) -> None:
        self.kept = KeptStore()
        self._byClass: dict[type, Any] = {}
        self._byName: dict[str, Any] = {}
        self._functions: dict[str, Callable[..., Any]] = {}
        self._functionNames: dict[Any, str] = {}

    def register(self, adapter: Any, cls: type | None = None) -> Any:
        """
        Register C{adapter} for C{cls} (default C{adapter.cls}).

        @return: the adapter.
        """
        cls = cls if cls is not None else adapter.cls
        other = self._byName.get(adapter.typeName)
        if other is not None and other is not adapter and self._byClass.get(cls) is not other:
            raise ValueError(f"type name {adapter.typeName} is already registered")
        self._byClass[cls] = adapter
        self._byName[adapter.typeName] = adapter
        return adapter

    def registerInstance(self, cls: type, **kwargs: Any) -> InstanceAdapter:
        """
        Register the default rule (L{InstanceAdapter}) for C{cls}.
        """
        adapter = InstanceAdapter(cls, **kwargs)
        self.register(adapter)
        return adapter

    def registerFactory(self, cls: type, **kwargs: Any) -> InstanceAdapter:
        """
        Register L{factoryAdapter} for C{cls}.
        """
        adapter = factoryAdapter(cls, **kwargs)
        self.register(adapter)
        return adapter

    def registerDraining(self, cls: type, why: str, **kwargs: Any) -> DrainingAdapter:
        """
        Register a L{DrainingAdapter} for C{cls}: its connections never
        move, and stay with the old process until they close, harmlessly
        (C{why} says why they stay, in the takeover log).
        """
        adapter = DrainingAdapter(cls, why, **kwargs)
        self.register(adapter)
        return adapter

    def allowFunction(self, function: Callable[..., Any], name: str | None = None) -> None:
        """
        Allow a plain function (not a bound method) to be carried by
        reference, e.g. as the target of a scheduled call.  It is looked up
        by C{name} (default: its qualified name) in the successor.
        """
        name = name or f"{function.__module__}.{function.__qualname__}"
        self._functions[name] = function
        self._functionNames[function] = name

    def functionName(self, function: Any) -> str | None:
        try:
            return self._functionNames.get(function)
        except TypeError:
            return None

    def functionNamed(self, name: str) -> Callable[..., Any] | None:
        return self._functions.get(name)

    def adapterFor(self, cls: type) -> Any:
        return self._byClass.get(cls)

    def adapterNamed(self, name: str) -> Any:
        return self._byName.get(name)

    def typeNames(self) -> list[str]:
        return sorted(self._byName)

    def loadModule(self, name: str) -> None:
        """
        Import C{name} and call its C{registerAdapters(registry)}.

        @raise ValueError: if it has no such function.
        """
        module = importlib.import_module(name)
        register = getattr(module, "registerAdapters", None)
        if register is None:
            raise ValueError(f"adapter module {name} has no registerAdapters(registry) function")
        register(self)
