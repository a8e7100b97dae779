"""
Version 1 of a line service whose protocol is a Twisted
C{styles.Versioned} (C{tests/integration/test_versions.py}).  Each version
of the code lives in its own directory, under the same module name: as for
pickles, Twisted names a class's persistence version by its module and
name, so the new code keeps them.

Every line C{N payload} is answered with C{N LINES v1 payload-reversed
PAD}; C{stats} answers with the counter.
"""

import os

from twisted.internet.protocol import ServerFactory
from twisted.persisted import styles
from twisted.protocols.basic import LineReceiver
from twisted.python import log

PAD = b"." * int(os.environ.get("NUMBERED_PAD", "200"))
_answered = []


class Greeter(LineReceiver, styles.Versioned):
    persistenceVersion = 1

    def connectionMade(self):
        self.lines = 0

    def lineReceived(self, line):
        if line == b"stats":
            self.sendLine(b"stats lines=%d" % (self.lines,))
            return
        self.lines += 1
        if not _answered:
            _answered.append(True)
            log.msg("greeter v1 answered its first line")
        number, _, payload = line.partition(b" ")
        self.sendLine(b"%s %d v1 %s %s" % (number, self.lines, payload[::-1], PAD))


class GreeterFactory(ServerFactory):
    protocol = Greeter


def registerAdapters(registry):
    registry.registerInstance(Greeter)
    registry.registerFactory(GreeterFactory)
