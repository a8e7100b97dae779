# The chat server of Twisted's documentation ("Writing Servers",
# docs/core/howto/listings/servers/chat.py), its classes unchanged.  Only
# its last two lines (reactor.listenTCP(8123, ChatFactory()) and
# reactor.run()) became an application listening on CHAT_LISTEN.  It has no
# adapters: tests/integration/test_nevertwo.py appends a registerAdapters
# function to a copy of this file when it wants some.
import os

from twisted.application import service, strports
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


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


application = service.Application("chat")
strports.service(
    os.environ.get("CHAT_LISTEN", "tcp:0:interface=127.0.0.1"), ChatFactory()
).setServiceParent(application)

registerAdapters = 3
