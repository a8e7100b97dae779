# -*- test-case-name: tests.test_tlsrecord -*-
"""
TLS 1.3 cipher suites and traffic keys (RFC 8446, sections 5.3, 7.1 to
7.3), on the C{cryptography} package's HKDF-Expand and AEAD primitives:
nothing here is cryptography of its own, only the labels, lengths and
byte layouts the RFC prescribes.

Secrets are kept in C{bytearray}s so that they can be zeroed
(L{wipe}); see C{docs/adapters.md}, "TLS sessions", for what Python
cannot wipe.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

#: The length of every TLS 1.3 AEAD's nonce (and so of the write IV).
IV_LENGTH = 12

#: The length of every TLS 1.3 AEAD's authentication tag.
TAG_LENGTH = 16


@attrs.frozen
class CipherSuite:
    """
    A TLS 1.3 cipher suite this record layer speaks.

    @ivar name: its IANA (and OpenSSL) name.
    @ivar code: its two-byte identifier.
    @ivar keyLength: the AEAD key length, in bytes.
    @ivar hash: the HKDF hash.
    @ivar aead: the C{cryptography} AEAD class.
    @ivar recordLimit: how many records a sender protects with one key
        before it updates it (RFC 8446 section 5.5: 2^24.5 full-size
        records for AES-GCM; ChaCha20-Poly1305's bound is beyond the
        sequence number space).
    """

    name: str
    code: int
    keyLength: int
    hash: type[hashes.HashAlgorithm]
    aead: type[AESGCM] | type[ChaCha20Poly1305]
    recordLimit: int
    hashLength: int = attrs.field(
        init=False, default=attrs.Factory(lambda self: self.hash().digest_size, takes_self=True)
    )


#: The largest sequence number: a key never protects a record past it.
MAX_SEQUENCE = 2**64 - 1

AES_128_GCM_SHA256 = CipherSuite(
    "TLS_AES_128_GCM_SHA256", 0x1301, 16, hashes.SHA256, AESGCM, 2**24
)
AES_256_GCM_SHA384 = CipherSuite(
    "TLS_AES_256_GCM_SHA384", 0x1302, 32, hashes.SHA384, AESGCM, 2**24
)
CHACHA20_POLY1305_SHA256 = CipherSuite(
    "TLS_CHACHA20_POLY1305_SHA256", 0x1303, 32, hashes.SHA256, ChaCha20Poly1305, MAX_SEQUENCE
)

#: The suites that move, by name.
SUITES = {s.name: s for s in (AES_128_GCM_SHA256, AES_256_GCM_SHA384, CHACHA20_POLY1305_SHA256)}


def hkdfExpandLabel(
    hash: type[hashes.HashAlgorithm], secret: Any, label: bytes, context: bytes, length: int
) -> bytes:
    """
    HKDF-Expand-Label (RFC 8446 section 7.1): HKDF-Expand of C{secret}
    with the C{HkdfLabel} structure (length, C{"tls13 "} + label, context)
    as its info.

    @param secret: a bytes-like object (a C{bytearray} is not copied).
    """
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + struct.pack("!B", len(context)) + context
    return HKDFExpand(hash(), length, info).derive(secret)


def nextSecret(suite: CipherSuite, secret: Any) -> bytearray:
    """
    The next generation of an application traffic secret, after a
    KeyUpdate (RFC 8446 section 7.2).
    """
    return bytearray(hkdfExpandLabel(suite.hash, secret, b"traffic upd", b"", suite.hashLength))


def wipe(secret: bytearray | None) -> None:
    """
    Overwrite C{secret} with zeros (in place).
    """
    if secret is not None:
        secret[:] = bytes(len(secret))


class TrafficKeys:
    """
    The write key and IV derived from one traffic secret (RFC 8446
    section 7.3), and record protection with them (section 5.2): the
    per-record nonce is the IV XOR the 64-bit sequence number, left-padded
    with zeros (section 5.3).

    The sequence number is the caller's: L{DirectionState} keeps it.
    """

    __slots__ = ("_aead", "_iv")

    def __init__(self, suite: CipherSuite, secret: Any) -> None:
        key = hkdfExpandLabel(suite.hash, secret, b"key", b"", suite.keyLength)
        self._aead = suite.aead(key)
        self._iv = int.from_bytes(hkdfExpandLabel(suite.hash, secret, b"iv", b"", IV_LENGTH), "big")

    def __repr__(self) -> str:
        return "<TrafficKeys>"

    def nonce(self, sequence: int) -> bytes:
        if not 0 <= sequence <= MAX_SEQUENCE:
            raise ValueError("sequence number out of range")
        return (self._iv ^ sequence).to_bytes(IV_LENGTH, "big")

    def seal(self, sequence: int, plaintext: bytes, header: bytes) -> bytes:
        return self._aead.encrypt(self.nonce(sequence), plaintext, header)

    def open(self, sequence: int, ciphertext: bytes, header: bytes) -> bytes:
        """
        @raise cryptography.exceptions.InvalidTag: if the record was not
            sealed with this key, sequence number and header.
        """
        return self._aead.decrypt(self.nonce(sequence), ciphertext, header)


class SequenceExhausted(Exception):
    """
    A key has protected as many records as its sequence number allows.
    """


@attrs.define(eq=False, repr=False)
class DirectionState:
    """
    One direction of a session: its current traffic secret (a
    C{bytearray}, updated in place by KeyUpdates), the keys derived from
    it, and the sequence number of the next record.  The only way to
    protect or unprotect a record takes the next sequence number and
    advances it, so no nonce is ever used twice with one key.

    @ivar generation: how many KeyUpdates this direction has had since
        this object was made (for tests and status; never the secret).
    """

    suite: CipherSuite
    _secret: bytearray
    sequence: int = 0
    generation: int = 0
    _keys: TrafficKeys | None = None

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.sequence <= MAX_SEQUENCE + 1:
            raise ValueError("sequence number out of range")
        if len(self._secret) != self.suite.hashLength:
            raise ValueError("a traffic secret of the wrong length for its suite")
        self._keys = TrafficKeys(self.suite, self._secret)

    @classmethod
    def fromSecret(cls, suite: CipherSuite, secret: Any, sequence: int = 0) -> DirectionState:
        """
        A direction with a copy of C{secret} (the caller wipes its own).
        """
        return cls(suite, bytearray(secret), sequence)

    def __repr__(self) -> str:
        return f"<DirectionState {self.suite.name} generation {self.generation} sequence {self.sequence}>"

    @property
    def exhausted(self) -> bool:
        return self.sequence > MAX_SEQUENCE

    def _next(self) -> int:
        sequence = self.sequence
        if sequence > MAX_SEQUENCE:
            raise SequenceExhausted("no sequence number left for this key")
        self.sequence = sequence + 1
        return sequence

    def seal(self, plaintext: bytes, header: bytes) -> bytes:
        assert self._keys is not None
        return self._keys.seal(self._next(), plaintext, header)

    def open(self, ciphertext: bytes, header: bytes) -> bytes:
        """
        Unprotect the next record.  A record that fails still uses up its
        sequence number (the session is over anyway).
        """
        assert self._keys is not None
        return self._keys.open(self._next(), ciphertext, header)

    def update(self) -> None:
        """
        Move to the next generation of the traffic secret (RFC 8446
        section 7.2), wiping the old one, and restart the sequence at 0.
        """
        following = nextSecret(self.suite, self._secret)
        self._secret[:] = following
        wipe(following)
        self._keys = TrafficKeys(self.suite, self._secret)
        self.sequence = 0
        self.generation += 1

    def secretCopy(self) -> bytearray:
        """
        A copy of the current secret (to capture; the caller wipes it).
        """
        return bytearray(self._secret)

    def wipe(self) -> None:
        """
        Zero the secret and drop the keys: this direction is done.
        """
        wipe(self._secret)
        self._keys = None
