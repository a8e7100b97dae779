"""
A resource for the web keep-alive tests: C{GET} answers with the pid of the
process that served the request, so a client can tell which process holds
its connection.  C{GET /?delay=SECONDS} answers that many seconds later
(and logs C{WEBPID answering in SECONDS s} when the request arrives), so a
test can keep a request in progress during a takeover.

    twistd web --class tests.integration.apps.webpid.PidResource
"""

import os

from twisted.internet import reactor
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

_log = Logger()


class PidResource(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        body = b"%d\n" % (os.getpid(),)
        delay = float(request.args.get(b"delay", [b"0"])[0])
        if not delay:
            return body
        _log.info("WEBPID answering in {delay} s", delay=delay)

        def answer():
            request.setHeader(b"content-length", b"%d" % (len(body),))
            request.write(body)
            request.finish()

        call = reactor.callLater(delay, answer)
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return NOT_DONE_YET
