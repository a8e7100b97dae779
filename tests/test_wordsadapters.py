# -*- test-case-name: tests.test_wordsadapters -*-
"""
Tests for L{migrator.adapters._words}: the IRC server of C{twistd words}
(built by C{twisted.words.tap.makeService}, unmodified) is driven over
L{StringTransport}s as IRC clients would drive it, its sessions go through
L{migrator.testing.roundTrip} with the port's factory as an anchor (the
incumbent's onto a second, freshly built service's), and users of the
restored sessions and users who log in to the successor afterwards are in
one chat.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.cred import checkers, credentials, error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.words import service, tap
from zope.interface import implementer
from zope.interface.verify import verifyObject

from migrator._twistedinternals import releaseConnection, releasePort
from migrator.adapters import defaultRegistry
from migrator.adapters._words import (
    LOGGING_IN,
    IRCFactoryAdapter,
    IRCUserAdapter,
    UserAdapter,
)
from migrator.interfaces import IAdapter
from migrator.state._capture import captureConnections
from migrator.state._graph import GraphError, Unadaptable
from migrator.state._graph import typeName as _typeName
from migrator.state._restore import restoreConnections
from migrator.takeover._ports import ListenerRegistry
from migrator.testing import roundTrip

from .test_connections import _KEY, _Reactor, _waitReadable

PASSWORDS = "memory:alice:pw:bob:pw:carol:pw"


def _factory(hostname: str = "ircd", groups: tuple[str, ...] = ("chat",)) -> Any:
    """
    The IRC factory of a C{twistd words --irc-port ... --auth memory:...}
    service (not listening), with C{groups} created as C{--group} would.
    """
    options = tap.Options()
    options.parseOptions(["--irc-port", "tcp:0", "--auth", PASSWORDS, "--hostname", hostname])
    [irc] = list(tap.makeService(options))
    factory = irc.factory
    for name in groups:
        factory.realm.createGroup(name)
    return factory


class _Client:
    """
    One IRC connection to a factory, over a L{StringTransport}.
    """

    def __init__(self, factory: Any = None, protocol: Any = None) -> None:
        if protocol is None:
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6667))
            protocol.makeConnection(StringTransport())
        self.protocol = protocol

    @property
    def transport(self) -> StringTransport:
        transport: StringTransport = self.protocol.transport
        return transport

    def send(self, *lines: str) -> None:
        self.protocol.dataReceived("".join(line + "\r\n" for line in lines).encode("utf-8"))

    def login(self, nick: str, password: str = "pw") -> None:
        self.send(f"PASS {password}", f"NICK {nick}", f"USER {nick} 0 * :{nick.title()}")

    def lines(self) -> list[str]:
        """
        What the server sent since the last call, line by line.
        """
        data = self.transport.value().decode("utf-8")
        self.transport.clear()
        return [line for line in data.split("\r\n") if line]

    def hangUp(self) -> None:
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionError("gone")))


def _names(lines: list[str]) -> set[str]:
    """
    The nicknames of the C{RPL_NAMREPLY} (353) lines among C{lines}.
    """
    names: set[str] = set()
    for line in lines:
        parts = line.split(" ", 5)
        if len(parts) > 5 and parts[1] == "353":
            names.update(parts[5].lstrip(":").split())
    return names


def _said(lines: list[str], text: str, target: str = "#chat") -> list[str]:
    return [line for line in lines if f" PRIVMSG {target} :{text}" in line]


class _Chat:
    """
    An incumbent with alice and bob logged in (through C{PASS}, and
    through NickServ), both in C{#chat}, whose topic bob set; and a
    successor, built the same way, that has not served yet.
    """

    def __init__(self, successorName: str = "ircd") -> None:
        self.old = _factory()
        self.new = _factory(successorName, groups=("chat", "lobby"))
        self.registry = defaultRegistry()
        self.alice = _Client(self.old)
        self.alice.login("alice")
        self.alice.send("JOIN #chat")
        self.bob = _Client(self.old)
        self.bob.send("NICK bob", "USER bob 0 * :Bob", "PRIVMSG NickServ :pw", "JOIN #chat")
        self.bob.send("TOPIC #chat :before the move")
        self.alice.lines()
        self.bob.lines()

    def move(self, *sessions: _Client) -> list[_Client]:
        """
        Move C{sessions} (all the incumbent's connections) to the successor.
        """
        restored = roundTrip(
            [s.protocol for s in sessions],
            self.registry,
            anchors={"factory:irc": (self.old, self.new)},
        )
        return [_Client(protocol=p) for p in restored]


class AdapterInterfaceTests(SynchronousTestCase):
    """
    The words adapters are adapters, registered by default.
    """

    def test_provideIAdapter(self) -> None:
        """
        Each words adapter provides L{IAdapter}.
        """
        for adapter in (IRCUserAdapter(), UserAdapter(), IRCFactoryAdapter()):
            self.assertTrue(verifyObject(IAdapter, adapter))

    def test_registeredByDefault(self) -> None:
        """
        The default registry has adapters for the IRC session, the user,
        the group and the IRC factory, under their classes' names; none
        for the realm, which never moves as an object.
        """
        registry = defaultRegistry()
        for cls in (service.IRCUser, service.User, service.Group, service.IRCFactory):
            adapter = registry.adapterFor(cls)
            self.assertIsNotNone(adapter, cls)
            self.assertIs(registry.adapterNamed(adapter.typeName), adapter)
        self.assertIsNone(registry.adapterFor(service.InMemoryWordsRealm))


class OneChatTests(SynchronousTestCase):
    """
    Users connected before the move and users who log in to the successor
    afterwards are in one chat.
    """

    def setUp(self) -> None:
        self.chat = _Chat()
        self.alice, self.bob = self.chat.move(self.chat.alice, self.chat.bob)
        self.realm = self.chat.new.realm

    def test_successorsRealmHoldsEverybody(self) -> None:
        """
        The successor's own realm (not a copy of the incumbent's) holds the
        moved users and groups; the restored sessions and users refer to
        it, and the successor's factory keeps its own portal.
        """
        realm = self.realm
        self.assertIs(self.chat.new.realm, realm)
        self.assertEqual(sorted(realm.users), ["alice", "bob"])
        group = realm.groups["chat"]
        self.assertEqual(group.users, {"alice": self.alice.protocol, "bob": self.bob.protocol})
        for client in (self.alice, self.bob):
            session = client.protocol
            self.assertIs(session.factory, self.chat.new)
            self.assertIs(session.realm, realm)
            self.assertIs(session.avatar.realm, realm)
            self.assertIs(session.avatar.mind, session)
            self.assertEqual(session.avatar.groups, [group])
            self.assertIs(realm.users[session.name], session.avatar)
        self.assertIs(self.chat.new.portal.realm, realm)
        # A group only the successor's new code created is kept.
        self.assertIn("lobby", realm.groups)

    def test_newUserJoins(self) -> None:
        """
        carol, logging in to the successor after the move, finds alice and
        bob in C{#chat} and the topic set before the move; they see her
        join.
        """
        carol = _Client(self.chat.new)
        carol.login("carol")
        carol.send("JOIN #chat")
        lines = carol.lines()
        self.assertEqual(_names(lines), {"alice", "bob", "carol"})
        self.assertTrue(
            [line for line in lines if " 332 carol #chat :before the move" in line], lines
        )
        self.assertTrue([line for line in lines if " 333 carol #chat bob " in line], lines)
        for client in (self.alice, self.bob):
            self.assertIn(":carol!carol@ircd JOIN #chat", client.lines())
        carol.send("NAMES #chat")
        self.assertEqual(_names(carol.lines()), {"alice", "bob", "carol"})

    def test_messagesBothWays(self) -> None:
        """
        Messages from a moved user reach the new one, and back, each
        exactly once; private messages too.
        """
        carol = _Client(self.chat.new)
        carol.login("carol")
        carol.send("JOIN #chat")
        for client in (self.alice, self.bob, carol):
            client.lines()
        self.alice.send("PRIVMSG #chat :from alice")
        carol.send("PRIVMSG #chat :from carol")
        carol.send("PRIVMSG bob :psst")
        aliceSaw, bobSaw, carolSaw = self.alice.lines(), self.bob.lines(), carol.lines()
        self.assertEqual(len(_said(carolSaw, "from alice")), 1, carolSaw)
        self.assertEqual(len(_said(bobSaw, "from alice")), 1, bobSaw)
        self.assertEqual(len(_said(aliceSaw, "from carol")), 1, aliceSaw)
        self.assertEqual(len(_said(bobSaw, "from carol")), 1, bobSaw)
        self.assertEqual(_said(aliceSaw + carolSaw, "from alice"), _said(carolSaw, "from alice"))
        self.assertEqual(_said(bobSaw, "psst", "bob"), [":carol!carol@ircd PRIVMSG bob :psst"])

    def test_nameStaysTaken(self) -> None:
        """
        Logging in to the successor as alice, who moved, is refused as
        the incumbent would have refused it.
        """
        intruder = _Client(self.chat.new)
        intruder.login("alice")
        self.assertIn("Already logged in", " ".join(intruder.lines()))
        self.assertTrue(intruder.transport.disconnecting)
        self.assertIs(self.realm.users["alice"].mind, self.alice.protocol)

    def test_topicChangeAfterTheMove(self) -> None:
        """
        A topic set after the move reaches every member, old and new.
        """
        carol = _Client(self.chat.new)
        carol.login("carol")
        carol.send("JOIN #chat")
        self.alice.lines()
        self.bob.lines()
        self.alice.send("TOPIC #chat :after the move")
        for client in (self.bob, carol):
            self.assertIn(":alice!alice@ircd TOPIC #chat :after the move", client.lines())
        self.assertEqual(self.realm.groups["chat"].meta["topic_author"], "alice")

    def test_logoutAfterTheMove(self) -> None:
        """
        A moved user who hangs up leaves the channel (the others see it)
        and logs out of the successor's realm: the name can be used again.
        """
        self.alice.hangUp()
        self.assertIn(":alice!alice@ircd PART #chat :leaving", self.bob.lines())
        self.assertEqual(list(self.realm.groups["chat"].users), ["bob"])
        user = self.realm.users["alice"]
        self.assertIsNone(user.realm)
        self.assertIsNone(user.mind)
        again = _Client(self.chat.new)
        again.login("alice")
        self.assertIn(":ircd 001 alice :connected to Twisted IRC", again.lines())

    def test_movesAgain(self) -> None:
        """
        A moved chat moves again (a third process), still one chat.
        """
        third = _factory()
        alice, bob = [
            _Client(protocol=p)
            for p in roundTrip(
                [self.alice.protocol, self.bob.protocol],
                self.chat.registry,
                anchors={"factory:irc": (self.chat.new, third)},
            )
        ]
        carol = _Client(third)
        carol.login("carol")
        carol.send("JOIN #chat")
        self.assertEqual(_names(carol.lines()), {"alice", "bob", "carol"})
        bob.send("PRIVMSG #chat :third")
        self.assertEqual(len(_said(carol.lines(), "third")), 1)
        self.assertEqual(len(_said(alice.lines(), "third")), 1)


class SessionStateTests(SynchronousTestCase):
    """
    What a session carries besides the chat: half a line, a login not
    finished yet, the server name it was given.
    """

    def test_halfLine(self) -> None:
        """
        A command half received before the move completes after it.
        """
        chat = _Chat()
        chat.alice.protocol.dataReceived(b"PRIVMSG #chat :half")
        alice, bob = chat.move(chat.alice, chat.bob)
        alice.protocol.dataReceived(b" and half\r\n")
        self.assertEqual(len(_said(bob.lines(), "half and half")), 1)

    def test_beforeNick(self) -> None:
        """
        A session that has sent nothing yet moves, and logs in to the
        successor afterwards.
        """
        chat = _Chat()
        early = _Client(chat.old)
        [restored] = chat.move(early)
        self.assertIs(restored.protocol.realm, chat.new.realm)
        restored.login("carol")
        restored.send("JOIN #chat")
        self.assertIn(":ircd 001 carol :connected to Twisted IRC", restored.lines())
        self.assertIs(chat.new.realm.users["carol"].mind, restored.protocol)

    def test_waitingForNickServ(self) -> None:
        """
        A session that gave its nickname and is to send its password to
        NickServ moves; the password it sends afterwards logs it in to the
        successor's realm, through the successor's portal.
        """
        chat = _Chat()
        waiting = _Client(chat.old)
        waiting.send("NICK carol")
        self.assertIn("Password?", " ".join(waiting.lines()))
        [restored] = chat.move(waiting)
        restored.send("PRIVMSG NickServ :pw", "JOIN #chat")
        lines = restored.lines()
        self.assertIn(":ircd 001 carol :connected to Twisted IRC", lines)
        self.assertIs(chat.new.realm.users["carol"].mind, restored.protocol)
        self.assertIsNone(chat.old.realm.users.get("carol"))

    def test_passBeforeNick(self) -> None:
        """
        A password sent with C{PASS}, before C{NICK}, moves and is used by
        the C{NICK} sent afterwards.
        """
        chat = _Chat()
        early = _Client(chat.old)
        early.send("PASS pw")
        [restored] = chat.move(early)
        restored.send("NICK carol")
        self.assertIn(":ircd 001 carol :connected to Twisted IRC", restored.lines())

    def test_serverNameKept(self) -> None:
        """
        A moved session keeps the server name it was given at connection
        (the prefix its client has seen); sessions made by the successor
        get the successor's.
        """
        chat = _Chat(successorName="newname")
        alice, bob = chat.move(chat.alice, chat.bob)
        carol = _Client(chat.new)
        carol.login("carol")
        carol.send("JOIN #chat")
        self.assertIn(":carol!carol@ircd JOIN #chat", alice.lines())
        self.assertIn(":carol!carol@newname JOIN #chat", carol.lines())


@implementer(checkers.ICredentialsChecker)
class _SlowChecker:
    """
    A checker that answers when the test says so.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, Deferred[Any]]] = []

    def requestAvatarId(self, creds: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((creds, d))
        return d


class DecliningTests(SynchronousTestCase):
    """
    What cannot move says why, and whether it passes by itself (busy).
    """

    def setUp(self) -> None:
        self.factory = _factory()
        self.checker = _SlowChecker()
        self.factory.portal.registerChecker(self.checker)
        self.adapter = IRCUserAdapter()

    def test_loginInFlightWithPass(self) -> None:
        """
        A session whose password (sent with C{PASS}) is being checked is
        busy; once logged in it may move.
        """
        client = _Client(self.factory)
        client.login("alice")
        self.assertEqual(self.adapter.movable(client.protocol), LOGGING_IN)
        self.assertTrue(self.adapter.busy(client.protocol))
        self.assertRaises(Unadaptable, self.adapter.capture, client.protocol)
        [(creds, d)] = self.checker.waiting
        d.callback(creds.username)
        self.assertIsNone(self.adapter.movable(client.protocol))
        self.assertFalse(self.adapter.busy(client.protocol))

    def test_loginInFlightWithNickServ(self) -> None:
        """
        A session whose password (sent to NickServ) is being checked is
        busy; a refused one is closing, still busy until it is gone.
        """
        client = _Client(self.factory)
        client.send("NICK alice")
        self.assertIsNone(self.adapter.movable(client.protocol))
        client.send("PRIVMSG NickServ :pw")
        self.assertEqual(self.adapter.movable(client.protocol), LOGGING_IN)
        self.assertTrue(self.adapter.busy(client.protocol))
        [(_, d)] = self.checker.waiting
        d.errback(error.UnauthorizedLogin())
        self.assertEqual(self.adapter.movable(client.protocol), "a connection that is closing")
        self.assertTrue(self.adapter.busy(client.protocol))

    def test_otherRealm(self) -> None:
        """
        A session logged in to another realm than its factory's never
        moves (and is not busy).
        """
        client = _Client(self.factory)
        client.protocol.realm = service.InMemoryWordsRealm("elsewhere")
        self.assertIn("another realm", self.adapter.movable(client.protocol) or "")
        self.assertFalse(self.adapter.busy(client.protocol))

    def test_oneMemberKeepsTheChat(self) -> None:
        """
        A member whose session cannot be captured keeps everyone who
        shares a channel with it: the graph cannot be written.
        """
        chat = _Chat()
        chat.bob.transport.loseConnection()
        self.assertRaises(
            Unadaptable,
            roundTrip,
            [chat.alice.protocol],
            chat.registry,
            {"factory:irc": (chat.old, chat.new)},
        )

    def test_realmNotInMemory(self) -> None:
        """
        A factory whose realm is not an L{InMemoryWordsRealm} (exactly)
        cannot be captured: its users and groups are elsewhere.
        """

        class OtherRealm(service.InMemoryWordsRealm):
            pass

        factory = service.IRCFactory(OtherRealm("x"), None)
        self.assertRaises(Unadaptable, IRCFactoryAdapter().capture, factory)

    def test_portalOfAnotherRealm(self) -> None:
        """
        A factory whose portal logs in to another realm cannot be
        captured.
        """
        self.factory.portal.realm = service.InMemoryWordsRealm("elsewhere")
        self.assertRaises(Unadaptable, IRCFactoryAdapter().capture, self.factory)

    def test_successorRealmNotInMemory(self) -> None:
        """
        The incumbent's users cannot move into a successor realm that
        keeps none in memory: the restore fails.
        """
        successor = service.IRCFactory(service.WordsRealm("db"), None)
        self.assertRaises(
            GraphError,
            roundTrip,
            self.factory,
            defaultRegistry(),
            {"factory:irc": (self.factory, successor)},
        )

    def test_factoryOnlyAsAnchor(self) -> None:
        """
        An IRC factory that is not the factory of a port the successor
        declares cannot move, and neither can its sessions.
        """
        client = _Client(self.factory)
        self.assertRaises(Unadaptable, roundTrip, client.protocol, defaultRegistry())

    def test_userLoggedInElsewhere(self) -> None:
        """
        A user logged in through something other than an IRC session of
        its realm's port (a PB client, say) cannot be captured.
        """
        user = service.User("eve")
        user.loggedIn(self.factory.realm, object())
        self.assertRaises(Unadaptable, UserAdapter().capture, user)


class FactoryStateTests(SynchronousTestCase):
    """
    The realm's state moves with the port's factory even when nobody is
    connected.
    """

    def test_nobodyConnected(self) -> None:
        """
        Users who logged out and groups with their topics move into the
        successor's realm, whose name, portal and other groups are its
        own.
        """
        old, new = _factory(), _factory("newname", groups=("lobby",))
        client = _Client(old)
        client.login("alice")
        client.send("JOIN #chat", "TOPIC #chat :kept")
        client.hangUp()
        restored = roundTrip(old, defaultRegistry(), {"factory:irc": (old, new)})
        self.assertIs(restored, new)
        realm = new.realm
        self.assertEqual(realm.name, "newname")
        self.assertEqual(sorted(realm.groups), ["chat", "lobby"])
        self.assertEqual(realm.groups["chat"].meta["topic"], "kept")
        self.assertEqual(realm.groups["chat"].users, {})
        self.assertIsNone(realm.users["alice"].realm)
        self.assertIs(new.portal.realm, realm)


class RealHandoffTests(SynchronousTestCase):
    """
    The real capture and restore (L{captureConnections},
    L{restoreConnections}) of two IRC sessions on real loopback
    connections, the port's factory matched by its declared address.
    """

    def setUp(self) -> None:
        self.sides = []
        for _ in range(2):
            reactor = _Reactor()
            ports = ListenerRegistry(reactor)
            ports.install()
            self.addCleanup(ports.uninstall)
            factory = _factory()
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(releasePort, port)
            self.sides.append((reactor, ports, factory, port))
        self.registry = defaultRegistry()

    def _accept(self, ports: Any, port: Any) -> _Client:
        client = socket.create_connection(port.socket.getsockname(), timeout=5)
        self.addCleanup(client.close)
        _waitReadable(port.fileno())
        port.doRead()
        [transport] = [t for t in ports.openConnections() if t.protocol not in self.seen]
        self.seen.append(transport.protocol)
        self.addCleanup(releaseConnection, transport)
        return _Client(protocol=transport.protocol)

    def test_chatMoves(self) -> None:
        """
        Both sessions move, reported as moved and none staying; in the
        successor they belong to its factory and realm, and a user who
        logs in there afterwards is in the same channel, seen by them.
        """
        reactor, ports, factory, port = self.sides[0]
        self.seen: list[Any] = []
        alice, bob = self._accept(ports, port), self._accept(ports, port)
        alice.protocol.dataReceived(b"PASS pw\r\nNICK alice\r\nJOIN #chat\r\n")
        bob.protocol.dataReceived(b"NICK bob\r\nPRIVMSG NickServ :pw\r\nJOIN #chat\r\n")
        captured = captureConnections(
            reactor, ports, self.registry, frozenset({_KEY}), frozenset(self.registry.typeNames())
        )
        self.assertEqual((captured.moved, captured.staying), ({_typeName(service.IRCUser): 2}, {}))
        reactor2, ports2, factory2, _ = self.sides[1]
        restored = restoreConnections(
            reactor2, ports2, self.registry, captured.payload, [os.dup(fd) for fd in captured.fds]
        )
        for t in restored.transports:
            self.addCleanup(releaseConnection, t)
        restored.activate()
        captured.release()
        sessions = {t.protocol.name: t.protocol for t in restored.transports}
        self.assertEqual(set(sessions), {"alice", "bob"})
        for session in sessions.values():
            self.assertIs(session.factory, factory2)
            self.assertIs(session.realm, factory2.realm)
            self.assertIs(session.avatar.realm, factory2.realm)
        self.assertEqual(factory2.realm.groups["chat"].users, sessions)
        carol = _Client(factory2)
        carol.login("carol")
        carol.send("JOIN #chat")
        self.assertEqual(_names(carol.lines()), {"alice", "bob", "carol"})
        for session in sessions.values():
            written = b"".join(session.transport._tempDataBuffer)
            self.assertIn(b":carol!carol@ircd JOIN #chat", written)
