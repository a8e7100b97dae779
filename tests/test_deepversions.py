"""
Version translation through the iterative graph writer and reader (deep
chains, segments), and the built-in adapters registered once their module
is imported (TLS, autobahn's WebSocket) as a successor's capture request
sees them.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from migrator.adapters import defaultRegistry
from migrator.state._graph import GraphReader, GraphWriter, dumpsPlain, loadsPlain
from migrator.state._roundtrip import roundTrip
from tests.test_versions import CHAT, ChatV1, ChatV2, chatRegistries

#: Deeper than a segment, and than the old recursive reader reached.
DEPTH = 5000


def oldChain(depth: int) -> ChatV1:
    """
    @return: the head of a chain of C{depth} L{ChatV1}s, each holding the
        next (in a list, so that containers nest too).
    """
    head = ChatV1()
    head.count, head.next = 0, None
    link = head
    for i in range(1, depth):
        nxt = ChatV1()
        nxt.count, nxt.next = i, None
        link.next = [nxt]
        link = nxt
    return head


class DeepTranslationTests(SynchronousTestCase):
    """
    States are translated, and counted, once fully read, at every depth.
    """

    def test_upgradeDeepChain(self) -> None:
        """
        A chain of old-version objects deeper than a segment is read by
        newer code: every object is upgraded, and counted once.
        """
        old, new = chatRegistries()
        node = GraphWriter(old.adapterFor).write(oldChain(DEPTH))
        self.assertEqual(node[0], "S")
        reader = GraphReader(new.adapterNamed)
        head = reader.read(loadsPlain(dumpsPlain(node)))
        reader.finish()
        self.assertEqual(reader.translator.log.seen, {(CHAT, 1): DEPTH})
        link: Any = head
        for i in range(DEPTH):
            self.assertIsInstance(link, ChatV2)
            self.assertEqual((link.seen, link.firstSeen), (i, None))
            link = link.next[0] if link.next is not None else None
        self.assertIsNone(link)

    def test_downgradeDeepChain(self) -> None:
        """
        A chain of new-version objects is downgraded by the newer writer
        for older code, at every depth.
        """
        old, new = chatRegistries()
        head = ChatV2()
        head.seen, head.firstSeen, head.next = 0, 1, None
        link = head
        for i in range(1, DEPTH):
            nxt = ChatV2()
            nxt.seen, nxt.firstSeen, nxt.next = i, 1, None
            link.next = [nxt]
            link = nxt
        restored: Any = roundTrip(head, new, restoreWith=old)
        for i in range(DEPTH):
            self.assertIsInstance(restored, ChatV1)
            self.assertEqual(restored.count, i)
            self.assertNotIn("firstSeen", vars(restored))
            restored = restored.next[0] if restored.next is not None else None
        self.assertIsNone(restored)


class LazyRegistrationTests(SynchronousTestCase):
    """
    The TLS and WebSocket adapters are registered once their module is
    imported, and a registry's type names (what a successor says it can
    restore) include them.
    """

    def test_tls(self) -> None:
        """
        A new default registry names the TLS session adapters in its type
        names, and finds them by class and by name.
        """
        from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol

        from migrator.adapters.tls import TLSRecordTransport

        registry = defaultRegistry()
        names = registry.typeNames()
        for cls in (TLSMemoryBIOProtocol, BufferingTLSTransport, TLSRecordTransport):
            adapter = registry.adapterFor(cls)
            self.assertIsNotNone(adapter, cls)
            self.assertIn(adapter.typeName, names)
            self.assertIs(registry.adapterNamed(adapter.typeName), adapter)

    def test_webSocket(self) -> None:
        """
        Where autobahn is installed and imported, a new default registry's
        type names include its WebSocket server's.
        """
        try:
            from autobahn.twisted.websocket import (
                WebSocketServerFactory,
                WebSocketServerProtocol,
            )
        except ImportError:
            raise self.skipTest("autobahn is not installed") from None
        registry = defaultRegistry()
        names = registry.typeNames()
        for cls in (WebSocketServerProtocol, WebSocketServerFactory):
            adapter = registry.adapterFor(cls)
            self.assertIsNotNone(adapter, cls)
            self.assertIn(adapter.typeName, names)

    def test_words(self) -> None:
        """
        A new default registry's type names include the IRC adapters once
        C{twisted.words.service} is imported.
        """
        from twisted.words import service

        registry = defaultRegistry()
        adapter = registry.adapterFor(service.IRCUser)
        self.assertIsNotNone(adapter)
        self.assertIn(adapter.typeName, registry.typeNames())
