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

  - L{migrator.interfaces.IBusyAware}, C{busy(protocol)}: whether a
    connection's protocol declines only for now (a request in progress);
    the incumbent then waits a bounded time for it before capturing
    (L{migrator.state._settling.Settling});
  - L{migrator.interfaces.IAnchorOnly}: objects of the class are only ever
    matched onto the successor's own (a port's factory), never created
    from state.

L{AdapterRegistry.register} checks what an adapter declares with
C{zope.interface.verify.verifyObject}, and refuses one with a member of
these optional interfaces that does not declare the interface (it would
be silently ignored).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from migrator.interfaces import IAdapter, IAnchorOnly, IBusyAware, IVersionedAdapter
from migrator.state._graph import typeName as _typeName
from migrator.state._nodes import neverDeclines
from migrator.state._plan import DrainingAdapter
from migrator.state._versions import (
    KeptStore,
    Step,
    checkSteps,
    persistenceVersions,
    versionedState,
)

_log = Logger()


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

    @property
    def plainAttributes(self) -> frozenset[str] | None:
        """
        C{exclude}, unless a subclass captures differently, or the class
        is a Twisted C{Versioned} (whose state carries its versions): then
        C{None}.  A set here tells the graph writer that C{capture(obj)} is the
        instance dictionary minus these names, which it then reads without
        copying (see L{migrator.state._graph.GraphWriter}).
        """
        if self._versioned or type(self).capture is not InstanceAdapter.capture:
            return None
        return self.exclude

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

    # (Never declines: the plan and the stream count on it without asking.)
    movable = neverDeclines


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


class BrokenAdapter(ValueError):
    """
    An object given to L{AdapterRegistry.register} is not a usable
    adapter: it does not provide L{IAdapter} (or an optional interface it
    declares) with the members and signatures the interface names, or it
    has a member of an optional interface without declaring it.
    """


def checkAdapter(adapter: Any) -> None:
    """
    Check that C{adapter} provides what an adapter must, and what it
    declares.

    @param adapter: the adapter to check.
    @raise BrokenAdapter: if it is not usable, saying why.
    """
    try:
        verifyObject(IAdapter, adapter)
        for optional in (IBusyAware, IAnchorOnly):
            if optional.providedBy(adapter):
                verifyObject(optional, adapter)
    except Invalid as e:
        raise BrokenAdapter(f"{adapter!r} is not a usable adapter: {e}") from e
    if hasattr(adapter, "busy") and not IBusyAware.providedBy(adapter):
        raise BrokenAdapter(
            f"{adapter!r} has a busy() method but does not declare "
            f"IBusyAware (@implementer(IAdapter, IBusyAware)): it would be ignored"
        )
    if hasattr(adapter, "anchorOnly") and not IAnchorOnly.providedBy(adapter):
        raise BrokenAdapter(
            f"{adapter!r} has an anchorOnly attribute; declare IAnchorOnly "
            f"(@implementer(IAdapter, IAnchorOnly)) instead"
        )


class AdapterRegistry:
    """
    Adapters by exact class (to capture) and by type name (to restore),
    and the plain functions that may be carried by name: the allow-list of
    a process.

    @ivar kept: the fields kept aside for this process's live objects,
        written again with their states (see L{migrator.state._versions}).
    """

    def __init__(self) -> None:
        self.kept = KeptStore()
        self._byClass: dict[type, Any] = {}
        self._byName: dict[str, Any] = {}
        self._functions: dict[str, Callable[..., Any]] = {}
        self._functionNames: dict[Any, str] = {}
        # Registrations in order: a later one wins (see registerWhenImported).
        self._order = 0
        self._classOrder: dict[type, int] = {}
        self._nameOrder: dict[str, int] = {}
        self._later: list[tuple[str, Callable[[AdapterRegistry], object], int]] = []
        self._loading: int | None = None

    def register(self, adapter: Any, cls: type | None = None) -> Any:
        """
        Register C{adapter} for objects of exactly C{cls} (to capture) and
        for its type name (to restore).  Registering the same adapter again,
        or another one for a class and type name already paired, replaces
        the previous one.

        @param adapter: an L{IAdapter} provider (optionally also
            L{IBusyAware} or L{IAnchorOnly}), checked with C{verifyObject}.
        @param cls: the class it covers (default: C{adapter.cls}); not its
            subclasses.
        @return: C{adapter}.
        @raise BrokenAdapter: if C{adapter} is not a usable adapter (see
            L{checkAdapter}), or has no C{cls} and none is given.
        @raise ValueError: if another class is registered under the same
            type name.
        """
        checkAdapter(adapter)
        if cls is None:
            cls = getattr(adapter, "cls", None)
            if not isinstance(cls, type):
                raise BrokenAdapter(
                    f"{adapter!r} has no class (cls attribute): give the class to register"
                )
        name = adapter.typeName
        if self._loading is not None:
            # A registration put off (registerWhenImported) replaces none
            # made otherwise, before or since.
            order = self._loading
            if self._classOrder.get(cls, order) != order or self._nameOrder.get(name, order) != order:
                return adapter
        else:
            self._order += 1
            order = self._order
        other = self._byName.get(name)
        if other is not None and other is not adapter and self._byClass.get(cls) is not other:
            raise ValueError(f"type name {name} is already registered")
        self._byClass[cls] = adapter
        self._byName[name] = adapter
        self._classOrder[cls] = self._nameOrder[name] = order
        return adapter

    def registerWhenImported(self, module: str, register: Callable[[AdapterRegistry], object]) -> None:
        """
        Put off registering adapters until they can be needed: C{register}
        (a function of the registry) runs once, the first time this
        registry is asked about a class or a type name (L{adapterFor},
        L{adapterNamed}, L{typeNames}) while the module named C{module} is
        imported in this process.  A process whose application never
        imports C{module} has no object of its classes, and never imports
        the adapters for them (nor what they import: C{twisted.web},
        C{twisted.conch}...).  What C{register} registers never replaces
        an adapter registered otherwise, before or after this call, for
        the same class or type name (so that the registry is only asked
        again about what it lacks).

        If C{register} fails, the failure is logged and its adapters are
        missing (their objects stay with the process that has them).

        @param module: a module's dotted name (C{"twisted.web.http"}).
        @param register: registers adapters in the registry given.
        """
        self._order += 1
        self._later.append((module, register, self._order))

    def _registerImported(self) -> None:
        """
        Run the registrations put off whose module is imported now.
        """
        ready = [entry for entry in self._later if entry[0] in sys.modules]
        if not ready or self._loading is not None:
            return
        self._later = [entry for entry in self._later if entry[0] not in sys.modules]
        for module, register, order in ready:
            self._loading = order
            try:
                register(self)
            except Exception:
                _log.failure("registering the adapters for {module} failed", module=module)
            finally:
                self._loading = None

    def registerInstance(self, cls: type, **kwargs: Any) -> InstanceAdapter:
        """
        Register the default rule (L{InstanceAdapter}) for C{cls}.

        @param cls: the class.
        @param kwargs: L{InstanceAdapter}'s other fields (C{typeName},
            C{version}, C{exclude}, C{keep}).
        @return: the new adapter.
        @raise ValueError: if another class is registered under the same
            type name.
        """
        adapter = InstanceAdapter(cls, **kwargs)
        self.register(adapter)
        return adapter

    def registerFactory(self, cls: type, **kwargs: Any) -> InstanceAdapter:
        """
        Register L{factoryAdapter} for C{cls}.

        @param cls: the factory's class.
        @param kwargs: L{factoryAdapter}'s other arguments (C{keep},
            C{exclude}, C{version}).
        @return: the new adapter.
        @raise ValueError: if another class is registered under the same
            type name.
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
        reference, e.g. as the target of a scheduled call.

        @param function: the function.
        @param name: the name it is written under and looked up by in the
            successor (default: its module and qualified name).
        """
        name = name or f"{function.__module__}.{function.__qualname__}"
        self._functions[name] = function
        self._functionNames[function] = name

    def functionName(self, function: Any) -> str | None:
        """
        @param function: any object.
        @return: the name C{function} was allowed under, or C{None} if it
            was not.
        """
        try:
            return self._functionNames.get(function)
        except TypeError:
            return None

    def functionNamed(self, name: str) -> Callable[..., Any] | None:
        """
        @param name: a name read from a graph.
        @return: the function allowed under C{name}, or C{None}.
        """
        return self._functions.get(name)

    def adapterFor(self, cls: type) -> Any:
        """
        @param cls: the exact class of an object to capture.
        @return: its adapter (an L{IAdapter} provider), or C{None}.
        """
        adapter = self._byClass.get(cls)
        if adapter is None and self._later:
            self._registerImported()
            adapter = self._byClass.get(cls)
        return adapter

    def adapterNamed(self, name: str) -> Any:
        """
        @param name: a type name read from a graph.
        @return: the adapter registered under it, or C{None}.
        """
        adapter = self._byName.get(name)
        if adapter is None and self._later:
            self._registerImported()
            adapter = self._byName.get(name)
        return adapter

    def typeNames(self) -> list[str]:
        """
        @return: every registered type name, sorted: what this process can
            restore.
        """
        if self._later:
            self._registerImported()
        return sorted(self._byName)

    def loadModule(self, name: str) -> None:
        """
        Import C{name} and call its C{registerAdapters(registry)}.

        @param name: a module's dotted name.
        @raise ImportError: if it cannot be imported.
        @raise ValueError: if it has no such function, or registers a
            broken adapter (L{BrokenAdapter}).
        """
        module = importlib.import_module(name)
        register = getattr(module, "registerAdapters", None)
        if register is None:
            raise ValueError(f"adapter module {name} has no registerAdapters(registry) function")
        register(self)
