"""Quantized linear algebra: QLinearMatMul, QLinearConv and ConvInteger.

Each accumulates in int32 on zero-point-shifted operands (exact, as ONNX specifies), then
QLinear* requantizes: float32 multiply by input_scale * weight_scale / output_scale, round half
to even, add the output zero point, saturate to the output type.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register

_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


def _shifted(bb, x, zero_point):
    """x - zero_point in int32 (zero_point absent means 0)."""
    x32 = relax.op.astype(x, "int32")
    if zero_point is None:
        return bb.emit(x32)
    return bb.emit(relax.op.subtract(x32, relax.op.astype(zero_point, "int32")))


def _per_row(bb, value, ndim_of_rows: int):
    """A 1-D per-row scale or zero point [M] as [M, 1] (a scalar stays as it is)."""
    if value is None or len(value.ty.shape) != 1 or ndim_of_rows < 2:
        return value
    return bb.emit(relax.op.reshape(value, (-1, 1)))


def _requantize(bb, acc, multiplier, y_zero_point, out_dtype: str):
    if out_dtype not in _RANGES:
        raise ModelError(
            f"quantized output type {out_dtype} is not supported: expected " + ", ".join(_RANGES)
        )
    low, high = _RANGES[out_dtype]
    scaled = relax.op.multiply(relax.op.astype(acc, "float32"), multiplier)
    rounded = relax.op.round(scaled)  # TVM's round is round half to even, like onnxruntime
    if y_zero_point is not None:
        rounded = relax.op.add(rounded, relax.op.astype(y_zero_point, "float32"))
    return bb.emit(relax.op.astype(relax.op.clip(rounded, low, high), out_dtype))


def _f32(x):
    return relax.op.astype(x, "float32")


@register("QLinearMatMul")
class QLinearMatMul(OnnxOpConverter):
    """y = saturate(round((a - a_zp) @ (b - b_zp) * a_scale * b_scale / y_scale) + y_zp)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = list(inputs)[:8]
        a_rows = len(a.ty.shape)
        a_int = _shifted(bb, a, _per_row(bb, a_zp, a_rows))
        b_int = _shifted(bb, b, b_zp)
        acc = bb.emit(relax.op.matmul(a_int, b_int, out_dtype="int32"))
        a_scale = _per_row(bb, a_scale, a_rows)
        multiplier = relax.op.divide(relax.op.multiply(_f32(a_scale), _f32(b_scale)), _f32(y_scale))
        out_dtype = str(y_zp.ty.dtype) if y_zp is not None else "uint8"
        return _requantize(bb, acc, bb.emit(multiplier), y_zp, out_dtype)


def _conv_int32(bb, x, w, x_zp, w_zp, attr):
    """The integer convolution of the zero-point-shifted operands, accumulated in int32."""
    x_int = _shifted(bb, x, x_zp)
    ndim = len(w.ty.shape)
    if w_zp is not None and len(w_zp.ty.shape) == 1:  # per output channel
        w_zp = bb.emit(relax.op.reshape(w_zp, [-1] + [1] * (ndim - 1)))
    w_int = _shifted(bb, w, w_zp)
    conv_attr = {k: v for k, v in attr.items() if k != "tvm_custom"}
    return onnx_frontend.Conv._impl_v11(bb, [x_int, w_int, None], conv_attr, None)


@register("ConvInteger")
class ConvInteger(OnnxOpConverter):
    """Conv of (x - x_zero_point) and (w - w_zero_point), int32 output."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w = inputs[0], inputs[1]
        x_zp = inputs[2] if len(inputs) > 2 else None
        w_zp = inputs[3] if len(inputs) > 3 else None
        return _conv_int32(bb, x, w, x_zp, w_zp, attr)


@register("QLinearConv")
class QLinearConv(OnnxOpConverter):
    """ConvInteger + int32 bias, requantized with per-tensor or per-channel weight scales."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = list(inputs)[:8]
        bias = inputs[8] if len(inputs) > 8 else None
        acc = bb.emit(_conv_int32(bb, x, w, x_zp, w_zp, attr))
        ndim = len(x.ty.shape)
        if bias is not None:
            acc = bb.emit(relax.op.add(acc, relax.op.reshape(bias, [1, -1] + [1] * (ndim - 2))))
        if len(w_scale.ty.shape) == 1:
            w_scale = bb.emit(relax.op.reshape(w_scale, [1, -1] + [1] * (ndim - 2)))
        multiplier = relax.op.divide(relax.op.multiply(_f32(x_scale), _f32(w_scale)), _f32(y_scale))
        out_dtype = str(y_zp.ty.dtype) if y_zp is not None else "uint8"
        return _requantize(bb, acc, bb.emit(multiplier), y_zp, out_dtype)
