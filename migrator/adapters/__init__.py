# -*- test-case-name: tests.test_adapters -*-
"""
The built-in adapters: Twisted's own classes (portforward, C{twisted.web},
the telnet manhole and its Python namespace, autobahn's WebSocket server
where autobahn is installed), and the default registry that every C{twistd
migrate} process starts from.  L{registerWebSocketServer} registers an
application's autobahn subclasses.

Imports point one way: this package uses L{migrator.state} (the registry,
the graph); nothing in L{migrator.state} or L{migrator.takeover} imports it.
The composition root (L{migrator.tap}, L{migrator._service}) wires it in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from migrator.adapters._twisted import registerAdapters
from migrator.state._registry import AdapterRegistry

if TYPE_CHECKING:
    from migrator.adapters._websocket import registerWebSocketServer


def __getattr__(name: str) -> Any:
    # registerWebSocketServer's module is imported when it is asked for:
    # most services (and every successor's start) do without it.
    if name == "registerWebSocketServer":
        from migrator.adapters._websocket import registerWebSocketServer

        return registerWebSocketServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def defaultRegistry(modules: Iterable[str] = ()) -> AdapterRegistry:
    """
    A registry with migrator's adapters for Twisted's own classes, then the
    adapters of C{modules}.

    @param modules: dotted names of modules with a C{registerAdapters(registry)}
        function, registered in this order.
    @return: the new registry.
    @raise ValueError: if a module has no C{registerAdapters} function.
    @raise ImportError: if a module cannot be imported.
    """
    registry = AdapterRegistry()
    registerAdapters(registry)
    for name in modules:
        registry.loadModule(name)
    return registry


__all__ = ["defaultRegistry", "registerAdapters", "registerWebSocketServer"]
