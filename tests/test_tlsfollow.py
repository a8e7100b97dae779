# -*- test-case-name: tests.test_tlsfollow -*-
"""
Tests for L{migrator.adapters.tls._follow}: the incumbent follows the TLS
1.3 sessions OpenSSL runs (secrets from the key log, records counted and
unprotected as they pass), exactly enough for another record layer to
continue them with the same OpenSSL client; and what it refuses to follow.
"""

from __future__ import annotations

import gc
from typing import Any

from OpenSSL import SSL
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase

from migrator._tlsinternals import tlsProtocolState
from migrator.adapters.tls._follow import SessionFollower, followerOf, followFactory, followPort
from migrator.adapters.tls._keys import SUITES, DirectionState
from migrator.adapters.tls._record import RecordLayer
from tests._tlshelpers import Session, serverOptions


def _follower(session: Session) -> SessionFollower:
    follower = followerOf(tlsProtocolState(session.server).connection)
    assert follower is not None
    return follower


def _clientLayer(session: Session, readSeq: int, writeSeq: int = 0) -> RecordLayer:
    """
    The client side of C{session} continued by migrator's record layer
    (from the client's own key log), to send what pyOpenSSL cannot: a
    KeyUpdate.
    """
    suite = SUITES[session.client.get_cipher_name()]
    return RecordLayer(
        suite,
        DirectionState.fromSecret(suite, session.clientSecrets["SERVER_TRAFFIC_SECRET_0"], readSeq),
        DirectionState.fromSecret(suite, session.clientSecrets["CLIENT_TRAFFIC_SECRET_0"], writeSeq),
    )


def _ping(session: Session) -> bytes:
    session.server.dataReceived(session.clientSends(b"ping"))
    session.clock.advance(0)
    session.client.bio_write(session.tcp.take())
    return session.readClient()


class ContinueTests(SynchronousTestCase):
    """
    A followed session, captured between records, continues in a record
    layer of migrator's with the same OpenSSL client, both ways.
    """

    def test_everySuite(self) -> None:
        """
        For each of the three suites: after the handshake (and the server's
        two tickets) and some data both ways, the follower knows the suite,
        both sequence numbers, and secrets that the client's next records
        open under and its OpenSSL accepts ours under.
        """
        for name in SUITES:
            session = Session(suite=name)
            session.handshake()
            self.assertEqual([_ping(session) for _ in range(3)], [b"pong"] * 3)
            follower = _follower(session)
            self.assertIsNone(follower.whyNot())
            state = follower.session()
            self.assertEqual(
                (state["suite"], state["readSeq"], state["writeSeq"], state["inbound"]),
                (name, 3, 2 + 3, b""),
            )
            layer = RecordLayer.fromState(state)
            for i in range(3):
                received = layer.receive(session.clientSends(b"after %d" % i))
                self.assertEqual((received.data, received.error), ([b"after %d" % i], None))
                session.client.bio_write(layer.send(b"answer %d" % i))
                self.assertEqual(session.readClient(), b"answer %d" % i)

    def test_partialRecord(self) -> None:
        """
        Half a record from the client, already given to OpenSSL, travels as
        the session's partial input, and the record completes in the new
        layer.
        """
        session = Session()
        session.handshake()
        wire = session.clientSends(b"split across the move")
        session.server.dataReceived(wire[:9])
        self.assertEqual(session.inner.received, [])
        state = _follower(session).session()
        self.assertEqual(state["inbound"], wire[:9])
        layer = RecordLayer.fromState(state)
        self.assertEqual(layer.receive(wire[9:]).data, [b"split across the move"])

    def test_manyRecordsInOneChunk(self) -> None:
        """
        Records arriving together, and large writes split into many
        records, are all counted.
        """
        session = Session()
        session.handshake()
        wire = b"".join(session.clientSends(b"%d" % i) for i in range(50))
        session.server.dataReceived(wire)
        session.server.write(b"x" * 100_000)
        session.clock.advance(0)
        session.client.bio_write(session.tcp.take())
        self.assertEqual(len(session.readClient()), 100_000)
        state = _follower(session).session()
        self.assertEqual(state["readSeq"], 50)
        layer = RecordLayer.fromState(state)
        self.assertEqual(layer.receive(session.clientSends(b"next")).data, [b"next"])
        session.client.bio_write(layer.send(b"back"))
        self.assertEqual(session.readClient(), b"back")

    def test_keyUpdatesFollowed(self) -> None:
        """
        A KeyUpdate from the client that asks for the server's is followed
        in both directions: the client's (read) and OpenSSL's answer
        (written), and the continued session reads the client's records
        under its new key while the client reads ours under the server's.
        """
        session = Session()
        session.handshake()
        client = _clientLayer(session, readSeq=2)
        session.server.dataReceived(client.keyUpdate(requested=True) + client.send(b"ping"))
        session.clock.advance(0)
        answer = client.receive(session.tcp.take())
        self.assertEqual((answer.keyUpdates, answer.data, answer.error), (1, [b"pong"], None))
        follower = _follower(session)
        self.assertEqual((follower.inbound.keyUpdates, follower.outbound.keyUpdates), (1, 1))
        self.assertFalse(follower.owedKeyUpdate)
        layer = RecordLayer.fromState(follower.session())
        self.assertEqual(layer.receive(client.send(b"moved")).data, [b"moved"])
        self.assertEqual(client.receive(layer.send(b"too")).data, [b"too"])
        # And again, now against migrator's layer on both sides.
        self.assertEqual(client.receive(layer.receive(client.keyUpdate(True)).send).keyUpdates, 1)
        self.assertEqual(client.receive(layer.send(b"third key")).data, [b"third key"])


class DeclineTests(SynchronousTestCase):
    """
    What the follower cannot continue exactly, with the reason given.
    """

    def test_tls12(self) -> None:
        """
        A TLS 1.2 session is not followed.
        """
        session = Session(maxVersion=SSL.TLS1_2_VERSION)
        session.handshake()
        self.assertEqual(_ping(session), b"pong")
        self.assertEqual(_follower(session).whyNot(), "it speaks TLS 1.2")

    def test_midHandshake(self) -> None:
        """
        Before the client's Finished, the handshake is not finished.
        """
        session = Session()
        try:
            session.client.do_handshake()
        except SSL.WantReadError:
            pass
        session.server.dataReceived(session.clientOut())
        self.assertEqual(_follower(session).whyNot(), "its handshake is not finished")
        self.assertRaises(ValueError, _follower(session).session)

    def test_otherSuite(self) -> None:
        """
        A TLS 1.3 suite the record layer does not speak (AES-CCM) is not
        followed.
        """
        options = serverOptions()
        options.getContext().set_tls13_ciphersuites(b"TLS_AES_128_CCM_SHA256")
        session = Session(suite="TLS_AES_128_CCM_SHA256", serverContext=options)
        session.handshake()
        self.assertEqual(_follower(session).whyNot(), "its cipher suite is TLS_AES_128_CCM_SHA256")

    def test_servicesOwnKeyLog(self) -> None:
        """
        A context with the service's own key-log callback is left alone:
        its sessions are not followed.
        """
        options = serverOptions()
        lines: list[bytes] = []
        options.getContext().set_keylog_callback(lambda connection, line: lines.append(line))
        session = Session(serverContext=options)
        session.handshake()
        self.assertEqual(_ping(session), b"pong")
        self.assertTrue(lines)
        self.assertEqual(
            _follower(session).whyNot(),
            "the service logs its TLS keys elsewhere (its own key-log callback)",
        )

    def test_closeNotify(self) -> None:
        """
        A session the client is closing does not move.
        """
        session = Session()
        session.handshake()
        session.client.shutdown()
        session.server.dataReceived(session.clientOut())
        self.assertEqual(_follower(session).whyNot(), "the session is closing (an alert was sent)")

    def test_keysNeverLogged(self) -> None:
        """
        Protected records whose keys never come are not buffered without
        bound: past 128 KiB waiting, the session is given up.
        """
        follower = SessionFollower()
        record = bytes((23, 3, 3, 0x40, 0)) + bytes(2**14)
        for _ in range(7):
            follower.received(record)
        self.assertIsNone(follower.problem)
        for _ in range(2):
            follower.received(record)
        self.assertEqual(follower.problem, "its keys were not logged")
        self.assertEqual(follower.inbound.buffer, bytearray())

    def test_undecryptable(self) -> None:
        """
        A record the logged keys do not open (tampered) marks the session:
        it is not followed any more (and OpenSSL ends it).
        """
        session = Session()
        session.handshake()
        wire = bytearray(session.clientSends(b"x"))
        wire[-1] ^= 1
        session.server.dataReceived(bytes(wire))
        self.assertEqual(
            _follower(session).whyNot(), "a record that did not decrypt with its logged keys"
        )


class FollowTests(SynchronousTestCase):
    """
    How factories are followed, and what the follower keeps.
    """

    def test_onlyTLSFactories(self) -> None:
        """
        L{followFactory} follows TLS factories, once; other factories are
        left alone, and L{followPort} takes any port.
        """
        session = Session(follow=False)
        creator = session.tlsFactory._creatorCallable
        self.assertTrue(followFactory(session.tlsFactory))
        following = session.tlsFactory._creatorCallable
        self.assertIsNot(following, creator)
        self.assertTrue(followFactory(session.tlsFactory))
        self.assertIs(session.tlsFactory._creatorCallable, following)
        self.assertFalse(followFactory(Factory()))
        followPort(object())

    def test_unfollowed(self) -> None:
        """
        A factory nobody followed has no followers.
        """
        session = Session(follow=False)
        session.handshake()
        self.assertIsNone(_followerOrNone(session))

    def test_secretsNeverShown(self) -> None:
        """
        No representation of the follower shows a secret.
        """
        session = Session()
        session.handshake()
        text = repr(_follower(session)) + repr(_follower(session).inbound)
        for secret in session.clientSecrets.values():
            self.assertNotIn(secret.hex(), text)

    def test_wipedWithTheConnection(self) -> None:
        """
        When the OpenSSL connection goes, its follower's secrets are
        zeroed.
        """
        session = Session()
        session.handshake()
        follower = _follower(session)
        assert follower.inbound.state is not None
        secret = follower.inbound.state._secret
        self.assertNotEqual(secret, bytearray(len(secret)))
        session.server._tlsConnection = None
        del session
        gc.collect()
        self.assertEqual(secret, bytearray(len(secret)))

    def test_noHandshakeSecretsKept(self) -> None:
        """
        Once both sides finished, no logged secret is kept but the two
        current ones.
        """
        session = Session()
        session.handshake()
        self.assertEqual(_follower(session)._secrets, {})


def _followerOrNone(session: Session) -> Any:
    return followerOf(tlsProtocolState(session.server).connection)
