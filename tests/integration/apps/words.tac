# The service `twistd words --irc-port tcp:0:interface=127.0.0.1 --auth
# memory:... --group chat` means to build (twisted.words.tap.makeService,
# unmodified), for the integration tests: `--group` itself crashes on
# Python 3 (it calls str.decode), so the group is created here, as
# makeService would have created it.  WORDS_LISTEN overrides the port.
import os

from twisted.application import service
from twisted.words import tap

USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]

options = tap.Options()
options.parseOptions(
    [
        "--irc-port",
        os.environ.get("WORDS_LISTEN", "tcp:0:interface=127.0.0.1"),
        "--auth",
        "memory:" + ":".join(f"{name}:{name}-pw" for name in USERS),
        "--hostname",
        "migrator-irc",
    ]
)
words = tap.makeService(options)
for listening in words:
    listening.factory.realm.createGroup("chat")
    break

application = service.Application("words")
words.setServiceParent(application)
