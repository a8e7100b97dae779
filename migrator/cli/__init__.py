"""
The operator's commands that talk to a running service over its control
socket (C{python -m migrator status}).  Client side only: nothing here runs
inside C{twistd migrate}.
"""
