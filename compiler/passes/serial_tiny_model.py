"""SerialTinyModel: a CPU model with little work in all runs every kernel on the calling thread.

A parallel loop costs a launch and a join on the thread pool, 1.5-2 us on 2 threads, and a worker
the OS has descheduled stalls the join for much longer. `schedules/cpu.py`'s `run_parallel` keeps
single kernels below `cost.SERIAL_WORK` serial; this pass makes the same call for the whole
model: when all its kernel calls together do less than `MODEL_SERIAL_WORK`, every kernel is
marked (`SERIAL_ATTR`) and no rule parallelises it.

Measured on the example convnet at batch 4 (2.6 M, 2 threads, whole-model calls interleaved):
34-39 us median with every kernel parallel, 32-36 us with the kernels below SERIAL_WORK serial,
25.5 us with all of them serial; on a noisy host the parallel builds took 72-76 us, the serial
one 25.8 us. A model with a symbolic dim is never marked: its size is not known until it runs.
"""

from __future__ import annotations

import tvm
from tvm import tirx

from ..schedules.cost import SERIAL_ATTR, call_counts, work

# Flops + argument bytes of every kernel call together: about 50 us of one core.
MODEL_SERIAL_WORK = 5_000_000


@tvm.transform.module_pass(opt_level=0, name="SerialTinyModel")
class SerialTinyModel:
    """Mark every TIR kernel serial when the whole model is tiny (the pipeline runs it for
    CPU targets only)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        kernels = [(gv, f) for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
        if not kernels:
            return mod
        counts = call_counts(mod)
        total = 0.0
        for gv, func in kernels:
            amount = work(func)
            if amount is None:
                return mod  # a symbolic dim or an uncountable loop nest: size unknown
            total += amount * counts.get(gv.name_hint, 1)
        if total >= MODEL_SERIAL_WORK:
            return mod
        mod = mod.clone()
        for gv, func in kernels:
            mod.update_func(gv, func.with_attr(SERIAL_ATTR, True))
        return mod
