# -*- test-case-name: tests.integration.test_words -*-
"""
The stock IRC server (C{twisted.words}, as C{twistd words} builds it: see
C{apps/words.tac}) under C{twistd migrate}, driven by a real IRC client
library (C{irc}, from PyPI): users connected before a takeover and users
who join after it are in one chat, over several takeovers.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import TestCase

from migrator.testing import HANDED_OFF, READY, ServiceProcess, startMigrate

from .test_crosspython import otherPython

try:
    import irc.client as ircclient
except ImportError:  # pragma: no cover (the test extra installs it)
    ircclient = None  # type: ignore[assignment]

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
WORDS_TAC = os.path.join(APPS, "words.tac")
#: Logged when the IRC port listens.
IRC_PORT = re.compile(r"IRCFactory starting on (?P<port>\d+)")
FROZE = re.compile(r"froze and sent (?P<count>\d+) connection\(s\) .*?(?P<staying>\d+) stay here")
#: Generous per-step bound for a noisy 2-core machine.
STEP = 60.0
#: The users of the chat, in the order they join (one more per takeover).
USERS = ["alice", "bob", "carol", "dave", "erin"]


class _Clients:
    """
    IRC connections made with the C{irc} library, all served by one of its
    reactors, with every event they get recorded by nickname.
    """

    def __init__(self, case: TestCase, port: int) -> None:
        self.port = port
        self.reactor = ircclient.Reactor()
        self.reactor.add_global_handler("all_events", self._record, -20)
        self.events: dict[str, list[Any]] = {}
        self.connections: dict[str, Any] = {}
        self._nicks: dict[int, str] = {}
        case.addCleanup(self.reactor.disconnect_all)

    def _record(self, connection: Any, event: Any) -> None:
        nick = self._nicks.get(id(connection))
        if nick is not None:
            self.events[nick].append(event)

    def wait(self, what: str, done: Callable[[], bool], timeout: float = STEP) -> None:
        """
        Process what the server sends until C{done()}, for C{timeout}
        seconds at most.
        """
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            if done():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.reactor.process_once(min(remaining, 0.5))
        recent = {
            nick: [(e.type, e.arguments) for e in ev[-8:]] for nick, ev in self.events.items()
        }
        raise AssertionError(f"no {what} within {timeout:g}s; last events: {recent}")

    def of(self, nick: str, kind: str) -> list[Any]:
        return [e for e in self.events[nick] if e.type == kind]

    def connect(self, nick: str, label: str | None = None) -> Any:
        """
        Log in as C{nick} (C{PASS}, C{NICK}, C{USER}), recorded as
        C{label} (default: the nick).
        """
        label = label or nick
        self.events[label] = []
        connection = self.reactor.server()
        self._nicks[id(connection)] = label
        connection.connect("127.0.0.1", self.port, nick, password=f"{nick}-pw")
        self.connections[label] = connection
        return connection

    def join(self, nick: str) -> None:
        """
        Log in as C{nick}, wait for the welcome, join C{#chat} and wait for
        the list of its names.
        """
        self.connect(nick)
        self.wait(f"welcome for {nick}", lambda: bool(self.of(nick, "welcome")))
        self.connections[nick].join("#chat")
        self.wait(f"names for {nick}", lambda: bool(self.of(nick, "endofnames")))

    def names(self, nick: str) -> set[str]:
        """
        Ask the server for C{#chat}'s names as C{nick}.
        """
        before = len(self.of(nick, "endofnames"))
        replies = len(self.of(nick, "namreply"))
        self.connections[nick].names(["#chat"])
        self.wait(f"names for {nick}", lambda: len(self.of(nick, "endofnames")) > before)
        names: set[str] = set()
        for event in self.of(nick, "namreply")[replies:]:
            names.update(event.arguments[-1].split())
        return names

    def sync(self, nick: str) -> None:
        """
        A round trip to the server on C{nick}'s connection: whatever the
        server had queued for it before has arrived when this returns.
        """
        before = len(self.of(nick, "pong"))
        self.connections[nick].ping("sync")
        self.wait(f"pong for {nick}", lambda: len(self.of(nick, "pong")) > before)

    def waitJoined(self, nick: str, newcomer: str) -> None:
        """
        Wait until C{nick} has seen C{newcomer} join.
        """
        self.wait(
            f"{nick} seeing {newcomer} join",
            lambda: any(e.source.nick == newcomer for e in self.of(nick, "join")),
        )

    def waitSaid(self, nick: str, texts: list[str], what: str) -> None:
        """
        Wait until C{nick} has received every one of C{texts} in C{#chat}.
        """
        self.wait(f"{what} for {nick}", lambda: all(self.said(nick, t) for t in texts))

    def said(self, nick: str, text: str) -> list[Any]:
        """
        The C{#chat} messages C{nick} received with C{text}.
        """
        return [e for e in self.of(nick, "pubmsg") if e.target == "#chat" and e.arguments == [text]]


class WordsTakeoverTests(TestCase):
    """
    An IRC chat through takeovers.
    """

    if ircclient is None:
        skip = "the irc client library is not installed (pip install irc: the test extra)"

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-words-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.control = os.path.join(self.work, "ctl")

    def start(
        self, takeover: bool = False, name: str = "", python: str | None = None
    ) -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", WORDS_TAC],
            takeover=takeover,
            python=python,
            migrateOptions=["--drain-timeout", "30"],
            cwd=self.work,
            name=name,
        )
        self.addCleanup(process.stop)
        return process

    def takeOver(
        self, incumbent: ServiceProcess, generation: int, connected: int, python: str | None
    ) -> ServiceProcess:
        """
        A complete takeover: the successor (run by C{python}, default this
        one) serves as C{generation}, the incumbent froze and sent its
        C{connected} connections, none staying, handed off and exited 0.
        """
        successor = self.start(takeover=True, name=f"successor-{generation}", python=python)
        ready = successor.waitFor(READY, STEP)
        self.assertEqual(int(ready["generation"]), generation)
        froze = incumbent.waitFor(FROZE, STEP)
        self.assertEqual(
            (int(froze["count"]), int(froze["staying"])), (connected, 0), froze.group(0)
        )
        incumbent.waitFor(HANDED_OFF, STEP)
        self.assertEqual(incumbent.waitForExit(STEP), 0, incumbent.output()[-3000:])
        return successor

    def assertDelivered(self, clients: _Clients, members: list[str], turn: int) -> None:
        """
        Every member says something in C{#chat}; every other member gets
        it exactly once, and the sender does not get it back.
        """
        texts = {nick: f"round {turn}: {nick} speaking" for nick in members}
        for nick in members:
            clients.connections[nick].privmsg("#chat", texts[nick])
        for nick in members:
            others = [texts[o] for o in members if o != nick]
            clients.waitSaid(nick, others, f"round {turn} messages")
            clients.sync(nick)
        for nick in members:
            for sender in members:
                got = len(clients.said(nick, texts[sender]))
                self.assertEqual(
                    got, 0 if sender == nick else 1, f"{nick} got {sender}'s message {got} times"
                )

    def assertNickTaken(self, clients: _Clients, nick: str, attempt: int) -> None:
        """
        Logging in as C{nick}, with its password, is refused while C{nick}
        is logged in: the server says so and hangs up.
        """
        label = f"{nick}-again-{attempt}"
        clients.connect(nick, label)
        clients.wait(f"the end of {label}", lambda: bool(clients.of(label, "disconnect")))
        notices = [" ".join(e.arguments) for e in clients.of(label, "privmsg")]
        self.assertTrue(any("Already logged in" in n for n in notices), notices)
        self.assertEqual(clients.of(label, "welcome"), [])

    def chat(self, pythons: list[str | None]) -> None:
        """
        alice and bob join C{#chat} and bob sets its topic; then, for each
        of C{pythons}: a takeover by a successor run by that Python (every
        connection moves, none stays), and one more user joins the
        successor.  Each time the newcomer finds everybody in C{#chat} and
        the topic set before the first takeover; everybody hears
        everybody else exactly once; and logging in as alice again is
        refused.
        """
        incumbent = self.start()
        incumbent.waitFor(READY, STEP)
        port = int(incumbent.waitFor(IRC_PORT, STEP)["port"])
        clients = _Clients(self, port)
        clients.join("alice")
        clients.join("bob")
        topic = "set before the takeovers"
        clients.connections["bob"].topic("#chat", topic)
        clients.wait("the topic", lambda: bool(clients.of("alice", "topic")))
        self.assertDelivered(clients, ["alice", "bob"], 0)
        members = ["alice", "bob"]
        for generation, python in enumerate(pythons, 1):
            incumbent = self.takeOver(incumbent, generation, len(members), python)
            newcomer = USERS[len(members)]
            clients.join(newcomer)
            members.append(newcomer)
            # (A round trip: the topic, sent after the names at the JOIN,
            # has arrived when the answer to NAMES does.)
            self.assertEqual(clients.names(newcomer), set(members))
            current = clients.of(newcomer, "currenttopic")
            self.assertEqual([e.arguments[-1] for e in current], [topic])
            self.assertEqual(clients.names("alice"), set(members))
            for nick in members[:-1]:
                clients.waitJoined(nick, newcomer)
            self.assertDelivered(clients, members, generation)
            self.assertNickTaken(clients, "alice", generation)

    def test_oneChatAcrossTakeovers(self) -> None:
        """
        Three takeovers, each by a successor of this Python: one chat
        throughout (see L{chat}).
        """
        self.chat([None, None, None])

    def test_otherPython(self) -> None:
        """
        A takeover onto another Python (3.11 <-> 3.13) and one back: one
        chat throughout (see L{chat}).
        """
        other, _ = otherPython()
        self.chat([other, None])
