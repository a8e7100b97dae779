# -*- test-case-name: tests.test_tlstransport -*-
"""
The successor's side: a TLS transport that continues a moved session with
migrator's record layer (L{migrator.adapters.tls._record}), under the same
application protocol.

L{TLSRecordTransport} takes the place of Twisted's C{TLSMemoryBIOProtocol}
between a TCP transport and the application protocol: to the TCP
transport it is the protocol (C{dataReceived}, C{connectionLost}), to the
application the transport (C{write}, C{loseConnection}, producers,
C{getPeerCertificate}, C{negotiatedProtocol}), with the same behaviour
where the application can tell: writes after C{loseConnection} are dropped
unless a producer is registered; the session is closed with
C{close_notify} once the producer is gone, and the TCP connection once the
peer answers with its own (or hangs up); the peer's C{close_notify} is
answered and closes the connection; a failure (an alert either way) reaches
the application's C{connectionLost}.

It never handshakes: it is made by the adapters from a session captured in
the incumbent (or from another L{TLSRecordTransport}, at the next
takeover).  What is not supported: renegotiation (there is none in TLS
1.3), post-handshake client authentication, sending session tickets,
C{getHandle()} returns a stand-in (L{SessionHandle}) that answers a few
questions about the session, not an C{OpenSSL.SSL.Connection}.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import crypto
from twisted.internet.interfaces import (
    IConsumer,
    ILoggingContext,
    INegotiated,
    IProtocol,
    IPushProducer,
    ISystemHandle,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from migrator._tlsinternals import isPullToPush, pullToPushClass
from migrator.adapters.tls._record import RecordLayer

_log = Logger()


@implementer(IPushProducer)
class ProducerMembrane:
    """
    Stands between the TCP transport and the application's producer, as
    Twisted's TLS transport's membrane does: pauses and resumes reach the
    producer once each.

    @ivar producer: the application's producer.
    @ivar paused: whether this membrane paused it.
    """

    def __init__(self, producer: Any, paused: bool = False) -> None:
        self.producer = producer
        self.paused = paused

    def pauseProducing(self) -> None:
        if self.paused:
            return
        self.paused = True
        self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.producer.stopProducing()


class SessionHandle:
    """
    What L{TLSRecordTransport.getHandle} gives instead of an
    C{OpenSSL.SSL.Connection}: the answers about the session that do not
    need OpenSSL.
    """

    def __init__(self, transport: TLSRecordTransport) -> None:
        self._transport = transport

    def get_peer_certificate(self) -> Any:
        return self._transport.getPeerCertificate()

    def get_cipher_name(self) -> str:
        return self._transport.cipherName

    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"

    def get_alpn_proto_negotiated(self) -> bytes:
        return self._transport.negotiatedProtocol or b""

    def get_servername(self) -> bytes | None:
        return self._transport.serverName


@implementer(IProtocol, INegotiated, IPushProducer, IConsumer, ISystemHandle, ILoggingContext)
class TLSRecordTransport:
    """
    See the module docstring.

    @ivar transport: the TCP transport.
    @ivar wrappedProtocol: the application protocol.
    @ivar factory: the TLS factory of the port the connection came from
        (the successor's own), kept for the next takeover.
    @ivar negotiatedProtocol: the protocol chosen by ALPN, or C{None}.
    @ivar serverName: the name the client asked for (SNI), or C{None}.
    """

    def __init__(
        self,
        record: RecordLayer,
        wrappedProtocol: Any,
        transport: Any = None,
        factory: Any = None,
        negotiatedProtocol: bytes | None = None,
        peerCertificate: bytes | None = None,
        serverName: bytes | None = None,
        producer: ProducerMembrane | None = None,
    ) -> None:
        self._record = record
        self.wrappedProtocol = wrappedProtocol
        self.transport = transport
        self.factory = factory
        self.negotiatedProtocol = negotiatedProtocol
        self._peerCertificate = peerCertificate
        self.serverName = serverName
        self._producer = producer
        self.connected = transport is not None
        self.disconnecting = False
        self._aborted = False
        self._lost = False
        self._closeSent = False
        self._peerClosed = False
        self._reason: Failure | None = None

    def __repr__(self) -> str:
        record = self.__dict__.get("_record")
        if record is None:
            return "<TLSRecordTransport (not restored yet)>"
        return f"<TLSRecordTransport {record.suite.name} around {self.wrappedProtocol!r}>"

    def __getattr__(self, name: str) -> Any:
        # As Twisted's TLS transport (a ProtocolWrapper): what this one does
        # not know, the TCP transport may (socket options, fileno...).
        if name.startswith("_") or name == "transport":
            raise AttributeError(name)
        transport = self.__dict__.get("transport")
        if transport is None:
            raise AttributeError(name)
        return getattr(transport, name)

    @property
    def record(self) -> RecordLayer:
        return self._record

    @property
    def cipherName(self) -> str:
        return self._record.suite.name

    @property
    def producer(self) -> ProducerMembrane | None:
        return self._producer

    def whyNot(self) -> str | None:
        """
        Why this session cannot move again now, if it cannot.
        """
        if not self.connected or self.disconnecting or self._lost or self._aborted:
            return "the session is closing"
        if self._closeSent or self._peerClosed or not self._record.writable:
            return "the session is closing (an alert was sent)"
        return None

    def session(self) -> dict[str, Any]:
        """
        The session, for the next takeover (secrets as copies the caller
        wipes).
        """
        return {
            **self._record.snapshot(),
            "alpn": self.negotiatedProtocol,
            "peerCertificate": self._peerCertificate,
            "serverName": self.serverName,
        }

    # -- IProtocol: the TCP transport's side -------------------------------------

    def makeConnection(self, transport: Any) -> None:
        """
        Attach to C{transport}.  No handshake: the session is already
        established (the application protocol is connected already, too).
        """
        self.transport = transport
        self.connected = True

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        record = self._record
        written = record.writeState.generation
        result = record.receive(data)
        if result.send:
            self.transport.write(result.send)
        if result.keyUpdates:
            _log.info(
                "TLS session with {peer}: the client updated its key ({count}), "
                "ours {answer}",
                peer=self.transport.getPeer(),
                count=result.keyUpdates,
                answer="too" if record.writeState.generation != written else "stays",
            )
        for chunk in result.data:
            if self._aborted or self._lost:
                break
            self.wrappedProtocol.dataReceived(chunk)
        if result.error is not None:
            if self._reason is None:
                self._reason = Failure(result.error)
            self.transport.loseConnection()
        elif result.closed:
            self._peerClosed = True
            self._sendClose()
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._lost:
            return
        self._lost = True
        self.connected = False
        self._record.wipe()
        reason, self._reason = self._reason or reason, None
        self.wrappedProtocol.connectionLost(reason)

    def logPrefix(self) -> str:
        # Asked by the TCP transport when it is restored, maybe before this
        # object is populated.
        inner = self.__dict__.get("wrappedProtocol")
        if inner is None:
            return "TLSRecordTransport"
        name = inner.logPrefix() if ILoggingContext.providedBy(inner) else type(inner).__name__
        return f"{name} (TLSRecordTransport)"

    # -- ITransport: the application's side --------------------------------------

    def write(self, data: bytes) -> None:
        if self.disconnecting and self._producer is None:
            return
        if self._lost or not self._record.writable or not data:
            return
        self.transport.write(self._record.send(data))

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def _sendClose(self) -> None:
        if not self._closeSent and self._record.writable:
            self.transport.write(self._record.closeNotify())
        self._closeSent = True

    def _shutdown(self) -> None:
        """
        Send C{close_notify}; close the connection once the peer has
        answered with its own (or at once, if it already has).
        """
        self._sendClose()
        if self._peerClosed or self._record.failed is not None:
            self.transport.loseConnection()

    def loseConnection(self) -> None:
        if self.disconnecting or not self.connected:
            return
        self.disconnecting = True
        if self._producer is None:
            self._shutdown()

    def loseWriteConnection(self) -> None:
        """
        Close our direction only: C{close_notify}, then half-close TCP.
        """
        self._sendClose()
        self.transport.loseWriteConnection()

    def abortConnection(self) -> None:
        self._aborted = True
        self.disconnecting = True
        self.transport.abortConnection()

    def getPeer(self) -> Any:
        return self.transport.getPeer()

    def getHost(self) -> Any:
        return self.transport.getHost()

    def getTcpNoDelay(self) -> bool:
        return bool(self.transport.getTcpNoDelay())

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.transport.setTcpNoDelay(enabled)

    def getTcpKeepAlive(self) -> bool:
        return bool(self.transport.getTcpKeepAlive())

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.transport.setTcpKeepAlive(enabled)

    def getPeerCertificate(self) -> Any:
        """
        The client's certificate (an C{OpenSSL.crypto.X509}), or C{None}.
        """
        if self._peerCertificate is None:
            return None
        return crypto.load_certificate(crypto.FILETYPE_ASN1, self._peerCertificate)

    def getHandle(self) -> SessionHandle:
        return SessionHandle(self)

    # -- producers ------------------------------------------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._lost:
            producer.stopProducing()
            return
        pulling = None
        if not streaming:
            producer = pulling = pullToPushClass()(producer, self)
        membrane = ProducerMembrane(producer)
        # Raises if a producer is registered already.
        self.transport.registerProducer(membrane, True)
        self._producer = membrane
        if pulling is not None:
            pulling.startStreaming()

    def unregisterProducer(self) -> None:
        if self._producer is None:
            return
        inner: Any = self._producer.producer
        if isPullToPush(inner):
            inner.stopStreaming()
        self._producer = None
        self.transport.unregisterProducer()
        if self.disconnecting:
            self._shutdown()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()
