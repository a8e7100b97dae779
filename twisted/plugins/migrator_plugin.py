"""
twistd plugin: C{twistd migrate} runs another twistd service so that a later
process can take it over without dropping its listening ports.
"""

from twisted.application.service import ServiceMaker

migrate = ServiceMaker(
    "migrator",
    "migrator.tap",
    "Run a twistd service so that a successor process can take it over live",
    "migrate",
)
