"""OneHot with run-time on/off values, and Det.

TVM's OneHot needs constant values and a constant integer depth; ONNX gives the depth as
any numeric tensor (often float) and the values as a run-time tensor. Det is missing."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelError
from . import register
from .math_ops import dtype_of


def _constant_depth(value, params) -> int:
    array = onnx_frontend.get_constant(value, params)
    if not isinstance(array, tvm.ir.GenericConst):
        raise ModelError(
            "OneHot with a depth computed at run time is not supported: expected a constant "
            "(freeze the input with --bind)"
        )
    return int(np.asarray(array.value.numpy()).reshape(-1)[0])


@register("OneHot")
class OneHot(onnx_frontend.OnnxOpConverter):
    """values[1] where the class along `axis` equals the index (negative indices count from
    depth), values[0] elsewhere, including for indices outside [-depth, depth)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        indices, values = inputs[0], inputs[2]
        depth = _constant_depth(inputs[1], params)
        rank = len(indices.ty.shape) + 1
        axis = int(attr.get("axis", -1))
        axis = axis + rank if axis < 0 else axis
        index = indices
        if dtype_of(indices) != "int64":
            index = relax.op.astype(indices, "int64")
        index = bb.emit(index)
        zero, size = relax.const(0, "int64"), relax.const(depth, "int64")
        index = relax.op.where(relax.op.less(index, zero), relax.op.add(index, size), index)
        index = bb.emit(relax.op.expand_dims(index, axis))
        classes = np.arange(depth, dtype="int64").reshape(
            [depth if i == axis else 1 for i in range(rank)]
        )
        hot = relax.op.equal(index, relax.const(classes))
        off = relax.op.take(values, relax.const(0, "int64"), axis=0)
        on = relax.op.take(values, relax.const(1, "int64"), axis=0)
        return relax.op.where(hot, on, off)
