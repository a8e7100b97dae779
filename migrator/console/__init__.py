"""
The operator's console: a web page (served by twisted.web in the console's
own process, a client of the service's control socket like C{python -m
migrator status}) that shows a service's lineage, its connections and the
plan of a takeover, draws the object graph behind the connections, and
runs takeovers.  A tool: nothing that runs under C{twistd migrate} imports
it.
"""
