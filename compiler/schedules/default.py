"""Default schedule rules, applied to every kernel that no tuning record covers."""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight


def default_schedules(target: tvm.target.Target) -> tvm.transform.Pass:
    """The dlight rules for `target`'s kind; kernels no rule matches stay unscheduled."""
    if target.kind.name == "llvm":
        return dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction())
    if target.kind.name == "cuda":
        gpu = dlight.gpu
        return dlight.ApplyDefaultSchedule(
            gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()
        )
    raise ValueError(f"no default schedules for target kind {target.kind.name!r}")
