# -*- test-case-name: tests.test_stream -*-
"""
Work spread over reactor turns (L{eachTurn}): the stream's release after
the commit, the successor's activation of the batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def eachTurn(
    items: list[_T],
    each: Callable[[_T], object],
    later: Callable[[Callable[[], None]], object] | None,
    done: Callable[[], None],
    budget: float = 0.0,
    timer: Callable[[], float] = time.perf_counter,
) -> Callable[[], None]:
    """
    Call C{each} with every item in order, then C{done}: all at once if
    C{later} (which runs a function in a later reactor turn) is not given;
    else as many per turn as fit in C{budget} seconds (by C{timer}), at
    least one, starting in this turn (one per turn if C{budget} is 0).

    @return: a function that does what is left at once (the turns still
        to come then do nothing).
    """
    items = list(items)
    finished = False

    def step(hurry: bool = False) -> None:
        nonlocal finished
        if finished:
            return
        started = timer() if budget else 0.0
        while items:
            each(items.pop(0))
            if (
                items
                and not hurry
                and later is not None
                and (not budget or timer() - started >= budget)
            ):
                later(step)
                return
        finished = True
        done()

    step()
    return lambda: step(hurry=True)
