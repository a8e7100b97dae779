# -*- test-case-name: tests.test_loadgen -*-
"""
The load generator's records and their summary: what
L{migrator.demo._loadgen} writes for each request and the JSON summary it
prints (also read back by the benchmarks and the integration tests).

@var OUTCOMES: The names of the possible outcomes of a request, in the
    order they appear in a summary.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

OUTCOMES: tuple[str, ...] = (
    "ok",
    "http_error",
    "refused",
    "reset",
    "timeout",
    "other",
)
_OK, _HTTP_ERROR, _REFUSED, _RESET, _TIMEOUT, _OTHER = range(len(OUTCOMES))
_OUTCOME_CODES = {name: code for code, name in enumerate(OUTCOMES)}


def percentile(values: Sequence[float], q: float) -> float:
    """
    Compute a percentile by linear interpolation between closest ranks
    (the same definition as numpy's default).

    @param values: The values; they need not be sorted.
    @param q: The percentile wanted, from 0 to 100 inclusive.
    @return: The value below which C{q} percent of C{values} fall.
    @raise ValueError: If C{values} is empty or C{q} is out of range.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q!r} is not between 0 and 100")
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return _sorted_percentile(ordered, q)


def _sorted_percentile(ordered: Sequence[float], q: float) -> float:
    """
    L{percentile} of values that are already sorted and not empty.
    """
    position = (len(ordered) - 1) * (q / 100.0)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def _latency_ms(values: Iterable[float]) -> dict[str, float | None]:
    """
    Summarize latencies given in seconds as C{p50}, C{p99} and C{max}, in
    milliseconds (rounded to the microsecond), or C{None}s if there are none.
    """
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(_sorted_percentile(ordered, 50) * 1000.0, 3),
        "p99": round(_sorted_percentile(ordered, 99) * 1000.0, 3),
        "max": round(ordered[-1] * 1000.0, 3),
    }


class _Records:
    """
    The records of a run, kept in compact parallel arrays (a long run at a
    high rate makes millions of them).

    @ivar t: Wall-clock start time of each request, from C{time.time()}.
    @ivar connect: Connect latency in seconds, NaN if it never connected.
    @ivar total: Total latency in seconds.
    @ivar outcome: Index into L{OUTCOMES}.
    @ivar kinds: For requests whose outcome is C{other}: index to kind.
    """

    def __init__(self) -> None:
        self.t = array("d")
        self.connect = array("d")
        self.total = array("d")
        self.outcome = array("B")
        self.kinds: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.t)

    def add(
        self,
        t: float,
        connect: float | None,
        total: float,
        outcome: int,
        kind: str | None = None,
    ) -> None:
        """
        Record one request.
        """
        if kind is not None:
            self.kinds[len(self.t)] = kind
        self.t.append(t)
        self.connect.append(math.nan if connect is None else connect)
        self.total.append(total)
        self.outcome.append(outcome)

    def summary(
        self,
        start: float | None = None,
        end: float | None = None,
        duration: float | None = None,
    ) -> dict[str, Any]:
        """
        Summarize the records whose start time is in [C{start}, C{end}].

        @param duration: The duration to report and to compute the rate
            with; by default C{end - start} if both are given, else the
            time from the first start to the last completion.
        """
        lo = -math.inf if start is None else start
        hi = math.inf if end is None else end
        counts = [0] * len(OUTCOMES)
        kinds: dict[str, int] = {}
        connects: list[float] = []
        totals: list[float] = []
        first = math.inf
        last = -math.inf
        t, connect, total, outcome = self.t, self.connect, self.total, self.outcome
        for i in range(len(t)):
            ti = t[i]
            if not lo <= ti <= hi:
                continue
            code = outcome[i]
            counts[code] += 1
            if code == _OTHER:
                kind = self.kinds.get(i, "unknown")
                kinds[kind] = kinds.get(kind, 0) + 1
            c = connect[i]
            if not math.isnan(c):
                connects.append(c)
            totals.append(total[i])
            first = min(first, ti)
            last = max(last, ti + total[i])
        requests = sum(counts)
        if duration is None:
            if start is not None and end is not None:
                duration = end - start
            elif requests:
                duration = (last if end is None else end) - (first if start is None else start)
            else:
                duration = 0.0
        duration = max(duration, 0.0)
        result: dict[str, Any] = {"requests": requests}
        for name, count in zip(OUTCOMES, counts, strict=True):
            result[name] = count
        result["other_kinds"] = dict(sorted(kinds.items()))
        result["duration"] = round(duration, 6)
        result["rate"] = round(requests / duration, 3) if duration > 0 else 0.0
        result["connect_latency"] = _latency_ms(connects)
        result["total_latency"] = _latency_ms(totals)
        return result

    def write_jsonl(self, path: str) -> None:
        """
        Write the records to C{path} as JSON lines (see L{load_records}).
        """
        names = OUTCOMES
        with open(path, "w", encoding="utf-8") as f:
            write = f.write
            for i in range(len(self.t)):
                c = self.connect[i]
                code = self.outcome[i]
                line = (
                    f'{{"t": {self.t[i]!r}, '
                    f'"connect": {"null" if math.isnan(c) else repr(c)}, '
                    f'"total": {self.total[i]!r}, '
                    f'"outcome": "{names[code]}"'
                )
                if i in self.kinds:
                    line += f', "kind": {json.dumps(self.kinds[i])}'
                write(line + "}\n")


def _records_from_dicts(records: Iterable[Mapping[str, Any]]) -> _Records:
    """
    Convert record dictionaries (as from L{load_records}) to L{_Records}.

    @raise ValueError: If a record has an unknown outcome.
    """
    result = _Records()
    for record in records:
        name = record["outcome"]
        try:
            code = _OUTCOME_CODES[name]
        except KeyError:
            raise ValueError(f"unknown outcome {name!r}") from None
        kind = None
        if code == _OTHER:
            kind = str(record.get("kind") or "unknown")
        connect = record.get("connect")
        result.add(
            float(record["t"]),
            None if connect is None else float(connect),
            float(record["total"]),
            code,
            kind,
        )
    return result


def summarize(
    records: Iterable[Mapping[str, Any]],
    start: float | None = None,
    end: float | None = None,
) -> dict[str, Any]:
    """
    Summarize request records, as the command line does at the end of a run.

    Only records whose C{t} is in [C{start}, C{end}] (either bound may be
    C{None} for unbounded) are counted.

    @param records: Dictionaries with the keys C{t} (wall-clock start time,
        seconds since the epoch), C{connect} (connect latency in seconds,
        or C{None} if the connection was never established), C{total}
        (total latency in seconds), C{outcome} (one of L{OUTCOMES}) and,
        for C{other} outcomes, optionally C{kind}; as from L{load_records}.
    @param start: Earliest start time to count.
    @param end: Latest start time to count.

    @return: A dictionary with the keys C{requests} (how many were
        counted), one per outcome in L{OUTCOMES} with its count,
        C{other_kinds} (a dictionary from kind to count), C{duration}
        (seconds: C{end - start} if both are given, otherwise from the
        first counted start, or C{start}, to the last counted completion,
        or C{end}), C{rate} (C{requests / duration}, 0 if the duration is
        0), and C{connect_latency} and C{total_latency}, each a dictionary
        with the keys C{p50}, C{p99} and C{max} in milliseconds, C{None}
        when there is no value.  Connect latencies count only the requests
        that connected; total latencies count all of them.
    """
    return _records_from_dicts(records).summary(start, end)


def load_records(path: str) -> list[dict[str, Any]]:
    """
    Read the records written by C{--records}.

    @param path: The file: one JSON object per line, with the keys C{t},
        C{connect}, C{total}, C{outcome} and, for C{other} outcomes,
        C{kind}.
    @return: The records, in the order the requests completed.
    """
    result = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                result.append(json.loads(line))
    return result


# ---------------------------------------------------------------------------
# Target
