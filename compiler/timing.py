"""Latency measured in alternating blocks, so that two runtimes timed together see the same
machine. Standard library only (benchmarks/ uses it next to a loaded bundle too)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def interleaved_times(
    fns: dict[str, Callable[[], Any]],
    seconds: float,
    block_s: float = 1.0,
    settle_s: float = 0.25,
    min_rounds: int = 3,
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in alternating blocks.

    Each round runs every function for a block of `block_s`, in an order that rotates from
    round to round, so that load from other processes on the machine falls on all of them
    alike. Calls are not alternated one by one: after a call, onnxruntime's and TVM's worker
    threads spin for a while, and on a 2-core machine they slow whatever runs next (measured:
    a 0.76 ms mlc call took 10 ms right after onnxruntime calls). So calls that start in the
    first `settle_s` of a block are not counted; a block is one call when a call is longer.
    """
    for fn in fns.values():  # warm-up: 3 calls, or 1 when a call is slow
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            if time.perf_counter() - t0 > block_s:
                break
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < seconds:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            times[name] += _block(fns[name], block_s, settle_s)
        rounds += 1
    return times


def interleaved(fns: dict[str, Callable[[], Any]], seconds: float, **kwargs) -> dict[str, dict]:
    """Median and min latency (ms) and runs of each function (interleaved_times)."""
    return {
        name: {
            "median_ms": statistics.median(ts) * 1e3,
            "min_ms": min(ts) * 1e3,
            "runs": len(ts),
        }
        for name, ts in interleaved_times(fns, seconds, **kwargs).items()
    }


def _block(fn: Callable[[], Any], block_s: float, settle_s: float) -> list[float]:
    """Call `fn` for `block_s`; the durations of the calls that started after `settle_s`."""
    kept = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        if t0 - start >= settle_s:
            kept.append(t1 - t0)
        if t1 - start >= block_s:
            return kept or [t1 - t0]
