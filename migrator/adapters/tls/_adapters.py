# -*- test-case-name: tests.test_tlstransport -*-
"""
The adapters of TLS connections: Twisted's TLS transport (the incumbent's
first generation, over OpenSSL) and migrator's own (a session moved
before) are captured into one state, and restored as a
L{TLSRecordTransport} around the application protocol they wrap.

The state of a session (version 1)::

    {"transport": the TCP transport, "wrapped": the application protocol,
     "factory": the TLS factory (the port's: an anchor),
     "producer": the membrane around the application's producer, or None,
     "session": {"suite", "readSecret", "readSeq", "writeSecret",
                 "writeSeq", "inbound", "handshake", "owedKeyUpdate",
                 "alpn", "peerCertificate", "serverName"}}

The secrets travel as C{bytearray}s: the successor zeroes them once its
record layer has its own copies (L{TLSSessionAdapter.populate}).
"""

from __future__ import annotations

from typing import Any

import attrs
from OpenSSL import crypto
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol
from zope.interface import implementer

from migrator._tlsinternals import (
    flushTLS,
    isPullToPush,
    membraneState,
    producerMembraneClass,
    tlsProtocolState,
)
from migrator.adapters.tls._follow import followerOf
from migrator.adapters.tls._keys import wipe
from migrator.adapters.tls._record import RecordLayer
from migrator.adapters.tls._transport import ProducerMembrane, TLSRecordTransport
from migrator.interfaces import IAdapter, IBusyAware
from migrator.state._graph import typeName as _typeName
from migrator.state._plan import drainsHarmlessly as _drainsHarmlessly


def _peerCertificate(connection: Any) -> bytes | None:
    certificate = connection.get_peer_certificate()
    if certificate is None:
        return None
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)


def _whyNotTwisted(protocol: Any) -> str | None:
    """
    Why a Twisted TLS transport's session cannot move now, if it cannot.
    """
    state = tlsProtocolState(protocol)
    connection = state.connection
    if connection is None:
        return "its TLS connection is gone"
    if state.closing or connection.get_shutdown():
        return "the session is closing"
    if not state.handshakeDone:
        return "its handshake is not finished"
    follower = followerOf(connection)
    if follower is None:
        return "its session was not followed from its handshake (a port migrator does not track)"
    why = follower.whyNot()
    if why is not None:
        return why
    if state.unsent or connection.pending():
        return "application data is waiting inside OpenSSL"
    if state.producer is not None and isPullToPush(membraneState(state.producer)[0]):
        return "a non-streaming producer is registered"
    return None


@implementer(IAdapter, IBusyAware)
@attrs.frozen
class TLSSessionAdapter:
    """
    A TLS 1.3 connection, Twisted's or migrator's, around an application
    protocol that can move.  Registered for C{TLSMemoryBIOProtocol},
    C{BufferingTLSTransport} and L{TLSRecordTransport}; restored as the
    latter.

    @ivar registry: where the wrapped protocol's adapter is found (to ask
        it whether it can move, is busy, or drains harmlessly).
    """

    registry: Any = attrs.field(eq=False, repr=False)
    cls: type = TLSRecordTransport
    typeName: str = "migrator.tls.TLSSession"
    version: int = 1

    def wrapped(self, protocol: Any) -> Any:
        """
        The protocol inside (for the plan, which looks through).
        """
        return getattr(protocol, "wrappedProtocol", None)

    def _inner(self, protocol: Any) -> tuple[Any, Any]:
        inner = self.wrapped(protocol)
        return inner, self.registry.adapterFor(type(inner))

    def movable(self, protocol: Any) -> str | None:
        if isinstance(protocol, TLSRecordTransport):
            why = protocol.whyNot()
        else:
            why = _whyNotTwisted(protocol)
        if why is not None:
            return why
        inner, adapter = self._inner(protocol)
        if adapter is None:
            return f"no adapter for {_typeName(type(inner))} inside TLS"
        result: str | None = adapter.movable(inner)
        return result

    def busy(self, protocol: Any) -> bool:
        inner, adapter = self._inner(protocol)
        isBusy = getattr(adapter, "busy", None)
        return bool(isBusy(inner)) if isBusy is not None else False

    def drainsHarmlessly(self, protocol: Any) -> bool:
        inner, adapter = self._inner(protocol)
        return adapter is not None and _drainsHarmlessly(adapter, inner)

    def capture(self, protocol: Any) -> dict[str, Any]:
        if isinstance(protocol, TLSRecordTransport):
            why = protocol.whyNot()
            if why is not None:
                raise ValueError(why)
            return {
                "transport": protocol.transport,
                "wrapped": protocol.wrappedProtocol,
                "factory": protocol.factory,
                "producer": protocol.producer,
                "session": protocol.session(),
            }
        # What the protocol would send at its next chance goes to the TCP
        # transport now, to travel as its unsent bytes.
        flushTLS(protocol)
        why = _whyNotTwisted(protocol)
        if why is not None:
            raise ValueError(why)
        state = tlsProtocolState(protocol)
        connection = state.connection
        follower = followerOf(connection)
        assert follower is not None
        session = follower.session()
        alpn = connection.get_alpn_proto_negotiated()
        session.update(
            alpn=alpn or None,
            peerCertificate=_peerCertificate(connection),
            serverName=connection.get_servername(),
        )
        return {
            "transport": protocol.transport,
            "wrapped": protocol.wrappedProtocol,
            "factory": protocol.factory,
            "producer": state.producer,
            "session": session,
        }

    def create(self, context: Any) -> Any:
        return TLSRecordTransport.__new__(TLSRecordTransport)

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        session = state["session"]
        try:
            record = RecordLayer.fromState(session)
        finally:
            # The record layer has its own copies.
            for name in ("readSecret", "writeSecret"):
                if isinstance(session.get(name), bytearray):
                    wipe(session[name])
        TLSRecordTransport.__init__(
            obj,
            record,
            state["wrapped"],
            transport=state["transport"],
            factory=state["factory"],
            negotiatedProtocol=session.get("alpn"),
            peerCertificate=session.get("peerCertificate"),
            serverName=session.get("serverName"),
            producer=state["producer"],
        )


@implementer(IAdapter)
@attrs.frozen
class ProducerMembraneAdapter:
    """
    The membrane a TLS transport puts around the application's producer
    (Twisted's C{_ProducerMembrane}, or L{ProducerMembrane}): the producer
    and whether the membrane paused it.  Restored as a L{ProducerMembrane}.
    """

    cls: type = ProducerMembrane
    typeName: str = "migrator.tls.ProducerMembrane"
    version: int = 1

    def movable(self, membrane: Any) -> str | None:
        return None

    def capture(self, membrane: Any) -> dict[str, Any]:
        if isinstance(membrane, ProducerMembrane):
            producer, paused = membrane.producer, membrane.paused
        else:
            producer, paused = membraneState(membrane)
        if isPullToPush(producer):
            raise ValueError("a non-streaming producer is registered")
        return {"producer": producer, "paused": paused}

    def create(self, context: Any) -> Any:
        return ProducerMembrane.__new__(ProducerMembrane)

    def populate(self, obj: Any, state: dict[str, Any], context: Any) -> None:
        ProducerMembrane.__init__(obj, state["producer"], bool(state["paused"]))


def registerAdapters(registry: Any) -> None:
    """
    Register the TLS adapters in C{registry}.
    """
    session = TLSSessionAdapter(registry)
    for transport in (TLSRecordTransport, TLSMemoryBIOProtocol, BufferingTLSTransport):
        registry.register(session, transport)
    membrane = ProducerMembraneAdapter()
    for cls in (ProducerMembrane, producerMembraneClass()):
        registry.register(membrane, cls)
