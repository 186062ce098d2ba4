"""Ops that move data along a sequence (time) axis: ReverseSequence and TensorScatter.

Both are written as gathers: each output position computes, from its index and the per-batch
length/offset, which input element it takes, so no scatter kernel is needed.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register, text_attr
from .static import static_dim

op = relax.op


def _along(values: np.ndarray, axis: int, rank: int):
    """A constant holding `values` on `axis`, shaped to broadcast against rank `rank`."""
    shape = [1] * rank
    shape[axis] = len(values)
    return relax.const(values.astype(np.int64).reshape(shape), "int64")


def _per_batch(bb, x, axis: int, rank: int):
    """A [B] int64 tensor reshaped to broadcast along `axis` of rank `rank`."""
    shape = [1] * rank
    shape[axis] = -1
    return bb.emit(op.reshape(bb.emit(op.astype(x, "int64")), shape))


@register("ReverseSequence")
class ReverseSequence(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        data, lens = inputs[0], inputs[1]
        rank = len(data.ty.shape.values)
        batch_axis, time_axis = attr.get("batch_axis", 1), attr.get("time_axis", 0)
        steps = static_dim(data.ty.shape.values[time_axis], "ReverseSequence")
        t = _along(np.arange(steps), time_axis, rank)
        length = _per_batch(bb, lens, batch_axis, rank)
        flipped = op.subtract(op.subtract(length, relax.const(1, "int64")), t)
        index = op.where(op.less(t, length), flipped, t)
        index = bb.emit(op.broadcast_to(bb.emit(index), list(data.ty.shape.values)))
        return op.gather_elements(data, index, axis=time_axis)


@register("TensorScatter")
class TensorScatter(OnnxOpConverter):
    @classmethod
    def _impl_v24(cls, bb, inputs, attr, params):
        past, update, where = list(inputs) + [None] * (3 - len(inputs))
        mode = text_attr(attr, "mode", "linear")
        if mode not in ("linear", "circular"):
            raise ModelError(f"TensorScatter mode {mode!r} is not 'linear' or 'circular'")
        rank = len(past.ty.shape.values)
        axis = attr.get("axis", -2) % rank
        if axis == 0:
            raise ModelError("TensorScatter axis 0 is the batch axis; expected a sequence axis")
        cache_len = static_dim(past.ty.shape.values[axis], "TensorScatter")
        update_len = static_dim(update.ty.shape.values[axis], "TensorScatter")
        offset = _along(np.arange(cache_len), axis, rank)
        if where is not None:
            offset = op.subtract(offset, _per_batch(bb, where, 0, rank))
        if mode == "circular":
            offset = op.floor_mod(offset, relax.const(cache_len, "int64"))
        offset = bb.emit(offset)
        valid = op.logical_and(
            op.greater_equal(offset, relax.const(0, "int64")),
            op.less(offset, relax.const(update_len, "int64")),
        )
        index = op.clip(offset, 0, update_len - 1)
        index = bb.emit(op.broadcast_to(bb.emit(index), list(past.ty.shape.values)))
        taken = op.gather_elements(update, index, axis=axis)
        return op.where(valid, taken, past)
