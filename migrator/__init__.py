# -*- test-case-name: tests.test_interfaces -*-
"""
migrator: move a running Twisted service into a new process (new code, new
Python, same clients) without its clients noticing.

Run any twistd service under C{twistd migrate --control PATH ...}; start the
successor with the same command plus C{--takeover}.  See C{docs/}.

The public names are what an adapter author and an operator who embeds
migrator use: the adapter registry and its building blocks, the errors a
capture or restore raises, and the service with its configuration.  The
interfaces an adapter provides (C{IAdapter}, and optionally C{IBusyAware}
or C{IAnchorOnly}) and the context it is given (C{IRestoreContext}) are in
L{migrator.interfaces}; what adapter authors' tests use is in
L{migrator.testing}.  The rest lives in role packages: L{migrator.takeover} (the protocol),
L{migrator.state} (graph, registry, connections), L{migrator.adapters}
(the built-in adapters), L{migrator.cli} and L{migrator.demo} (tools).
"""

from migrator._config import MigrateConfig
from migrator._service import MigrateService
from migrator._version import __version__
from migrator.adapters import defaultRegistry
from migrator.state._graph import GraphError, Unadaptable
from migrator.state._registry import AdapterRegistry, InstanceAdapter, factoryAdapter
from migrator.takeover._control import ControlPathError
from migrator.takeover._failure import TakeoverFailed

__all__ = [
    "AdapterRegistry",
    "ControlPathError",
    "GraphError",
    "InstanceAdapter",
    "MigrateConfig",
    "MigrateService",
    "TakeoverFailed",
    "Unadaptable",
    "__version__",
    "defaultRegistry",
    "factoryAdapter",
]
