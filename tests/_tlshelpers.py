# -*- test-case-name: tests.test_tlsfollow,tests.test_tlstransport -*-
"""
Helpers for the TLS tests: a throwaway certificate, a Twisted TLS server
(followed as migrator follows a port's sessions) and an OpenSSL client
(pyOpenSSL) talking through memory, with no socket.
"""

from __future__ import annotations

import datetime
import functools
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from migrator.adapters.tls._follow import followFactory


@functools.lru_cache(maxsize=1)
def certificatePEM() -> bytes:
    """
    A self-signed certificate for C{localhost} and its key (EC P-256), in
    PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)


def writeCertificate(directory: str) -> tuple[str, str]:
    """
    Write L{certificatePEM}'s key and certificate to two files in
    C{directory}, for C{ssl:...:privateKey=KEY:certKey=CERT}.

    @return: their paths.
    """
    pem = certificatePEM()
    split = pem.index(b"-----BEGIN CERTIFICATE-----")
    paths = (os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem"))
    for path, data in zip(paths, (pem[:split], pem[split:]), strict=True):
        with open(path, "wb") as f:
            f.write(data)
    return paths


def serverOptions() -> Any:
    return ssl.PrivateCertificate.loadPEM(certificatePEM()).options()


class Collect(Protocol):
    """
    Keeps what it receives; answers C{b"ping"} with C{b"pong"}.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        if data == b"ping":
            self.transport.write(b"pong")  # type: ignore[union-attr]

    def connectionLost(self, reason: Any) -> None:
        self.lost = reason


class TCPTransport(StringTransport):
    """
    A L{StringTransport} standing for the TCP transport under TLS.
    """

    def __init__(self) -> None:
        StringTransport.__init__(self, peerAddress=IPv4Address("TCP", "127.0.0.1", 4321))
        self.connected = True

    noDelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.noDelay

    def take(self) -> bytes:
        data = self.value()
        self.clear()
        return data


class Session:
    """
    A Twisted TLS server protocol (followed) and a pyOpenSSL client, joined
    by memory.

    @ivar client: the client's C{OpenSSL.SSL.Connection}.
    @ivar server: the server's TLS protocol (a C{BufferingTLSTransport}).
    @ivar tcp: the server's TCP transport.
    @ivar clientSecrets: the client's key-log lines, by label.
    """

    def __init__(
        self,
        inner: Any = None,
        factory: Any = None,
        suite: str | None = None,
        maxVersion: int | None = None,
        follow: bool = True,
        clock: MemoryReactorClock | None = None,
        serverContext: Any = None,
    ) -> None:
        self.clock = clock or MemoryReactorClock()
        self.inner = inner if inner is not None else Collect()
        wrapped = factory if factory is not None else Factory.forProtocol(lambda: self.inner)
        self.tlsFactory = TLSMemoryBIOFactory(serverContext or serverOptions(), False, wrapped, clock=self.clock)
        if follow:
            followFactory(self.tlsFactory)
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if suite is not None:
            context.set_tls13_ciphersuites(suite.encode("ascii"))
        if maxVersion is not None:
            context.set_max_proto_version(maxVersion)
        self.clientSecrets: dict[str, bytes] = {}
        context.set_keylog_callback(self._clientKeylog)
        self.client = SSL.Connection(context)
        self.client.set_connect_state()
        self.client.set_tlsext_host_name(b"localhost")
        self.server = self.tlsFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
        self.tcp = TCPTransport()
        self.tcp.protocol = self.server
        self.server.makeConnection(self.tcp)

    def _clientKeylog(self, connection: Any, line: bytes) -> None:
        label, _, rest = line.partition(b" ")
        self.clientSecrets[label.decode()] = bytes.fromhex(rest.rpartition(b" ")[2].decode())

    def clientOut(self) -> bytes:
        try:
            return self.client.bio_read(2**20)
        except SSL.WantReadError:
            return b""

    def pump(self, rounds: int = 20) -> None:
        """
        Move bytes both ways until neither side has any to send.
        """
        for _ in range(rounds):
            try:
                self.client.do_handshake()
            except SSL.WantReadError:
                pass
            out = self.clientOut()
            if out:
                self.server.dataReceived(out)
            self.clock.advance(0)
            back = self.tcp.take()
            if back:
                self.client.bio_write(back)
            if not out and not back:
                return

    def handshake(self) -> None:
        self.pump()
        self.readClient()

    def readClient(self) -> bytes:
        """
        What the client reads (and let it process tickets, KeyUpdates).
        """
        data = []
        for _ in range(100):
            try:
                data.append(self.client.recv(2**16))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                break
        return b"".join(data)

    def clientSends(self, data: bytes) -> bytes:
        """
        The records the client makes of C{data} (not delivered).
        """
        self.client.send(data)
        return self.clientOut()
