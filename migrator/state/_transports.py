# -*- test-case-name: tests.test_connections -*-
"""
L{ServerTransports}: the successor's transports of restored connections,
built thousands at a time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorFDSet

from migrator._twistedinternals import serverTransport

#: What L{ServerTransports.build} sets for each connection (and
#: L{migrator._twistedinternals.attachProtocol} the last two).
_OWN = frozenset({"socket", "fileno", "client", "hostname", "sessionno", "protocol", "logstr", "repstr"})

#: Values a transport may share with the others of its port.
_SHARED = (type(None), bool, int, float, str, bytes, type)


class ServerTransports:
    """
    Builds what L{migrator._twistedinternals.serverTransport} builds: the
    first transport of each kind (UNIX or not, address length, port)
    through it, that is through Twisted's constructor; the next ones as
    copies of the first one's instance dictionary with their own socket,
    peer address and session number, and new empty lists (write buffers).
    The constructor's work (a second C{setblocking} system call, log
    prefix and C{repr} strings that L{attachProtocol} makes again) is done
    once per kind, not per connection.

    Nothing is named that Twisted keeps private: what is copied is only
    what the first transport's dictionary holds, and it is copied only if
    every value there is the connection's own (C{_OWN}), an empty list, an
    atom or class, the reactor or the port; if there is anything else (a
    later Twisted might put it there), every transport of that kind is
    built through the constructor.

    @ivar reactor: the reactor the transports will register with.
    """

    def __init__(self, reactor: IReactorFDSet) -> None:
        self.reactor = reactor
        self._kinds: dict[tuple[bool, int, int], tuple[type, dict[str, Any], list[str]] | None] = {}

    def build(self, skt: Any, peer: Any, server: Any, sessionno: int, unix: bool) -> Any:
        """
        A transport on C{skt}, not reading, without a protocol yet.

        @param skt: the connected socket, already non-blocking, which the
            transport takes over.
        @param peer: the peer's address as C{getpeername()} gave it.
        @param server: the listening port it was accepted on, or C{None}.
        """
        client: tuple[Any, ...] = (peer, None) if unix else tuple(peer or ("?", 0))
        key = (unix, len(client), id(server))
        t: Any
        if key not in self._kinds or (kind := self._kinds[key]) is None:
            t = serverTransport(skt, peer, server, sessionno, self.reactor, unix)
            if key not in self._kinds:
                self._kinds[key] = self._learn(t, server)
            return t
        cls, shared, fresh = kind
        t = object.__new__(cls)
        d = t.__dict__
        d.update(shared)
        for name in fresh:
            d[name] = []
        d.update(
            socket=skt,
            fileno=skt.fileno,
            client=client,
            hostname=client[0],
            sessionno=sessionno,
            protocol=None,
        )
        return t

    def _learn(self, t: Any, server: Any) -> tuple[type, dict[str, Any], list[str]] | None:
        shared: dict[str, Any] = {}
        fresh: list[str] = []
        for name, value in vars(t).items():
            if name in _OWN:
                continue
            if type(value) is list and not value:
                fresh.append(name)
            elif isinstance(value, _SHARED) or value is self.reactor or value is server:
                shared[name] = value
            else:
                return None
        return type(t), shared, fresh
