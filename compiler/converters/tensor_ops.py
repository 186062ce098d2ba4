"""Tensor ops where TVM's converters fall short or are missing.

Pad with a run-time constant value; Split with zero-size parts; Dropout's mask output and
training mode; Unsqueeze with a scalar axes tensor; OneHot with run-time on/off values (TVM's
needs constant values and a constant integer depth; ONNX gives the depth as any numeric
tensor, often float); Det (missing)."""

from __future__ import annotations

import itertools

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx import onnx_frontend

from . import register, text_attr
from .math_ops import dtype_of
from .static import constant_array, required_int, static_shape


@register("Pad")
class Pad(onnx_frontend.Pad):
    """TVM's Pad, plus a constant_value that is only known at run time."""

    @classmethod
    def _lower_pad(cls, bb, inputs, attr, params, allowed_modes):
        value = inputs[2] if len(inputs) > 2 else None
        mode = text_attr(attr, "mode", "constant")
        if value is None or constant_array(value) is not None or mode != "constant":
            return super()._lower_pad(bb, inputs, attr, params, allowed_modes)
        const_inputs = [inputs[0], inputs[1], None, *list(inputs)[3:4]]
        before, after, _ = cls._parse_pads_and_axes(const_inputs, params)
        value = bb.emit(relax.op.astype(relax.op.reshape(value, ()), str(inputs[0].ty.dtype)))

        return bb.emit_te(_pad_with, inputs[0], value, before, after)


def _pad_with(data, fill, before, after):
    """topi's pad needs a compile-time fill value; this one reads a 0-d tensor."""
    shape = [d + b + a for d, b, a in zip(data.shape, before, after)]

    def element(*index):
        inside = [tirx.all(i >= b, i < b + d) for i, b, d in zip(index, before, data.shape)]
        source = [i - b for i, b in zip(index, before)]
        return tirx.if_then_else(tirx.all(*inside), data[tuple(source)], fill[()])

    return te.compute(shape, element, name="pad_with")


@register("Split")
class Split(onnx_frontend.Split):
    """TVM's Split, plus parts of size zero (relax's split needs increasing indices)."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        parts = constant_array(inputs[1]) if len(inputs) > 1 else None
        if parts is None or parts.ndim == 0 or np.all(parts > 0):
            return super()._impl_v13(bb, inputs, attr, params)
        x = inputs[0]
        axis = attr.get("axis", 0) % len(x.ty.shape)
        bounds = np.concatenate([[0], np.cumsum(parts)]).tolist()
        slices = [
            bb.emit(relax.op.strided_slice(x, [axis], [int(b)], [int(e)]))
            for b, e in itertools.pairwise(bounds)
        ]
        return relax.Tuple(slices)

    _impl_v18 = _impl_v13


def _uniform(shape: list[int], seed: int) -> np.ndarray:
    """Per-element uniform [0, 1) numbers for dropout, fixed at compile time by the seed."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@register("Dropout")
class Dropout(onnx_frontend.OnnxOpConverter):
    """Inference: identity, mask all true. Training mode (opset 12+): drop with the ratio and
    scale by 1 / (1 - ratio); the random pattern comes from the seed attribute (ONNX leaves the
    generator unspecified) and is the same on every run."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):  # Dropout-7's mask has the data's type
        if attr["tvm_custom"]["num_outputs"] < 2:
            return inputs[0]
        return relax.Tuple([inputs[0], relax.op.ones_like(inputs[0])])

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        return cls._outputs(bb, inputs[0], None, attr)

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        x = inputs[0]
        ratio = inputs[1] if len(inputs) > 1 else None
        training = inputs[2] if len(inputs) > 2 else None
        fixed = constant_array(training) if training is not None else np.array(False)
        if fixed is not None and not fixed.item():
            return cls._outputs(bb, x, None, attr)
        if ratio is None:
            ratio = relax.const(0.5, "float32")
        shape = static_shape(x, "Dropout")
        dtype = str(x.ty.dtype)
        u = relax.const(_uniform(shape, int(attr.get("seed", 0))), "float32")
        r = relax.op.astype(relax.op.reshape(ratio, ()), "float32")
        t = relax.op.reshape(training, ()) if fixed is None else relax.const(True)
        keep = bb.emit(relax.op.where(t, relax.op.greater_equal(u, r), relax.const(True)))
        one = relax.const(1.0)
        scale = relax.op.where(t, relax.op.divide(one, relax.op.subtract(one, r)), one)
        scaled = relax.op.multiply(x, relax.op.astype(scale, dtype))
        y = bb.emit(relax.op.where(keep, scaled, relax.op.zeros_like(x)))
        return cls._outputs(bb, y, keep, attr)

    @classmethod
    def _outputs(cls, bb, y, keep, attr):
        if attr["tvm_custom"]["num_outputs"] < 2:
            return y
        if keep is None:
            keep = relax.op.ones(y.ty.shape, "bool")
        return relax.Tuple([y, keep])


@register("Unsqueeze")
class Unsqueeze(onnx_frontend.Unsqueeze):
    """TVM's Unsqueeze, plus a scalar axes tensor (onnxruntime accepts one; functions such as
    AffineGrid's expansion use it)."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        axes = constant_array(inputs[1]) if len(inputs) > 1 else None
        if axes is not None and axes.ndim == 0:
            inputs = [inputs[0], relax.const(axes.reshape(1).astype("int64"), "int64")]
        return super()._impl_v13(bb, inputs, attr, params)


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
