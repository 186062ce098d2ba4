"""Activation converters whose TVM versions block graph optimisation.

TVM imports Clip as opaque `call_tir(maximum/minimum)` kernels, which layout conversion cannot
see through: an NHWC conv followed by Relu6 got a transpose on either side. With constant
bounds (every Relu6 exported from PyTorch), Clip becomes maximum/minimum operators that layout
conversion and fusion understand."""

from __future__ import annotations

import math

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from . import register
from .static import constant_array


def _bound(value, default: float) -> float | None:
    """A constant scalar bound as a float (NaN means unbounded, as onnxruntime reads it);
    None when the bound is computed at run time."""
    if value is None:
        return default
    array = constant_array(value)
    if array is None:
        return None
    bound = float(array.reshape(-1)[0])
    return default if math.isnan(bound) else bound


@register("Clip")
class Clip(onnx_frontend.Clip):
    """Clip with constant float bounds → maximum/minimum; anything else as TVM imports it."""

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        x = inputs[0]
        lo = _bound(inputs[1] if len(inputs) > 1 else None, -math.inf)
        hi = _bound(inputs[2] if len(inputs) > 2 else None, math.inf)
        if lo is None or hi is None or "float" not in str(x.ty.dtype):
            return super()._impl_v13(bb, inputs, attr, params)
        return _clip(x, lo, hi)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        return cls._impl_v13(bb, inputs, attr, params)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        if "float" not in str(x.ty.dtype):
            return super()._impl_v1(bb, inputs, attr, params)
        return _clip(x, float(attr.get("min", -math.inf)), float(attr.get("max", math.inf)))


def _clip(x, lo: float, hi: float):
    # maximum/minimum with scalar constants rather than relax.op.clip: binary operators have
    # layout inference, clip has none (it would be wrapped in transposes).
    dtype = x.ty.dtype
    if lo > -math.inf:
        x = relax.op.maximum(x, relax.const(lo, dtype))
    if hi < math.inf:
        x = relax.op.minimum(x, relax.const(hi, dtype))
    return x
