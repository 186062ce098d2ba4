"""Interleaved latency measurement and a per-kernel profile of a loaded bundle."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any


def interleaved(
    fns: dict[str, Callable[[], Any]], seconds: float, min_rounds: int = 3, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Median and min latency (ms) of each function, timed in alternating rounds.

    Each round calls every function once, in an order that rotates from round to round, so a
    burst of load from other processes on the machine falls on all of them alike and none
    always runs right after another one warmed or flushed the caches. Warm-up: `warmup` calls
    each, or one for a function that takes more than a tenth of `seconds`.
    """
    for fn in fns.values():
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            if time.perf_counter() - t0 > seconds / 10:
                break
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < seconds:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
        if rounds >= 100_000:
            break
    return {
        name: {
            "median_ms": statistics.median(ts) * 1e3,
            "min_ms": min(ts) * 1e3,
            "runs": len(ts),
        }
        for name, ts in times.items()
    }


def kernel_profile(model, inputs: dict, runs: int = 10) -> list[dict[str, Any]]:
    """Time per VM call (kernels and runtime builtins) over `runs` calls of a freshly loaded
    model, slowest first: [{name, ms (per model call), calls (per model call), share}].

    Uses the Relax VM's instrument hook, which brackets every call instruction; each bracket
    costs a Python callback (a few microseconds), so tiny kernels read a little slow.
    """
    vm = model._thread_state().vm  # the loader's VM for this thread (private, benchmarks only)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    started = [0.0]

    def instrument(_func, name, before_run, _ret, *_args):
        now = time.perf_counter()
        if before_run:
            started[0] = now
        else:
            totals[str(name)] += now - started[0]
            counts[str(name)] += 1
        return 0  # VMInstrumentReturnKind.NO_OP

    model(**inputs)  # warm-up, uninstrumented
    vm["set_instrument"](instrument)
    for _ in range(runs):
        model(**inputs)
    total = sum(totals.values()) or 1.0
    rows = [
        {
            "name": name,
            "ms": seconds * 1e3 / runs,
            "calls": counts[name] // runs,
            "share": seconds / total,
        }
        for name, seconds in totals.items()
    ]
    return sorted(rows, key=lambda row: -row["ms"])
