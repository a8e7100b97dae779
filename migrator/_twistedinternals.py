# -*- test-case-name: tests.test_ports -*-
"""
Every use of Twisted's private API in migrator, in one place.

Twisted offers no public way to let go of a socket that another process now
serves (without C{shutdown()}), to adopt a listening socket without
accepting at once, or to read the bytes a transport has not sent yet.  Each
function here says which private attribute or method it relies on, so that
a Twisted upgrade is one file to check (C{tox -e oldest,newest} runs the
suite against both ends of the range C{setup.cfg} allows).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def releasePort(port: Any) -> None:
    """
    Stop a listening port and close this process's copy of its socket
    without C{shutdown()} and without the port's C{connectionLost} (which
    would shut the socket down for every process, and for a UNIX port unlink
    the path the successor now answers on).  Later calls to
    C{stopListening} on the port do nothing.

    @param port: a listening port created by the reactor (C{tcp.Port},
        C{unix.Port}); released ports are left alone.
    """
    if not getattr(port, "connected", False):
        return
    port.stopReading()
    port.connected = False
    port.disconnecting = False
    # Keep a fileno that says "closed", so that a later removeReader on this
    # port finds nothing to do.
    skt = port.socket
    port.fileno = lambda: -1
    try:
        skt.close()
    except OSError:
        pass


def releaseConnection(transport: Any) -> None:
    """
    Let go of an established connection that another process now serves:
    stop reading and writing, drop unsent bytes (they travelled with the
    connection), close this process's handle without C{shutdown()} and
    without telling the protocol (its C{connectionLost} never runs here).
    """
    if not getattr(transport, "connected", False):
        return
    transport.stopReading()
    transport.stopWriting()
    skt = transport.socket
    transport.connected = False
    transport.disconnecting = False
    transport.fileno = lambda: -1
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    try:
        skt.close()
    except OSError:
        pass


def pendingBytes(transport: Any) -> bytes:
    """
    The bytes a transport was asked to write and has not written yet.
    """
    head = transport.dataBuffer[transport.offset :]
    return bytes(head) + b"".join(transport._tempDataBuffer)


def adoptTCP(
    reactor: Any, fd: int, family: int, factory: Any, backlog: int
) -> Any:
    """
    Adopt a listening TCP socket, without accepting yet.  The port holds its
    own duplicate of C{fd}; the caller still owns C{fd}.
    """
    port = tcp.Port._fromListeningDescriptor(reactor, fd, family, factory)
    port.backlog = backlog
    port.startListening()
    port.stopReading()
    return port


def adoptUNIX(reactor: Any, fd: int, factory: Any, backlog: int, mode: int) -> Any:
    """
    Adopt a listening UNIX socket, without accepting yet, keeping the mode
    its path was declared with (C{adoptStreamPort} would make it 0666).
    """
    from twisted.internet import unix

    port = unix.Port._fromListeningDescriptor(reactor, fd, factory)
    port.backlog = backlog
    port.mode = mode
    port.startListening()
    port.stopReading()
    return port


