"""Seconds per kernel from the Relax VM's per-call instrument. Standard library only: it is
used both in the compiler (the in-model check of tuning records) and next to a loaded bundle
(benchmarks), where importing TVM's compiler library would clash with the bundle's runtime."""

from __future__ import annotations

import time
from collections import defaultdict


class KernelTimes:
    """Seconds and calls per called function (kernel or VM builtin), from the Relax VM's per-call
    instrument (`set_instrument`: the VM's; each call costs a Python callback, a few us)."""

    def __init__(self, set_instrument):
        self.reset()
        self.started = 0.0
        set_instrument(self._instrument)

    def reset(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def _instrument(self, _func, name, before_run, _ret, *_args):
        now = time.perf_counter()
        if before_run:
            self.started = now
        else:
            self.totals[str(name)] += now - self.started
            self.counts[str(name)] += 1
        return 0  # VMInstrumentReturnKind.NO_OP
