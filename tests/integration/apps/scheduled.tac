import os

from twisted.application import service

from tests.integration.apps.scheduled import makeService

application = service.Application("scheduled")
makeService(os.environ.get("SCHEDULED_LISTEN", "tcp:0:interface=127.0.0.1")).setServiceParent(application)
