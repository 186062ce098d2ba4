"""mlc's default CPU schedule for depthwise convolutions (and pooling windows), dlight style.

A depthwise conv reduces only over its window (kh, kw): every output channel reads the same
channel of the input and of the weight. `TiledReduction` treats it like a matmul (channel tiles
outermost, the weight slice packed, the padded input materialised), which leaves it 5-10x slower
than it could be. Here:

- the pad producer is inlined into the conv's read (no separate pass over the input);
- output rows run in parallel, so a task reads whole pixels (all channels), not 32-byte strips;
- per row: column tile / channel vector / window (unrolled) / columns (unrolled) / lanes, i.e.
  a register tile of up to 8 columns x 1 vector, each weight vector loaded once per tile;
- the epilogue (bias, clip) is fused into the write-back of the register tile.

Measured on MobileNetV2's depthwise kernels (znver3, 2 threads) the alternatives lost: the pad
computed per row or per register tile into a buffer (1.3-2x slower), two vectors per tile
(register spills), channel tiles outside the column tiles, and one fused parallel loop over
row x column x channel tiles (2-3x slower).
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .cpu import (
    _fits,
    _fuse_epilogue,
    _int,
    _plan_tiles,
    _spatial,
    _tile,
    _vars_in,
    _vector_tile,
    cores,
    fitting_lanes,
    run_parallel,
    schedule_injective,
    vector_lanes,
    vector_registers,
    write_back_with_epilogue,
)

# Columns per register tile, most preferred first (7 measured slightly ahead of 8 on 56 and 112
# wide images; 8 accumulators + operands fit AVX2's 16 registers either way).
_COLUMN_TILES = (7, 6, 5, 4, 8, 3, 2)
_MAX_UNROLLED_WINDOW = 32  # window positions unrolled into straight-line code


class DepthwiseConv(CPUScheduleRule):
    """A reduction over a spatial window only (depthwise conv, pooling) whose channel axis is
    read unchanged by every operand, with injective producers (padding) and epilogue."""

    @_fits
    def apply(self, sch, blocks, target):
        reductions = [i for i, b in enumerate(blocks) if b.is_reduction()]
        if len(reductions) != 1:
            return None
        index = reductions[0]
        if not all(_spatial(b) for i, b in enumerate(blocks) if i != index):
            return None
        main = blocks[index]
        lanes = vector_lanes(target)
        plan = _plan(sch, main, lanes)
        if plan is None:
            return None
        kept = _inline_producers(sch, blocks[:index])
        leftover = _schedule_window(sch, main, blocks[index + 1 :], plan, lanes)
        for block in kept + leftover:
            schedule_injective(sch, block.block_rv, lanes)
        return sch


class DepthwiseProject(CPUScheduleRule):
    """A depthwise conv and the 1x1 conv that reads its output, in one kernel
    (passes/fuse_depthwise_project.py). The 1x1 conv is tiled as `TiledReduction` tiles it,
    image rows as its parallel tasks; each task first computes the depthwise rows it reads
    (register-tiled as `DepthwiseConv` does), into a buffer of one row that stays in L1."""

    @_fits
    def apply(self, sch, blocks, target):
        reductions = [i for i, b in enumerate(blocks) if b.is_reduction()]
        if len(reductions) != 2 or not all(
            _spatial(b) for i, b in enumerate(blocks) if i not in reductions
        ):
            return None
        first, second = reductions
        window, conv = blocks[first], blocks[second]
        lanes = vector_lanes(target)
        window_plan = _plan(sch, window, lanes)
        kinds = conv.dom_kind()
        if window_plan is None or not kinds.startswith("S") or kinds.strip("S") != "R":
            return None
        conv_plan = _plan_tiles(sch, conv, lanes, vector_registers(target))
        if conv_plan is None:
            return None
        kept = _inline_producers(sch, blocks[:first])
        # The depthwise epilogue (bias, clip) as one block: it writes what the 1x1 conv reads.
        middle = blocks[first + 1 : second]
        unfused = _fuse_epilogue(sch, window, middle)
        leftover, split = _tile(
            sch, conv, conv_plan, blocks[second + 1 :], cores(target), rows_outer=True
        )
        vec, vec_tile, row, row_tile, _ = conv_plan
        tiles = {vec: vec_tile, row: row_tile}
        epilogue = middle[-1:]
        if unfused or any(_int_dom(conv.iters[i]) != tiles[i] for i in split & {vec, row}):
            # Tasks that split a row of the 1x1 conv's output would each need the whole row
            # of depthwise output: computed separately, as two kernels would.
            leftover += _schedule_window(sch, window, epilogue, window_plan, lanes)
        else:
            task = sch.get_loops(conv.block_rv)[0]
            for block in (*epilogue, window):
                sch.compute_at(block.block_rv, task)
            loops = sch.get_loops(window.block_rv)
            reduce = sum(1 for it in window.iters if it.kind == "R")
            column, channel = loops[-reduce - 2 : -reduce]
            window_loops = (column, channel, loops[-reduce:])
            leftover += _tile_window(sch, window, epilogue, window_plan, lanes, window_loops)
        for block in kept + unfused + leftover:
            schedule_injective(sch, block.block_rv, lanes)
        return sch


def _plan(sch, main, lanes: int) -> tuple[int, int] | None:
    """(column tile, channel vector) for `main`, or None where it is not a window reduction."""
    kinds = main.dom_kind()
    spatial = kinds.count("S")
    if spatial < 2 or kinds != "S" * spatial + "R" * (len(kinds) - spatial):
        return None
    if not 1 <= len(kinds) - spatial <= 2:
        return None
    iters = main.iters
    columns, channels = (_int_dom(it) for it in iters[spatial - 2 : spatial])
    if columns is None or channels is None:
        return None
    if not _is_window(sch.get(main.block_rv), iters, spatial):
        return None
    lanes = fitting_lanes(channels, lanes)
    vector = lanes if channels % lanes == 0 else _vector_tile(channels, lanes, widths=(1,))
    if vector is None:
        return None
    tile = next((t for t in _COLUMN_TILES if columns % t == 0), 1)
    return tile, vector


def _int_dom(it) -> int | None:
    return it.dom if isinstance(it.dom, int) else _int(it.dom)


def _is_window(block, iters, spatial: int) -> bool:
    """Every operand reads the channel (the innermost spatial axis) as its own last index, and
    each reduction variable moves a window over a spatial index of some operand (h * s + kh)."""
    channel = iters[spatial - 1].var
    reduce_vars = {it.var for it in iters[spatial:]}
    spatial_vars = {it.var for it in iters[: spatial - 1]}
    operands = [r for r in block.reads if not r.source.same_as(block.writes[0].source)]
    if not operands:
        return False
    windowed: set = set()
    for region in operands:
        last = region.region[-1]
        if not last.min.same_as(channel) or _int(last.extent) != 1:
            return False
        for dim in region.region[:-1]:
            used = _vars_in(dim.min)
            if used & spatial_vars:
                windowed |= used & reduce_vars
    return windowed == reduce_vars


def _inline_producers(sch, producers) -> list:
    """Inline padding into the window reads; what does not inline is returned."""
    kept = []
    for block in producers:
        try:
            sch.compute_inline(block.block_rv)
        except s_tir.ScheduleError:
            kept.append(block)
    return kept


def _schedule_window(sch, main, epilogue, plan, lanes: int) -> list:
    """Tile, parallelise and vectorise `main`, fusing `epilogue` into its write-back; returns
    the epilogue blocks that could not be fused."""
    *outer, column, channel = [it.loop_rv for it in main.iters if it.kind == "S"]
    window = [it.loop_rv for it in main.iters if it.kind == "R"]
    return _tile_window(sch, main, epilogue, plan, lanes, (column, channel, window), outer)


def _tile_window(sch, main, epilogue, plan, lanes: int, loops, rows=None) -> list:
    """Register-tile `main`'s (column, channel, window) `loops` with the epilogue fused into
    the write-back; `rows` (the loops outside them) run in parallel, or the column tiles where
    there are none, or nothing if `rows` is None. Returns the epilogue blocks not fused."""
    tile, vector = plan
    column, channel, window = loops
    column_outer, column_inner = sch.split(column, factors=[None, tile])
    channel_outer, channel_inner = sch.split(channel, factors=[None, vector])
    sch.reorder(column_outer, channel_outer, *window, column_inner, channel_inner)

    write_back, leftover = write_back_with_epilogue(sch, main, epilogue)
    sch.reverse_compute_at(write_back, channel_outer)

    if rows is not None:
        rows = rows or [column_outer]  # a 1-D window (N=1, W, C) has no row loop left
        run_parallel(sch, sch.fuse(*rows) if len(rows) > 1 else rows[0])
    sch.vectorize(channel_inner)
    sch.unroll(column_inner)
    _unroll_window(sch, window)
    init = sch.decompose_reduction(main.block_rv, window[0])
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(write_back)[-1])
    return leftover


def _unroll_window(sch, window) -> None:
    """Unroll the window loops from the innermost out while the unrolled code stays small."""
    positions = 1
    for loop in reversed(window):
        extent = _int(sch.get(loop).extent)
        if extent is None or positions * extent > _MAX_UNROLLED_WINDOW:
            return
        positions *= extent
        sch.unroll(loop)
