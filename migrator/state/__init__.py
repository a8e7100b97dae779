"""
The state machinery: the object graph (L{migrator.state._graph}), the
adapter registry (L{migrator.state._registry}), established connections
captured and restored with the objects behind them
(L{migrator.state._capture} and L{migrator.state._restore}), the same
state restored on detached transports for a dry run
(L{migrator.state._detached}), and the in-process round trip for adapter
authors (L{migrator.state._roundtrip}).

It knows nothing of how state travels: it never imports
L{migrator.takeover}, L{migrator.adapters} or the operator tools.
"""
