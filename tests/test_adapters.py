# -*- test-case-name: tests.test_adapters -*-
"""
Tests for L{migrator.state._registry}: the default rule (L{InstanceAdapter}),
factories, and the registry that is the allow-list.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

from twisted.internet.protocol import ServerFactory
from twisted.protocols import portforward
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from migrator.adapters import defaultRegistry
from migrator.interfaces import IAdapter, IAnchorOnly, IBusyAware, IRestoreContext
from migrator.state._graph import GraphReader, GraphWriter, dumpsPlain, loadsPlain, typeName
from migrator.state._registry import (
    AdapterRegistry,
    BrokenAdapter,
    InstanceAdapter,
    factoryAdapter,
)
from migrator.tap import importAdapterModule


class Counter:
    """
    An application object whose C{__init__} has a side effect that must
    not run again in the successor.
    """

    inits = 0

    def __init__(self, n: int = 0) -> None:
        type(self).inits += 1
        self.n = n
        self.cache = {"expensive": True}


class Slotted:
    """
    State in slots only: there is no instance dictionary to carry.
    """

    __slots__ = ("a", "b")

    def __init__(self) -> None:
        self.a = 1
        self.b = 2


class Plain:
    """
    An ordinary class, base of L{HalfSlotted}.
    """


class HalfSlotted(Plain):
    """
    State in an instance dictionary I{and} in a slot: carrying the
    dictionary alone would lose the slot silently.
    """

    __slots__ = ("hidden",)

    def __init__(self) -> None:
        self.visible = 1
        self.hidden = 2


class EmptySlots:
    """
    Declares empty slots (as C{typing.Generic} does) in a class that still
    has an instance dictionary: nothing is lost.
    """

    __slots__ = ("__dict__",)


class Factory(ServerFactory):
    """
    A factory with configuration (C{greeting}) and state (C{clients}).
    """

    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting
        self.clients: list[Any] = []


def helper() -> None:
    """
    A plain function to allow by name.
    """


class InstanceAdapterTests(SynchronousTestCase):
    """
    The default rule: an object's state is its instance dictionary.
    """

    def setUp(self) -> None:
        Counter.inits = 0

    def test_provides(self) -> None:
        """
        L{InstanceAdapter} and L{factoryAdapter}'s adapters provide
        L{IAdapter}.
        """
        verifyObject(IAdapter, InstanceAdapter(Counter))
        verifyObject(IAdapter, factoryAdapter(Factory))

    def test_typeName(self) -> None:
        """
        The type name defaults to the class's module and qualified name,
        the version to 1; both can be given.
        """
        adapter = InstanceAdapter(Counter)
        self.assertEqual(adapter.typeName, "tests.test_adapters.Counter")
        self.assertEqual(adapter.version, 1)
        other = InstanceAdapter(Counter, typeName="app.Counter", version=3)
        self.assertEqual((other.typeName, other.version), ("app.Counter", 3))

    def test_capture(self) -> None:
        """
        C{capture} returns the instance dictionary, as a new dictionary:
        changing it does not change the object.
        """
        obj = Counter(5)
        state = InstanceAdapter(Counter).capture(obj)
        self.assertEqual(state, {"n": 5, "cache": {"expensive": True}})
        state["n"] = 6
        self.assertEqual(obj.n, 5)

    def test_createRunsNoInit(self) -> None:
        """
        C{create} makes an empty instance of the class without running
        C{__init__}.
        """
        obj = InstanceAdapter(Counter).create(None)
        self.assertIs(type(obj), Counter)
        self.assertEqual(Counter.inits, 0)
        self.assertEqual(vars(obj), {})

    def test_populate(self) -> None:
        """
        C{populate} gives the created object the captured state.
        """
        adapter = InstanceAdapter(Counter)
        state = adapter.capture(Counter(3))
        obj = adapter.create(None)
        adapter.populate(obj, state, None)
        self.assertEqual(obj.n, 3)
        self.assertEqual(obj.cache, {"expensive": True})
        self.assertEqual(Counter.inits, 1)

    def test_exclude(self) -> None:
        """
        Excluded attributes are not captured, so the restored object has
        the class's default (or nothing) for them.
        """
        adapter = InstanceAdapter(Counter, exclude=frozenset({"cache"}))
        state = adapter.capture(Counter(3))
        self.assertEqual(state, {"n": 3})
        obj = adapter.create(None)
        adapter.populate(obj, state, None)
        self.assertFalse(hasattr(obj, "cache"))

    def test_keep(self) -> None:
        """
        For an object that already has a value for a kept attribute (an
        anchored object the successor built), the successor's value wins;
        an object without one takes the captured value.
        """
        adapter = InstanceAdapter(Factory, keep=frozenset({"greeting"}))
        state = adapter.capture(Factory("old"))
        state["clients"] = ["carried"]
        theirs = Factory("new")
        adapter.populate(theirs, state, None)
        self.assertEqual(theirs.greeting, "new")
        self.assertEqual(theirs.clients, ["carried"])
        fresh = adapter.create(None)
        adapter.populate(fresh, state, None)
        self.assertEqual(fresh.greeting, "old")

    def test_movable(self) -> None:
        """
        The default rule lets every object move.
        """
        self.assertIsNone(InstanceAdapter(Counter).movable(Counter()))

    def test_slotsRejected(self) -> None:
        """
        An object with slots and no instance dictionary is refused with a
        message saying why and what to do.
        """
        e = self.assertRaises(TypeError, InstanceAdapter(Slotted).capture, Slotted())
        self.assertIn("tests.test_adapters.Slotted", str(e))
        self.assertIn("__slots__", str(e))
        self.assertIn("write an adapter", str(e))

    def test_halfSlotsRejected(self) -> None:
        """
        An object with an instance dictionary I{and} state in slots is
        refused too: carrying only the dictionary would lose the slots'
        state without a word.
        """
        e = self.assertRaises(TypeError, InstanceAdapter(HalfSlotted).capture, HalfSlotted())
        self.assertIn("__slots__", str(e))

    def test_emptySlotsAccepted(self) -> None:
        """
        Slots that hold no state (only C{__dict__}, or none, as
        C{typing.Generic} declares) do not stand in the way.
        """
        obj = EmptySlots()
        obj.x = 1  # type: ignore[attr-defined]
        self.assertEqual(InstanceAdapter(EmptySlots).capture(obj), {"x": 1})
        factory = Factory()
        self.assertIn("greeting", InstanceAdapter(Factory).capture(factory))

    def test_successorClass(self) -> None:
        """
        Through a graph, the object is restored as an instance of the class
        the successor registered under the type name, with its state and
        without its C{__init__}.
        """

        class NewCounter:
            def __init__(self) -> None:
                raise AssertionError("__init__ must not run")

        old = AdapterRegistry()
        old.registerInstance(Counter, typeName="app.Counter")
        new = AdapterRegistry()
        new.registerInstance(NewCounter, typeName="app.Counter")
        node = GraphWriter(old.adapterFor).write(Counter(9))
        reader = GraphReader(new.adapterNamed)
        obj = reader.read(loadsPlain(dumpsPlain(node)))
        reader.finish()
        self.assertIs(type(obj), NewCounter)
        self.assertEqual(obj.n, 9)


class FactoryAdapterTests(SynchronousTestCase):
    """
    L{factoryAdapter}: the default rule for factories.
    """

    def test_numPortsNeverCarried(self) -> None:
        """
        C{numPorts} (how many ports this process's factory listens on) is
        not captured, and populating does not touch the successor's count.
        """
        adapter = factoryAdapter(Factory)
        old = Factory()
        old.doStart()
        old.doStart()
        state = adapter.capture(old)
        self.assertNotIn("numPorts", state)
        theirs = Factory()
        theirs.doStart()
        adapter.populate(theirs, state, None)
        self.assertEqual(theirs.numPorts, 1)

    def test_numPortsEvenIfNotExcluded(self) -> None:
        """
        C{numPorts} is excluded in addition to the given exclusions.
        """
        adapter = factoryAdapter(Factory, exclude=["clients"])
        self.assertEqual(adapter.exclude, frozenset({"clients", "numPorts"}))
        old = Factory()
        old.doStart()
        self.assertEqual(adapter.capture(old), {"greeting": "hello"})

    def test_keepAndVersion(self) -> None:
        """
        C{keep} and C{version} are passed on.
        """
        adapter = factoryAdapter(Factory, keep=["greeting"], version=4)
        self.assertEqual(adapter.keep, frozenset({"greeting"}))
        self.assertEqual(adapter.version, 4)
        self.assertIs(adapter.cls, Factory)


def _module(test: SynchronousTestCase, name: str, **attrs: Any) -> types.ModuleType:
    """
    Put a module with the given attributes in C{sys.modules} for the
    duration of C{test}.
    """
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    test.addCleanup(sys.modules.pop, name, None)
    sys.modules[name] = module
    return module


class AdapterRegistryTests(SynchronousTestCase):
    """
    L{AdapterRegistry}: adapters by exact class (to capture) and by type
    name (to restore); allowed functions by name.
    """

    def test_byClassAndName(self) -> None:
        """
        A registered adapter is found by its class and by its type name.
        """
        registry = AdapterRegistry()
        adapter = InstanceAdapter(Counter)
        self.assertIs(registry.register(adapter), adapter)
        self.assertIs(registry.adapterFor(Counter), adapter)
        self.assertIs(registry.adapterNamed(typeName(Counter)), adapter)
        self.assertEqual(registry.typeNames(), [typeName(Counter)])

    def test_unknown(self) -> None:
        """
        Unregistered classes and names have no adapter.
        """
        registry = AdapterRegistry()
        self.assertIsNone(registry.adapterFor(Counter))
        self.assertIsNone(registry.adapterNamed("os.system"))

    def test_exactClassOnly(self) -> None:
        """
        An adapter covers its exact class, not subclasses: a subclass may
        hold state its base's adapter knows nothing about.
        """

        class SubCounter(Counter):
            pass

        registry = AdapterRegistry()
        registry.registerInstance(Counter)
        self.assertIsNone(registry.adapterFor(SubCounter))

    def test_explicitClass(self) -> None:
        """
        An adapter can be registered for another class than its own.
        """

        class Other:
            pass

        registry = AdapterRegistry()
        adapter = registry.register(InstanceAdapter(Counter), Other)
        self.assertIs(registry.adapterFor(Other), adapter)

    def test_duplicateNameRefused(self) -> None:
        """
        A second class registered under a type name already taken is
        refused, and the first registration stands.
        """
        registry = AdapterRegistry()
        first = registry.registerInstance(Counter, typeName="app.Thing")
        e = self.assertRaises(ValueError, registry.registerInstance, Factory, typeName="app.Thing")
        self.assertIn("app.Thing", str(e))
        self.assertIs(registry.adapterNamed("app.Thing"), first)
        self.assertIsNone(registry.adapterFor(Factory))

    def test_reregistrationAllowed(self) -> None:
        """
        Registering the same adapter again, or a new adapter for the same
        class under the same name, is allowed (the latter replaces it).
        """
        registry = AdapterRegistry()
        first = registry.registerInstance(Counter)
        registry.register(first)
        second = registry.registerInstance(Counter, exclude=frozenset({"cache"}))
        self.assertIs(registry.adapterFor(Counter), second)
        self.assertIs(registry.adapterNamed(typeName(Counter)), second)

    def test_registerInstance(self) -> None:
        """
        L{AdapterRegistry.registerInstance} registers the default rule,
        passing on its options.
        """
        registry = AdapterRegistry()
        adapter = registry.registerInstance(Counter, version=2, exclude=frozenset({"cache"}))
        self.assertIsInstance(adapter, InstanceAdapter)
        self.assertEqual((adapter.version, adapter.exclude), (2, frozenset({"cache"})))
        self.assertIs(registry.adapterFor(Counter), adapter)

    def test_registerFactory(self) -> None:
        """
        L{AdapterRegistry.registerFactory} registers L{factoryAdapter}'s
        adapter: C{numPorts} excluded, C{keep} passed on.
        """
        registry = AdapterRegistry()
        adapter = registry.registerFactory(Factory, keep=("greeting",))
        self.assertIn("numPorts", adapter.exclude)
        self.assertEqual(adapter.keep, frozenset({"greeting"}))
        self.assertIs(registry.adapterFor(Factory), adapter)

    def test_allowFunction(self) -> None:
        """
        An allowed function is known by its module and qualified name,
        both ways.
        """
        registry = AdapterRegistry()
        registry.allowFunction(helper)
        self.assertEqual(registry.functionName(helper), "tests.test_adapters.helper")
        self.assertIs(registry.functionNamed("tests.test_adapters.helper"), helper)

    def test_allowFunctionNamed(self) -> None:
        """
        A function can be allowed under a name of one's choosing.
        """
        registry = AdapterRegistry()
        registry.allowFunction(helper, "app.tick")
        self.assertEqual(registry.functionName(helper), "app.tick")
        self.assertIs(registry.functionNamed("app.tick"), helper)
        self.assertIsNone(registry.functionNamed("tests.test_adapters.helper"))

    def test_functionsNotAllowed(self) -> None:
        """
        Functions not allowed, unhashable values and unknown names give
        C{None}.
        """
        registry = AdapterRegistry()
        self.assertIsNone(registry.functionName(helper))
        self.assertIsNone(registry.functionName([]))
        self.assertIsNone(registry.functionNamed("os.system"))

    def test_loadModule(self) -> None:
        """
        L{AdapterRegistry.loadModule} imports the module and calls its
        C{registerAdapters} with the registry.
        """
        calls = []

        def registerAdapters(registry: AdapterRegistry) -> None:
            calls.append(registry)
            registry.registerInstance(Counter)

        _module(self, "migrator_test_adapters_with", registerAdapters=registerAdapters)
        registry = AdapterRegistry()
        registry.loadModule("migrator_test_adapters_with")
        self.assertEqual(calls, [registry])
        self.assertIsNotNone(registry.adapterFor(Counter))

    def test_loadModuleWithout(self) -> None:
        """
        A module without C{registerAdapters} is refused with a message that
        names the module and the function it lacks.
        """
        _module(self, "migrator_test_adapters_without")
        e = self.assertRaises(
            ValueError, AdapterRegistry().loadModule, "migrator_test_adapters_without"
        )
        self.assertIn("migrator_test_adapters_without", str(e))
        self.assertIn("registerAdapters", str(e))

    def test_loadModuleMissing(self) -> None:
        """
        A module that does not exist raises C{ImportError}.
        """
        self.assertRaises(ImportError, AdapterRegistry().loadModule, "migrator_test_no_such_module")


class RegisterWhenImportedTests(SynchronousTestCase):
    """
    L{AdapterRegistry.registerWhenImported}: adapters registered once their
    module is imported, the first time the registry is asked.
    """

    def setUp(self) -> None:
        self.calls: list[str] = []

    def later(self, adapter: Any) -> Any:
        def register(registry: AdapterRegistry) -> None:
            self.calls.append("register")
            registry.register(adapter)

        return register

    def test_notImported(self) -> None:
        """
        While the module is not imported, the adapters are not registered,
        and the function is not called.
        """
        registry = AdapterRegistry()
        registry.registerWhenImported("migrator_test_never_imported", self.later(InstanceAdapter(Counter)))
        self.assertIsNone(registry.adapterFor(Counter))
        self.assertIsNone(registry.adapterNamed(typeName(Counter)))
        self.assertEqual(registry.typeNames(), [])
        self.assertEqual(self.calls, [])

    def test_imported(self) -> None:
        """
        Once the module is imported, the first question registers the
        adapters (once): by class, by name, or the list of names.
        """
        for ask in (
            lambda r: r.adapterFor(Counter),
            lambda r: r.adapterNamed(typeName(Counter)),
            lambda r: r.typeNames() and r.adapterFor(Counter),
        ):
            del self.calls[:]
            registry = AdapterRegistry()
            adapter = InstanceAdapter(Counter)
            registry.registerWhenImported("migrator_test_lazy", self.later(adapter))
            self.assertIsNone(registry.adapterFor(Counter))
            _module(self, "migrator_test_lazy")
            self.assertIs(ask(registry), adapter)
            self.assertIs(registry.adapterFor(Counter), adapter)
            self.assertEqual(registry.typeNames(), [typeName(Counter)])
            self.assertEqual(self.calls, ["register"])
            sys.modules.pop("migrator_test_lazy")

    def test_neverReplaces(self) -> None:
        """
        What is registered when the module is imported replaces no adapter
        registered otherwise, before or after it was put off, for the same
        class or type name; it may replace its own.
        """
        before, after = InstanceAdapter(Counter), InstanceAdapter(Plain)
        lazyCounter, lazyPlain = InstanceAdapter(Counter), InstanceAdapter(Plain)
        first, second = InstanceAdapter(Factory), InstanceAdapter(Factory)
        clash = InstanceAdapter(Slotted, typeName=typeName(Plain))

        def register(registry: AdapterRegistry) -> None:
            registry.register(lazyCounter)
            registry.register(lazyPlain)
            registry.register(clash)
            registry.register(first)
            registry.register(second)

        registry = AdapterRegistry()
        registry.register(before)
        registry.registerWhenImported("migrator_test_lazy_ranked", register)
        registry.register(after)
        _module(self, "migrator_test_lazy_ranked")
        self.assertIs(registry.adapterFor(Factory), second)
        self.assertIs(registry.adapterFor(Counter), before)
        self.assertIs(registry.adapterNamed(typeName(Counter)), before)
        self.assertIs(registry.adapterFor(Plain), after)
        self.assertIs(registry.adapterNamed(typeName(Plain)), after)
        self.assertIsNone(registry.adapterFor(Slotted))

    def test_failureLogged(self) -> None:
        """
        A registration that fails is logged, not raised, and not tried
        again; its adapters are missing.
        """

        def register(registry: AdapterRegistry) -> None:
            self.calls.append("register")
            raise ImportError("no such thing")

        registry = AdapterRegistry()
        registry.registerWhenImported("migrator_test_lazy_broken", register)
        _module(self, "migrator_test_lazy_broken")
        self.assertIsNone(registry.adapterFor(Counter))
        self.assertIsNone(registry.adapterFor(Counter))
        self.assertEqual(self.calls, ["register"])
        self.assertEqual(len(self.flushLoggedErrors(ImportError)), 1)

    def test_defaultRegistryImportsLittle(self) -> None:
        """
        A process that builds the default registry (as every C{twistd
        migrate} does) imports none of C{twisted.web}, C{twisted.conch},
        C{twisted.words}, C{twisted.protocols.ftp} or the global reactor
        for it; asked about a C{twisted.web} class once C{twisted.web} is
        imported, it has its adapter.
        """
        code = (
            "import sys\n"
            "from migrator.adapters import defaultRegistry\n"
            "r = defaultRegistry()\n"
            "heavy = ['twisted.web', 'twisted.conch', 'twisted.words',\n"
            "         'twisted.protocols.ftp', 'twisted.internet.reactor']\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n"
            "from twisted.web import http\n"
            "print(r.adapterFor(http.HTTPChannel) is not None)\n"
        )
        import os
        import subprocess

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=60
        )
        self.assertEqual(out.stdout.split("\n")[:2], ["[]", "True"], out.stderr)


class Undeclared:
    """
    Has every member of an adapter, but does not declare L{IAdapter}.
    """

    cls = Counter
    typeName = "app.Undeclared"
    version = 1

    def capture(self, obj: Any) -> Any:
        return None

    def create(self, context: Any) -> Any:
        return None

    def populate(self, obj: Any, state: Any, context: Any) -> None:
        pass

    def movable(self, obj: Any) -> str | None:
        return None


@implementer(IAdapter)
class Incomplete:
    """
    Declares L{IAdapter}, but has no C{movable}.
    """

    cls = Counter
    typeName = "app.Incomplete"
    version = 1

    def capture(self, obj: Any) -> Any:
        return None

    def create(self, context: Any) -> Any:
        return None

    def populate(self, obj: Any, state: Any, context: Any) -> None:
        pass


@implementer(IAdapter)
class WrongSignature(Undeclared):
    """
    Declares L{IAdapter}, but its C{populate} takes no context.
    """

    def populate(self, obj: Any, state: Any) -> None:  # type: ignore[override]
        pass


@implementer(IAdapter)
class UndeclaredBusy(Undeclared):
    """
    Has C{busy} but does not declare L{IBusyAware}: it would be ignored.
    """

    def busy(self, obj: Any) -> bool:
        return True


@implementer(IAdapter, IBusyAware)
class DeclaredBusy(Undeclared):
    """
    A well-formed adapter whose objects can be busy.
    """

    def busy(self, obj: Any) -> bool:
        return True


@implementer(IAdapter, IBusyAware)
class BusyWithoutMethod(Undeclared):
    """
    Declares L{IBusyAware} without a C{busy} method.
    """


@implementer(IAdapter)
class AnchorOnlyAttribute(Undeclared):
    """
    The old prose: an C{anchorOnly} attribute instead of L{IAnchorOnly}.
    """

    anchorOnly = True


@implementer(IAdapter)
class Classless(Undeclared):
    """
    A well-formed adapter without a C{cls}.
    """

    cls = None  # type: ignore[assignment]


class RegisterChecksTests(SynchronousTestCase):
    """
    L{AdapterRegistry.register} checks adapters with C{verifyObject}, and
    refuses a broken one with L{BrokenAdapter} (a C{ValueError}) saying why.
    """

    def assertRefused(self, adapter: Any, *why: str) -> None:
        """
        Registering C{adapter} is refused with a message naming C{why}, and
        registers nothing.
        """
        registry = AdapterRegistry()
        e = self.assertRaises(BrokenAdapter, registry.register, adapter)
        self.assertIsInstance(e, ValueError)
        for text in why:
            self.assertIn(text, str(e))
        self.assertEqual(registry.typeNames(), [])

    def test_undeclared(self) -> None:
        """
        An object that does not declare L{IAdapter} is refused.
        """
        self.assertRefused(Undeclared(), "is not a usable adapter", "IAdapter")

    def test_incomplete(self) -> None:
        """
        An adapter that lacks a method of L{IAdapter} is refused.
        """
        self.assertRefused(Incomplete(), "movable")

    def test_wrongSignature(self) -> None:
        """
        An adapter whose method takes other arguments than L{IAdapter}
        says is refused.
        """
        self.assertRefused(WrongSignature(), "populate")

    def test_busyUndeclared(self) -> None:
        """
        A C{busy} method without L{IBusyAware} is refused: the capture
        would never ask it.
        """
        self.assertRefused(UndeclaredBusy(), "busy()", "IBusyAware")

    def test_busyDeclared(self) -> None:
        """
        An adapter that declares L{IBusyAware} and has C{busy} is
        registered.
        """
        adapter = DeclaredBusy()
        self.assertIs(AdapterRegistry().register(adapter), adapter)

    def test_busyMissing(self) -> None:
        """
        An adapter that declares L{IBusyAware} without C{busy} is refused.
        """
        self.assertRefused(BusyWithoutMethod(), "busy")

    def test_anchorOnlyAttribute(self) -> None:
        """
        An C{anchorOnly} attribute (the old prose) is refused, pointing to
        L{IAnchorOnly}.
        """
        self.assertRefused(AnchorOnlyAttribute(), "anchorOnly", "IAnchorOnly")

    def test_noClass(self) -> None:
        """
        An adapter without C{cls} is refused unless the class is given.
        """
        self.assertRefused(Classless(), "has no class")
        adapter = Classless()
        registry = AdapterRegistry()
        registry.register(adapter, Counter)
        self.assertIs(registry.adapterFor(Counter), adapter)

    def test_adapterModule(self) -> None:
        """
        A broken adapter registered by an adapter module fails its
        loading with a C{ValueError} (a usage error of C{--adapters}).
        """

        def registerAdapters(registry: AdapterRegistry) -> None:
            registry.register(Undeclared())

        _module(self, "migrator_test_adapters_broken", registerAdapters=registerAdapters)
        importAdapterModule("migrator_test_adapters_broken")
        e = self.assertRaises(ValueError, defaultRegistry, ["migrator_test_adapters_broken"])
        self.assertIn("is not a usable adapter", str(e))


class OptionalInterfacesTests(SynchronousTestCase):
    """
    The built-in adapters declare the optional interfaces they provide.
    """

    def test_declared(self) -> None:
        """
        Every adapter of the default registry (once the Twisted modules
        it has adapters for are imported) provides L{IAdapter}, and
        L{IBusyAware} exactly when it has C{busy}; the web L{Site}'s
        provides L{IAnchorOnly}, and no adapter has an C{anchorOnly}
        attribute.
        """
        import twisted.conch.manhole  # noqa: F401
        import twisted.protocols.ftp  # noqa: F401
        import twisted.web.http  # noqa: F401
        import twisted.words.service  # noqa: F401

        registry = defaultRegistry()
        anchorOnly = []
        for name in registry.typeNames():
            adapter = registry.adapterNamed(name)
            self.assertTrue(verifyObject(IAdapter, adapter), name)
            self.assertEqual(IBusyAware.providedBy(adapter), hasattr(adapter, "busy"), name)
            if IBusyAware.providedBy(adapter):
                self.assertTrue(verifyObject(IBusyAware, adapter), name)
            self.assertFalse(hasattr(adapter, "anchorOnly"), name)
            if IAnchorOnly.providedBy(adapter):
                anchorOnly.append(name)
        expected = {"twisted.web.server.Site", "twisted.words.service.IRCFactory"}
        if importlib.util.find_spec("autobahn") is not None:
            # Registered only where the optional autobahn is installed.
            expected.add("autobahn.twisted.websocket.WebSocketServerFactory")
        self.assertEqual(set(anchorOnly), expected)

    def test_roundTripContext(self) -> None:
        """
        The context L{migrator.testing.roundTrip} gives to C{create} and
        C{populate} provides L{IRestoreContext}.
        """
        from migrator.testing import roundTrip

        contexts: list[Any] = []

        @implementer(IAdapter)
        class Recording(Undeclared):
            def create(self, context: Any) -> Any:
                contexts.append(context)
                return Counter.__new__(Counter)

            def populate(self, obj: Any, state: Any, context: Any) -> None:
                contexts.append(context)

        registry = AdapterRegistry()
        registry.register(Recording())
        roundTrip(Counter(), registry)
        self.assertEqual(len(contexts), 2)
        for context in contexts:
            self.assertTrue(verifyObject(IRestoreContext, context))


class DefaultRegistryTests(SynchronousTestCase):
    """
    L{defaultRegistry}: migrator's adapters for Twisted, then the given
    modules'.
    """

    def test_portforward(self) -> None:
        """
        The C{twisted.protocols.portforward} classes have adapters, each
        providing L{IAdapter}; the proxy factory keeps the successor's
        configuration and never carries C{numPorts}.
        """
        registry = defaultRegistry()
        for cls in (
            portforward.ProxyServer,
            portforward.ProxyClient,
            portforward.ProxyFactory,
            portforward.ProxyClientFactory,
        ):
            adapter = registry.adapterFor(cls)
            self.assertIsNotNone(adapter, cls)
            verifyObject(IAdapter, adapter)
            self.assertIs(registry.adapterNamed(typeName(cls)), adapter)
        factory = registry.adapterFor(portforward.ProxyFactory)
        self.assertEqual(factory.keep, frozenset({"host", "port"}))
        self.assertIn("numPorts", factory.exclude)

    def test_proxyMovesOnlyConnected(self) -> None:
        """
        A proxy half whose other half is not connected yet must stay.
        """
        registry = defaultRegistry()
        adapter = registry.adapterFor(portforward.ProxyServer)
        server = portforward.ProxyServer()
        self.assertIsInstance(adapter.movable(server), str)
        client = portforward.ProxyClient()
        client.connected = True
        server.peer = client
        self.assertIsNone(adapter.movable(server))

    def test_modules(self) -> None:
        """
        The adapters of the given modules are registered after Twisted's.
        """

        def registerAdapters(registry: AdapterRegistry) -> None:
            registry.registerInstance(Counter)

        _module(self, "migrator_test_adapters_default", registerAdapters=registerAdapters)
        registry = defaultRegistry(["migrator_test_adapters_default"])
        self.assertIsNotNone(registry.adapterFor(Counter))
        self.assertIsNotNone(registry.adapterFor(portforward.ProxyServer))
        self.assertIsNone(defaultRegistry().adapterFor(Counter))
