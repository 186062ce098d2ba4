"""Normalisations where TVM's importer falls short.

RMSNormalization: TVM's rms_norm fails to build when every axis is normalised.
LpNormalization: missing in TVM's importer.
LayerNormalization: TVM's converter returns scalar placeholders for ONNX's second and third
outputs (the mean and the inverse standard deviation over the normalised axes), so a model that
uses them got wrong shapes and values. Unused, they cost nothing: dead-code elimination drops
them."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelError
from . import register
from .math_ops import dtype_of


@register("RMSNormalization")
class RMSNormalization(onnx_frontend.OnnxOpConverter):
    """x / sqrt(mean(x^2 over axis..last) + epsilon), in float32 when stash_type is 1, cast
    back to x's dtype, times scale."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, scale = inputs[0], inputs[1]
        dtype = dtype_of(x)
        ndim = len(x.ty.shape)
        axis = int(attr.get("axis", -1))
        axis = axis + ndim if axis < 0 else axis
        compute = "float32" if attr.get("stash_type", 1) == 1 else dtype
        data = x if compute == dtype else bb.emit(relax.op.astype(x, compute))
        square_mean = relax.op.mean(relax.op.multiply(data, data), list(range(axis, ndim)), True)
        epsilon = relax.const(float(attr.get("epsilon", 1e-5)), compute)
        rms = bb.emit(relax.op.sqrt(relax.op.add(square_mean, epsilon)))
        normalized = relax.op.divide(data, rms)
        if compute != dtype:
            normalized = relax.op.astype(normalized, dtype)
        return relax.op.multiply(normalized, scale)


@register("LpNormalization")
class LpNormalization(onnx_frontend.OnnxOpConverter):
    """x / ||x||_p along one axis (p is 1 or 2); 0 where the norm is 0."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        p, axis = int(attr.get("p", 2)), int(attr.get("axis", -1))
        if p == 1:
            norm = relax.op.sum(relax.op.abs(x), [axis], keepdims=True)
        elif p == 2:
            norm = relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), [axis], keepdims=True))
        else:
            raise ModelError(f"LpNormalization p={p} is not supported: expected 1 or 2")
        norm = bb.emit(norm)
        zero, one = relax.const(0, dtype_of(x)), relax.const(1, dtype_of(x))
        safe = relax.op.where(relax.op.equal(norm, zero), one, norm)
        return relax.op.divide(x, safe)


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
