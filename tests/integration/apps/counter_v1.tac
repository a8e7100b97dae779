import os

from twisted.application import service

from tests.integration.apps.counter_v1 import makeService

application = service.Application("counter")
makeService(os.environ.get("NUMBERED_LISTEN", "tcp:0:interface=127.0.0.1")).setServiceParent(application)
