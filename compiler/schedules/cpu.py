"""mlc's default CPU schedule rules, in dlight's ScheduleRule style.

TVM's dlight has CPU rules only for GEMV and reductions; unscheduled TIR runs on one thread with
scalar code. These rules cover the rest:

- `TiledReduction`: any kernel with one multiply-accumulate style reduction (matmul, dense,
  batch-matmul, conv). A register tile of `rows x vector` accumulators with the reduction loops
  outside it, the vector axis on the output's contiguous dimension, the epilogue (bias,
  activation) fused into the write-back, the outer tiles in parallel; a weight read along the
  vector axis is packed into panels (at compile time: passes/prepack_weights.py).
  Depthwise convs and pooling windows go to `DepthwiseConv` (cpu_depthwise.py) first, softmax
  and normalisations to `RowReduction` (cpu_row_reduction.py).
- `Injective`: elementwise, broadcast and layout kernels: inlined into one loop nest,
  vectorised and parallel.
- `WinogradTransform`: the input/output transforms of passes/winograd.py: tile positions
  unrolled (their coefficients fold to constants), channels vectorised.
- `ParallelFallback`: whatever no rule matched at least runs its leading spatial loops on all
  threads.

Every rule parallelises through `run_parallel`: a kernel too small to pay for a parallel launch
(cost.too_small_for_threads) keeps its loops on the calling thread.

A rule that does not fit a kernel returns None (the next rule is tried); it never fails the build.
"""

from __future__ import annotations

import math
import os

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.analysis.common_analysis import (
    collect_vars_used_in_prim_expr as _vars_in,
)
from tvm.s_tir.dlight.base import try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.sym.analyzer import Analyzer
from tvm.target import Target, codegen

from .cost import buffer_bytes, too_small_for_threads

# Register tiles by the vector registers a target has (vector_registers): (most accumulators,
# row tiles). With 16, 12 accumulators leave room for the operands. AVX-512's 32 take
# 24 and taller tiles (on a 2-core AVX-512 Xeon, interleaved: BERT-mini 3.54 -> 3.26 ms,
# BERT-base 85.7 -> 81.5, MobileNetV2 3.69 -> 3.48, ResNet-18 10.9 -> 10.3).
_REGISTER_TILES = {16: (12, (7, 6, 5, 4, 3, 2)), 32: (24, (12, 8, 7, 6, 5, 4, 3, 2))}
_VECTOR_WIDTHS = (4, 3, 2, 1)  # vectors per register-tile row
_STREAM_WIDTHS = (32, 25, 24, 20, 16, 8, 5, 4, 2, 1)
# A GEMV's weight, packed at compile time, is one contiguous stream per tile whatever its width:
# tiles of a few vectors keep their accumulators in registers (MLP 0.191 -> 0.140 ms).
_PACKED_STREAM_WIDTHS = (5, 4, 3, 2, 1)


def vector_registers(target: Target) -> int:
    """Vector registers the register tiles may use: AVX-512's 32, else 16 (AVX2's; AArch64 has
    32 NEON registers, but its tiles have not been measured on ARM hardware)."""
    return 32 if vector_lanes(target) >= 16 else 16


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """SIMD lanes of `dtype_bits`-wide elements on `target`."""
    bits = 128
    if "x86" in str(target.attrs.get("mtriple", "x86_64")):
        if codegen.llvm_cpu_has_features(["avx512f"], target):
            bits = 512
        elif codegen.llvm_cpu_has_features(["avx"], target):
            bits = 256
    return max(1, bits // dtype_bits)


def fitting_lanes(extent: int, lanes: int) -> int:
    """`lanes`, or fewer where `extent` is not a whole number of vectors but is of narrower
    ones: 24 channels on AVX-512 as 8-lane (256-bit) vectors, not 12-lane ones."""
    narrow = lanes
    while extent % narrow and narrow > 4:
        narrow //= 2
    return lanes if extent % narrow else narrow


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def run_parallel(sch: s_tir.Schedule, loop) -> None:
    """Run `loop`'s iterations on the thread pool, unless the kernel is too small to pay for a
    parallel launch (cost.SERIAL_WORK): then it stays on the calling thread."""
    if not too_small_for_threads(sch.mod["main"]):
        sch.parallel(loop)


def _fits(rule_apply):
    """Wrap a rule body `(self, sch, blocks, target)`: it sees the kernel normalised into
    blocks, and a schedule primitive that refuses the kernel means the rule does not apply."""

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        try:
            sch = s_tir.Schedule(func)
            blocks = normalize_prim_func(sch)
            return rule_apply(self, sch, blocks, target) if blocks else None
        except (s_tir.ScheduleError, RuntimeError, ValueError):
            return None

    return apply


def _spatial(block) -> bool:
    """A block with only spatial loops. (dlight's is_injective() also holds for opaque blocks
    with no loops at all, such as an extern sort call; inlining around those breaks them.
    A reduction of length 1 counts as injective there, and inlining an epilogue into it
    adds the epilogue's operand twice.)"""
    return bool(block.iters) and block.is_injective() and not block.is_reduction()


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
        run_parallel(sch, sch.fuse(*outer) if len(outer) > 1 else outer[0])


class Injective(CPUScheduleRule):
    """Kernels without reductions: fused into as few loop nests as inlining allows."""

    @_fits
    def apply(self, sch, blocks, target):
        if not all(_spatial(b) for b in blocks):
            return None
        blocks = try_inline(sch, blocks)
        lanes = vector_lanes(target)
        for block in blocks:
            schedule_injective(sch, block.block_rv, lanes)
        return sch


class TiledReduction(CPUScheduleRule):
    """One reduction (matmul, conv, pooling, ...) with injective producers and epilogue."""

    @_fits
    def apply(self, sch, blocks, target):
        blocks = _inline_scalars(sch, blocks)
        reductions = [i for i, b in enumerate(blocks) if b.is_reduction()]
        if len(reductions) != 1 or not all(
            _spatial(b) for i, b in enumerate(blocks) if i != reductions[0]
        ):
            return None
        main = blocks[reductions[0]]
        kinds = main.dom_kind()
        if "S" not in kinds or "R" not in kinds or set(kinds) - {"S", "R"}:
            return None
        if kinds.rindex("S") > kinds.index("R"):
            return None  # spatial loops inside the reduction: not a layout this rule knows
        lanes = vector_lanes(target)
        plan = _plan_tiles(sch, main, lanes, vector_registers(target))
        if plan is None:
            return None
        producers = [b for b in blocks[: reductions[0]] if not _inline_copy(sch, b.block_rv)]
        leftover, _ = _tile(sch, main, plan, blocks[reductions[0] + 1 :], cores(target))
        for block in producers + leftover:
            schedule_injective(sch, block.block_rv, lanes)
        return sch


def _inline_scalars(sch: s_tir.Schedule, blocks):
    """Inline the blocks that compute one scalar (a dynamically quantized matmul's scale,
    activation scale x weight scale) into their readers, and normalise again: the rules know
    loop nests, and such a block, fused into the kernel, made the whole kernel fall to the
    unvectorised fallback (a quantize_dynamic BERT ran at 0.01x of onnxruntime)."""
    inlined = False
    for block in blocks:
        if block.iters or not _pure_store(sch, block.block_rv):
            continue
        try:
            sch.compute_inline(block.block_rv)
            inlined = True
        except s_tir.ScheduleError:
            pass
    return normalize_prim_func(sch) if inlined else blocks


def _pure_store(sch: s_tir.Schedule, block) -> bool:
    """A block whose body is one buffer store (an extern call, such as a sort, is not)."""
    return isinstance(sch.get(block).body, tirx.BufferStore)


def _inline_copy(sch: s_tir.Schedule, block) -> bool:
    """Inline `block` into its readers if it only copies an element (a conv's padding step
    when the padding is zero): the reduction then reads the source in place instead of a
    copy that costs a pass over it. True if it was inlined."""
    store = sch.get(block).body
    if not isinstance(store, tirx.BufferStore) or not isinstance(store.value, tvm.ir.TensorLoad):
        return False
    if not tvm_ffi.structural_equal(store.indices, store.value.indices):
        return False
    try:
        sch.compute_inline(block)
    except s_tir.ScheduleError:  # e.g. the copy is also an output of the kernel: keep it
        return False
    return True


def cores(target: Target) -> int:
    """The threads the kernels are scheduled for: the target's cores (targets.py sets them)."""
    return int(target.attrs.get("num-cores", 0) or os.cpu_count() or 1)


def _plan_tiles(sch, main, lanes: int, registers: int):
    """(vector axis, vector tile, row axis, row tile, lanes) for the reduction block `main`,
    register-tiled for a target with `registers` vector registers."""
    accumulators, row_tiles = _REGISTER_TILES[registers]
    spatial = [i for i, it in enumerate(main.iters) if it.kind == "S"]
    extents = [it.dom if isinstance(it.dom, int) else _int(it.dom) for it in main.iters]
    vec = spatial[-1]
    if extents[vec] is None:
        return None  # a symbolic innermost axis (sequence length, say): left to the fallback
    lanes = fitting_lanes(extents[vec], lanes)
    # Rows: spatial axes the vector operand does not depend on, so that one vector load feeds
    # `rows` multiply-adds (A's row in a matmul, the output pixel in an NHWC conv).
    vector_operand_vars = _vars_of_reads_using(sch, main, main.iters[vec].var)
    rows = [
        i
        for i in reversed(spatial[:-1])
        if extents[i] is not None
        and extents[i] > 1
        and main.iters[i].var not in vector_operand_vars
    ]
    # The register tile with the most accumulators that fits. Ties: one vector tile covering
    # the whole axis (the other operand is then read once: MobileNetV2's 32-channel 1x1 convs
    # 2.6x faster as 2x32 than 4x16), else 2 vectors over 1, 1 over 4 (4x16 beat 2x32 on
    # BERT-base's 768-wide matmuls by 15%).
    best = None
    for width in _VECTOR_WIDTHS:
        vec_tile = width * lanes
        if extents[vec] % vec_tile:
            continue
        whole = vec_tile == extents[vec]
        for row in rows:
            for tile in row_tiles:
                if extents[row] % tile == 0 and width * tile <= accumulators:
                    key = (width * tile, whole, width if width <= 2 else 0)
                    if best is None or key > best[0]:
                        best = (key, vec_tile, row, tile)
    if best is not None:
        return vec, best[1], best[2], best[3], lanes
    # No reuse across rows (GEMV, pooling, odd shapes): each reduction step streams a long
    # contiguous run of the operand (what the prefetcher and the TLB need) into accumulators
    # in L1; or a weight packed into one contiguous stream per tile, into registers.
    packed = _packable_weight(sch, main, main.iters[vec].var) is not None
    vec_tile = _vector_tile(
        extents[vec], lanes, widths=_PACKED_STREAM_WIDTHS if packed else _STREAM_WIDTHS
    )
    if vec_tile is None:
        return None
    return vec, vec_tile, None, 1, lanes


def _int(expr) -> int | None:
    return int(expr) if isinstance(expr, tirx.IntImm) else None


def _vector_tile(extent: int, lanes: int, widths=(2, 1)) -> int | None:
    for tile in (w * lanes for w in widths):
        if extent % tile == 0:
            return tile
    if extent < lanes:
        return extent
    return next((t for t in range(lanes - 1, 1, -1) if extent % t == 0), None)


def _vector_operands(block, var) -> list[tuple[int, object]]:
    """(read index, region) of the operands read along the vector axis `var` (their last
    index uses it), leaving out the block's own accumulator."""
    return [
        (index, region)
        for index, region in enumerate(block.reads)
        if not region.source.same_as(block.writes[0].source)
        and var in _vars_in(region.region[-1].min)
    ]


def _vars_of_reads_using(sch, main, var) -> set:
    """Iteration variables used by the operands read along the vector axis `var`."""
    used: set = set()
    for _, region in _vector_operands(sch.get(main.block_rv), var):
        for r in region.region:
            used |= _vars_in(r.min)
    return used


def _tile(sch, main, plan, epilogue, cores: int, rows_outer: bool = False) -> tuple[list, set]:
    """Tile, parallelise and vectorise `main` by `plan`: (epilogue blocks not fused into the
    write-back, indices of `main.iters` that the parallel loop splits: whole ones, or the
    outer part of the vector or row axis). `rows_outer`: image rows outermost whenever the
    weight is packed (a caller that computes the input row by row inside each task)."""
    vec, vec_tile, row, row_tile, lanes = plan
    loops = sch.get_loops(main.block_rv)
    outer, reduce, axes = [], [], {}
    vec_outer = row_outer = row_inner = None
    for i, (loop, it) in enumerate(zip(loops, main.iters)):
        if it.kind == "R":
            reduce.append(loop)
        elif i == vec:
            vec_outer, vec_inner = sch.split(loop, factors=[None, vec_tile])
        elif i == row:
            row_outer, row_inner = sch.split(loop, factors=[None, row_tile])
        else:
            outer.append(loop)
            axes[loop] = i
    axes[vec_outer] = vec
    if row is not None:
        axes[row_outer] = row
    # Vector tiles outermost where each task copies its panel of the vector operand as it runs:
    # it reuses the copy for every row tile it computes. A weight is packed at compile time
    # instead; then the other spatial axes (image rows) go outermost, so that a task reads its
    # input rows once for all its channel tiles (MobileNetV2 8.5 -> 7.4 ms in 2 of 3 A/B runs,
    # ResNet-18 3-7% faster, BERT unchanged: its outer axes are the vector tiles either way),
    # unless the weight is the larger operand (small late-stage maps): then it is the one read
    # once, each task keeping its panel in L1 for all the rows it computes.
    weight = _weight_to_pack(sch, main, vec_tile, main.iters[vec].var)
    if (
        row is not None
        and weight is not None
        and (rows_outer or not _weight_is_larger(sch, main, weight))
    ):
        outer = [*outer, vec_outer, row_outer]
    else:
        outer = [vec_outer, *outer] + ([row_outer] if row is not None else [])
    inner = ([row_inner] if row is not None else []) + [vec_inner]
    sch.reorder(*outer, *reduce, *inner)
    if vec_tile % lanes == 0 and (
        (row is None and vec_tile > 2 * lanes) or not _power_of_two(vec_tile // lanes)
    ):
        # (A row of 3 vectors as one <24 x float> makes LLVM shuffle: as 3 unrolled vectors.)
        inner = inner[:-1] + list(sch.split(vec_inner, factors=[None, lanes]))
    parallel, serial = _parallel_prefix(sch, outer, cores)

    write_back, leftover = write_back_with_epilogue(sch, main, epilogue)
    task = sch.fuse(*parallel) if len(parallel) > 1 else parallel[0]
    sch.reverse_compute_at(write_back, serial[-1] if serial else task)
    if row is not None and serial:
        _pack_vector_operand(sch, main, task, (lanes, vec_tile), main.iters[vec].var)
    elif row is None:
        _pack_weight(sch, main, vec_tile, main.iters[vec].var)
    run_parallel(sch, task)
    sch.vectorize(inner[-1])
    for loop in inner[:-1] if row is not None else []:
        sch.unroll(loop)  # the rows, and the vectors of a 3-vector row
    init = sch.decompose_reduction(main.block_rv, reduce[0])
    _vectorise_lanes(sch, sch.get_loops(init)[-1], lanes)
    _vectorise_lanes(sch, sch.get_loops(write_back)[-1], lanes)
    return leftover, {axes[loop] for loop in parallel}


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _vectorise_lanes(sch, loop, lanes: int) -> None:
    """Vectorise `loop`; one of 3 (or 5, ...) vectors' length as that many unrolled vectors."""
    extent = _extent(sch, loop)
    if extent and extent % lanes == 0 and not _power_of_two(extent // lanes):
        outer, loop = sch.split(loop, factors=[None, lanes])
        sch.unroll(outer)
    sch.vectorize(loop)


def _parallel_prefix(sch, outer: list, cores: int) -> tuple[list, list]:
    """Split the outer loops into a parallel prefix with enough tasks for `cores` threads
    and the serial rest (which reuses the packed panel)."""
    tasks, n = 1, 0
    while n < len(outer) and (n == 0 or tasks < 4 * cores):
        tasks *= _extent(sch, outer[n]) or 4 * cores  # symbolic (batch): assume enough
        n += 1
    return outer[:n], outer[n:]


def write_back_with_epilogue(sch, main, epilogue) -> tuple:
    """(write-back block, leftover blocks): `main`'s result is accumulated in a local buffer
    whose write-back applies the epilogue (bias, activation), if it can be fused into one."""
    leftover = _fuse_epilogue(sch, main, epilogue)
    write_back = sch.cache_write(main.block_rv, 0, "local")
    if epilogue and (leftover or not reverse_inline_whole(sch, epilogue[-1].block_rv)):
        leftover.append(epilogue[-1])
    return write_back, leftover


def reverse_inline_whole(sch, block) -> bool:
    """Inline `block` into the blocks that produce what it reads (`reverse_compute_inline`),
    unless it reads only part of what they write (a slice or crop): the inlined block runs
    over its producer's domain, so it would write that many elements into its smaller output,
    out of bounds (TVM 0.27 does not check). True if inlined."""
    written = sch.get(block).writes[0].source
    for producer in sch.get_producers(block):
        if any(not _same_size(w.source, written) for w in sch.get(producer).writes):
            return False
    try:
        sch.reverse_compute_inline(block)
    except s_tir.ScheduleError:
        return False
    return True


def _same_size(a, b) -> bool:
    """Whether buffers `a` and `b` provably hold as many elements (shapes may be symbolic)."""
    return Analyzer().can_prove_equal(math.prod(a.shape), math.prod(b.shape))


def _fuse_epilogue(sch, main, epilogue) -> list:
    """Fold the epilogue into its last block (to be inlined into the write-back). Inlining
    each block backwards instead mis-compiles an epilogue that reads two intermediates, like
    GELU's x * erf(x)."""
    leftover = []
    for block in epilogue[:-1]:
        try:
            sch.compute_inline(block.block_rv)
        except s_tir.ScheduleError:
            leftover.append(block)
    return leftover


def _packable_weight(sch, main, vec_var) -> tuple[int, object] | None:
    """(read index, buffer) of the operand read along the vector axis `vec_var` if it is a
    weight (a layout-free parameter, which can be repacked at compile time), else None."""
    func = sch.mod["main"]
    free = func.attrs.get("layout_free_buffers", []) if func.attrs else []
    weights = [func.params[int(i)] for i in free]
    for index, region in _vector_operands(sch.get(main.block_rv), vec_var):
        if len(region.region) >= 2:
            buffer = region.source
            return (index, buffer) if any(buffer.same_as(w) for w in weights) else None
    return None


def _weight_to_pack(sch, main, vec_tile: int, vec_var) -> int | None:
    """The read index of the weight `_pack_weight` packs for this tile, or None."""
    found = _packable_weight(sch, main, vec_var)
    if found is None:
        return None
    index, buffer = found
    last = _int(buffer.shape[-1])
    return index if last and last % vec_tile == 0 else None


def _weight_is_larger(sch, main, weight: int) -> bool:
    """Whether `main`'s weight (read index `weight`) has more bytes than its other inputs."""
    block = sch.get(main.block_rv)
    others = [
        buffer_bytes(r.source)
        for i, r in enumerate(block.reads)
        if i != weight and not r.source.same_as(block.writes[0].source)
    ]
    mine = buffer_bytes(block.reads[weight].source)
    return None not in others and mine is not None and mine > sum(others)


def _pack_weight(sch, main, vec_tile: int, vec_var) -> bool:
    """Repack the weight read along the vector axis into [N / vec_tile, ..., vec_tile], one
    contiguous stream per vector tile, in a block marked as a layout rewrite, which
    passes/prepack_weights.py runs once, at compile time. False if there is no such weight."""
    index = _weight_to_pack(sch, main, vec_tile, vec_var)
    if index is None:
        return False
    packed = sch.cache_read(main.block_rv, index, "global")
    sch.transform_layout(
        packed, ("write", 0), lambda *i: (i[-1] // vec_tile, *i[:-1], i[-1] % vec_tile)
    )
    sch.annotate(packed, "meta_schedule.layout_rewrite_preproc", True)
    return True


def _pack_vector_operand(sch, main, task, tiles: tuple[int, int], vec_var) -> None:
    """Give the operand read along the vector axis (a weight's [K, N] rows) the layout the
    register tile reads: [N / vec_tile, K, vec_tile], one contiguous stream per vector tile.
    A weight is repacked once, at compile time (`_pack_weight`). Any other operand is copied by
    each task, for its own tile, as it starts."""
    lanes, vec_tile = tiles
    if _pack_weight(sch, main, vec_tile, vec_var):
        return
    for index, region in _vector_operands(sch.get(main.block_rv), vec_var):
        if len(region.region) < 2:
            continue
        packed = sch.cache_read(main.block_rv, index, "global")
        sch.compute_at(packed, task)
        loops = sch.get_loops(packed)
        extent = _extent(sch, loops[-1])
        if extent and extent % lanes == 0:
            sch.vectorize(sch.split(loops[-1], factors=[None, lanes])[1])
        return


class ParallelFallback(CPUScheduleRule):
    """Kernels no other rule took: each block's leading spatial loops run on all threads."""

    @_fits
    def apply(self, sch, blocks, _target):
        changed = False
        for block in blocks:
            leading = []
            for it in block.iters:
                if it.kind != "S":
                    break
                leading.append(it.loop_rv)
            if leading:
                run_parallel(sch, sch.fuse(*leading) if len(leading) > 1 else leading[0])
                changed = True
        return sch if changed else None


class WinogradTransform(CPUScheduleRule):
    """The input and output transforms of passes/winograd.py (found by their block names), with
    what FuseOps fused into them: one parallel task per tile row, the positions of a tile
    (a x a in, m x m out; the block's TILE_ATTR annotation gives m) unrolled so that
    their transform coefficients fold to constants, the channels vectorised."""

    @_fits
    def apply(self, sch, blocks, target):
        from ..passes.winograd import FIRST_PASS, INPUT, OUTPUT, TILE_ATTR

        names = [sch.get(b.block_rv).name_hint for b in blocks]
        if INPUT not in names and OUTPUT not in names:
            return None
        if not all(_spatial(b) for b in blocks):
            return None
        lanes = vector_lanes(target)
        firsts = {first: transform for transform, first in FIRST_PASS.items()}
        halves = {}  # each transform's first pass, computed where the transform reads it
        for block in _inline_around_transforms(sch, blocks, {INPUT, OUTPUT, *firsts}):
            name = sch.get(block.block_rv).name_hint
            loops = sch.get_loops(block.block_rv)
            if name in firsts:
                halves[firsts[name]] = block.block_rv
            elif name == INPUT and len(loops) == 3:  # position, tile, channel
                position, tile, channel = loops
                outer, inner = _split_vector(sch, channel, lanes)
                if inner is None:  # no whole vectors: one tile's channels at a time
                    sch.reorder(tile, position, channel)
                    outer = tile
                else:
                    sch.reorder(tile, outer, position, inner)
                run_parallel(sch, tile)
                sch.unroll(position)
                self._compute_half(sch, halves.get(name), outer, lanes)
            elif name == OUTPUT and len(loops) >= 3:  # [n,] row, col, k
                *lead, row, col, channel = loops  # (a batch of 1 has no loop)
                m = int(sch.get(block.block_rv).annotations[TILE_ATTR])
                tile_row, i = sch.split(row, factors=[None, m])
                tile_col, j = sch.split(col, factors=[None, m])
                outer, inner = _split_vector(sch, channel, lanes)
                if inner is None:
                    sch.reorder(*lead, tile_row, tile_col, i, j, channel)
                    outer = tile_col
                else:
                    sch.reorder(*lead, tile_row, tile_col, outer, i, j, inner)
                run_parallel(sch, sch.fuse(*lead, tile_row) if lead else tile_row)
                sch.unroll(i)
                sch.unroll(j)
                self._compute_half(sch, halves.get(name), outer, lanes)
            else:
                schedule_injective(sch, block.block_rv, lanes)
        return sch

    @staticmethod
    def _compute_half(sch, half, loop, lanes: int) -> None:
        """The transform's first pass, computed for one vector of channels of one tile inside
        the loop over them: a few dozen vectors that stay in L1."""
        if half is None:
            return
        sch.compute_at(half, loop)
        loops = sch.get_loops(half)
        at = next(k for k, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(loop)))
        *positions, channel = loops[at + 1 :]
        for position in positions:
            sch.unroll(position)
        if _extent(sch, channel) == lanes:
            sch.vectorize(channel)


def _split_vector(sch, loop, lanes: int):
    """(outer, inner) with `inner` one vector of lanes, vectorised; (loop, None) otherwise."""
    extent = _extent(sch, loop)
    if not extent or extent % lanes:
        return loop, None
    outer, inner = sch.split(loop, factors=[None, lanes])
    sch.vectorize(inner)
    return outer, inner


def _inline_around_transforms(sch, blocks, transforms: set) -> list:
    """Inline padding, bias, activation and layout blocks into the transforms (the blocks named
    in `transforms`); never one transform into another (an output transform inlined into the
    next conv's input transform would be recomputed for each of the 16 reads of every pixel)."""
    kept = []
    for block in blocks:
        if sch.get(block.block_rv).name_hint in transforms:
            kept.append(block)
            continue
        try:
            sch.compute_inline(block.block_rv)
        except s_tir.ScheduleError:
            if not reverse_inline_whole(sch, block.block_rv):
                kept.append(block)
    return kept
