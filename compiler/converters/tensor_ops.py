"""OneHot with run-time on/off values, and Det.

TVM's OneHot needs constant values and a constant integer depth; ONNX gives the depth as
any numeric tensor (often float) and the values as a run-time tensor. Det is missing."""

from __future__ import annotations

import numpy as np
from tvm import relax, te
from tvm.relax.frontend.onnx import onnx_frontend

from . import register
from .math_ops import dtype_of
from .static import required_int


@register("OneHot")
class OneHot(onnx_frontend.OnnxOpConverter):
    """values[1] where the class along `axis` equals the index (negative indices count from
    depth), values[0] elsewhere, including for indices outside [-depth, depth)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        indices, values = inputs[0], inputs[2]
        depth = required_int(inputs[1], "OneHot", "depth")
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


def _det_kernel(data, out, work, n):
    """Gaussian elimination with partial pivoting, one matrix per parallel iteration: the
    product of the pivots, negated for each row swap."""
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    dtype = work.dtype
    batch = out.shape[0]
    with IRBuilder() as ib:
        data, out, work = (T.buffer_proxy(b) for b in (data, out, work))
        with T.parallel(0, batch) as b:
            base = b * n * n
            with T.serial(0, n * n) as i:
                work[base + i] = data[base + i].astype(dtype)
            det = T.buffer_proxy(T.decl_buffer([1], dtype, scope="local"))
            pick = T.buffer_proxy(T.decl_buffer([1], "int64", scope="local"))
            held = T.buffer_proxy(T.decl_buffer([1], dtype, scope="local"))
            det[0] = T.Cast(dtype, 1)
            with T.serial(0, n) as k:
                pick[0] = T.Cast("int64", k)
                with T.serial(k + 1, n) as i:
                    col = base + k
                    with T.If(T.abs(work[col + i * n]) > T.abs(work[col + pick[0] * n])):
                        with T.Then():
                            pick[0] = T.Cast("int64", i)
                with T.If(pick[0] != k):
                    with T.Then():
                        det[0] = -det[0]
                        with T.serial(0, n) as j:
                            # Loads are expressions, evaluated where used: keep a copy.
                            held[0] = work[base + k * n + j]
                            work[base + k * n + j] = work[base + pick[0] * n + j]
                            work[base + pick[0] * n + j] = held[0]
                pivot = work[base + k * n + k]
                det[0] = det[0] * pivot
                with T.If(pivot != T.Cast(dtype, 0)):
                    with T.Then():
                        with T.serial(k + 1, n) as i:
                            factor = work[base + i * n + k] / pivot
                            with T.serial(k + 1, n) as j:
                                row = base + i * n + j
                                work[row] = work[row] - factor * work[base + k * n + j]
            out[b] = det[0].astype(out.dtype)
        return ib.get()


@register("Det")
class Det(onnx_frontend.OnnxOpConverter):
    """Determinants of the trailing square matrices (float16 computed in float32)."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        x = inputs[0]
        shape = list(x.ty.shape)
        dtype = dtype_of(x)
        work_dtype = "float32" if dtype == "float16" else dtype
        n = shape[-1]
        batch = 1
        for dim in shape[:-2]:
            batch = batch * dim
        flat = bb.emit(relax.op.reshape(x, [batch, n, n]))

        def det(data):
            return te.extern(
                [(data.shape[0],), data.shape],
                [data],
                lambda ins, outs: _det_kernel(ins[0], outs[0], outs[1], data.shape[1]),
                dtype=[dtype, work_dtype],
                name="det",
            )[0]

        result = bb.emit_te(det, flat)
        return relax.op.reshape(result, shape[:-2])
