"""Default schedule rules, applied to every kernel that no tuning record covers."""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight

from . import cpu, cpu_depthwise, cpu_row_reduction


class _GEMV(dlight.cpu.GEMV):
    """dlight's CPU GEMV rule, declining (not failing the build) where its analysis asserts:
    a reduction over several loops that reads a broadcast of its own result (ReduceLogSumExp)."""

    def apply(self, func, target, tunable):
        try:
            return super().apply(func, target, tunable)
        except AssertionError:
            return None


def default_schedules(target: tvm.target.Target) -> tvm.transform.Pass:
    """The rules for `target`'s kind, most specific first; the first rule that fits a kernel
    schedules it."""
    if target.kind.name == "llvm":
        return dlight.ApplyDefaultSchedule(
            cpu.WinogradTransform(),  # passes/winograd.py's transforms (before Injective)
            _GEMV(),  # inner-reduction GEMV (weights stored [N, K])
            cpu_depthwise.DepthwiseProject(),  # passes/fuse_depthwise_project.py's kernels
            cpu_depthwise.DepthwiseConv(),  # window-only reductions (before TiledReduction)
            cpu_row_reduction.RowReduction(),  # softmax, layer norm, RMS norm
            cpu.TiledReduction(),
            cpu.Injective(),
            dlight.cpu.Reduction(),  # row reductions RowReduction declines (short rows)
            cpu.ParallelFallback(),
        )
    if target.kind.name == "cuda":
        gpu = dlight.gpu
        return dlight.ApplyDefaultSchedule(
            gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()
        )
    raise ValueError(f"no default schedules for target kind {target.kind.name!r}")


def default_schedule(func, target: tvm.target.Target):
    """The traced schedule the default rules give the kernel `func`, or None where no rule
    applies: the tuner measures it as every kernel's baseline record."""
    for rule in default_schedules(target).rules:
        sch = rule.apply(func, target, False)
        if sch is not None:
            return sch[0] if isinstance(sch, list) else sch
    return None
