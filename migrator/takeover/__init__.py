"""
The takeover protocol: the private control socket (Perspective Broker over
a UNIX socket, L{migrator.takeover._control}), the descriptor channel
(L{migrator.takeover._channel}), the steps as data and the messages as
typed records (L{migrator.takeover._steps}, L{migrator.takeover._messages}),
the two roles: the incumbent (L{migrator.takeover._incumbent}, its attempt
L{migrator.takeover._attempt}, its PB face L{migrator.takeover._session},
its polite stop L{migrator.takeover._stopping}) and the successor
(L{migrator.takeover._successor}, its channel inbox
L{migrator.takeover._inbox}, telling a dead incumbent from one that hung up
L{migrator.takeover._liveness}, completing a takeover alone
L{migrator.takeover._alone}); the listening ports they hand over
(L{migrator.takeover._ports}) and the pidfile and service-manager
notifications that follow the serving process (L{migrator.takeover._pidfile}).

It uses L{migrator.state} to capture and restore connections; it never
imports the built-in adapters or the operator tools.
"""
