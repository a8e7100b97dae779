"""
Tests for L{migrator.interfaces}: the real implementations provide the
seams they claim.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from migrator import MigrateService
from migrator.interfaces import IMigrationNode, IPeerPolicy, IPortRegistry, IRestoreContext
from migrator.state._restore import RestoreContext, _Gate
from migrator.takeover._control import PeerPolicy
from migrator.takeover._ports import ListenerRegistry


class ListenerRegistryInterfaceTests(SynchronousTestCase):
    """
    L{ListenerRegistry} is an L{IPortRegistry}.
    """

    def test_class(self) -> None:
        """
        The class declares and implements every method of L{IPortRegistry}
        with compatible signatures.
        """
        self.assertTrue(verifyClass(IPortRegistry, ListenerRegistry))

    def test_instance(self) -> None:
        """
        An instance provides L{IPortRegistry}.
        """
        registry = ListenerRegistry(MemoryReactorClock())
        self.assertTrue(verifyObject(IPortRegistry, registry))


class PeerPolicyInterfaceTests(SynchronousTestCase):
    """
    L{PeerPolicy} is an L{IPeerPolicy}.
    """

    def test_class(self) -> None:
        """
        The class declares and implements L{IPeerPolicy}.
        """
        self.assertTrue(verifyClass(IPeerPolicy, PeerPolicy))

    def test_instance(self) -> None:
        """
        An instance, with default or injected credentials, provides
        L{IPeerPolicy}.
        """
        self.assertTrue(verifyObject(IPeerPolicy, PeerPolicy()))
        self.assertTrue(verifyObject(IPeerPolicy, PeerPolicy(1000, lambda handle: (1, 1, 1))))


class MigrateServiceInterfaceTests(SynchronousTestCase):
    """
    L{MigrateService} is an L{IMigrationNode}.
    """

    def test_class(self) -> None:
        """
        The class declares and implements L{IMigrationNode}'s methods.
        """
        self.assertTrue(verifyClass(IMigrationNode, MigrateService))


class RestoreContextInterfaceTests(SynchronousTestCase):
    """
    L{RestoreContext}, what adapters get as C{context} in a takeover, is an
    L{IRestoreContext}.
    """

    def test_class(self) -> None:
        """
        The class declares and implements L{IRestoreContext}.
        """
        self.assertTrue(verifyClass(IRestoreContext, RestoreContext))

    def test_instance(self) -> None:
        """
        An instance provides L{IRestoreContext}, and defers what it is
        given until its restore's gate opens (the commit).
        """
        gate = _Gate()
        context = RestoreContext(gate)
        self.assertTrue(verifyObject(IRestoreContext, context))
        called: list[int] = []
        context.whenActive(lambda: called.append(1))
        self.assertEqual(called, [])
        gate.open()
        self.assertEqual(called, [1])
