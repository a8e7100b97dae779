# -*- test-case-name: tests.test_tac -*-
"""
C{--tac FILE}: run a C{.tac} file as twistd does, and let it adapt its own
classes.

twistd (L{twisted.application.service.loadApplication}, kind C{"python"})
runs a C{.tac} file's code in a fresh namespace that holds only
C{__file__}, and takes its C{application}.  L{loadTac} does exactly that,
and also keeps the file's C{registerAdapters(registry)} function if it
defines one: a C{.tac} is then its own adapters module (classes defined in
a C{.tac} have no importable module, so no C{--adapters} module could name
them).  Their type names are C{tac:qualname}
(L{migrator.state._graph.typeName}), the same in every generation that
runs the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs


class TacError(Exception):
    """
    A C{.tac} file has no C{application}, or a C{registerAdapters} that is
    not a function.
    """


@attrs.frozen
class TacFile:
    """
    A loaded C{.tac} file.

    @ivar application: its C{application}.
    @ivar registerAdapters: its C{registerAdapters(registry)}, or C{None}.
    @ivar checkRestored: its C{checkRestored(protocol)} (a dry run's check
        of each restored connection), or C{None}.
    """

    path: str
    application: Any
    registerAdapters: Callable[[Any], object] | None = None
    checkRestored: Callable[[Any], object] | None = None


def loadTac(path: str) -> TacFile:
    """
    Run the C{.tac} file at C{path} (as twistd would) and take its
    C{application} and its C{registerAdapters}, if any.

    @raise TacError: if it defines no C{application}, or a
        C{registerAdapters} that is not callable.
    """
    with open(path) as f:
        source = f.read()
    namespace: dict[str, Any] = {"__file__": path}
    exec(compile(source, path, "exec"), namespace, namespace)
    if "application" not in namespace:
        raise TacError(f"{path} defines no 'application'")
    register = namespace.get("registerAdapters")
    if register is not None and not callable(register):
        raise TacError(f"{path}: registerAdapters must be a function of the registry")
    check = namespace.get("checkRestored")
    if check is not None and not callable(check):
        raise TacError(f"{path}: checkRestored must be a function of a protocol")
    return TacFile(path, namespace["application"], register, check)
