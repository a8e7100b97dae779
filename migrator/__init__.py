# -*- test-case-name: tests -*-
"""
migrator: move a running Twisted service into a new process (new code, new
Python, same clients) without its clients noticing.

Run any twistd service under C{twistd migrate --control PATH ...}; start the
successor with the same command plus C{--takeover}.  See C{docs/}.
"""

from ._adapters import AdapterRegistry, InstanceAdapter, defaultRegistry, factoryAdapter
from ._control import ControlPathError, PeerPolicy
from ._graph import GraphError, Unadaptable
from ._pidfile import Pidfile, sdNotify
from ._ports import ListenerRegistry, TrackedPort, UnsupportedPort, releasePort
from ._service import MigrateConfig, MigrateService
from ._successor import TakeoverFailed
from ._version import __version__

__all__ = [
    "AdapterRegistry",
    "ControlPathError",
    "GraphError",
    "InstanceAdapter",
    "Unadaptable",
    "defaultRegistry",
    "factoryAdapter",
    "ListenerRegistry",
    "MigrateConfig",
    "MigrateService",
    "PeerPolicy",
    "Pidfile",
    "TakeoverFailed",
    "TrackedPort",
    "UnsupportedPort",
    "__version__",
    "releasePort",
    "sdNotify",
]
