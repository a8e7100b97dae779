# Two kinds of connection for the console's tests
# (tests/integration/test_console.py): the chat server of Twisted's
# documentation (as in chat.tac, with adapters: every user shares the
# factory's users dictionary, so all chat connections are one component)
# on CHAT_LISTEN, and a web site (each keep-alive connection a component
# of its own) on WEB_LISTEN.
import os

from twisted.application import service, strports
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.web import server, static


class Chat(LineReceiver):
    def __init__(self, users):
        self.users = users
        self.name = None
        self.state = "GETNAME"

    def connectionMade(self):
        self.sendLine(b"What's your name?")

    def connectionLost(self, reason):
        if self.name in self.users:
            del self.users[self.name]

    def lineReceived(self, line):
        if self.state == "GETNAME":
            self.handle_GETNAME(line)
        else:
            self.handle_CHAT(line)

    def handle_GETNAME(self, name):
        if name in self.users:
            self.sendLine(b"Name taken, please choose another.")
            return
        self.sendLine(f"Welcome, {name.decode('utf-8')}!".encode("utf-8"))
        self.name = name
        self.users[name] = self
        self.state = "CHAT"

    def handle_CHAT(self, message):
        message = f"<{self.name.decode('utf-8')}> {message.decode('utf-8')}".encode("utf-8")
        for name, protocol in self.users.items():
            if protocol != self:
                protocol.sendLine(message)


class ChatFactory(Factory):
    def __init__(self):
        self.users = {}  # maps user names to Chat instances

    def buildProtocol(self, addr):
        return Chat(self.users)


class Page(static.Data):
    isLeaf = True


def registerAdapters(registry):
    registry.registerInstance(Chat)
    registry.registerFactory(ChatFactory)


application = service.Application("console-test")
strports.service(
    os.environ.get("CHAT_LISTEN", "tcp:0:interface=127.0.0.1"), ChatFactory()
).setServiceParent(application)
strports.service(
    os.environ.get("WEB_LISTEN", "tcp:0:interface=127.0.0.1"),
    server.Site(Page(b"hello from the console test\n", "text/plain")),
).setServiceParent(application)
