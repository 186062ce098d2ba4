"""Tensor plumbing where TVM's converters fall short: Pad with a run-time constant value,
Split with zero-size parts, Dropout's mask output and training mode."""

from __future__ import annotations

import itertools

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from . import register
from .static import constant_array, static_shape


@register("Pad")
class Pad(onnx_frontend.Pad):
    """TVM's Pad, plus a constant_value that is only known at run time."""

    @classmethod
    def _lower_pad(cls, bb, inputs, attr, params, allowed_modes):
        value = inputs[2] if len(inputs) > 2 else None
        mode = attr.get("mode", b"constant").decode()
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
class Dropout(OnnxOpConverter):
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
