import os

from twisted.application import service

from tests.integration.apps.numbered import makeService

application = service.Application("numbered")
makeService(os.environ.get("NUMBERED_LISTEN", "tcp:0:interface=127.0.0.1")).setServiceParent(application)
