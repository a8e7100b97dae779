# -*- test-case-name: tests.test_twistedinternals,tests.test_tlsfollow -*-
"""
Every use of Twisted's and pyOpenSSL's private API for TLS sessions, in one
place: the sibling of L{migrator._twistedinternals} (which holds all the
other uses, and would pass the 600-line limit with these).

Twisted runs TLS in memory BIOs (L{twisted.protocols.tls}), but offers no
public way to see the OpenSSL connection of a TLS protocol, to know whether
it is idle, to give its factory's connections a key-log callback, or to
flush what it buffers; pyOpenSSL offers no way to set a key-log callback
on a context that has already made a connection.  Each function here says
what it relies on.  C{tests/test_twistedinternals.py} checks that no other
module uses the private names used here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from OpenSSL import SSL

#: How many reads of a send BIO L{flushTLS} makes at most (32 KiB each).
_FLUSH_READS = 4096


def tlsCreator(factory: Any) -> Callable[[Any], Any]:
    """
    What a C{TLSMemoryBIOFactory} calls to make each connection's
    C{OpenSSL.SSL.Connection} (with its TLS protocol as argument).

    Relies on: C{TLSMemoryBIOFactory._creatorCallable}, called by
    C{TLSMemoryBIOProtocol.makeConnection}.
    """
    creator: Callable[[Any], Any] = factory._creatorCallable
    return creator


def setTLSCreator(factory: Any, creator: Callable[[Any], Any]) -> None:
    """
    Make a C{TLSMemoryBIOFactory}'s connections with C{creator}.
    """
    factory._creatorCallable = creator


def installKeyLog(context: SSL.Context, callback: Callable[[Any, bytes], None]) -> bool:
    """
    Give C{context} a key-log callback, even if it has already made
    connections (a service's context is usually made, and used, before
    migrator sees it).  Call it once per context: a context that already
    has a key-log callback (the service's own, or one set here before) is
    left alone.

    pyOpenSSL refuses to change a context that has made a connection (a
    guard against changing settings under a connection another thread is
    using); OpenSSL itself reads the callback from the context each time it
    logs a secret, so setting it on a context in use is safe in one
    thread.

    Relies on: pyOpenSSL's C{Context._used} (the guard) and
    C{Context._keylog_callback} (the callback set, or C{None}).

    @return: whether C{context} now logs to C{callback}.
    """
    if getattr(context, "_keylog_callback", None) is not None:
        return False
    used = context._used
    context._used = False
    try:
        context.set_keylog_callback(callback)
    except (NotImplementedError, ValueError):
        return False
    finally:
        context._used = used
    return True


def tapMemoryBIO(
    connection: SSL.Connection,
    received: Callable[[bytes], None],
    sent: Callable[[bytes], None],
) -> None:
    """
    Show every byte put into C{connection}'s incoming memory BIO to
    C{received} and every byte taken from its outgoing one to C{sent}
    (after OpenSSL has them), by wrapping C{bio_write} and C{bio_read} on
    this instance only.

    Relies on: C{TLSMemoryBIOProtocol} calling C{bio_write} and C{bio_read}
    on its connection (looked up on the instance) for every byte from and
    to the network.
    """
    bioWrite, bioRead = connection.bio_write, connection.bio_read

    def bio_write(buf: Any) -> int:
        written = bioWrite(buf)
        received(bytes(buf[:written]) if written != len(buf) else bytes(buf))
        return written

    def bio_read(bufsiz: int) -> bytes:
        data = bioRead(bufsiz)
        sent(data)
        return data

    connection.bio_write = bio_write  # type: ignore[method-assign]
    connection.bio_read = bio_read  # type: ignore[method-assign]


@attrs.frozen
class TLSProtocolState:
    """
    What a C{TLSMemoryBIOProtocol} is doing, as far as moving it is
    concerned.

    @ivar connection: its C{OpenSSL.SSL.Connection} (C{_tlsConnection}).
    @ivar handshakeDone: C{_handshakeDone}.
    @ivar closing: C{_lostTLSConnection}, C{_aborted} or C{disconnecting}.
    @ivar unsent: application data waiting for the handshake
        (C{_appSendBuffer}).
    @ivar producer: the membrane around the application's producer
        (C{_producer}), or C{None}.
    """

    connection: Any
    handshakeDone: bool
    closing: bool
    unsent: bool
    producer: Any


def tlsProtocolState(protocol: Any) -> TLSProtocolState:
    """
    Relies on: the private attributes named in L{TLSProtocolState}.
    """
    return TLSProtocolState(
        connection=getattr(protocol, "_tlsConnection", None),
        handshakeDone=bool(getattr(protocol, "_handshakeDone", False)),
        closing=bool(
            getattr(protocol, "_lostTLSConnection", False)
            or getattr(protocol, "_aborted", False)
            or getattr(protocol, "disconnecting", False)
        ),
        unsent=bool(getattr(protocol, "_appSendBuffer", None)),
        producer=getattr(protocol, "_producer", None),
    )


def flushTLS(protocol: Any) -> None:
    """
    Send now what a TLS protocol would send at its next chance: small
    writes a C{BufferingTLSTransport} aggregates until the next reactor
    turn, and whatever is left in the connection's outgoing memory BIO (a
    protocol reads at most 32 KiB of it at a time).  The bytes go to the
    protocol's transport, as they would have.

    Relies on: C{BufferingTLSTransport._aggregator} and
    C{TLSMemoryBIOProtocol._tlsConnection}.
    """
    aggregator = getattr(protocol, "_aggregator", None)
    if aggregator is not None:
        aggregator.flush()
    connection = protocol._tlsConnection
    for _ in range(_FLUSH_READS):
        try:
            data = connection.bio_read(2**15)
        except SSL.WantReadError:
            return
        protocol.transport.write(data)


def producerMembraneClass() -> type:
    """
    The class C{TLSMemoryBIOProtocol} wraps a registered producer in.

    Relies on: C{twisted.protocols.tls._ProducerMembrane}.
    """
    from twisted.protocols import tls

    cls: type = tls._ProducerMembrane
    return cls


def membraneState(membrane: Any) -> tuple[Any, bool]:
    """
    The producer a C{_ProducerMembrane} wraps, and whether the membrane
    paused it.

    Relies on: C{_ProducerMembrane._producer} and C{_producerPaused}.
    """
    return membrane._producer, bool(membrane._producerPaused)


def isPullToPush(producer: Any) -> bool:
    """
    Is C{producer} Twisted's wrapper of a non-streaming producer?
    """
    return isinstance(producer, pullToPushClass())


def pullToPushClass() -> type:
    """
    The adapter Twisted turns a non-streaming producer into a streaming one
    with (C{startStreaming}, C{stopStreaming}).

    Relies on: C{twisted.internet._producer_helpers._PullToPush}.
    """
    from twisted.internet import _producer_helpers

    cls: type = _producer_helpers._PullToPush
    return cls
