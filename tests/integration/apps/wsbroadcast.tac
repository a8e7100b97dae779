# An Autobahn|Python WebSocket echo and broadcast server, for
# tests/integration/test_websocket.py: one WebSocketServerFactory served on
# two ports, directly (WS_LISTEN) and by twisted.web through autobahn's
# WebSocketResource at /ws (WEB_LISTEN).  Text messages:
#
#   "echo ..."  answered to the sender with "echo ... pid=PID peer=PORT"
#               (PORT: the client's port as this process sees it);
#   "cast ..."  sent to every client of the factory, as it is.
#
# Automatic pings run every second; permessage-deflate is accepted with no
# context takeover both ways (a client that cannot agree gets none).  The
# file is its own adapters module (registerAdapters, below).
import os

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.application import service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site


class Broadcast(WebSocketServerProtocol):
    def onOpen(self):
        self.factory.clients.append(self)

    def onClose(self, wasClean, code, reason):
        if self in self.factory.clients:
            self.factory.clients.remove(self)

    def onMessage(self, payload, isBinary):
        if payload.startswith(b"echo "):
            port = self.transport.getPeer().port
            self.sendMessage(payload + b" pid=%d peer=%d" % (os.getpid(), port), isBinary)
        elif payload.startswith(b"cast "):
            for client in list(self.factory.clients):
                client.sendMessage(payload, isBinary)


class BroadcastFactory(WebSocketServerFactory):
    protocol = Broadcast

    def __init__(self, url):
        WebSocketServerFactory.__init__(self, url)
        self.clients = []


def acceptDeflate(offers):
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.accept_no_context_takeover:
            return PerMessageDeflateOfferAccept(
                offer, request_no_context_takeover=True, no_context_takeover=True
            )
    return None


def registerAdapters(registry):
    from migrator.adapters import registerWebSocketServer

    registerWebSocketServer(registry, [Broadcast], [BroadcastFactory])


factory = BroadcastFactory("ws://127.0.0.1")
factory.setProtocolOptions(
    autoPingInterval=1, autoPingTimeout=30, perMessageCompressionAccept=acceptDeflate
)
root = Resource()
root.putChild(b"ws", WebSocketResource(factory))

application = service.Application("wsbroadcast")
strports.service(
    os.environ.get("WS_LISTEN", "tcp:0:interface=127.0.0.1"), factory
).setServiceParent(application)
strports.service(
    os.environ.get("WEB_LISTEN", "tcp:0:interface=127.0.0.1"), Site(root)
).setServiceParent(application)
