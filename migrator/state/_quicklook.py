# -*- test-case-name: tests.test_plan -*-
"""
Never two's quick look (L{migrator.state._plan}): whether any connection
is L{UNKNOWN}, looking at each connection's class once, at the connections
one by one only where the class alone does not say, for the steps of a
takeover where time counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from typing import Any

from migrator.state._plan import Classifier


def anyUnknown(
    transports: Iterable[Any],
    adapters: Any,
    successorVersions: Mapping[str, Any] | None = None,
    selected: Callable[[Any], bool] | None = None,
) -> bool:
    """
    Whether any of C{transports} is L{UNKNOWN}: a quick look (no adapter's
    C{movable} is asked), for a step where time counts (C{selected}: as
    for L{planConnections}).
    """
    classifier = Classifier(adapters, successorVersions)
    suspect = suspectTest(adapters, successorVersions, selected, classifier)
    return any(
        classifier.classify(t, movable=False, selected=True if selected is None else selected(t))
        is not None
        for t in transports
        if suspect(t)
    )


def suspectTest(
    adapters: Any,
    successorVersions: Mapping[str, Any] | None = None,
    selected: Callable[[Any], bool] | None = None,
    classifier: Classifier | None = None,
) -> SuspectTest:
    """
    A test of whether a connection (a transport) may be L{UNKNOWN}: not if
    its protocol's class alone says it is not (most), looked up once per
    class; with C{selected} (the operator chose which connections move),
    every connection may.
    """
    if selected is not None:
        return SuspectTest(None)
    if classifier is None:
        classifier = Classifier(adapters, successorVersions)
    return SuspectTest(classifier.classSaysKnown)


class SuspectTest:
    """
    Whether a connection (a transport) may be L{UNKNOWN}, by its protocol's
    class (see L{suspectTest}): called with one transport, or asked
    L{among} tens of thousands at once.
    """

    def __init__(self, known: Callable[[Any], bool] | None) -> None:
        """
        @param known: whether a protocol's class alone says it is not
            L{UNKNOWN} (asked once per class); C{None}: every connection
            may be.
        """
        self._known = known
        self._sure: dict[type, bool] = {}

    def _says(self, protocol: Any) -> bool:
        said = self._sure.get(type(protocol))
        if said is None:
            assert self._known is not None
            said = self._sure[type(protocol)] = self._known(protocol)
        return said

    def __call__(self, t: Any) -> bool:
        if self._known is None:
            return True
        return not self._says(getattr(t, "protocol", None))

    def among(self, transports: list[Any]) -> list[Any]:
        """
        @return: those of C{transports} that may be L{UNKNOWN}, in order.
            (Their protocols and classes are gathered in C loops, and each
            class asked once: with tens of thousands of connections of a
            few classes, a fraction of one look at each.)
        """
        if self._known is None:
            return list(transports)
        protocols = list(map(getattr, transports, repeat("protocol"), repeat(None)))
        # (A protocol of each class stands for its class.)
        byClass = dict(zip(map(type, protocols), protocols, strict=True))
        unsure = {cls for cls, protocol in byClass.items() if not self._says(protocol)}
        if not unsure:
            return []
        return [t for t, protocol in zip(transports, protocols, strict=True) if type(protocol) in unsure]
