# -*- test-case-name: tests.test_detached -*-
"""
The listening port of a staging process (a dry run): it binds nothing and
accepts nothing.  Apart from the rest of the dry run's machinery
(L{migrator.state._detached}), which a process that serves imports only
when it stages one.
"""

from __future__ import annotations

import socket
from typing import Any

import attrs
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.logger import Logger

_log = Logger()


@attrs.define(eq=False)
class _DetachedSocket:
    """
    What a L{DetachedPort} answers for C{port.socket}: its address family.
    """

    family: int


@attrs.define(eq=False)
class DetachedPort:
    """
    A listening port that listens nowhere: what the service of a staging
    process gets from C{listenTCP}, C{listenUNIX} or C{listenUDP}
    (L{migrator.takeover._ports.ListenerRegistry} with C{detached}).  It
    binds nothing and accepts nothing, but starts and stops its factory
    (or datagram protocol) as a port would, so that the factory the
    service configured is there, started, to receive the incumbent's
    factory state.

    @ivar kind: C{"tcp"}, C{"unix"} or C{"udp"}.
    @ivar factory: the stream factory, or the datagram protocol.
    @ivar host: what L{getHost} answers: the address the service declared.
    """

    kind: str
    factory: Any
    host: IAddress
    connected: bool = False
    socket: _DetachedSocket = attrs.field(
        default=attrs.Factory(
            lambda self: _DetachedSocket(
                int(socket.AF_UNIX if self.kind == "unix" else socket.AF_INET)
            ),
            takes_self=True,
        )
    )

    @classmethod
    def forTCP(cls, port: int, interface: str, factory: Any, kind: str = "tcp") -> DetachedPort:
        """
        A detached stream (C{kind} C{"tcp"}) or datagram (C{"udp"}) port
        for what the service declared.
        """
        host: IAddress
        if ":" in interface:
            host = IPv6Address("UDP" if kind == "udp" else "TCP", interface, port)
        else:
            host = IPv4Address("UDP" if kind == "udp" else "TCP", interface or "0.0.0.0", port)
        return cls(kind, factory, host)

    @classmethod
    def forUNIX(cls, path: str, factory: Any) -> DetachedPort:
        """
        A detached UNIX stream port for C{path}.
        """
        return cls("unix", factory, UNIXAddress(path))

    def startListening(self) -> None:
        """
        Start the factory (a datagram protocol is connected to this port),
        bind nothing.
        """
        if self.connected:
            return
        self.connected = True
        _log.info(
            "{name} declared on {host}: not bound (dry run)",
            name=type(self.factory).__name__,
            host=getattr(self.host, "name", None) or f"{self.host.host}:{self.host.port}",  # type: ignore[attr-defined]
        )
        if self.kind == "udp":
            self.factory.makeConnection(self)
        else:
            self.factory.doStart()

    def stopListening(self) -> None:
        """
        Stop the factory (or datagram protocol).
        """
        if not self.connected:
            return
        self.connected = False
        self.factory.doStop()

    loseConnection = stopListening

    def getHost(self) -> IAddress:
        return self.host

    def startReading(self) -> None:
        """
        Nothing to accept.
        """

    def stopReading(self) -> None:
        """
        Nothing to accept.
        """

    def fileno(self) -> int:
        return -1

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """
        A datagram protocol's answer goes nowhere.
        """
