"""LayerNormalization with its optional outputs.

TVM's converter returns scalar placeholders for ONNX's second and third outputs (the mean and
the inverse standard deviation over the normalised axes), so a model that uses them got wrong
shapes and values. Unused, they cost nothing: dead-code elimination drops them."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from . import register


@register("LayerNormalization")
class LayerNormalization(onnx_frontend.LayerNormalization):
    """TVM's output, plus the real mean and inverse standard deviation (kept dims)."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        converted = super()._impl_v17(bb, inputs, attr, params)
        data = inputs[0]
        ndim = len(data.ty.shape)
        axis = attr.get("axis", -1)
        axis = axis + ndim if axis < 0 else axis
        axes = list(range(axis, ndim))
        epsilon = relax.const(attr.get("epsilon", 1e-05), data.ty.dtype)
        mean = bb.emit(relax.op.mean(data, axes, keepdims=True))
        centred = bb.emit(relax.op.subtract(data, mean))
        variance = bb.emit(relax.op.mean(relax.op.multiply(centred, centred), axes, keepdims=True))
        inv_std = bb.emit(relax.op.rsqrt(relax.op.add(variance, epsilon)))
        return relax.Tuple([converted.fields[0], mean, inv_std])
