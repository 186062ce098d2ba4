"""mlc's default CPU schedule rules, in dlight's ScheduleRule style.

TVM's dlight has CPU rules only for GEMV and reductions; unscheduled TIR runs on one thread with
scalar code. These rules cover the rest:

- `TiledReduction`: any kernel with one multiply-accumulate style reduction (matmul, dense,
  batch-matmul, conv, depthwise conv, pooling). A register tile of `rows x vector` accumulators
  with the reduction loops outside it, the vector axis on the output's contiguous dimension,
  the epilogue (bias, activation) fused into the write-back, the outer tiles in parallel.
- `Injective`: elementwise, broadcast and layout kernels: inlined into one loop nest,
  vectorised and parallel.
- `ParallelFallback`: whatever no rule matched at least runs its leading spatial loops on all
  threads.

A rule that does not fit a kernel returns None (the next rule is tried); it never fails the build.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.analysis.common_analysis import (
    collect_vars_used_in_prim_expr as _vars_in,
)
from tvm.s_tir.dlight.base import try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target, codegen

# Accumulators kept in registers: 16 vector registers on AVX2/NEON, a few left for operands.
_MAX_ACCUMULATORS = 12
_ROW_TILES = (4, 6, 7, 3, 5, 2)
_STREAM_WIDTHS = (32, 25, 24, 20, 16, 8, 5, 4, 2, 1)


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """SIMD lanes of `dtype_bits`-wide elements on `target`."""
    bits = 128
    if "x86" in str(target.attrs.get("mtriple", "x86_64")):
        if codegen.llvm_cpu_has_features(["avx512f"], target):
            bits = 512
        elif codegen.llvm_cpu_has_features(["avx"], target):
            bits = 256
    return max(1, bits // dtype_bits)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _fits(rule_apply):
    """A schedule primitive that refuses the kernel means the rule does not apply."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        try:
            return rule_apply(self, func, target, tunable)
        except (s_tir.ScheduleError, RuntimeError, ValueError):
            return None

    return apply


def schedule_injective(sch: s_tir.Schedule, block, lanes: int) -> None:
    """Vectorise the innermost loop of `block` where it splits evenly; the rest run parallel."""
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    extent = _extent(sch, inner)
    outer = list(loops[:-1])
    if extent is not None and extent % lanes == 0 and extent > lanes:
        head, vec = sch.split(inner, factors=[None, lanes])
        outer.append(head)
        sch.vectorize(vec)
    elif extent is not None and extent <= lanes and extent > 1:
        sch.vectorize(inner)
    else:
        outer.append(inner)
    if outer:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


class Injective(CPUScheduleRule):
    """Kernels without reductions: fused into as few loop nests as inlining allows."""

    @_fits
    def apply(self, func, target, _tunable):
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if not blocks or not all(b.is_injective() for b in blocks):
            return None
        blocks = try_inline(sch, blocks)
        lanes = vector_lanes(target)
        for block in blocks:
            schedule_injective(sch, block.block_rv, lanes)
        return sch


class TiledReduction(CPUScheduleRule):
    """One reduction (matmul, conv, pooling, ...) with injective producers and epilogue."""

    @_fits
    def apply(self, func, target, _tunable):
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if not blocks:
            return None
        reductions = [i for i, b in enumerate(blocks) if b.is_reduction()]
        if len(reductions) != 1 or not all(
            b.is_injective() for i, b in enumerate(blocks) if i != reductions[0]
        ):
            return None
        main = blocks[reductions[0]]
        kinds = main.dom_kind()
        if "S" not in kinds or "R" not in kinds or set(kinds) - {"S", "R"}:
            return None
        if kinds.rindex("S") > kinds.index("R"):
            return None  # spatial loops inside the reduction: not a layout this rule knows
        lanes = vector_lanes(target)
        plan = _plan_tiles(sch, main, lanes)
        if plan is None:
            return None
        leftover = _tile(sch, main, plan, blocks[reductions[0] + 1 :])
        for block in blocks[: reductions[0]] + leftover:
            schedule_injective(sch, block.block_rv, lanes)
        return sch


def _plan_tiles(sch, main, lanes: int):
    """(vector axis, vector tile, row axis, row tile, lanes) for the reduction block `main`."""
    spatial = [i for i, it in enumerate(main.iters) if it.kind == "S"]
    extents = [it.dom if isinstance(it.dom, int) else _int(it.dom) for it in main.iters]
    if any(extents[i] is None for i in spatial):
        return None  # symbolic extents: left to the fallback
    vec = spatial[-1]
    vec_tile = _vector_tile(extents[vec], lanes)
    if vec_tile is None:
        return None
    # Rows: a spatial axis the vector operand does not depend on, so one vector load feeds
    # `rows` multiply-adds (A's row in a matmul, the output pixel in an NHWC conv).
    vector_operand_vars = _vars_of_reads_using(sch, main, main.iters[vec].var)
    row, row_tile = None, 1
    for i in reversed(spatial[:-1]):
        if extents[i] > 1 and main.iters[i].var not in vector_operand_vars:
            row = i
            break
    if row is not None:
        budget = max(1, _MAX_ACCUMULATORS // max(1, vec_tile // lanes))
        row_tile = next((t for t in _ROW_TILES if extents[row] % t == 0 and t <= budget), 1)
        if row_tile == 1:
            row = None
    if row is None:
        # No reuse across rows (GEMV, pooling): each reduction step streams a long contiguous
        # run of the operand (what the prefetcher and the TLB need) into accumulators in L1.
        vec_tile = _vector_tile(extents[vec], lanes, widths=_STREAM_WIDTHS)
    return vec, vec_tile, row, row_tile, lanes


def _int(expr) -> int | None:
    return int(expr) if isinstance(expr, tirx.IntImm) else None


def _vector_tile(extent: int, lanes: int, widths=(2, 1)) -> int | None:
    for tile in (w * lanes for w in widths):
        if extent % tile == 0:
            return tile
    if extent < lanes:
        return extent
    return next((t for t in range(lanes - 1, 1, -1) if extent % t == 0), None)


def _vars_of_reads_using(sch, main, var) -> set:
    """Iteration variables used by the reads whose last index uses `var`."""
    block = sch.get(main.block_rv)
    used: set = set()
    for region in block.reads:
        last = region.region[-1].min
        names = _vars_in(last)
        if var in names:
            for r in region.region:
                used |= _vars_in(r.min)
    return used


def _tile(sch, main, plan, epilogue) -> list:
    vec, vec_tile, row, row_tile, lanes = plan
    loops = sch.get_loops(main.block_rv)
    outer, reduce, inner = [], [], []
    vec_outer = row_outer = None
    for i, (loop, it) in enumerate(zip(loops, main.iters)):
        if it.kind == "R":
            reduce.append(loop)
        elif i == vec:
            vec_outer, vec_inner = sch.split(loop, factors=[None, vec_tile])
        elif i == row:
            row_outer, row_inner = sch.split(loop, factors=[None, row_tile])
        else:
            outer.append(loop)
    # Vector tiles outside row tiles: one panel of the vector operand is reused for all rows.
    outer += [vec_outer] + ([row_outer] if row is not None else [])
    inner = ([row_inner] if row is not None else []) + [vec_inner]
    sch.reorder(*outer, *reduce, *inner)
    if row is None and vec_tile > 2 * lanes:
        inner = list(sch.split(vec_inner, factors=[None, lanes]))

    # Accumulate in a register tile; the epilogue (bias, activation) runs on the write-back.
    # Fold the epilogue into its last block, then that block into the write-back. (Inlining
    # each block backwards instead mis-compiles an epilogue that reads two intermediates,
    # like GELU's x * erf(x).)
    leftover = []
    for block in epilogue[:-1]:
        try:
            sch.compute_inline(block.block_rv)
        except s_tir.ScheduleError:
            leftover.append(block)
    write_back = sch.cache_write(main.block_rv, 0, "local")
    if epilogue and not leftover:
        try:
            sch.reverse_compute_inline(epilogue[-1].block_rv)
        except s_tir.ScheduleError:
            leftover.append(epilogue[-1])
    elif epilogue:
        leftover.append(epilogue[-1])
    fused = sch.fuse(*outer)
    sch.reverse_compute_at(write_back, fused)
    sch.parallel(fused)
    sch.vectorize(inner[-1])
    if row is not None:
        sch.unroll(inner[0])
    init = sch.decompose_reduction(main.block_rv, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(write_back)[-1])
    return leftover


class ParallelFallback(CPUScheduleRule):
    """Kernels no other rule took: each block's leading spatial loops run on all threads."""

    @_fits
    def apply(self, func, target, _tunable):
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if not blocks:
            return None
        changed = False
        for block in blocks:
            leading = []
            for it in block.iters:
                if it.kind != "S":
                    break
                leading.append(it.loop_rv)
            if leading:
                sch.parallel(sch.fuse(*leading) if len(leading) > 1 else leading[0])
                changed = True
        return sch if changed else None
