# -*- test-case-name: tests.test_families,tests.test_adapters -*-
"""
migrator's adapters for Twisted's own classes, registered in every
process's registry (see L{migrator.adapters.defaultRegistry}).

  - C{twisted.protocols.portforward}: a C{ProxyServer}/C{ProxyClient} pair
    moves together, both sockets (one accepted, one outgoing), with their
    unsent bytes and producer registrations (which carry their pause
    state).  A pair still connecting upstream stays and drains
    (harmlessly: a proxied connection shares no state with the others).
  - C{twisted.web}: idle keep-alive channels (L{migrator.adapters._web}).
  - C{twisted.protocols.tls}: TLS 1.3 sessions around a protocol that
    moves, continued by migrator's record layer in the successor
    (L{migrator.adapters.tls}).
  - C{twisted.conch}'s telnet manhole: a whole session, past its login
    (L{migrator.adapters._manhole}); SSH sessions stay and drain.
  - C{twisted.words}: the IRC server's sessions, with the in-memory
    realm's users and groups (L{migrator.adapters._words}).
  - C{twisted.protocols.ftp}: an FTP session never moves; it stays and
    drains harmlessly (sessions are independent of each other).
  - Autobahn's Twisted WebSocket server, where autobahn is installed: open
    WebSocket connections with their framing state
    (L{migrator.adapters._websocket}).

All but C{io.BytesIO}'s are registered only once the process has imported
the module they are for (L{AdapterRegistry.registerWhenImported}): a
process that serves no web, manhole, IRC, FTP or WebSocket never imports
C{twisted.web}, C{twisted.conch} (and C{cryptography}), C{twisted.words},
C{twisted.protocols.ftp} (which imports and installs the global reactor)
or autobahn for them.  The TLS adapters are registered once
C{twisted.protocols.tls} is imported (the reactor's TCP module imports it
wherever pyOpenSSL is installed; without it there is no TLS session).
"""

from __future__ import annotations

import io
from typing import Any

import attrs
from zope.interface import implementer

from migrator.interfaces import IAdapter
from migrator.state._registry import AdapterRegistry, InstanceAdapter, factoryAdapter


@attrs.frozen
class _ProxyAdapter(InstanceAdapter):
    """
    A proxy half moves only once both halves are connected; until then it
    stays, harmlessly.
    """

    drainsHarmlessly: bool = True

    def movable(self, obj: Any) -> str | None:
        if obj.peer is None or not getattr(obj.peer, "connected", False):
            return "still connecting to the other side"
        return None


@implementer(IAdapter)
@attrs.frozen
class BytesIOAdapter:
    """
    C{io.BytesIO}: its contents and position (C{NetstringReceiver} keeps a
    partly received payload in one).
    """

    cls: type = io.BytesIO
    typeName: str = "io.BytesIO"
    version: int = 1

    def capture(self, obj: io.BytesIO) -> tuple[bytes, int]:
        return obj.getvalue(), obj.tell()

    def create(self, context: Any) -> io.BytesIO:
        return io.BytesIO()

    def populate(self, obj: io.BytesIO, state: Any, context: Any) -> None:
        value, position = state
        obj.write(value)
        obj.seek(position)

    def movable(self, obj: Any) -> str | None:
        return None


FTP_STAYS = (
    "an FTP session does not move (its data connections and transfers are not "
    "carried): it stays with the old process until the client disconnects"
)


def registerAdapters(registry: AdapterRegistry) -> None:
    """
    Register migrator's adapters for Twisted's classes in C{registry}
    (most of them once their module is imported: see the module
    docstring).
    """
    registry.register(BytesIOAdapter())
    # (Not "twisted.words": twistd imports twisted.words.iwords for its
    # plugin list, in every process.)
    registry.registerWhenImported("twisted.protocols.portforward", _registerPortforward)
    registry.registerWhenImported("twisted.web.http", _registerWeb)
    registry.registerWhenImported("twisted.protocols.ftp", _registerFTP)
    registry.registerWhenImported("twisted.conch", _registerManhole)
    registry.registerWhenImported("twisted.words.service", _registerWords)
    registry.registerWhenImported("twisted.protocols.tls", _registerTLS)
    registry.registerWhenImported("autobahn.twisted.websocket", _registerWebSocket)


def _registerPortforward(registry: AdapterRegistry) -> None:
    from twisted.protocols import portforward

    registry.register(_ProxyAdapter(portforward.ProxyServer))
    registry.register(_ProxyAdapter(portforward.ProxyClient))
    registry.register(factoryAdapter(portforward.ProxyFactory, keep=("host", "port")))
    registry.register(InstanceAdapter(portforward.ProxyClientFactory))


def _registerWeb(registry: AdapterRegistry) -> None:
    from migrator.adapters import _web

    _web.registerAdapters(registry)


def _registerTLS(registry: AdapterRegistry) -> None:
    from migrator.adapters import tls

    tls.registerAdapters(registry)


def _registerFTP(registry: AdapterRegistry) -> None:
    from twisted.protocols import ftp

    registry.registerDraining(ftp.FTP, FTP_STAYS)


def _registerManhole(registry: AdapterRegistry) -> None:
    from migrator.adapters import _manhole

    _manhole.registerAdapters(registry)


def _registerWords(registry: AdapterRegistry) -> None:
    from migrator.adapters import _words

    _words.registerAdapters(registry)


def _registerWebSocket(registry: AdapterRegistry) -> None:
    # Autobahn is an optional extra: its adapters only in a process that
    # imported it (this module never imports it).
    from migrator.adapters import _websocket

    _websocket.registerAdapters(registry)
