"""Data-dependent selection: NonZero, Compress, Unique, lowered to plain Relax tensor ops.

TVM lowers its nonzero and unique ops to `relax.run.nonzero` / `relax.run.unique`, Python
functions that a bundle's runtime does not have. Here the element count is a reduction, it
becomes a symbolic dim (tensor_to_shape + match_cast, both in the C++ runtime), and the kept
elements are scattered to their prefix-sum positions in a buffer one slot longer (the spare
slot takes everything that is dropped) and sliced.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, tirx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register
from .static import static_shape

I64 = "int64"


def _symbolic_count(bb, count, name: str):
    """A tirx.Var bound to the value of the int64 scalar tensor `count`."""
    shape = bb.emit(relax.op.tensor_to_shape(relax.op.reshape(count, (1,))))
    n = tirx.Var(name, I64)
    bb.match_cast(shape, relax.ShapeType([n]))
    return n


def _compact(bb, slots, updates, n):
    """out[..., slots[j]] = updates[..., j], in a buffer of n + 1 slots, sliced to n.
    Elements to drop must have slot n."""
    lead = [int(d) for d in updates.ty.shape][:-1]
    buffer = relax.op.zeros(relax.ShapeExpr([*lead, n + 1]), str(updates.ty.dtype))
    index = relax.op.broadcast_to(slots, relax.ShapeExpr(list(updates.ty.shape)))
    full = bb.emit(relax.op.scatter_elements(buffer, index, updates, axis=len(lead)))
    return bb.emit(relax.op.strided_slice(full, [len(lead)], [0], [n]))


def _kept_slots(bb, keep):
    """(slots, count) for a bool vector: each kept element's prefix-sum position (the count,
    i.e. the spare slot, for the others) and the number kept."""
    ones = relax.op.astype(keep, I64)
    count = bb.emit(relax.op.sum(ones))
    position = relax.op.subtract(relax.op.cumsum(ones, axis=0), relax.const(1, I64))
    return bb.emit(relax.op.where(keep, position, count)), count


def nonzero(bb, x):
    """ONNX NonZero: [rank, count] int64 coordinates of the non-zero elements, in C order."""
    dims = getattr(getattr(x.ty, "shape", None), "values", None)
    if dims is not None and any("nonzero_count" in str(d) for d in dims):
        raise ModelError(
            "NonZero of a tensor whose size an earlier NonZero decided (a detector's kept "
            f"boxes, shape {list(dims)}) is not supported: mlc sizes NonZero's work at compile "
            "time, and this size is known only at run time",
            hint="export the model without its post-processing (NMS) and run that on the host",
        )
    shape = static_shape(x, "NonZero") or [1]
    size = int(np.prod(shape))
    flat = relax.op.reshape(x, (size,))
    if str(x.ty.dtype) == "bool":  # LLVM cannot compare i1 vectors with fcmp, which TVM emits
        keep = bb.emit(flat)
    else:
        keep = bb.emit(relax.op.not_equal(flat, relax.const(0, str(x.ty.dtype))))
    slots, count = _kept_slots(bb, keep)
    n = _symbolic_count(bb, count, "nonzero_count")
    coords = np.stack(np.unravel_index(np.arange(size), shape)).astype(np.int64)
    return _compact(bb, slots, relax.const(coords, I64), n)


@register("NonZero")
class NonZero(OnnxOpConverter):
    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        return nonzero(bb, inputs[0])


@register("Compress")
class Compress(OnnxOpConverter):
    """Slices along axis (or elements of the flattened input) where condition is true."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        data, condition = inputs
        axis = attr.get("axis")
        if axis is None:
            data = bb.emit(relax.op.reshape(data, (-1,)))
            axis = 0
        length = static_shape(data, "Compress")[axis]
        cond_len = static_shape(condition, "Compress")[0]
        keep = relax.op.astype(condition, "bool")
        if cond_len > length:
            keep = relax.op.strided_slice(keep, [0], [0], [length])
        elif cond_len < length:  # ONNX: a shorter condition keeps nothing past its end
            pad = relax.const(np.zeros(length - cond_len, dtype=bool))
            keep = relax.op.concat([keep, pad], axis=0)
        positions = nonzero(bb, bb.emit(keep))
        return relax.op.take(data, relax.op.reshape(positions, (-1,)), axis=axis)


def _row_order(bb, rows):
    """(equal, less) as int32 0/1 [m, m] for the rows of [m, k]: less[j, i] when row j comes
    before row i lexicographically. (0/1 ints, not bools: LLVM rejects TVM's fused i1 vector
    logic.)"""
    i32 = "int32"
    if int(rows.ty.shape[1]) == 1:  # single elements (also: dlight fails on extent-1 sums)
        a = relax.op.reshape(rows, (-1, 1))
        b = relax.op.reshape(rows, (1, -1))
        equal, less = relax.op.equal(a, b), relax.op.less(a, b)
        return bb.emit(relax.op.astype(equal, i32)), bb.emit(relax.op.astype(less, i32))
    a = relax.op.expand_dims(rows, 1)  # row j at [j, :, :]
    b = relax.op.expand_dims(rows, 0)  # row i at [:, i, :]
    differs = bb.emit(relax.op.astype(relax.op.not_equal(a, b), i32))
    n_diff = bb.emit(relax.op.cumsum(differs, axis=2))
    equal = relax.op.equal(relax.op.max(n_diff, axis=[2]), relax.const(0, i32))
    first_diff = relax.op.multiply(
        differs, relax.op.astype(relax.op.equal(n_diff, relax.const(1, i32)), i32)
    )
    decides = relax.op.multiply(first_diff, relax.op.astype(relax.op.less(a, b), i32))
    less = relax.op.sum(decides, axis=[2])
    return bb.emit(relax.op.astype(equal, i32)), bb.emit(less)


@register("Unique")
class Unique(OnnxOpConverter):
    """Unique elements (or slices along axis): sorted or in order of first occurrence, with
    first-occurrence indices, inverse indices and counts."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        x = inputs[0]
        shape = static_shape(x, "Unique")
        axis = attr.get("axis")
        if axis is None:
            x = bb.emit(relax.op.reshape(x, (int(np.prod(shape)),)))
            axis, shape = 0, [int(np.prod(shape))]
        axis %= len(shape)
        m = shape[axis]
        moved = bb.emit(
            relax.op.permute_dims(x, [axis, *(a for a in range(len(shape)) if a != axis)])
        )
        rows = bb.emit(relax.op.reshape(moved, (m, -1)))
        equal, less = _row_order(bb, rows)
        first = bb.emit(relax.op.argmax(equal, axis=0))
        is_first = bb.emit(relax.op.equal(first, relax.const(np.arange(m), I64)))
        if attr.get("sorted", 1):
            first_rows = relax.op.expand_dims(relax.op.astype(is_first, "int32"), 1)
            rank = relax.op.sum(relax.op.multiply(less, first_rows), axis=[0])
            rank = relax.op.astype(rank, I64)
        else:
            order = relax.op.cumsum(relax.op.astype(is_first, I64), axis=0)
            rank = relax.op.take(relax.op.subtract(order, relax.const(1, I64)), first, axis=0)
        rank = bb.emit(rank)
        slots, count = _kept_slots(bb, is_first)
        slots = bb.emit(relax.op.where(is_first, rank, count))
        n = _symbolic_count(bb, count, "unique_count")
        indices = _compact(bb, slots, relax.const(np.arange(m), I64), n)
        y = bb.emit(relax.op.take(x, indices, axis=axis))
        counts = relax.op.scatter_elements(
            relax.op.zeros(relax.ShapeExpr([n]), I64), rank, relax.op.ones((m,), I64), 0, "add"
        )
        return relax.Tuple([y, indices, rank, bb.emit(counts)])
