"""Default schedule rules, applied to every kernel that no tuning record covers."""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight

from . import cpu


def default_schedules(target: tvm.target.Target) -> tvm.transform.Pass:
    """The rules for `target`'s kind, most specific first; the first rule that fits a kernel
    schedules it."""
    if target.kind.name == "llvm":
        return dlight.ApplyDefaultSchedule(
            dlight.cpu.GEMV(),  # inner-reduction GEMV (weights stored [N, K])
            cpu.TiledReduction(),
            cpu.Injective(),
            dlight.cpu.Reduction(),  # softmax, layer norm
            cpu.ParallelFallback(),
        )
    if target.kind.name == "cuda":
        gpu = dlight.gpu
        return dlight.ApplyDefaultSchedule(
            gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()
        )
    raise ValueError(f"no default schedules for target kind {target.kind.name!r}")
