"""
The live demonstrations and their tools (C{python -m migrator demo}): the
talk's telnet manhole session, the web server under load, the load
generator, the telnet driver and the helpers that run C{twistd migrate} in
child processes.  Tooling, not runtime: nothing that runs under
C{twistd migrate} imports this package.
"""
