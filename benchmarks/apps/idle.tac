"""The benchmark service as a .tac: see benchmarks/apps/idle.py."""

from benchmarks.apps.idle import application  # noqa: F401
