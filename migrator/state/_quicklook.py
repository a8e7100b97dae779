# -*- test-case-name: tests.test_plan -*-
"""
Never two's quick look (L{migrator.state._plan}): whether any connection
is L{UNKNOWN}, looking at each connection's class once, at the connections
one by one only where the class alone does not say, for the steps of a
takeover where time counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
) -> Callable[[Any], bool]:
    """
    A test of whether a connection (a transport) may be L{UNKNOWN}: not if
    its protocol's class alone says it is not (most), looked up once per
    class; with C{selected} (the operator chose which connections move),
    every connection may.
    """
    if selected is not None:
        return lambda t: True
    if classifier is None:
        classifier = Classifier(adapters, successorVersions)
    sure: dict[type, bool] = {}
    known = classifier.classSaysKnown

    def suspect(t: Any) -> bool:
        protocol = getattr(t, "protocol", None)
        said = sure.get(type(protocol))
        if said is None:
            said = sure[type(protocol)] = known(protocol)
        return not said

    return suspect
