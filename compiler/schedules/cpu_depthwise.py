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
    _int,
    _spatial,
    _vars_in,
    _vector_tile,
    schedule_injective,
    vector_lanes,
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
    tile, vector = plan
    *outer, column, channel = [it.loop_rv for it in main.iters if it.kind == "S"]
    window = [it.loop_rv for it in main.iters if it.kind == "R"]
    column_outer, column_inner = sch.split(column, factors=[None, tile])
    channel_outer, channel_inner = sch.split(channel, factors=[None, vector])
    sch.reorder(*outer, column_outer, channel_outer, *window, column_inner, channel_inner)

    write_back, leftover = write_back_with_epilogue(sch, main, epilogue)
    sch.reverse_compute_at(write_back, channel_outer)

    rows = outer or [column_outer]  # a 1-D window (N=1, W, C) has no row loop left
    sch.parallel(sch.fuse(*rows) if len(rows) > 1 else rows[0])
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
