"""
The takeover protocol: the private control socket (Perspective Broker over
a UNIX socket, L{migrator.takeover._control}), the descriptor channel
(L{migrator.takeover._channel}), the steps as data and the messages as
typed records (L{migrator.takeover._steps}, L{migrator.takeover._messages}),
the two roles (L{migrator.takeover._incumbent} with its PB face
L{migrator.takeover._session}, L{migrator.takeover._successor}), the listening ports they hand over
(L{migrator.takeover._ports}) and the pidfile and service-manager
notifications that follow the serving process (L{migrator.takeover._pidfile}).

It uses L{migrator.state} to capture and restore connections; it never
imports the built-in adapters or the operator tools.
"""
