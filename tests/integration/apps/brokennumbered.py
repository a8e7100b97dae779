"""
New code for the numbered-lines service whose C{populate} of a
connection raises: what a dry run must catch before a takeover tries it.
"""

from migrator import InstanceAdapter
from tests.integration.apps.numbered import NumberedFactory, NumberedLine


class BrokenPopulate(InstanceAdapter):
    """
    The default rule, but this version cannot read the state it is given.
    """

    def populate(self, obj, state, context):
        raise RuntimeError("this version cannot read a NumberedLine's state")


def registerAdapters(registry):
    registry.register(BrokenPopulate(NumberedLine))
    registry.registerFactory(NumberedFactory)
