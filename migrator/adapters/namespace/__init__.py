"""
A Python namespace (a manhole session's C{locals}) captured as plain state
and restored in another process or Python: modules by name, plain values by
value, session-defined functions and classes by their source text, and
placeholders for what cannot move.  Used by L{migrator.adapters._manhole}.
"""
