"""
Byte-compile the checkout before a benchmark that starts processes, as
installing the package does: where C{PYTHONDONTWRITEBYTECODE} is set (it
is on the machines these figures come from), every process started from a
checkout would otherwise compile migrator's modules again, about 70 ms of
a successor's start that an installed migrator never pays.
"""

from __future__ import annotations

import compileall
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compileCheckout() -> str:
    """
    Write the bytecode of migrator, the benchmarks' apps and the plugin
    next to their sources (C{__pycache__}, ignored by git).

    @return: what to report: how the processes found their bytecode.
    """
    for path in ("migrator", "benchmarks", os.path.join("twisted", "plugins")):
        compileall.compile_dir(os.path.join(ROOT, path), quiet=1)
    return "compiled before the runs (as an installed package is)"
