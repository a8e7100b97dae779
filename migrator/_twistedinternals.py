# -*- test-case-name: tests.test_twistedinternals,tests.test_ports,tests.test_connections -*-
"""
Every use of Twisted's private API in migrator, in one place.

Twisted offers no public way to let go of a socket that another process now
serves (without C{shutdown()}), to adopt a listening socket without
accepting at once, to read the bytes a transport has not sent yet, to build
a transport on a connection whose protocol already exists, or to look into
the protocols whose state moves (an HTTP channel, a terminal).  Each
function says which private attribute, method or behaviour it relies on: a
Twisted upgrade is one file to check (C{tox -e oldest,newest} runs the
suite against both ends of the range C{setup.cfg} allows, 26.4.0 and
26.10.0 when last run); C{tests/test_twistedinternals.py} checks that no
other module uses the private names used here.

Not here, because they name nothing: adapters that carry an instance
dictionary (L{migrator.state._registry.InstanceAdapter}) carry private
attributes too; the adapters' round-trip tests catch changes to those.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import attrs
from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer, IReactorFDSet

# -- listening ports -----------------------------------------------------------


def releasePort(port: Any) -> None:
    """
    Stop a listening port and close this process's copy of its socket
    without C{shutdown()} and without the port's C{connectionLost} (which
    would shut the socket down for every process, and for a UNIX port unlink
    the path the successor now answers on).  Later calls to
    C{stopListening} on the port do nothing.

    Relies on: C{connected}, C{disconnecting}, C{socket} of C{tcp.Port},
    and on the reactor asking C{fileno()} when the port is removed.

    @param port: a C{tcp.Port} or C{unix.Port}; released ports are left
        alone.
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


def neverShutdown(port: Any) -> None:
    """
    Make C{port} close its socket without C{shutdown()} when it stops,
    whoever stops it (the service, or twistd at exit): another process may
    hold the same socket (Twisted #5621, FACTS.md).

    Relies on: C{tcp._SocketCloser._shouldShutdown}, which C{tcp.Port}
    already sets to C{False} for ports made by C{adoptStreamPort}.
    """
    port._shouldShutdown = False


def adoptTCP(reactor: IReactorFDSet, fd: int, family: int, factory: Any, backlog: int) -> Any:
    """
    Adopt a listening TCP socket, without accepting yet.  The port holds its
    own duplicate of C{fd}; the caller still owns C{fd}.

    Relies on: C{tcp.Port._fromListeningDescriptor} (what
    C{adoptStreamPort} uses, without its C{startListening}, so that the
    backlog can be set first and reading stopped before the first accept).
    """
    port = tcp.Port._fromListeningDescriptor(reactor, fd, family, factory)
    port.backlog = backlog
    port.startListening()
    port.stopReading()
    return port


def adoptUNIX(reactor: IReactorFDSet, fd: int, factory: Any, backlog: int, mode: int) -> Any:
    """
    Adopt a listening UNIX socket, without accepting yet, keeping the mode
    its path was declared with (C{adoptStreamPort} would make it 0666).

    Relies on: C{unix.Port._fromListeningDescriptor}, as L{adoptTCP}.
    """
    from twisted.internet import unix

    port = unix.Port._fromListeningDescriptor(reactor, fd, factory)
    port.backlog = backlog
    port.mode = mode
    port.startListening()
    port.stopReading()
    return port


def releaseUNIXLock(port: Any) -> None:
    """
    Unlock and forget the lock file (C{PATH.lock}) of a UNIX port declared
    with C{wantPID}, so that a successor may take it.

    Relies on: C{unix.Port.lockFile}, which the port unlocks in its
    C{connectionLost} (a released port never gets there).
    """
    lock = getattr(port, "lockFile", None)
    if lock is None:
        return
    try:
        lock.unlock()
    except OSError:
        pass
    port.lockFile = None


def takeUNIXLock(port: Any) -> bool:
    """
    Take the lock file (C{PATH.lock}) of an adopted UNIX port, as
    C{unix.Port.startListening} does for a port it binds with C{wantPID}.

    Relies on: C{unix.Port._bindPath} (the declared path; before Twisted
    26.10, C{port}) and C{unix.Port.lockFile} (unlocked by the port's
    C{connectionLost}).

    @return: whether the lock was taken.
    """
    from twisted.python import lockfile

    path = getattr(port, "_bindPath", None) or port.port
    lock = lockfile.FilesystemLock(path + (b".lock" if isinstance(path, bytes) else ".lock"))
    if not lock.lock():
        return False
    port.lockFile = lock
    return True


class _CountingTransport:
    """
    Stands in for a port's C{transport} class: builds the connection as the
    port would, and remembers it so that open connections can be counted.
    """

    def __init__(self, transportClass: Any, seen: weakref.WeakSet[Any]) -> None:
        self._transportClass = transportClass
        self._seen = seen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        transport = self._transportClass(*args, **kwargs)
        self._seen.add(transport)
        return transport


def countAccepted(port: Any, seen: weakref.WeakSet[Any]) -> bool:
    """
    Add every connection C{port} accepts from now on to C{seen}.

    Relies on: C{tcp.Port.doRead} building each accepted connection by
    calling C{self.transport(...)} (a class attribute, C{tcp.Server} or
    C{unix.Server}), which an instance attribute overrides.

    @return: C{False} if the port builds no transports (a UDP port).
    """
    transport = getattr(port, "transport", None)
    if transport is None:
        return False
    port.transport = _CountingTransport(transport, seen)
    return True


# -- established connections ---------------------------------------------------


def _released() -> int:
    # A released transport's fileno(): no descriptor to register.
    return -1


def releaseConnection(transport: Any, close: bool = True, registered: bool = True) -> None:
    """
    Let go of an established connection that another process now serves:
    stop reading and writing, drop unsent bytes (they travelled with the
    connection), close this process's handle without C{shutdown()} and
    without telling the protocol (its C{connectionLost} never runs here).

    @param close: if false (this process exits next), the handle is left
        open for the process's exit to close (as this would: no
        C{shutdown()}), and the unsent bytes with it; the transport is
        already closed to everything in this process (not connected, no
        descriptor: it writes, reads and closes nothing).
    @param registered: if false, the reactor neither reads nor writes it
        (the caller knows): not asked to stop (tens of thousands of calls).

    Relies on: C{abstract.FileDescriptor}'s write buffers (C{dataBuffer},
    C{offset}, C{_tempDataBuffer}, C{_tempDataLen}).
    """
    if not getattr(transport, "connected", False):
        return
    if registered:
        transport.stopReading()
        transport.stopWriting()
    skt = transport.socket
    transport.connected = False
    transport.disconnecting = False
    transport.fileno = _released
    if not close:
        # (The exit frees the buffers: 10 ms of its last turn otherwise.)
        return
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    try:
        skt.close()
    except OSError:
        pass


def peerAddress(transport: Any) -> Any:
    """
    The peer's address as C{getpeername()} gives it, for a TCP connection
    from what the transport holds (no system call), else from its socket
    (C{None} if it has none any more).

    Relies on: C{tcp.Server.client}, the address C{accept()} gave (or the
    one a restored transport was built with).
    """
    client = getattr(transport, "client", None)
    if type(client) is tuple and len(client) >= 2 and client[0] != "?":
        return client
    try:
        return transport.socket.getpeername()
    except OSError:
        return None


def pendingBytes(transport: Any) -> bytes:
    """
    The bytes a transport was asked to write and has not written yet.

    Relies on: C{abstract.FileDescriptor}'s C{dataBuffer[offset:]}, then
    C{_tempDataBuffer}.
    """
    head = transport.dataBuffer[transport.offset :]
    return bytes(head) + b"".join(transport._tempDataBuffer)


def needsWriting(transport: Any) -> bool:
    """
    Has C{transport} unsent bytes, or a close or half-close still to do
    (asked for while it was frozen: its C{doWrite} does it)?

    Relies on: the buffers of L{pendingBytes} and
    C{abstract.FileDescriptor._writeDisconnected} and
    C{_writeDisconnecting}.
    """
    t = transport
    return bool(
        t.dataBuffer[t.offset :]
        or t._tempDataBuffer
        or t._writeDisconnected
        or t.disconnecting
        or getattr(t, "_writeDisconnecting", False)
    )


def isClosing(transport: Any) -> bool:
    """
    Is C{transport} closed, closing (aborted too: its C{connectionLost} is
    due), or half-closed for writing?

    Relies on: C{abstract.FileDescriptor._writeDisconnected}, C{_aborting}.
    """
    t = transport
    return bool(
        not t.connected
        or t.disconnecting
        or getattr(t, "_writeDisconnected", False)
        or getattr(t, "_aborting", False)
    )


class _QuietStart:
    """
    A transport whose constructor does not start reading: Twisted's
    C{Server.__init__} calls C{startReading()}, which for a restored
    connection would only be undone at once (two epoll calls each, for
    thousands of connections, while they are frozen).
    """

    _quiet = True

    def startReading(self) -> None:
        if self._quiet:
            return
        super().startReading()  # type: ignore[misc]


class _RestoredTCPServer(_QuietStart, tcp.Server):
    pass


@functools.lru_cache(maxsize=1)
def _restoredUNIXServer() -> type:
    from twisted.internet import unix

    return type("_RestoredUNIXServer", (_QuietStart, unix.Server), {})


def serverTransport(
    skt: Any, peer: Any, server: Any, sessionno: int, reactor: IReactorFDSet, unix: bool
) -> Any:
    """
    A server transport (C{tcp.Server} or C{unix.Server}) on the connected
    socket C{skt}, which it takes over, not reading yet (C{startReading()}
    starts it) and without a protocol yet (L{attachProtocol} gives it one).

    Relies on: the constructor C{Server(sock, protocol, client, server,
    sessionno, reactor)}, which calls C{startReading()}.

    @param peer: the peer's address as C{getpeername()} gave it.
    @param server: the listening port it was accepted on, or C{None}.
    """
    t: Any
    if unix:
        t = _restoredUNIXServer()(skt, None, peer, server, sessionno, reactor)
    else:
        t = _RestoredTCPServer(skt, None, tuple(peer or ("?", 0)), server, sessionno, reactor)  # type: ignore[arg-type]
    t._quiet = False
    return t


def attachProtocol(transport: Any, protocol: Any) -> None:
    """
    Give a transport made by L{serverTransport} its protocol, and the log
    prefix and C{repr} the constructor would have made from it.

    Relies on: C{tcp.Connection._getLogPrefix}, C{tcp.Server}'s C{logstr},
    C{repstr}, C{sessionno}, C{hostname}, and C{tcp.Port._realPortNumber}.
    """
    transport.protocol = protocol
    transport.logstr = (
        f"{transport._getLogPrefix(protocol)},{transport.sessionno},{transport.hostname}"
    )
    server = transport.server
    name = type(protocol).__name__
    if server is None:
        transport.repstr = f"<{name} #{transport.sessionno} (restored)>"
    else:
        transport.repstr = f"<{name} #{transport.sessionno} on {server._realPortNumber}>"


# -- twisted.web ---------------------------------------------------------------

#: TimeoutMixin keeps its scheduled call under a private, mangled name.
_TIMEOUT_CALL = "_TimeoutMixin__timeoutCall"


def genericHTTPChannelProtocol() -> type:
    """
    The protocol class a C{Site} builds for each connection: a proxy in
    front of the C{HTTPChannel} (which it would swap for HTTP/2 after TLS
    negotiation).  (C{twisted.web} is imported only where it is used: the
    operator's commands import this module too.)

    Relies on: C{http._GenericHTTPChannelProtocol}.
    """
    from twisted.web import http

    cls: type = http._GenericHTTPChannelProtocol
    return cls


def timeoutCall(protocol: Any) -> Any:
    """
    The idle timeout scheduled by C{policies.TimeoutMixin}, or C{None}.

    Relies on: C{TimeoutMixin.__timeoutCall} (name-mangled).
    """
    return getattr(protocol, _TIMEOUT_CALL, None)


def setTimeoutCall(protocol: Any, call: Any) -> None:
    """
    Set the call L{timeoutCall} gives.
    """
    setattr(protocol, _TIMEOUT_CALL, call)


@attrs.frozen
class HTTPChannelActivity:
    """
    What an C{http.HTTPChannel} is doing, as far as moving it is concerned:
    timed out and I{aborting} (C{_abortingCall}); I{handling} a request
    (C{requests}, C{_handlingRequest}); holding a I{partial} request
    (C{_buffer}, C{line_mode}, C{_transferDecoder}, C{__first_line},
    C{__header}); I{pipelined} requests queued (C{_dataBuffer});
    I{producing} a response (C{_requestProducer}).
    """

    aborting: bool
    handling: bool
    partial: bool
    pipelined: bool
    producing: bool


def httpChannelActivity(channel: Any) -> HTTPChannelActivity:
    """
    Relies on: the private attributes named in L{HTTPChannelActivity}.
    """
    return HTTPChannelActivity(
        aborting=getattr(channel, "_abortingCall", None) is not None,
        handling=bool(channel.requests or channel._handlingRequest),
        partial=bool(
            channel._buffer
            or not channel.line_mode
            or channel._transferDecoder is not None
            or getattr(channel, "_HTTPChannel__first_line", 1) != 1
            or getattr(channel, "_HTTPChannel__header", b"")
        ),
        pipelined=bool(channel._dataBuffer),
        producing=channel._requestProducer is not None,
    )


def waitingForTransport(channel: Any) -> bool:
    """
    Has C{channel} paused itself until its transport's buffer drains?

    Relies on: C{HTTPChannel._waitingForTransport}.
    """
    return bool(channel._waitingForTransport)


def attachHTTPChannel(channel: Any, transport: Any, waiting: bool) -> None:
    """
    What C{HTTPChannel.connectionMade} would set on a channel of
    C{transport}, minus the registration as the transport's producer (the
    restored connection does that, once, when it is activated).

    Relies on: C{HTTPChannel._waitingForTransport}, C{_networkProducer}
    and C{http._NoPushProducer}.
    """
    from twisted.web import http

    channel.transport = transport
    channel.connected = 1
    channel._waitingForTransport = waiting
    channel._networkProducer = (
        transport if IPushProducer.providedBy(transport) else http._NoPushProducer()
    )


def proxyState(proxy: Any) -> dict[str, Any]:
    """
    The C{channel}, C{negotiated} protocol, C{factory} and C{site} of an
    C{http._GenericHTTPChannelProtocol}.

    Relies on: its C{_channel}, C{_negotiatedProtocol}, C{_factory}, C{_site}.
    """
    return {
        "channel": proxy._channel,
        "negotiated": proxy._negotiatedProtocol,
        "factory": proxy._factory,
        "site": proxy._site,
    }


def restoreProxy(proxy: Any, state: dict[str, Any], config: dict[str, Any]) -> None:
    """
    Set a blank C{_GenericHTTPChannelProtocol}'s L{proxyState}, and its own
    copies of the channel's configuration (it hands them to a replacement
    channel), directly, not through its properties (which would write to
    the channel too).

    Relies on: those of L{proxyState}; C{_callLater}, C{_timeOut},
    C{_requestFactory}.

    @param config: C{factory}, and optionally C{site}, C{callLater},
        C{timeOut} and C{requestFactory}, as C{Site.buildProtocol} gives.
    """
    proxy.__dict__.update(
        _channel=state["channel"],
        _negotiatedProtocol=state["negotiated"],
        _factory=config["factory"],
        _site=config.get("site"),
        _callLater=config.get("callLater"),
        _timeOut=config.get("timeOut"),
    )
    if "requestFactory" in config:
        proxy.__dict__["_requestFactory"] = config["requestFactory"]


# -- twisted.conch -------------------------------------------------------------

#: C{insults.ServerProtocol}'s pending cursor position reports (Deferreds).
TERMINAL_CURSOR_REPORTS = "_cursorReports"

#: C{insults.ServerProtocol}'s cursor position saved by C{saveCursor}.
TERMINAL_SAVED_CURSOR = "_savedCursorPos"


def cursorReportsPending(terminal: Any) -> bool:
    """
    Is C{terminal} (an C{insults.ServerProtocol}) waiting for the client's
    answer to C{reportCursorPosition}?

    Relies on: C{ServerProtocol._cursorReports}.
    """
    return bool(getattr(terminal, TERMINAL_CURSOR_REPORTS))


def forgetCursorReports(terminal: Any) -> None:
    """
    Leave C{terminal} waiting for no cursor reports.
    """
    setattr(terminal, TERMINAL_CURSOR_REPORTS, [])


def pendingDeferredNumbers(interpreter: Any) -> list[int]:
    """
    The numbers a C{manhole.ManholeInterpreter} showed for the Deferreds
    whose results it has not shown yet (C{<Deferred #3>}).

    Relies on: C{ManholeInterpreter._pendingDeferreds}.
    """
    return sorted(k for k, _ in interpreter._pendingDeferreds.values())
