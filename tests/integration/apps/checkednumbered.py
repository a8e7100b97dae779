"""
The numbered-lines service's adapters, with a dry run's check of each
restored connection (C{checkRestored}).
"""

from tests.integration.apps.numbered import NumberedLine, registerAdapters

__all__ = ["checkRestored", "registerAdapters"]


def checkRestored(protocol):
    """
    A restored connection belongs to this process's factory, which counts
    at least its lines.
    """
    if not isinstance(protocol, NumberedLine):
        raise TypeError(f"unexpected protocol {protocol!r}")
    if protocol.factory.shared["lines"] < protocol.lines:
        raise ValueError("the factory's line count is behind the connection's")
    if protocol not in protocol.factory.clients:
        raise ValueError("the connection is not among its factory's clients")
