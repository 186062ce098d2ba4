"""mlc's default CPU schedule for row-wise normalisations (softmax, layer norm, RMS norm), dlight
style.

Such a kernel is a chain of blocks over the same leading axes (a row): reductions over the row
(max, sum, sum of squares) and elementwise blocks between them, the last one elementwise. TVM's
dlight `cpu.Reduction` runs each row as one task, with the elementwise blocks vectorised but the
reductions as a scalar chain of dependent adds: the add latency, not the memory, bounds it
(layer norm over 768 values: 2 x 768 chained adds per row). Here each reduction first runs
lane-wise (rfactor): a vector of partial results per row, one vector operation per `lanes`
values, its lanes combined once at the end of the row. Then, as in dlight, every block is
computed inside the parallel row loop, and the elementwise blocks are vectorised.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .cpu import _extent, _fits, _spatial, run_parallel, vector_lanes

_MIN_VECTORS = 2  # rows shorter than this many vectors keep dlight's scalar reduction


class RowReduction(CPUScheduleRule):
    """Blocks sharing their leading spatial axes; reductions over one trailing axis; the last
    block elementwise."""

    @_fits
    def apply(self, sch, blocks, target):
        if len(blocks) < 2 or not _spatial(blocks[-1]):
            return None
        kinds = [b.dom_kind() for b in blocks]
        rows = min(len(k) - len(k.lstrip("S")) for k in kinds)
        if rows == 0 or len(kinds[-1]) != rows + 1 or not any(b.is_reduction() for b in blocks):
            return None  # (the last block must write whole rows: not a matmul's epilogue)
        for block, kind in zip(blocks, kinds):
            if block.is_reduction() and kind != "S" * rows + "R":
                return None  # a reduction over several axes, or not over the row
            if not block.is_reduction() and not _spatial(block):
                return None
        for block in blocks[:-1]:  # one pass over the row fewer per elementwise step inlined
            if not block.is_reduction() and len(sch.get_consumers(block.block_rv)) == 1:
                try:
                    sch.compute_inline(block.block_rv)
                except s_tir.ScheduleError:
                    pass
        lanes = vector_lanes(target)
        partials = []
        for block in blocks:
            if block.is_reduction():
                partial = _lane_partials(sch, block.block_rv, lanes)
                if partial is not None:
                    partials.append(partial)
        # Every block inside the row loop of the last one, which runs in parallel.
        last = blocks[-1].block_rv
        loops = sch.get_loops(last)
        row = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
        run_parallel(sch, row)
        for block in reversed(_children(sch)[:-1]):
            sch.compute_at(block, row, preserve_unit_loops=True)
        for block in _children(sch, row):
            if sch.get(block).name_hint in partials:
                _vectorise_partials(sch, block, row, lanes)
            elif all(i.iter_type == tirx.IterVar.DataPar for i in sch.get(block).iter_vars):
                _vectorise_row(sch, block, lanes)
        return sch


def _lane_partials(sch, block, lanes: int) -> str | None:
    """Split `block`'s reduction over the row into `lanes` partial results (rfactor); the name
    of the new partial block, or None where the row is too short or uneven for it."""
    loops = sch.get_loops(block)
    extent = _extent(sch, loops[-1])
    if not extent or extent % lanes or extent < _MIN_VECTORS * lanes:
        return None
    _, lane = sch.split(loops[-1], factors=[None, lanes])
    partial = sch.rfactor(lane, factor_axis=-1)
    sch.set_scope(partial, 0, "local")
    return sch.get(partial).name_hint


def _vectorise_partials(sch, block, row, lanes: int) -> None:
    """The lane-wise block: lanes innermost and vectorised, its initialisation hoisted out of
    the loop over vectors. (compute_at made one loop per block iterator, in their order.)"""
    loops = sch.get_loops(block)
    inner = loops[[sch.get(x).same_as(sch.get(row)) for x in loops].index(True) + 1 :]
    steps = lane = None
    for loop, it in zip(inner, sch.get(block).iter_vars):
        if it.iter_type == tirx.IterVar.CommReduce:
            steps = loop
        elif _extent(sch, loop) == lanes and int(it.dom.extent) == lanes:
            lane = loop
    sch.reorder(steps, lane)
    sch.vectorize(lane)
    init = sch.decompose_reduction(block, steps)
    sch.vectorize(sch.get_loops(init)[-1])


def _vectorise_row(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    extent = _extent(sch, loops[-1])
    if extent and extent % lanes == 0 and extent >= lanes:
        sch.vectorize(sch.split(loops[-1], factors=[None, lanes])[1])
    elif extent and 1 < extent <= lanes:
        sch.vectorize(loops[-1])


def _children(sch, loop=None) -> list:
    return list(sch.get_child_blocks(loop if loop is not None else sch.get_sblock("root")))
