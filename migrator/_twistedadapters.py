# -*- test-case-name: tests.test_twistedadapters -*-
"""
migrator's adapters for Twisted's own classes, registered in every
process's registry (see L{migrator._adapters.defaultRegistry}).

  - C{twisted.protocols.portforward}: a C{ProxyServer}/C{ProxyClient} pair
    moves together, both sockets (one accepted, one outgoing), with their
    unsent bytes and producer registrations (which carry their pause
    state).  A pair still connecting upstream stays and drains.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.protocols import portforward

from . import _webadapters
from ._adapters import AdapterRegistry, InstanceAdapter, factoryAdapter


@attrs.frozen
class _ProxyAdapter(InstanceAdapter):
    """
    A proxy half moves only once both halves are connected.
    """

    def movable(self, obj: Any) -> str | None:
        if obj.peer is None or not getattr(obj.peer, "connected", False):
            return "still connecting to the other side"
        return None


def registerAdapters(registry: AdapterRegistry) -> None:
    """
    Register migrator's adapters for Twisted's classes in C{registry}.
    """
    registry.register(_ProxyAdapter(portforward.ProxyServer))
    registry.register(_ProxyAdapter(portforward.ProxyClient))
    registry.register(factoryAdapter(portforward.ProxyFactory, keep=("host", "port")))
    registry.register(InstanceAdapter(portforward.ProxyClientFactory))
    _webadapters.registerAdapters(registry)
