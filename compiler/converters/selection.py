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

I64 = "int64"


def _static_shape(x, op: str) -> list[int]:
    shape = x.ty.shape
    if shape is None or not all(hasattr(d, "value") for d in shape):
        raise ModelError(f"{op} needs its input's shape at compile time, got {shape}")
    return [int(d.value) for d in shape]


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


def _kept_slots(bb, keep, n_total: int):
    """(slots, count) for a bool vector: each kept element's prefix-sum position (the count,
    i.e. the spare slot, for the others) and the number kept."""
    ones = relax.op.astype(keep, I64)
    count = bb.emit(relax.op.sum(ones))
    position = relax.op.subtract(relax.op.cumsum(ones, axis=0), relax.const(1, I64))
    return bb.emit(relax.op.where(keep, position, count)), count


def nonzero(bb, x):
    """ONNX NonZero: [rank, count] int64 coordinates of the non-zero elements, in C order."""
    shape = _static_shape(x, "NonZero") or [1]
    size = int(np.prod(shape))
    flat = relax.op.reshape(x, (size,))
    if str(x.ty.dtype) == "bool":  # LLVM cannot compare i1 vectors with fcmp, which TVM emits
        keep = bb.emit(flat)
    else:
        keep = bb.emit(relax.op.not_equal(flat, relax.const(0, str(x.ty.dtype))))
    slots, count = _kept_slots(bb, keep, size)
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
        length = _static_shape(data, "Compress")[axis]
        cond_len = _static_shape(condition, "Compress")[0]
        keep = relax.op.astype(condition, "bool")
        if cond_len > length:
            keep = relax.op.strided_slice(keep, [0], [0], [length])
        elif cond_len < length:  # ONNX: a shorter condition keeps nothing past its end
            pad = relax.const(np.zeros(length - cond_len, dtype=bool))
            keep = relax.op.concat([keep, pad], axis=0)
        positions = nonzero(bb, bb.emit(keep))
        return relax.op.take(data, relax.op.reshape(positions, (-1,)), axis=axis)
