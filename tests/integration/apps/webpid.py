"""
A resource for the web keep-alive tests: C{GET} answers with the pid of the
process that served the request, so a client can tell which process holds
its connection.

C{GET /?gate=NAME} holds its answer until the test opens the gate: the
resource makes a FIFO named C{gate-NAME} in the process's working
directory, opens it, logs C{WEBPID holding NAME} and answers once a byte
can be read from it (see L{openGate}).  A test can so keep a request in
progress for exactly as long as it needs (across a takeover, past the
incumbent's bounded wait for busy connections), with no delay to guess.

    twistd web --class tests.integration.apps.webpid.PidResource
"""

import os
import re

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

_log = Logger()

#: What a gate may be called (it becomes part of a file name).
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def gatePath(directory, name):
    """
    The FIFO of gate C{name} for a process running in C{directory}.
    """
    return os.path.join(directory, f"gate-{name}")


def openGate(directory, name):
    """
    Open gate C{name} of the process running in C{directory} (call it once
    the process logged C{WEBPID holding NAME}).
    """
    fd = os.open(gatePath(directory, name), os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"open\n")
    finally:
        os.close(fd)


class _Gate:
    """
    The reading end of a gate's FIFO, watched by the reactor: the first
    byte written to it calls C{opened}, once.

    Opened read-write, so that the FIFO never reports an end of file (no
    writer yet, or the test's writer gone): only data makes it readable.
    """

    def __init__(self, path, opened):
        os.mkfifo(path, 0o600)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._opened = opened

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return "WebpidGate"

    def doRead(self):
        try:
            os.read(self.fd, 64)
        except BlockingIOError:
            return None
        opened, self._opened = self._opened, None
        self.close()
        if opened is not None:
            opened()
        return None

    def connectionLost(self, reason):
        self.close()

    def close(self):
        if self.fd >= 0:
            from twisted.internet import reactor

            reactor.removeReader(self)
            os.close(self.fd)
            self.fd = -1
            os.unlink(self.path)


class PidResource(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        body = b"%d\n" % (os.getpid(),)
        name = request.args.get(b"gate", [b""])[0].decode("ascii", "replace")
        if not name:
            return body
        if not _NAME.match(name):
            request.setResponseCode(400)
            return b"bad gate name\n"

        def answer():
            if request.finished or request.channel is None:
                return
            request.setHeader(b"content-length", b"%d" % (len(body),))
            request.write(body)
            request.finish()

        from twisted.internet import reactor

        gate = _Gate(gatePath(os.getcwd(), name), answer)
        reactor.addReader(gate)
        request.notifyFinish().addErrback(lambda _: gate.close())
        _log.info("WEBPID holding {name}", name=name)
        return NOT_DONE_YET
