# -*- test-case-name: tests.test_tlsrecord -*-
"""
The TLS 1.3 record layer of an established session (RFC 8446 sections 5,
6 and 4.6.3), without I/O: bytes from the peer go in (L{RecordLayer.receive}),
application data and bytes for the peer come out.

It continues a session whose handshake another implementation (OpenSSL,
in the incumbent) did: it starts from the application traffic secrets and
sequence numbers of both directions, and speaks only what may follow a
handshake on the server's side:

  - application data, in records of at most 2^14 bytes of plaintext
    (section 5.1); a record from the peer longer than 2^14 + 256 bytes, or
    whose plaintext is longer than 2^14 + 1 bytes, is a C{record_overflow};
  - KeyUpdate in both directions (section 4.6.3): one from the peer moves
    its direction to the next secret, and one that asks for an update is
    answered, before any more application data, by one of ours; we update
    our own key before a key has protected its suite's limit of records
    (2^24 for AES-GCM, section 5.5), and before its sequence number would
    wrap (section 5.3);
  - alerts (section 6): C{close_notify} from the peer ends the session
    cleanly; any other alert (but C{user_canceled}) ends it with an error;
    an error of ours sends a fatal alert (C{bad_record_mac} for a record
    that does not authenticate, C{unexpected_message} for anything not
    allowed here) and nothing after it; C{close_notify} is sent on close.

Everything else a peer may send after the handshake is refused with
C{unexpected_message}: the client may only send KeyUpdate then (a server
that asked for no post-handshake authentication gets no Certificate), and
a server sends, never receives, NewSessionTicket.  This layer sends no
NewSessionTicket either.

Nonces: each direction's L{DirectionState} hands out sequence numbers
strictly increasing, and a key is replaced (or the session ends) before
one could repeat.
"""

from __future__ import annotations

from typing import Any

import attrs
from cryptography.exceptions import InvalidTag

from migrator.adapters.tls._keys import (
    MAX_SEQUENCE,
    SUITES,
    TAG_LENGTH,
    CipherSuite,
    DirectionState,
    wipe,
)

# Content types (section 5.1).
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23

# Handshake message types (section 4).
NEW_SESSION_TICKET = 4
FINISHED = 20
KEY_UPDATE = 24
UPDATE_NOT_REQUESTED = 0
UPDATE_REQUESTED = 1

# Alert descriptions (section 6).
CLOSE_NOTIFY = 0
UNEXPECTED_MESSAGE = 10
BAD_RECORD_MAC = 20
RECORD_OVERFLOW = 22
ILLEGAL_PARAMETER = 47
DECODE_ERROR = 50
PROTOCOL_VERSION = 70
INTERNAL_ERROR = 80
USER_CANCELED = 90

ALERT_NAMES = {
    CLOSE_NOTIFY: "close_notify",
    UNEXPECTED_MESSAGE: "unexpected_message",
    BAD_RECORD_MAC: "bad_record_mac",
    RECORD_OVERFLOW: "record_overflow",
    ILLEGAL_PARAMETER: "illegal_parameter",
    DECODE_ERROR: "decode_error",
    PROTOCOL_VERSION: "protocol_version",
    INTERNAL_ERROR: "internal_error",
    USER_CANCELED: "user_canceled",
}

HEADER_LENGTH = 5
MAX_PLAINTEXT = 2**14
#: The longest TLSInnerPlaintext: the content, its type byte (section 5.4).
MAX_INNER = MAX_PLAINTEXT + 1
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256
#: legacy_record_version of every protected record (section 5.2).
RECORD_VERSION = b"\x03\x03"

_FATAL = 2
_WARNING = 1


def alertName(description: int) -> str:
    return ALERT_NAMES.get(description, f"alert {description}")


class TLSAlert(Exception):
    """
    The session ended with an error.

    @ivar description: the alert's description code.
    @ivar fromPeer: C{True} if the peer sent the alert, C{False} if this
        side did (and so sent it).
    """

    def __init__(self, description: int, fromPeer: bool, detail: str = "") -> None:
        self.description = description
        self.fromPeer = fromPeer
        self.detail = detail
        who = "the peer sent" if fromPeer else "sent"
        super().__init__(f"TLS: {who} {alertName(description)}" + (f" ({detail})" if detail else ""))


class _Fatal(Exception):
    def __init__(self, description: int, detail: str) -> None:
        super().__init__(detail)
        self.description = description
        self.detail = detail


@attrs.define(eq=False)
class Received:
    """
    What bytes from the peer came to.

    @ivar data: application data, in order (empty records left out).
    @ivar send: bytes to write to the peer now (a KeyUpdate of ours, an
        alert).
    @ivar closed: the peer sent C{close_notify}: it sends nothing more.
    @ivar error: the session failed (an alert, sent or received).
    @ivar keyUpdates: how many KeyUpdates the peer sent.
    """

    data: list[bytes] = attrs.field(factory=list)
    send: bytes = b""
    closed: bool = False
    error: TLSAlert | None = None
    keyUpdates: int = 0


def _header(contentType: int, length: int) -> bytes:
    return bytes((contentType, 3, 3, length >> 8, length & 0xFF))


class RecordLayer:
    """
    Both directions of a TLS 1.3 session after its handshake; see the
    module docstring.

    @ivar suite: the session's cipher suite.
    @ivar recordLimit: records one of our keys protects before we update
        it (the suite's limit unless given).
    """

    def __init__(
        self,
        suite: CipherSuite,
        read: DirectionState,
        write: DirectionState,
        inbound: bytes = b"",
        handshake: bytes = b"",
        owedKeyUpdate: bool = False,
        recordLimit: int | None = None,
    ) -> None:
        self.suite = suite
        self._read = read
        self._write = write
        self._buffer = bytearray(inbound)
        self._handshake = bytearray(handshake)
        self._owed = owedKeyUpdate
        self.recordLimit = min(recordLimit or suite.recordLimit, MAX_SEQUENCE)
        self._readClosed = False
        self._writeClosed = False
        self.failed: TLSAlert | None = None

    def __repr__(self) -> str:
        return f"<RecordLayer {self.suite.name} read {self._read!r} write {self._write!r}>"

    @classmethod
    def fromState(cls, state: dict[str, Any], recordLimit: int | None = None) -> RecordLayer:
        """
        The session L{snapshot} (or the incumbent's follower) described.
        The secrets are copied: the caller wipes those in C{state}.

        @raise ValueError: if the state is not one this layer can continue.
        """
        suite = SUITES.get(state.get("suite"))  # type: ignore[arg-type]
        if suite is None:
            raise ValueError(f"unsupported cipher suite {state.get('suite')!r}")
        for name in ("readSeq", "writeSeq"):
            if type(state.get(name)) is not int:
                raise ValueError(f"malformed {name}")
        for name in ("readSecret", "writeSecret"):
            if not isinstance(state.get(name), (bytes, bytearray)):
                raise ValueError(f"malformed {name}")
        inbound, handshake = state.get("inbound", b""), state.get("handshake", b"")
        if not isinstance(inbound, bytes) or not isinstance(handshake, bytes):
            raise ValueError("malformed partial input")
        return cls(
            suite,
            DirectionState.fromSecret(suite, state["readSecret"], state["readSeq"]),
            DirectionState.fromSecret(suite, state["writeSecret"], state["writeSeq"]),
            inbound=inbound,
            handshake=handshake,
            owedKeyUpdate=bool(state.get("owedKeyUpdate", False)),
            recordLimit=recordLimit,
        )

    def snapshot(self) -> dict[str, Any]:
        """
        The session, as L{fromState} takes it (secrets as C{bytearray}
        copies, which the caller wipes when done).
        """
        return {
            "suite": self.suite.name,
            "readSecret": self._read.secretCopy(),
            "readSeq": self._read.sequence,
            "writeSecret": self._write.secretCopy(),
            "writeSeq": self._write.sequence,
            "inbound": bytes(self._buffer),
            "handshake": bytes(self._handshake),
            "owedKeyUpdate": self._owed,
        }

    @property
    def readState(self) -> DirectionState:
        return self._read

    @property
    def writeState(self) -> DirectionState:
        return self._write

    @property
    def writable(self) -> bool:
        return not self._writeClosed and self.failed is None

    def wipe(self) -> None:
        """
        Zero both secrets and forget the partial input: the session is over.
        """
        self._read.wipe()
        self._write.wipe()
        wipe(self._buffer)
        wipe(self._handshake)
        self._readClosed = self._writeClosed = True

    # -- sending -------------------------------------------------------------

    def _protect(self, contentType: int, content: bytes) -> bytes:
        inner = content + bytes((contentType,))
        header = _header(APPLICATION_DATA, len(inner) + TAG_LENGTH)
        return header + self._write.seal(inner, header)

    def _keyUpdate(self, requested: bool) -> bytes:
        message = bytes((KEY_UPDATE, 0, 0, 1, UPDATE_REQUESTED if requested else UPDATE_NOT_REQUESTED))
        record = self._protect(HANDSHAKE, message)
        self._write.update()
        self._owed = False
        return record

    def _before(self) -> bytes:
        """
        What must precede a record of ours: a KeyUpdate the peer asked
        for, or one because the key reached its record limit.
        """
        if self._owed or self._write.sequence >= self.recordLimit:
            return self._keyUpdate(False)
        return b""

    def _checkWritable(self) -> None:
        if self.failed is not None:
            raise self.failed
        if self._writeClosed:
            raise ValueError("the session is closed for writing")

    def send(self, data: bytes) -> bytes:
        """
        Protect application data.

        @return: the records to write.
        @raise TLSAlert: if the session has failed.
        @raise ValueError: after L{closeNotify}.
        """
        self._checkWritable()
        out = []
        view = memoryview(data)
        for start in range(0, len(view), MAX_PLAINTEXT):
            out.append(self._before())
            out.append(self._protect(APPLICATION_DATA, bytes(view[start : start + MAX_PLAINTEXT])))
        return b"".join(out)

    def keyUpdate(self, requested: bool = False) -> bytes:
        """
        Update our sending key now (and ask the peer to update theirs if
        C{requested}).

        @return: the KeyUpdate record to write.
        """
        self._checkWritable()
        return self._before() + self._keyUpdate(requested)

    def closeNotify(self) -> bytes:
        """
        Close our side: a C{close_notify} alert, after which nothing more
        is sent.  Empty if already closed or failed.
        """
        if self._writeClosed or self.failed is not None:
            return b""
        record = self._before() + self._protect(ALERT, bytes((_WARNING, CLOSE_NOTIFY)))
        self._writeClosed = True
        return record

    def fail(self, description: int, detail: str = "") -> bytes:
        """
        End the session with a fatal alert of ours.

        @return: the alert record to write (empty if we cannot write any
            more).
        """
        record = b""
        if self.failed is None and not self._writeClosed and not self._write.exhausted:
            record = self._protect(ALERT, bytes((_FATAL, description)))
        if self.failed is None:
            self.failed = TLSAlert(description, False, detail)
        self._writeClosed = self._readClosed = True
        return record

    # -- receiving -------------------------------------------------------------

    def receive(self, data: bytes) -> Received:
        """
        Take bytes from the peer: every complete record is unprotected and
        handled in order; a partial record waits for the rest.  After an
        error, or the peer's C{close_notify}, input is ignored.
        """
        result = Received()
        if self._readClosed:
            return result
        buffer = self._buffer
        buffer += data
        sent = []
        try:
            while len(buffer) >= HEADER_LENGTH:
                length = (buffer[3] << 8) | buffer[4]
                if buffer[0] != APPLICATION_DATA:
                    raise _Fatal(UNEXPECTED_MESSAGE, f"an unprotected record of type {buffer[0]}")
                if buffer[1:3] != RECORD_VERSION:
                    raise _Fatal(PROTOCOL_VERSION, "a record of another version")
                if length > MAX_CIPHERTEXT:
                    raise _Fatal(RECORD_OVERFLOW, f"a record of {length} bytes")
                end = HEADER_LENGTH + length
                if len(buffer) < end:
                    break
                header = bytes(buffer[:HEADER_LENGTH])
                body = bytes(buffer[HEADER_LENGTH:end])
                del buffer[:end]
                if self._read.exhausted:
                    raise _Fatal(INTERNAL_ERROR, "the peer's sequence numbers are exhausted")
                try:
                    inner = self._read.open(body, header)
                except InvalidTag:
                    raise _Fatal(BAD_RECORD_MAC, "a record that does not authenticate") from None
                if len(inner) > MAX_INNER:
                    raise _Fatal(RECORD_OVERFLOW, "a record whose plaintext is too long")
                stripped = inner.rstrip(b"\x00")
                if not stripped:
                    raise _Fatal(UNEXPECTED_MESSAGE, "a record with no content type")
                contentType = stripped[-1]
                content = stripped[:-1]
                if self._handshake and contentType != HANDSHAKE:
                    raise _Fatal(UNEXPECTED_MESSAGE, "a handshake message interrupted")
                if contentType == APPLICATION_DATA:
                    if content:
                        result.data.append(content)
                elif contentType == HANDSHAKE:
                    sent.append(self._handshakeReceived(content, result))
                elif contentType == ALERT:
                    if self._alertReceived(content, result):
                        break
                else:
                    raise _Fatal(UNEXPECTED_MESSAGE, f"a protected record of type {contentType}")
        except _Fatal as e:
            sent.append(self.fail(e.description, e.detail))
            result.error = self.failed
            wipe(buffer)
            del buffer[:]
        result.send = b"".join(sent)
        return result

    def _alertReceived(self, content: bytes, result: Received) -> bool:
        """
        @return: whether input ends here.
        """
        if len(content) != 2:
            raise _Fatal(DECODE_ERROR, "a malformed alert")
        description = content[1]
        if description == CLOSE_NOTIFY:
            result.closed = True
            self._readClosed = True
            return True
        if description == USER_CANCELED:
            # Followed by close_notify (section 6.1).
            return False
        self.failed = TLSAlert(description, True)
        result.error = self.failed
        self._readClosed = self._writeClosed = True
        return True

    def _handshakeReceived(self, content: bytes, result: Received) -> bytes:
        """
        Post-handshake messages: KeyUpdate only.

        @return: bytes to send (our KeyUpdate, if the peer asked for one).
        """
        if not content:
            raise _Fatal(UNEXPECTED_MESSAGE, "an empty handshake record")
        buffer = self._handshake
        buffer += content
        out = b""
        while buffer:
            if buffer[0] != KEY_UPDATE:
                raise _Fatal(UNEXPECTED_MESSAGE, f"a post-handshake message of type {buffer[0]}")
            if len(buffer) < 4:
                break
            length = int.from_bytes(buffer[1:4], "big")
            if length != 1:
                raise _Fatal(DECODE_ERROR, "a malformed KeyUpdate")
            if len(buffer) < 5:
                break
            request = buffer[4]
            if request not in (UPDATE_NOT_REQUESTED, UPDATE_REQUESTED):
                raise _Fatal(ILLEGAL_PARAMETER, "a KeyUpdate with an unknown request")
            del buffer[:5]
            if buffer:
                # A key change ends its record (section 5.1).
                raise _Fatal(UNEXPECTED_MESSAGE, "data after a KeyUpdate in its record")
            self._read.update()
            result.keyUpdates += 1
            if request == UPDATE_REQUESTED and not self._writeClosed:
                # Answered at once, so before any application data of ours.
                out += self._keyUpdate(False)
        return out
