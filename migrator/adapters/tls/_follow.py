# -*- test-case-name: tests.test_tlsfollow -*-
"""
The incumbent's side: following TLS 1.3 sessions that OpenSSL runs, from
their handshake on, so that one can be continued elsewhere exactly.

OpenSSL has no way to hand a session's state over, so migrator keeps its
own account of each session of a TLS port's factory (L{followFactory},
hooked on every stream port the service listens on):

  - the traffic secrets, from OpenSSL's key-log callback, set on the
    factory's contexts (L{migrator._tlsinternals.installKeyLog}), kept per
    connection in a L{weakref.WeakKeyDictionary} that forgets them with the
    connection (and wipes them then);
  - every byte to and from the connection's memory BIOs
    (L{migrator._tlsinternals.tapMemoryBIO}), split into records and
    unprotected with those secrets: a I{passive} record layer for each
    direction.  It knows where the handshake's keys give way to the
    application's (after each side's Finished), follows KeyUpdates both
    ways, counts the records under each key (the sequence numbers), and
    keeps the part of a record that has not fully arrived.

Anything it cannot follow exactly (TLS 1.2, another suite, early data, a
record that does not decrypt, a post-handshake message other than
KeyUpdate and NewSessionTicket, an alert) marks the session
(L{SessionFollower.problem}): it then stays with the incumbent and drains,
with that reason.  The follower never changes what OpenSSL does, and an
error inside it only marks the session.

Secrets are never logged and never shown (no C{repr} shows one).
"""

from __future__ import annotations

import weakref
from typing import Any

from cryptography.exceptions import InvalidTag
from OpenSSL import SSL
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from migrator._tlsinternals import installKeyLog, setTLSCreator, tapMemoryBIO, tlsCreator
from migrator.adapters.tls._keys import SUITES, CipherSuite, DirectionState, wipe
from migrator.adapters.tls._record import (
    ALERT,
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    FINISHED,
    HANDSHAKE,
    HEADER_LENGTH,
    KEY_UPDATE,
    MAX_CIPHERTEXT,
    NEW_SESSION_TICKET,
    UPDATE_REQUESTED,
)

_log = Logger()

PLAIN = "plain"
HANDSHAKING = "handshake"
#: After this side's Finished, before its application secret is logged
#: (OpenSSL logs the client's when it processes the client's Finished,
#: after the follower has seen it go in).
FINISHED_SENT = "finished"
APPLICATION = "application"

CLIENT = "CLIENT"
SERVER = "SERVER"

#: Handshake message types before the keys change (RFC 8446 section 4).
_SERVER_HELLO = 2
_CLIENT_HELLO = 1
#: The longest handshake message followed (a certificate chain).
_MAX_MESSAGE = 2**17
#: How many bytes may wait for keys that are not logged yet (a client's
#: Finished and what follows it in one flight is far less): past it, the
#: keys are taken never to come (a context switched by an SNI callback
#: logs nowhere), and the session is given up rather than buffered.
_MAX_WAITING = 2**17

_LABELS = {
    b"CLIENT_HANDSHAKE_TRAFFIC_SECRET": (CLIENT, HANDSHAKING),
    b"SERVER_HANDSHAKE_TRAFFIC_SECRET": (SERVER, HANDSHAKING),
    b"CLIENT_TRAFFIC_SECRET_0": (CLIENT, APPLICATION),
    b"SERVER_TRAFFIC_SECRET_0": (SERVER, APPLICATION),
}
#: Key-log labels of sessions that cannot move.
_REFUSED = {
    b"CLIENT_RANDOM": "it speaks TLS 1.2",
    b"CLIENT_EARLY_TRAFFIC_SECRET": "it uses early data (0-RTT)",
    b"EARLY_EXPORTER_SECRET": "it uses early data (0-RTT)",
}


class _Direction:
    """
    One direction of a followed session: its records, split and
    unprotected as they pass.

    @ivar sender: L{CLIENT} (bytes OpenSSL received) or L{SERVER} (bytes it
        sent).
    @ivar phase: L{PLAIN} (before the first protected record), then
        L{HANDSHAKING}, then L{APPLICATION} (after this side's Finished,
        once its secret is known: L{FINISHED_SENT} until then).
    @ivar state: the current keys and sequence number.
    @ivar buffer: bytes that are not a whole record yet (or wait for keys).
    @ivar handshake: part of a handshake message.
    """

    def __init__(self, follower: SessionFollower, sender: str) -> None:
        self.follower = follower
        self.sender = sender
        self.phase = PLAIN
        self.state: DirectionState | None = None
        self.buffer = bytearray()
        self.handshake = bytearray()
        self.keyUpdates = 0

    def __repr__(self) -> str:
        return f"<_Direction {self.sender} {self.phase} {self.state!r}>"

    def feed(self, data: bytes) -> None:
        self.buffer += data
        self.process()

    def process(self) -> None:
        buffer = self.buffer
        follower = self.follower
        if self.phase == FINISHED_SENT and not self._application():
            # Its keys are not logged yet: wait for them.
            self._waiting()
            return
        while follower.problem is None and len(buffer) >= HEADER_LENGTH:
            contentType = buffer[0]
            length = (buffer[3] << 8) | buffer[4]
            if length > MAX_CIPHERTEXT:
                follower.fail(f"a record of {length} bytes")
                return
            end = HEADER_LENGTH + length
            if len(buffer) < end:
                return
            if self.phase == FINISHED_SENT and not self._application():
                self._waiting()
                return
            if contentType == APPLICATION_DATA and self.phase == PLAIN and not self._start():
                self._waiting()
                return
            header = bytes(buffer[:HEADER_LENGTH])
            body = bytes(buffer[HEADER_LENGTH:end])
            del buffer[:end]
            if contentType != APPLICATION_DATA:
                self._unprotected(contentType, body)
                continue
            assert self.state is not None
            try:
                inner = self.state.open(body, header)
            except InvalidTag:
                follower.fail("a record that did not decrypt with its logged keys")
                return
            stripped = inner.rstrip(b"\x00")
            if not stripped:
                follower.fail("a record with no content type")
                return
            self._protected(stripped[-1], stripped[:-1])

    def _waiting(self) -> None:
        if len(self.buffer) > _MAX_WAITING:
            self.follower.fail("its keys were not logged")

    def _start(self) -> bool:
        secret = self.follower.take(self.sender, HANDSHAKING)
        if secret is None:
            return False
        assert self.follower.suite is not None
        self.state = DirectionState.fromSecret(self.follower.suite, secret)
        wipe(secret)
        self.phase = HANDSHAKING
        return True

    def _application(self) -> bool:
        follower = self.follower
        secret = follower.take(self.sender, APPLICATION)
        if secret is None:
            return False
        assert self.state is not None and follower.suite is not None
        self.state.wipe()
        self.state = DirectionState.fromSecret(follower.suite, secret)
        wipe(secret)
        self.phase = APPLICATION
        return True

    def _unprotected(self, contentType: int, body: bytes) -> None:
        if contentType == HANDSHAKE and self.phase == PLAIN:
            if self.sender == SERVER and body[:1] == bytes((_CLIENT_HELLO,)):
                self.follower.fail("it is a TLS client connection")
            return
        if contentType == CHANGE_CIPHER_SPEC and self.phase != APPLICATION:
            # Middlebox compatibility (RFC 8446 appendix D.4).
            return
        if contentType == ALERT:
            self.follower.fail("an alert was sent")
            return
        self.follower.fail(f"an unexpected record of type {contentType}")

    def _protected(self, contentType: int, content: bytes) -> None:
        follower = self.follower
        if self.handshake and contentType != HANDSHAKE:
            follower.fail("a handshake message was interrupted")
        elif contentType == HANDSHAKE:
            self.handshake += content
            self._messages()
        elif contentType == APPLICATION_DATA:
            if self.phase != APPLICATION:
                follower.fail("application data before the handshake finished")
        elif contentType == ALERT:
            follower.fail("the session is closing (an alert was sent)")
        else:
            follower.fail(f"a protected record of type {contentType}")

    def _messages(self) -> None:
        buffer = self.handshake
        while len(buffer) >= 4 and self.follower.problem is None:
            kind = buffer[0]
            length = int.from_bytes(buffer[1:4], "big")
            if length > _MAX_MESSAGE:
                self.follower.fail("a handshake message too long to follow")
                return
            if len(buffer) < 4 + length:
                return
            body = bytes(buffer[4 : 4 + length])
            del buffer[: 4 + length]
            self._message(kind, body, last=not buffer)

    def _message(self, kind: int, body: bytes, last: bool) -> None:
        follower = self.follower
        if self.phase == HANDSHAKING:
            if kind != FINISHED:
                return
            if not last:
                follower.fail("a handshake message after Finished in its record")
                return
            self.phase = FINISHED_SENT
            self._application()
            return
        if kind == KEY_UPDATE and len(body) == 1:
            if not last:
                follower.fail("a message after a KeyUpdate in its record")
                return
            assert self.state is not None
            self.state.update()
            self.keyUpdates += 1
            if self.sender == CLIENT:
                if body[0] == UPDATE_REQUESTED:
                    follower.owedKeyUpdate = True
            else:
                follower.owedKeyUpdate = False
            return
        if kind == NEW_SESSION_TICKET and self.sender == SERVER:
            return
        follower.fail(f"a post-handshake message of type {kind}")

    def wipe(self) -> None:
        if self.state is not None:
            self.state.wipe()
        for buffer in (self.buffer, self.handshake):
            wipe(buffer)
            del buffer[:]


class SessionFollower:
    """
    Follows one server-side TLS session; see the module docstring.

    @ivar problem: why the session cannot be continued elsewhere, or
        C{None}.
    @ivar suite: its cipher suite, once known.
    @ivar owedKeyUpdate: the client asked for a KeyUpdate that OpenSSL has
        not sent yet.
    """

    def __init__(self) -> None:
        self.problem: str | None = None
        self.suite: CipherSuite | None = None
        self.owedKeyUpdate = False
        self._secrets: dict[tuple[str, str], bytearray] = {}
        self.inbound = _Direction(self, CLIENT)
        self.outbound = _Direction(self, SERVER)

    def __repr__(self) -> str:
        return f"<SessionFollower {self.problem or 'following'} {self.inbound!r} {self.outbound!r}>"

    def fail(self, why: str) -> None:
        """
        This session cannot move: remember why, and forget its secrets.
        """
        if self.problem is None:
            self.problem = why
        self.wipe()

    def wipe(self) -> None:
        for secret in self._secrets.values():
            wipe(secret)
        self._secrets.clear()
        self.inbound.wipe()
        self.outbound.wipe()

    def take(self, sender: str, phase: str) -> bytearray | None:
        """
        A logged secret, removed from those kept (the caller wipes it).
        """
        return self._secrets.pop((sender, phase), None)

    # -- what OpenSSL tells and does ------------------------------------------

    def keylog(self, connection: Any, line: bytes) -> None:
        """
        A key-log line (C{LABEL client_random secret}, in hexadecimal).
        """
        if self.problem is not None:
            return
        label, _, rest = line.partition(b" ")
        refused = _REFUSED.get(label)
        if refused is not None:
            self.fail(refused)
            return
        where = _LABELS.get(label)
        if where is None:
            # EXPORTER_SECRET: not needed.
            return
        if self.suite is None:
            name = connection.get_cipher_name()
            suite = SUITES.get(name)
            if suite is None or connection.get_protocol_version_name() != "TLSv1.3":
                self.fail(f"its cipher suite is {name}" if suite is None else "it is not TLS 1.3")
                return
            self.suite = suite
        secret = bytearray.fromhex(rest.rpartition(b" ")[2].decode("ascii"))
        if len(secret) != self.suite.hashLength:
            self.fail("a logged secret of the wrong length")
            return
        self._secrets[where] = secret
        # Records may have waited for these keys.
        self.inbound.process()
        self.outbound.process()

    def received(self, data: bytes) -> None:
        if self.problem is None:
            self.inbound.feed(data)

    def sent(self, data: bytes) -> None:
        if self.problem is None:
            self.outbound.feed(data)

    # -- the capture ----------------------------------------------------------------

    def whyNot(self) -> str | None:
        """
        Why the session cannot be continued elsewhere now, if it cannot.
        """
        if self.problem is not None:
            return self.problem
        if self.inbound.phase != APPLICATION or self.outbound.phase != APPLICATION:
            return "its handshake is not finished"
        if self.outbound.buffer or self.outbound.handshake:
            return "part of a record of ours has not been sent"
        return None

    def session(self) -> dict[str, Any]:
        """
        The session's state, as L{migrator.adapters.tls._record.RecordLayer.fromState}
        takes it: secrets as C{bytearray} copies (the caller wipes them),
        sequence numbers, the partial record and handshake message from
        the client, and whether a KeyUpdate is owed.

        @raise ValueError: if L{whyNot} gives a reason.
        """
        why = self.whyNot()
        if why is not None:
            raise ValueError(why)
        read, write = self.inbound.state, self.outbound.state
        assert read is not None and write is not None and self.suite is not None
        return {
            "suite": self.suite.name,
            "readSecret": read.secretCopy(),
            "readSeq": read.sequence,
            "writeSecret": write.secretCopy(),
            "writeSeq": write.sequence,
            "inbound": bytes(self.inbound.buffer),
            "handshake": bytes(self.inbound.handshake),
            "owedKeyUpdate": self.owedKeyUpdate,
        }


#: The follower of each OpenSSL connection followed in this process.
_FOLLOWERS: weakref.WeakKeyDictionary[SSL.Connection, SessionFollower] = weakref.WeakKeyDictionary()
#: The contexts whose key log goes to L{_keylog}.
_LOGGING: weakref.WeakSet[SSL.Context] = weakref.WeakSet()
#: The contexts that log elsewhere (the service's own callback).
_FOREIGN: weakref.WeakSet[SSL.Context] = weakref.WeakSet()


def _keylog(connection: Any, line: bytes) -> None:
    follower = _FOLLOWERS.get(connection)
    if follower is None:
        return
    try:
        follower.keylog(connection, line)
    except Exception as e:
        # Inside OpenSSL's callback: never raise (and never show the line).
        follower.fail(f"following it failed: {e.__class__.__name__}")


def followerOf(connection: Any) -> SessionFollower | None:
    """
    The follower of an C{OpenSSL.SSL.Connection}, if it is followed.
    """
    try:
        return _FOLLOWERS.get(connection)
    except TypeError:
        return None


def follow(connection: SSL.Connection) -> SessionFollower:
    """
    Follow the session of C{connection} (a server's, before its handshake).
    """
    follower = SessionFollower()
    _FOLLOWERS[connection] = follower
    # Wiped when the connection goes (the follower holds no reference to it).
    weakref.finalize(connection, follower.wipe)
    context = connection.get_context()
    if context not in _LOGGING:
        if context in _FOREIGN or not installKeyLog(context, _keylog):
            _FOREIGN.add(context)
            follower.fail("the service logs its TLS keys elsewhere (its own key-log callback)")
            return follower
        _LOGGING.add(context)

    def received(data: bytes) -> None:
        try:
            follower.received(data)
        except Exception as e:
            follower.fail(f"following it failed: {e.__class__.__name__}")

    def sent(data: bytes) -> None:
        try:
            follower.sent(data)
        except Exception as e:
            follower.fail(f"following it failed: {e.__class__.__name__}")

    tapMemoryBIO(connection, received, sent)
    return follower


class _FollowingCreator:
    """
    Stands in for a C{TLSMemoryBIOFactory}'s connection creator: makes the
    connection as it would, and follows it.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(self, protocol: Any) -> Any:
        connection = self.original(protocol)
        follow(connection)
        return connection


def followFactory(factory: Any) -> bool:
    """
    Follow the sessions of every connection C{factory} makes from now on,
    if it is a TLS server factory (a C{TLSMemoryBIOFactory}, as C{ssl:}
    ports and C{listenSSL} make).  Doing it twice does nothing more.

    @return: whether C{factory} is a TLS factory.
    """
    if not isinstance(factory, TLSMemoryBIOFactory):
        return False
    creator = tlsCreator(factory)
    if not isinstance(creator, _FollowingCreator):
        setTLSCreator(factory, _FollowingCreator(creator))
    return True


def followPort(port: Any) -> None:
    """
    For L{migrator.takeover._ports.ListenerRegistry.onListen}: follow the
    TLS sessions of a stream port's factory.
    """
    if followFactory(getattr(port, "factory", None)):
        _log.debug("following the TLS sessions of {port}", port=port)
