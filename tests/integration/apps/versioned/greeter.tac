# The Versioned line service: vgreeter comes from v1/ or v2/, whichever
# directory is on PYTHONPATH.
import os

from twisted.application import service, strports
from vgreeter import GreeterFactory

application = service.Application("greeter")
strports.service(
    os.environ.get("NUMBERED_LISTEN", "tcp:0:interface=127.0.0.1"), GreeterFactory()
).setServiceParent(application)
