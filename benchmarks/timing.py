"""Interleaved latency measurement (compiler/timing.py) and a per-kernel profile of a loaded
bundle."""

from __future__ import annotations

from typing import Any

from compiler.timing import interleaved  # noqa: F401  (benchmarks/run.py's timer)


def kernel_profile(model, inputs: dict, runs: int = 10) -> list[dict[str, Any]]:
    """Time per VM call (kernels and runtime builtins) over `runs` calls of a freshly loaded
    model, slowest first: [{name, ms (per model call), calls (per model call), share}].

    Uses the Relax VM's instrument hook (compiler/kernel_times.py), which
    brackets every call instruction; tiny kernels read a little slow.
    """
    from compiler.kernel_times import KernelTimes

    vm = model._thread_state().vm  # the loader's VM for this thread (private, benchmarks only)
    model(**inputs)  # warm-up, uninstrumented
    timer = KernelTimes(vm["set_instrument"])
    for _ in range(runs):
        model(**inputs)
    totals, counts = timer.totals, timer.counts
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
