# -*- test-case-name: tests.test_tlsrecord -*-
"""
Tests for the TLS 1.3 record layer (L{migrator.adapters.tls._keys},
L{migrator.adapters.tls._record}): RFC 8448's records, KeyUpdate, alerts,
limits, tampering and nonce uniqueness.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidTag
from twisted.trial.unittest import SynchronousTestCase

from migrator.adapters.tls._keys import (
    AES_128_GCM_SHA256,
    AES_256_GCM_SHA384,
    CHACHA20_POLY1305_SHA256,
    MAX_SEQUENCE,
    SUITES,
    CipherSuite,
    DirectionState,
    SequenceExhausted,
    TrafficKeys,
    hkdfExpandLabel,
    nextSecret,
)
from migrator.adapters.tls._record import (
    ALERT,
    APPLICATION_DATA,
    BAD_RECORD_MAC,
    CLOSE_NOTIFY,
    DECODE_ERROR,
    HANDSHAKE,
    KEY_UPDATE,
    MAX_PLAINTEXT,
    PROTOCOL_VERSION,
    RECORD_OVERFLOW,
    UNEXPECTED_MESSAGE,
    USER_CANCELED,
    RecordLayer,
    TLSAlert,
)
from tests import _rfc8448 as rfc


def _pair(suite: CipherSuite = AES_128_GCM_SHA256, **kw: Any) -> tuple[RecordLayer, RecordLayer]:
    """
    A server's and a client's record layers of one session (each side's
    write secret is the other's read secret).
    """
    client = bytes(range(suite.hashLength))
    server = bytes(reversed(range(suite.hashLength)))
    return (
        RecordLayer(suite, DirectionState.fromSecret(suite, client), DirectionState.fromSecret(suite, server), **kw),
        RecordLayer(suite, DirectionState.fromSecret(suite, server), DirectionState.fromSecret(suite, client), **kw),
    )


def _records(data: bytes) -> list[bytes]:
    out = []
    while data:
        length = int.from_bytes(data[3:5], "big")
        out.append(data[: 5 + length])
        data = data[5 + length :]
    return out


class RFC8448Tests(SynchronousTestCase):
    """
    The records of RFC 8448's simple 1-RTT handshake, unprotected and
    protected with keys derived from its traffic secrets (HKDF-Expand-Label,
    the nonce, the additional data: section 5.2 and 7.3 of RFC 8446).
    """

    cases = [
        ("server handshake", rfc.SERVER_HANDSHAKE_SECRET, 0, "ENCRYPTED_EXTENSIONS"),
        ("client handshake", rfc.CLIENT_HANDSHAKE_SECRET, 0, "CLIENT_FINISHED"),
        ("server application", rfc.SERVER_APPLICATION_SECRET, 0, "NEW_SESSION_TICKET"),
        ("client application", rfc.CLIENT_APPLICATION_SECRET, 0, "CLIENT_APPLICATION_DATA"),
        ("server application", rfc.SERVER_APPLICATION_SECRET, 1, "SERVER_APPLICATION_DATA"),
    ]

    def test_unprotect(self) -> None:
        """
        Each record opens, under its secret and sequence number, to the
        RFC's plaintext.
        """
        for label, secret, sequence, name in self.cases:
            keys = TrafficKeys(AES_128_GCM_SHA256, secret)
            header = getattr(rfc, name + "_HEADER")
            plaintext = keys.open(sequence, getattr(rfc, name + "_PROTECTED"), header)
            self.assertEqual(plaintext, getattr(rfc, name + "_PLAINTEXT"), label)

    def test_protect(self) -> None:
        """
        Protecting the RFC's plaintexts gives the RFC's records.
        """
        for label, secret, sequence, name in self.cases:
            keys = TrafficKeys(AES_128_GCM_SHA256, secret)
            header = getattr(rfc, name + "_HEADER")
            protected = keys.seal(sequence, getattr(rfc, name + "_PLAINTEXT"), header)
            self.assertEqual(protected, getattr(rfc, name + "_PROTECTED"), label)

    def test_wrongSequenceFails(self) -> None:
        """
        Under another sequence number (so another nonce), a record does not
        authenticate.
        """
        keys = TrafficKeys(AES_128_GCM_SHA256, rfc.SERVER_APPLICATION_SECRET)
        self.assertRaises(
            InvalidTag, keys.open, 0, rfc.SERVER_APPLICATION_DATA_PROTECTED, rfc.SERVER_APPLICATION_DATA_HEADER
        )

    def test_recordLayerReadsTheClientsData(self) -> None:
        """
        A server's record layer started from the client's application
        secret at sequence number 0 delivers the client's application data,
        and one started from the server's at 1 protects the server's data
        into the RFC's record.
        """
        layer = RecordLayer(
            AES_128_GCM_SHA256,
            DirectionState.fromSecret(AES_128_GCM_SHA256, rfc.CLIENT_APPLICATION_SECRET),
            DirectionState.fromSecret(AES_128_GCM_SHA256, rfc.SERVER_APPLICATION_SECRET, 1),
        )
        received = layer.receive(rfc.CLIENT_APPLICATION_DATA_HEADER + rfc.CLIENT_APPLICATION_DATA_PROTECTED)
        self.assertEqual(received.data, [rfc.CLIENT_APPLICATION_DATA_PLAINTEXT[:-1]])
        self.assertIsNone(received.error)
        self.assertEqual(
            layer.send(rfc.SERVER_APPLICATION_DATA_PLAINTEXT[:-1]),
            rfc.SERVER_APPLICATION_DATA_HEADER + rfc.SERVER_APPLICATION_DATA_PROTECTED,
        )

    def test_nextSecret(self) -> None:
        """
        The next generation of a traffic secret (section 7.2) of both
        sides.
        """
        self.assertEqual(
            bytes(nextSecret(AES_128_GCM_SHA256, rfc.CLIENT_APPLICATION_SECRET)),
            rfc.UPDATED_CLIENT_APPLICATION_SECRET,
        )
        self.assertEqual(
            bytes(nextSecret(AES_128_GCM_SHA256, rfc.SERVER_APPLICATION_SECRET)),
            rfc.UPDATED_SERVER_APPLICATION_SECRET,
        )

    def test_hkdfExpandLabelLayout(self) -> None:
        """
        The HkdfLabel: the length on two bytes, the label with its "tls13 "
        prefix and the context, each after its length byte.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

        secret = bytes(32)
        info = b"\x00\x10" + b"\x09tls13 key" + b"\x02ab"
        self.assertEqual(
            hkdfExpandLabel(hashes.SHA256, secret, b"key", b"ab", 16),
            HKDFExpand(hashes.SHA256(), 16, info).derive(secret),
        )


class RoundTripTests(SynchronousTestCase):
    """
    Two record layers of one session talk to each other, for every suite.
    """

    def test_everySuite(self) -> None:
        """
        Application data of any size crosses in both directions, split
        into records of at most 2^14 bytes of plaintext.
        """
        for suite in SUITES.values():
            server, client = _pair(suite)
            big = bytes(range(256)) * 200
            records = _records(server.send(big))
            self.assertEqual(len(records), 4, suite.name)
            self.assertTrue(all(len(r) <= 5 + MAX_PLAINTEXT + 1 + 16 for r in records))
            self.assertEqual(b"".join(client.receive(b"".join(records)).data), big)
            self.assertEqual(server.receive(client.send(b"hello")).data, [b"hello"])

    def test_byteByByte(self) -> None:
        """
        Records arriving a byte at a time are delivered once complete.
        """
        server, client = _pair()
        wire = client.send(b"one") + client.send(b"two")
        data = []
        for i in range(len(wire)):
            data += server.receive(wire[i : i + 1]).data
        self.assertEqual(data, [b"one", b"two"])

    def test_suites(self) -> None:
        """
        The three suites that move, with their key lengths and hashes.
        """
        self.assertEqual(
            [(s.name, s.code, s.keyLength, s.hashLength) for s in SUITES.values()],
            [
                ("TLS_AES_128_GCM_SHA256", 0x1301, 16, 32),
                ("TLS_AES_256_GCM_SHA384", 0x1302, 32, 48),
                ("TLS_CHACHA20_POLY1305_SHA256", 0x1303, 32, 32),
            ],
        )
        self.assertIs(SUITES["TLS_AES_256_GCM_SHA384"], AES_256_GCM_SHA384)
        self.assertIs(SUITES["TLS_CHACHA20_POLY1305_SHA256"], CHACHA20_POLY1305_SHA256)

    def test_snapshotContinues(self) -> None:
        """
        A layer made from another's snapshot, taken between two records and
        with half a record received, continues the session exactly.
        """
        server, client = _pair(AES_256_GCM_SHA384)
        server.receive(client.send(b"first"))
        client.receive(server.send(b"answer"))
        wire = client.send(b"second")
        server.receive(wire[:7])
        state = server.snapshot()
        moved = RecordLayer.fromState(state)
        self.assertEqual(moved.receive(wire[7:]).data, [b"second"])
        self.assertEqual(client.receive(moved.send(b"again")).data, [b"again"])


class KeyUpdateTests(SynchronousTestCase):
    """
    KeyUpdate both ways (RFC 8446 section 4.6.3).
    """

    def test_peerUpdates(self) -> None:
        """
        A KeyUpdate from the peer moves its direction to the next secret;
        later records under the new key are read.
        """
        server, client = _pair()
        update = client.keyUpdate()
        self.assertEqual(client.writeState.generation, 1)
        received = server.receive(update + client.send(b"after"))
        self.assertEqual((received.data, received.keyUpdates, received.send), ([b"after"], 1, b""))
        self.assertEqual(server.readState.generation, 1)
        self.assertEqual(server.readState.sequence, 1)

    def test_requestedUpdateAnswered(self) -> None:
        """
        A KeyUpdate that asks for ours is answered at once, before our next
        application data, with one that does not ask back.
        """
        server, client = _pair()
        received = server.receive(client.keyUpdate(requested=True))
        self.assertEqual(server.writeState.generation, 1)
        answer = client.receive(received.send + server.send(b"data"))
        self.assertEqual((answer.keyUpdates, answer.data, answer.send), (1, [b"data"], b""))

    def test_owedUpdateSentFirst(self) -> None:
        """
        A layer restored owing the peer a KeyUpdate sends it before its
        first application data.
        """
        server, client = _pair(owedKeyUpdate=True)
        answer = client.receive(server.send(b"data"))
        self.assertEqual((answer.keyUpdates, answer.data), (1, [b"data"]))
        self.assertEqual(client.receive(server.send(b"more")).keyUpdates, 0)

    def test_recordLimit(self) -> None:
        """
        A key that has protected its limit of records is updated before the
        next one.
        """
        server, client = _pair(recordLimit=3)
        wire = b"".join(server.send(b"%d" % i) for i in range(7))
        received = client.receive(wire)
        self.assertEqual(received.data, [b"%d" % i for i in range(7)])
        self.assertEqual(received.keyUpdates, 2)
        self.assertEqual(server.writeState.generation, 2)

    def test_sequenceNeverWraps(self) -> None:
        """
        At the last sequence number, a KeyUpdate comes first: no record is
        ever protected with a wrapped sequence number.
        """
        server, client = _pair()
        server.writeState.sequence = MAX_SEQUENCE
        client.readState.sequence = MAX_SEQUENCE
        received = client.receive(server.send(b"x"))
        self.assertEqual((received.data, received.keyUpdates), ([b"x"], 1))
        self.assertEqual(server.writeState.sequence, 1)

    def test_directionExhausted(self) -> None:
        """
        A direction refuses to protect past the last sequence number.
        """
        state = DirectionState.fromSecret(AES_128_GCM_SHA256, bytes(32), MAX_SEQUENCE)
        state.seal(b"x", b"h")
        self.assertRaises(SequenceExhausted, state.seal, b"y", b"h")

    def test_malformedKeyUpdate(self) -> None:
        """
        A KeyUpdate of the wrong length, or sharing its record with more
        data, ends the session with an alert.
        """
        for message, description in [
            (bytes((KEY_UPDATE, 0, 0, 2, 0, 0)), DECODE_ERROR),
            (bytes((KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE)), UNEXPECTED_MESSAGE),
        ]:
            server, client = _pair()
            received = server.receive(client._protect(HANDSHAKE, message))
            assert received.error is not None
            self.assertEqual(received.error.description, description)
            self.assertFalse(received.error.fromPeer)

    def test_keyUpdateAcrossRecords(self) -> None:
        """
        A KeyUpdate split over two records is taken once whole.
        """
        server, client = _pair()
        message = bytes((KEY_UPDATE, 0, 0, 1, 0))
        wire = client._protect(HANDSHAKE, message[:2]) + client._protect(HANDSHAKE, message[2:])
        client.writeState.update()
        received = server.receive(wire + client.send(b"after"))
        self.assertEqual((received.keyUpdates, received.data), (1, [b"after"]))


class RejectionTests(SynchronousTestCase):
    """
    What a peer may not send, and tampering: the session ends with an alert
    and nothing from the offending record is delivered.
    """

    def assertAlert(self, received: Any, description: int, layer: RecordLayer, peer: RecordLayer) -> None:
        self.assertEqual(received.data, [])
        assert received.error is not None
        self.assertEqual(received.error.description, description)
        self.assertFalse(received.error.fromPeer)
        # The alert is sent, protected, and the peer reads it.
        got = peer.receive(received.send)
        assert got.error is not None
        self.assertEqual((got.error.description, got.error.fromPeer), (description, True))
        self.assertRaises(TLSAlert, layer.send, b"more")

    def test_tamperedRecord(self) -> None:
        """
        A record with one bit flipped (in its ciphertext, tag or header)
        fails to authenticate: C{bad_record_mac}, nothing delivered, and
        input after it ignored.
        """
        for position in (5, -1, 4):
            server, client = _pair()
            wire = bytearray(client.send(b"secret request"))
            if position == 4:
                # The length byte is additional data: change it and the
                # record, so it still parses.
                wire[4] -= 1
                wire = wire[:-1]
            else:
                wire[position] ^= 1
            received = server.receive(bytes(wire))
            self.assertAlert(received, BAD_RECORD_MAC, server, client)
            later = server.receive(bytes((APPLICATION_DATA, 3, 3, 0, 20)) + bytes(20))
            self.assertEqual((later.data, later.send), ([], b""))

    def test_goodRecordsBeforeTheBadOneDelivered(self) -> None:
        """
        Records before a tampered one in the same chunk are delivered; the
        tampered one is not.
        """
        server, client = _pair()
        good = client.send(b"good")
        bad = bytearray(client.send(b"bad"))
        bad[-3] ^= 0x80
        received = server.receive(good + bytes(bad))
        self.assertEqual(received.data, [b"good"])
        assert received.error is not None
        self.assertEqual(received.error.description, BAD_RECORD_MAC)

    def test_overflow(self) -> None:
        """
        A record longer than 2^14 + 256 bytes is refused from its header.
        """
        server, client = _pair()
        received = server.receive(bytes((APPLICATION_DATA, 3, 3, 0x41, 0x01)))
        self.assertAlert(received, RECORD_OVERFLOW, server, client)

    def test_plaintextOverflow(self) -> None:
        """
        A record whose plaintext exceeds 2^14 bytes (plus its type byte) is
        a C{record_overflow}.
        """
        server, client = _pair()
        received = server.receive(client._protect(APPLICATION_DATA, bytes(MAX_PLAINTEXT + 1)))
        self.assertAlert(received, RECORD_OVERFLOW, server, client)

    def test_unprotectedRecord(self) -> None:
        """
        After the handshake every record is protected: a plaintext alert
        or handshake record is an C{unexpected_message}.
        """
        for contentType in (ALERT, HANDSHAKE, 20):
            server, client = _pair()
            received = server.receive(bytes((contentType, 3, 3, 0, 2, 1, 0)))
            self.assertAlert(received, UNEXPECTED_MESSAGE, server, client)

    def test_wrongVersion(self) -> None:
        """
        A record whose legacy version is not 0x0303 is refused.
        """
        server, client = _pair()
        wire = bytearray(client.send(b"x"))
        wire[2] = 1
        self.assertAlert(server.receive(bytes(wire)), PROTOCOL_VERSION, server, client)

    def test_otherHandshakeMessages(self) -> None:
        """
        A client may send no post-handshake message but KeyUpdate: a
        NewSessionTicket, a Certificate, a Finished are refused.
        """
        for kind in (4, 11, 20):
            server, client = _pair()
            received = server.receive(client._protect(HANDSHAKE, bytes((kind, 0, 0, 0))))
            self.assertAlert(received, UNEXPECTED_MESSAGE, server, client)

    def test_interruptedHandshakeMessage(self) -> None:
        """
        Application data in the middle of a handshake message is refused.
        """
        server, client = _pair()
        wire = client._protect(HANDSHAKE, bytes((KEY_UPDATE, 0))) + client.send(b"x")
        self.assertAlert(server.receive(wire), UNEXPECTED_MESSAGE, server, client)

    def test_allPadding(self) -> None:
        """
        A record of padding only (no content type) is refused.
        """
        server, client = _pair()
        inner = bytes(5)
        header = bytes((APPLICATION_DATA, 3, 3, 0, len(inner) + 16))
        wire = header + client.writeState.seal(inner, header)
        self.assertAlert(server.receive(wire), UNEXPECTED_MESSAGE, server, client)

    def test_paddingStripped(self) -> None:
        """
        Zero padding after the content type is removed (section 5.4).
        """
        server, client = _pair()
        inner = b"padded" + bytes((APPLICATION_DATA,)) + bytes(40)
        header = bytes((APPLICATION_DATA, 3, 3, 0, len(inner) + 16))
        wire = header + client.writeState.seal(inner, header)
        self.assertEqual(server.receive(wire).data, [b"padded"])


class AlertTests(SynchronousTestCase):
    """
    Closing: C{close_notify} both ways, other alerts from the peer.
    """

    def test_closeNotifyReceived(self) -> None:
        """
        The peer's C{close_notify} ends its input: data after it is
        ignored, and we may still answer, then close.
        """
        server, client = _pair()
        received = server.receive(client.send(b"last") + client.closeNotify() + b"junk")
        self.assertEqual((received.data, received.closed, received.error), ([b"last"], True, None))
        self.assertEqual(server.receive(b"more").data, [])
        answer = client.receive(server.send(b"bye") + server.closeNotify())
        self.assertEqual((answer.data, answer.closed), ([b"bye"], True))

    def test_closeNotifySent(self) -> None:
        """
        After our C{close_notify} nothing more can be sent.
        """
        server, client = _pair()
        self.assertTrue(server.closeNotify())
        self.assertEqual(server.closeNotify(), b"")
        self.assertRaises(ValueError, server.send, b"x")

    def test_peerError(self) -> None:
        """
        A fatal alert from the peer ends the session, reported as the
        peer's.
        """
        server, client = _pair()
        received = server.receive(client.fail(DECODE_ERROR))
        assert received.error is not None
        self.assertEqual((received.error.description, received.error.fromPeer), (DECODE_ERROR, True))
        self.assertEqual(received.send, b"")
        self.assertIn("the peer sent decode_error", str(received.error))

    def test_userCanceled(self) -> None:
        """
        C{user_canceled} is not an error: the C{close_notify} after it is
        what closes.
        """
        server, client = _pair()
        wire = client._protect(ALERT, bytes((1, USER_CANCELED))) + client.send(b"x") + client.closeNotify()
        received = server.receive(wire)
        self.assertEqual((received.data, received.closed, received.error), ([b"x"], True, None))

    def test_closeNotifyCode(self) -> None:
        """
        C{close_notify} is alert 0 at warning level, in a protected alert
        record.
        """
        server, client = _pair()
        wire = server.closeNotify()
        inner = client.readState.open(wire[5:], wire[:5])
        self.assertEqual(inner, bytes((1, CLOSE_NOTIFY, ALERT)))


class NonceTests(SynchronousTestCase):
    """
    No nonce is ever used twice with one key.
    """

    def test_noncesUnique(self) -> None:
        """
        Every record a layer protects, through KeyUpdates (asked for by the
        peer, forced by the record limit) and a snapshot-and-restore, uses
        a nonce never used before with its key.
        """
        used: list[tuple[int, bytes]] = []
        seal = TrafficKeys.seal

        def recording(keys: TrafficKeys, sequence: int, plaintext: bytes, header: bytes) -> bytes:
            # The IV stands for the key: both derive from the secret.
            used.append((keys._iv, keys.nonce(sequence)))
            return seal(keys, sequence, plaintext, header)

        self.patch(TrafficKeys, "seal", recording)
        server, client = _pair(recordLimit=50)
        layer = server
        for i in range(400):
            self.assertEqual(client.receive(layer.send(b"%d" % i)).data, [b"%d" % i])
            if i % 97 == 0:
                client.receive(layer.receive(client.keyUpdate(requested=True)).send)
            if i % 150 == 149:
                layer = RecordLayer.fromState(layer.snapshot(), recordLimit=50)
        self.assertGreater(len(used), 400)
        self.assertEqual(len(set(used)), len(used))

    def test_noncesDifferPerSequence(self) -> None:
        """
        The nonce is the IV XOR the sequence number: distinct for distinct
        sequence numbers, and the IV itself at 0.
        """
        keys = TrafficKeys(AES_128_GCM_SHA256, bytes(32))
        nonces = {keys.nonce(n) for n in range(1000)} | {keys.nonce(MAX_SEQUENCE)}
        self.assertEqual(len(nonces), 1001)
        self.assertRaises(ValueError, keys.nonce, MAX_SEQUENCE + 1)
        self.assertRaises(ValueError, keys.nonce, -1)

    def test_failedOpenUsesItsSequence(self) -> None:
        """
        A record that fails still uses up its sequence number: the
        direction never goes back.
        """
        state = DirectionState.fromSecret(AES_128_GCM_SHA256, bytes(32))
        self.assertRaises(InvalidTag, state.open, bytes(20), b"h")
        self.assertEqual(state.sequence, 1)


class SecretTests(SynchronousTestCase):
    """
    Secrets are never shown, and are wiped when a session ends.
    """

    def test_reprs(self) -> None:
        """
        No representation of a layer, direction or key shows a secret.
        """
        secret = bytes(range(32))
        server, _ = _pair()
        state = DirectionState.fromSecret(AES_128_GCM_SHA256, secret)
        for obj in (server, state, TrafficKeys(AES_128_GCM_SHA256, secret), server.readState):
            text = repr(obj)
            self.assertNotIn(secret.hex(), text)
            self.assertNotIn(repr(secret), text)

    def test_wipe(self) -> None:
        """
        L{RecordLayer.wipe} zeroes both secrets in place.
        """
        server, _ = _pair()
        read, write = server.readState, server.writeState
        server.wipe()
        self.assertEqual(read._secret, bytearray(32))
        self.assertEqual(write._secret, bytearray(32))

    def test_updateWipesOld(self) -> None:
        """
        A KeyUpdate overwrites the secret in place: the old generation is
        not kept anywhere in the direction.
        """
        state = DirectionState.fromSecret(AES_128_GCM_SHA256, rfc.CLIENT_APPLICATION_SECRET)
        buffer = state._secret
        state.update()
        self.assertIs(state._secret, buffer)
        self.assertEqual(bytes(buffer), rfc.UPDATED_CLIENT_APPLICATION_SECRET)

    def test_fromStateCopies(self) -> None:
        """
        A layer made from a state copies its secrets: wiping the state's
        leaves the layer working.
        """
        server, client = _pair()
        state = server.snapshot()
        moved = RecordLayer.fromState(state)
        state["readSecret"][:] = bytes(32)
        state["writeSecret"][:] = bytes(32)
        self.assertEqual(moved.receive(client.send(b"x")).data, [b"x"])

    def test_fromStateRefuses(self) -> None:
        """
        An unknown suite or malformed fields are refused.
        """
        server, _ = _pair()
        good = server.snapshot()
        for change in ({"suite": "TLS_AES_128_CCM_SHA256"}, {"readSeq": "1"}, {"writeSecret": None}, {"inbound": 3}):
            self.assertRaises(ValueError, RecordLayer.fromState, {**good, **change})
        self.assertRaises(ValueError, RecordLayer.fromState, {**good, "readSecret": bytes(48)})
