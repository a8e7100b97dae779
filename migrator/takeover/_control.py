# -*- test-case-name: tests.test_control -*-
"""
The control socket: a UNIX socket, private to its owner, on which a running
service answers Perspective Broker calls from its successor and from
operators' tools.

  - The directory holding it must not be writable by its group or by other
    users (L{checkControlPath}).
  - It is bound under a temporary name with a umask that makes it 0600 from
    the start, then renamed into place (L{ControlSocket}): whoever connects
    to the path reaches a fully ready broker, and a successor replaces its
    predecessor's socket atomically.
  - Every peer's credentials are checked (C{SO_PEERCRED}) on both ends: only
    the same user, or root, is served (L{PeerPolicy}).  A refused peer is
    told why in one line of plain text (L{REFUSED}), which a client tells
    apart from Perspective Broker's greeting before decoding anything.
  - PB unjellies basic types only (L{controlSecurity}): no class is ever
    reconstructed from what a peer sends.  Input that does not decode
    (banana or jelly) drops only that connection, with one log line.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import IFileDescriptorReceiver, IListeningPort
from twisted.logger import Logger
from twisted.persisted import crefutil
from twisted.python.failure import Failure
from twisted.spread import jelly, pb
from zope.interface import implementer

from migrator.interfaces import IPeerPolicy
from migrator.takeover._ports import releasePort

_log = Logger()
_CRED = struct.Struct("3i")

#: How a server's refusal of a peer begins: one line of plain text, then the
#: connection closes.  Every byte of it is below 0x80, while Perspective
#: Broker's greeting (banana) has a type byte (0x80 or more) as its second
#: byte, so a client cannot mistake one for the other.
REFUSED = b"migrator: refused: "
#: The longest refusal line a client reads (the rest is ignored).
_REFUSAL_LIMIT = 512


class ControlPathError(Exception):
    """
    The control path cannot be used safely, or is in use.
    """


class ControlRefused(Exception):
    """
    The service at a control socket refused this connection, and said why.
    """

    def __str__(self) -> str:
        return f"refused by the service: {self.args[0]}"


class MalformedJelly(ValueError):
    """
    A jelly expression that is not even well formed (e.g. a type tag that is
    not a string).
    """


class MalformedInput(pb.Error):
    """
    A peer's call could not be decoded; its connection is dropped.  (A
    L{pb.Error}, so that PB answers it without logging a traceback; the
    answer is not sent, the connection being dropped already.)
    """


class StrictSecurity(jelly.SecurityOptions):
    """
    Jelly security that allows exactly the type names it was given.

    L{jelly.SecurityOptions.isTypeAllowed} also accepts I{every} dotted type
    name, so any class registered process-wide with
    C{setUnjellyableForClass} (by the wrapped service, say) would be
    rebuilt from a peer's bytes; this does not.
    """

    #: The names under which the jellier (sending side) checks plain values.
    _builtins = frozenset(
        f"builtins.{t.__name__}".encode()
        for t in (dict, list, tuple, str, bytes, int, float, bool, type(None), set, frozenset)
    )

    def isTypeAllowed(self, typeName: str | bytes) -> bool:
        if isinstance(typeName, str):
            typeName = typeName.encode("utf-8")
        elif not isinstance(typeName, bytes):
            # A list, a number...: not a name at all.
            raise MalformedJelly(
                f"a jelly type tag that is a {type(typeName).__name__}, not a string"
            )
        # A peer naming "builtins.x" still reaches isClassAllowed, which
        # allows no class at all.
        return typeName in self.allowedTypes or typeName in self._builtins


def controlSecurity() -> jelly.SecurityOptions:
    """
    Jelly security for the control conversation: dictionaries, lists,
    tuples, strings, numbers, booleans and None; remote references (PB's own
    plumbing) and copied failures (so that errors reach the caller as text).
    Nothing else is unjellied.
    """
    security = StrictSecurity()
    security.allowBasicTypes()
    # As bytes: allowTypes() would store a class's qualified name as str,
    # which the check (on bytes) never finds.
    security.allowTypes(b"remote", b"twisted.spread.pb.CopyableFailure")
    return security


def checkControlPath(path: str, uid: int | None = None) -> str:
    """
    Check that C{path} is a safe place for a control socket and return it
    made absolute.

    @raise ControlPathError: if its directory is missing, is writable by
        its group or other users, or belongs to another (non-root) user, or
        if C{path} exists and is not a socket.
    """
    if uid is None:
        uid = os.getuid()
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    try:
        st = os.stat(directory)
    except OSError as e:
        raise ControlPathError(f"control directory {directory}: {e.strerror}") from e
    if st.st_mode & stat.S_IWOTH:
        raise ControlPathError(
            f"control directory {directory} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); use a private directory, "
            f"e.g. /run/<service> with mode 0700"
        )
    if st.st_mode & stat.S_IWGRP:
        # Members of the group could replace the socket as well as others.
        raise ControlPathError(
            f"control directory {directory} is writable by its group (gid "
            f"{st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o}); use a private "
            f"directory, e.g. /run/<service> with mode 0700"
        )
    if st.st_uid not in (uid, 0):
        raise ControlPathError(
            f"control directory {directory} belongs to uid {st.st_uid}, not to "
            f"this user ({uid}) or root"
        )
    try:
        pst = os.lstat(path)
    except FileNotFoundError:
        return path
    except PermissionError as e:
        raise ControlPathError(f"{path}: {e.strerror}") from e
    if not stat.S_ISSOCK(pst.st_mode):
        raise ControlPathError(f"{path} exists and is not a socket; refusing to replace it")
    return path


def probe(
    path: str,
    timeout: float = 2.0,
    socketFactory: Callable[[int, int], socket.socket] = socket.socket,
) -> str:
    """
    Is anybody answering at C{path}?

    @param socketFactory: makes the probing socket from an address family
        and a socket type (C{socket.socket}), a seam for tests.
    @return: C{"absent"} (nothing there), C{"stale"} (a socket file nobody
        listens on) or C{"live"}.
    """
    try:
        os.lstat(path)
    except PermissionError:
        # A directory we may not search (another user's service): that is
        # not "absent"; let connect() below meet the EACCES and say so.
        pass
    except OSError:
        return "absent"
    s = socketFactory(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return "stale"
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return "stale"
        # EAGAIN (backlog full), timeouts: somebody is there.
        return "live"
    finally:
        s.close()
    return "live"


def peerCredentials(skt: socket.socket) -> tuple[int, int, int]:
    """
    The C{(pid, uid, gid)} of the process at the other end of a connected
    UNIX socket.
    """
    raw = skt.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return pid, uid, gid


@implementer(IPeerPolicy)
@attrs.frozen
class PeerPolicy:
    """
    Who may talk to a control socket: this process's user and root.

    @ivar uid: the allowed user id (besides root).
    @ivar credentials: how to read a peer's C{(pid, uid, gid)}, a seam for
        tests.
    """

    uid: int = attrs.field(factory=os.getuid)
    credentials: Callable[[Any], tuple[int, int, int]] = peerCredentials

    def check(self, transport: Any) -> tuple[bool, str]:
        """
        @return: whether the peer behind C{transport} may be served, and a
            description of it for the logs.
        """
        try:
            pid, uid, gid = self.credentials(transport.getHandle())
        except Exception as e:
            return False, f"unknown peer ({e})"
        who = f"pid {pid} uid {uid} gid {gid}"
        return uid in (self.uid, 0), who

    def refusal(self) -> str:
        """
        What a refused peer is told.
        """
        if self.uid == 0:
            return "this control socket serves uid 0 only"
        return f"this control socket serves uid {self.uid} and root only"


def _checkResolved(value: Any) -> None:
    """
    Check that an unjellied value holds no placeholder for a reference that
    was never resolved (jelly leaves one for a C{dereference} of nothing).

    @raise MalformedJelly: if it does.
    """
    seen: set[int] = set()
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, crefutil.NotKnown):
            raise MalformedJelly("a jelly reference to nothing")
        if id(item) in seen or not isinstance(item, (list, tuple, dict, set, frozenset)):
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        else:
            todo.extend(item)


class CheckedServerBroker(pb.Broker):
    """
    A server-side PB broker that hangs up on peers its factory's policy
    refuses, before a single byte of PB is exchanged (they are told why in
    one plain line, L{REFUSED}), and on peers whose input does not decode.
    """

    peer = "unknown peer"

    def connectionMade(self) -> None:
        ok, who = self.factory.policy.check(self.transport)
        self.peer = who
        if not ok:
            self.peer = "refused " + who
            _log.warn("refused a control connection from {peer}: wrong user", peer=who)
            reason = self.factory.policy.refusal()
            self.transport.write(REFUSED + reason.encode("ascii", "replace") + b"\n")
            # Not abortConnection: the line must get there.
            self.transport.loseConnection()
            return
        pb.Broker.connectionMade(self)

    @property
    def _dropped(self) -> bool:
        return self.peer.startswith("refused")

    def _drop(self, e: BaseException) -> None:
        """
        Say plainly that this peer's input is malformed, and drop only this
        connection: nothing more is read from it or sent to it.
        """
        if self._dropped:
            return
        self.peer = "refused " + self.peer
        _log.warn(
            "dropped a control connection from {peer}: malformed input ({error})",
            peer=self.peer[8:],
            error=f"{e.__class__.__name__}: {e}"[:200],
        )
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        # A refused peer's bytes are never parsed.
        if self._dropped:
            return
        try:
            pb.Broker.dataReceived(self, data)
        except Exception as e:
            # Banana raises on malformed input.
            self._drop(e)

    def expressionReceived(self, sexp: Any) -> None:
        # The rest of a chunk in which a malformed call came is not obeyed.
        if not self._dropped:
            pb.Broker.expressionReceived(self, sexp)

    def unserialize(self, sexp: Any, perspective: Any = None) -> Any:
        """
        Unjelly a peer's arguments.  A type that is not allowed fails the
        call (L{jelly.InsecureJelly}, answered and logged, the session goes
        on); anything else that goes wrong means the expression is
        malformed, and drops the connection without an answer.
        """
        try:
            value = pb.Broker.unserialize(self, sexp, perspective)
            _checkResolved(value)
        except jelly.InsecureJelly:
            raise
        except Exception as e:
            self._drop(e)
            raise MalformedInput("malformed input") from e
        return value

    def sendEncoded(self, obj: Any) -> None:
        # Nothing is sent to a dropped peer (PB answers every failed call).
        if not self._dropped:
            pb.Broker.sendEncoded(self, obj)


class ControlServerFactory(pb.PBServerFactory):
    """
    PB server factory of a control socket.
    """

    protocol = CheckedServerBroker

    def __init__(self, root: Any, policy: PeerPolicy | None = None) -> None:
        pb.PBServerFactory.__init__(self, root, security=controlSecurity())
        self.policy = policy or PeerPolicy()


@implementer(IFileDescriptorReceiver)
class CheckedClientBroker(pb.Broker):
    """
    A client-side PB broker that checks the server's credentials, reads the
    server's refusal (L{REFUSED}) if it refuses this client, and keeps the
    file descriptors the server sends (the frame channel's socket).

    @ivar _first: the server's first bytes while they may still be a
        refusal (a prefix of L{REFUSED}, or a refusal line not yet ended),
        or C{None} once they cannot be: then everything goes to PB.
    @ivar _refused: whether the server refused this client (then nothing
        more it sends is read).
    @ivar receivedFds: the descriptors received, owned by the broker until
        whoever takes one removes it from this list; the rest are closed
        (with L{closeFd}) when the connection is lost.
    @ivar closeFd: how a descriptor is closed (C{os.close}), a seam for
        tests.
    """

    closeFd: Callable[[int], None] = staticmethod(os.close)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pb.Broker.__init__(self, *args, **kwargs)
        self.receivedFds: list[int] = []
        self._first: bytes | None = b""
        self._refused = False

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._first is None:
            pb.Broker.dataReceived(self, data)
            return
        first = self._first + data
        head = first[: len(REFUSED)]
        if not REFUSED.startswith(head):
            # PB's greeting: never a refusal.
            self._first = None
            pb.Broker.dataReceived(self, first)
            return
        end = first.find(b"\n")
        if len(head) < len(REFUSED) or (end < 0 and len(first) < _REFUSAL_LIMIT):
            self._first = first
            return
        stop = end if 0 <= end < _REFUSAL_LIMIT else _REFUSAL_LIMIT
        reason = "".join(
            c if " " <= c <= "~" else "?"
            for c in first[len(REFUSED) : stop].decode("ascii", "replace")
        )
        self._first = None
        self._refused = True
        self.factory.refusal = reason
        _log.error("the control socket refused this connection: {reason}", reason=reason)
        self.transport.loseConnection()

    def connectionMade(self) -> None:
        ok, who = self.factory.policy.check(self.transport)
        if not ok:
            self.factory.refused = who
            _log.error("the control socket is served by {peer}: refusing to talk to it", peer=who)
            self.transport.abortConnection()
            return
        pb.Broker.connectionMade(self)

    def fileDescriptorReceived(self, fd: int) -> None:
        self.receivedFds.append(fd)

    def connectionLost(self, reason: Any) -> None:
        for fd in self.receivedFds:
            try:
                self.closeFd(fd)
            except OSError:
                pass
        self.receivedFds = []
        pb.Broker.connectionLost(self, reason)


class ControlClientFactory(pb.PBClientFactory):
    """
    PB client factory for talking to a control socket.
    """

    protocol = CheckedClientBroker
    #: Who serves the socket, if this client refused to talk to it.
    refused: str | None = None
    #: Why the server refused this client, if it did.
    refusal: str | None = None

    def __init__(self, policy: PeerPolicy | None = None) -> None:
        pb.PBClientFactory.__init__(self, security=controlSecurity())
        self.policy = policy or PeerPolicy()

    def clientConnectionLost(self, connector: Any, reason: Any, reconnecting: int = 0) -> None:
        # Whoever waits for the root object learns why the server refused.
        if self.refusal is not None:
            reason = Failure(ControlRefused(self.refusal))
        pb.PBClientFactory.clientConnectionLost(self, connector, reason, reconnecting)


@attrs.define
class ControlSocket:
    """
    A control socket being published at C{path}.

    @ivar path: where clients find it.
    @ivar port: the listening port (bound at a temporary name first).
    """

    path: str
    port: IListeningPort
    _temp: str
    _inode: int | None = None
    published: bool = False

    @classmethod
    def listen(
        cls, listenUNIX: Callable[..., IListeningPort], path: str, factory: Any
    ) -> ControlSocket:
        """
        Bind a control socket next to C{path}, private to this user, not yet
        published.

        @param listenUNIX: the reactor's own C{listenUNIX} (not the
            registry's hook: the control socket is not the wrapped service's).
        """
        directory, name = os.path.split(path)
        temp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
        if os.path.lexists(temp):
            os.unlink(temp)
        old = os.umask(0o177)
        try:
            port = listenUNIX(temp, factory, mode=0o600)
        finally:
            os.umask(old)
        return cls(path, port, temp)

    def publish(self) -> None:
        """
        Atomically make the socket answer at L{path}, replacing whatever
        socket was there.
        """
        self._inode = os.stat(self._temp).st_ino
        os.rename(self._temp, self.path)
        self.published = True

    def owned(self) -> bool:
        """
        Does L{path} still lead to this socket?
        """
        try:
            return self._inode is not None and os.stat(self.path).st_ino == self._inode
        except OSError:
            return False

    def close(self) -> None:
        """
        Stop answering.  The path is removed only if it is still ours (a
        successor may have replaced it).
        """
        mine = self.owned()
        releasePort(self.port)
        for candidate in ([self.path] if mine else []) + [self._temp]:
            try:
                os.unlink(candidate)
            except FileNotFoundError:
                pass
