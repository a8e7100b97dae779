"""
Version 2 of the C{Versioned} line service (version 1 is in C{../v1}):
the counter C{lines} is now C{total}, and a connection remembers which
version it was upgraded from.  The upgrade is Twisted's own
C{upgradeToVersion2}; the adapters are the same default rule.
"""

import os

from twisted.internet.protocol import ServerFactory
from twisted.persisted import styles
from twisted.protocols.basic import LineReceiver
from twisted.python import log

PAD = b"." * int(os.environ.get("NUMBERED_PAD", "200"))
_answered = []


class Greeter(LineReceiver, styles.Versioned):
    persistenceVersion = 2

    def connectionMade(self):
        self.total = 0
        self.upgradedFrom = None

    def upgradeToVersion2(self):
        self.total = self.__dict__.pop("lines")
        self.upgradedFrom = 1

    def lineReceived(self, line):
        if line == b"stats":
            self.sendLine(
                b"stats total=%d upgraded=%d" % (self.total, self.upgradedFrom or 0)
            )
            return
        self.total += 1
        if not _answered:
            _answered.append(True)
            log.msg("greeter v2 answered its first line")
        number, _, payload = line.partition(b" ")
        self.sendLine(b"%s %d v2 %s %s" % (number, self.total, payload[::-1], PAD))


class GreeterFactory(ServerFactory):
    protocol = Greeter


def registerAdapters(registry):
    registry.registerInstance(Greeter)
    registry.registerFactory(GreeterFactory)
