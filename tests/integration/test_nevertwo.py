# -*- test-case-name: tests.integration.test_nevertwo -*-
"""
Never two: the chat server of Twisted's documentation
(L{tests/integration/apps/chat.tac}, its classes unchanged: a
C{LineReceiver} whose factory keeps a C{users} dictionary), under C{twistd
migrate}, with real processes.

  - Without adapters, a takeover is refused by default, with a message
    naming the class, its count and the remedies, and everyone still chats
    in one process.
  - With C{--unmovable drain} the takeover happens, and the split is
    announced in both processes' logs and in C{status}.
  - With C{--unmovable close} the old process closes those connections
    after the move.
  - The same C{.tac} plus a C{registerAdapters} function: everyone moves,
    over three takeovers, and clients joining afterwards see everyone.

The clients are blocking loopback sockets in the test, every read bounded
by a timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile

from twisted.python import log
from twisted.trial.unittest import TestCase

from migrator.testing import FAILED, HANDED_OFF, READY, ServiceProcess, startMigrate

from ._support import status

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
CHAT_TAC = os.path.join(APPS, "chat.tac")
#: What the adapted copy of the .tac adds: the file is its own adapters
#: module.
REGISTER = """

def registerAdapters(registry):
    registry.registerInstance(Chat)
    registry.registerFactory(ChatFactory)
"""
LISTENING = re.compile(r"ChatFactory starting on (?P<port>\d+)")
SPLIT = re.compile(r"the service's state is now split: (?P<count>\d+) connection\(s\)")
FROZE = re.compile(r"froze and sent (?P<count>\d+) connection\(s\)")
CHAT = "tac:Chat"

#: Generous bounds for a noisy 2-core machine; waits end as soon as their
#: line arrives.
STEP = 60.0


class ChatClient:
    """
    One user of the chat: a blocking loopback connection, reading lines
    with a timeout.
    """

    def __init__(self, case: TestCase, port: int, name: str) -> None:
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
        case.addCleanup(self.sock.close)
        self._buffer = b""
        self.expect("What's your name?")

    def readline(self, timeout: float = STEP) -> str | None:
        """
        The next line, or C{None} at the end of the connection.
        """
        self.sock.settimeout(timeout)
        for _ in range(10_000):
            if b"\r\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\r\n", 1)
                return line.decode("utf-8")
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self._buffer += chunk
        raise AssertionError(f"no end of line in {self._buffer[:200]!r}")

    def expect(self, line: str) -> None:
        got = self.readline()
        if got != line:
            raise AssertionError(f"{self.name} expected {line!r}, got {got!r}")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def join(self) -> ChatClient:
        self.send(self.name)
        self.expect(f"Welcome, {self.name}!")
        return self

    def say(self, message: str, hearers: list[ChatClient]) -> None:
        """
        Say C{message}; every one of C{hearers} receives it.
        """
        self.send(message)
        for other in hearers:
            other.expect(f"<{self.name}> {message}")


class NeverTwoTests(TestCase):
    """
    The documentation's chat server across takeovers.
    """

    def setUp(self) -> None:
        self.work = tempfile.mkdtemp(prefix="migrator-nt-")
        os.chmod(self.work, 0o700)
        self.addCleanup(shutil.rmtree, self.work, True)
        self.control = os.path.join(self.work, "ctl")

    def start(
        self, tac: str = CHAT_TAC, takeover: bool = False, options: tuple[str, ...] = ()
    ) -> ServiceProcess:
        process = startMigrate(
            self.control,
            ["--tac", tac],
            takeover=takeover,
            migrateOptions=["--drain-timeout", "60", *options],
            cwd=self.work,
            env={"MIGRATOR_FAULT": ""},
            name=f"chat-{'successor' if takeover else 'incumbent'}",
        )
        self.addCleanup(process.stop)
        return process

    def serving(self, process: ServiceProcess, generation: int) -> None:
        ready = process.waitFor(READY, STEP)
        self.assertEqual((int(ready["generation"]), int(ready["pid"])), (generation, process.pid))

    def startIncumbent(self, tac: str = CHAT_TAC) -> tuple[ServiceProcess, int]:
        incumbent = self.start(tac)
        self.serving(incumbent, 0)
        return incumbent, int(incumbent.waitFor(LISTENING, STEP)["port"])

    def test_refusedByDefault(self) -> None:
        """
        Two users chat; a takeover without adapters and without a policy
        is refused before anything moves: the successor exits 1, saying
        which class (C{tac:Chat}, 2 connections, no adapter) and what the
        remedies are.  The incumbent keeps serving, unchanged: a user who
        joins afterwards is in the same chat (an old name is taken, and
        every message reaches everyone), and its C{status} records the
        refusal per class.
        """
        incumbent, port = self.startIncumbent()
        alice = ChatClient(self, port, "alice").join()
        bob = ChatClient(self, port, "bob").join()

        successor = self.start(takeover=True)
        self.assertEqual(successor.waitForExit(STEP), 1)
        failed = successor.waitFor(FAILED, 1)
        self.assertEqual(failed["step"], "begin")
        output = successor.output()
        self.assertIn(f"{CHAT}: 2 connection(s) (no adapter)", output)
        for remedy in (
            "docs/adapters.md",
            "registerAdapters(registry)",
            "--unmovable drain",
            "--unmovable close",
        ):
            self.assertIn(remedy, output)
        self.assertIn(f"Nothing was changed: pid {incumbent.pid} keeps serving", output)
        self.assertIn("the running service was not changed and keeps serving", output)
        refusal = "\n".join(line for line in successor.lines if "[stderr#error]" in line)
        self.report(refusal)

        carol = ChatClient(self, port, "carol")
        carol.send("alice")
        carol.expect("Name taken, please choose another.")
        carol.join()
        carol.say("hello", [alice, bob])
        alice.say("hi carol", [bob, carol])

        record = status(self.control)
        self.assertEqual((record["pid"], record["generation"]), (incumbent.pid, 0))
        last = record["last_takeover"]
        self.assertEqual((last["outcome"], last["step"]), ("refused", "begin"))
        self.assertEqual(
            last["classes"], {CHAT: {"moved": 0, "drained": 0, "closed": 0, "refused": 2}}
        )
        self.assertFalse(record["split"])
        self.assertIsNone(incumbent.process.poll())

    def test_drainAnnouncesSplit(self) -> None:
        """
        With C{--unmovable drain} the takeover happens; both processes log
        that the service's state is now split, and the successor's
        C{status} says so (C{split}, with the class and count), as long as
        the old process serves them.  The split is real: a new user in the
        successor may take a name that an old user still holds.
        """
        incumbent, port = self.startIncumbent()
        alice = ChatClient(self, port, "alice").join()
        bob = ChatClient(self, port, "bob").join()

        successor = self.start(takeover=True, options=("--unmovable", "drain"))
        self.serving(successor, 1)
        self.assertEqual(int(incumbent.waitFor(HANDED_OFF, STEP)["pid"]), successor.pid)
        self.assertEqual(incumbent.waitFor(SPLIT, STEP)["count"], "2")
        self.assertEqual(successor.waitFor(SPLIT, STEP)["count"], "2")

        record = status(self.control)
        self.assertEqual(
            (record["pid"], record["split"], record["split_classes"], record["split_with"]),
            (successor.pid, True, {CHAT: 2}, incumbent.pid),
        )
        self.assertEqual(
            record["took_over"]["classes"],
            {CHAT: {"moved": 0, "drained": 2, "closed": 0, "refused": 0}},
        )
        ChatClient(self, port, "alice").join()
        alice.say("still here", [bob])

        alice.sock.close()
        bob.sock.close()
        self.assertEqual(incumbent.waitForExit(STEP), 0)
        self.assertFalse(status(self.control)["split"])

    def test_closeAfterMove(self) -> None:
        """
        With C{--unmovable close} the old process closes those connections
        once the takeover committed (their users see the end of the
        connection, as at a shutdown), then exits; new users are served by
        the successor, whose service is not split.
        """
        incumbent, port = self.startIncumbent()
        alice = ChatClient(self, port, "alice").join()

        successor = self.start(takeover=True, options=("--unmovable", "close"))
        self.serving(successor, 1)
        self.assertIsNone(alice.readline())
        self.assertEqual(incumbent.waitForExit(STEP), 0)
        record = status(self.control)
        self.assertEqual(
            (record["took_over"]["classes"], record["split"]),
            ({CHAT: {"moved": 0, "drained": 0, "closed": 1, "refused": 0}}, False),
        )
        ChatClient(self, port, "alice").join()

    def test_adaptersInTheTac(self) -> None:
        """
        The same C{.tac} with a C{registerAdapters} function (and the
        default policy): everyone moves at each of three takeovers (a user
        joins between the first two), every old process exits at once, and
        a user joining after the third sees everyone: old names are taken,
        and messages reach every user, old and new.
        """
        tac = os.path.join(self.work, "chat-adapted.tac")
        with open(CHAT_TAC) as source, open(tac, "w") as adapted:
            adapted.write(source.read() + REGISTER)
        incumbent, port = self.startIncumbent(tac)
        users = [ChatClient(self, port, name).join() for name in ("alice", "bob")]

        for generation in (1, 2, 3):
            successor = self.start(tac, takeover=True)
            self.serving(successor, generation)
            self.assertEqual(int(incumbent.waitFor(FROZE, STEP)["count"]), len(users))
            self.assertEqual(incumbent.waitForExit(STEP), 0)
            record = status(self.control)
            self.assertEqual(
                record["took_over"]["classes"],
                {CHAT: {"moved": len(users), "drained": 0, "closed": 0, "refused": 0}},
            )
            self.assertFalse(record["split"])
            incumbent = successor
            if generation == 1:
                dave = ChatClient(self, port, "dave").join()
                users[0].say("welcome dave", users[1:] + [dave])
                users.append(dave)

        carol = ChatClient(self, port, "carol")
        for taken in ("alice", "bob", "dave"):
            carol.send(taken)
            carol.expect("Name taken, please choose another.")
        carol.join()
        carol.say("hello everyone", users)
        for user in users:
            user.say(f"hi carol from {user.name}", [u for u in users if u is not user] + [carol])

    def report(self, text: str) -> None:
        """
        Keep the refusal as the successor printed it in the test log, and
        on stderr when C{MIGRATOR_IT_VERBOSE} is set.
        """
        log.msg(f"{self.id()}: {text}")
        if os.environ.get("MIGRATOR_IT_VERBOSE"):
            sys.stderr.write(text + "\n")
