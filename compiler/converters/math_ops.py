"""Elementwise math converters where TVM's differ from ONNX.

Pow with an exponent of another dtype or on integers (TVM needs one float dtype), Mod's
floor-mod on floats with infinite divisors, BitShift by negative or too-large amounts,
IsInf's detect_* attributes, EyeLike's dtype, and ops TVM lacks or cannot lower on x86
(Celu, Elu in float16, Cosh, Sinh, Swish, BitCast, CumProd)."""

from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelError
from . import register, text_attr
from .static import required_int


def dtype_of(x) -> str:
    return str(x.ty.dtype)


def _const(value, like):
    return relax.const(value, dtype_of(like))


def _is_float(x) -> bool:
    return "float" in dtype_of(x)


@register("Pow")
class Pow(onnx_frontend.Pow):
    """Float base: the exponent cast to the base's dtype. Integer base: computed in float64
    and cast back (rounded when the exponent is an integer too)."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        base, exponent = inputs[0], inputs[1]
        if _is_float(base):
            small = _small_integer_exponent(exponent)
            if small is not None:  # tanh-GELU's x ** 3, variances' x ** 2: no libm pow
                product = base
                for _ in range(small - 1):
                    product = relax.op.multiply(product, base)
                return product
            if dtype_of(exponent) == dtype_of(base):
                return super()._impl_v7(bb, inputs, attr, params)
            return relax.op.power(base, relax.op.astype(exponent, dtype_of(base)))
        wide = relax.op.power(
            relax.op.astype(base, "float64"), relax.op.astype(exponent, "float64")
        )
        if not _is_float(exponent):
            wide = relax.op.round(wide)
        return relax.op.astype(wide, dtype_of(base))


def _small_integer_exponent(exponent) -> int | None:
    """2, 3 or 4 when the exponent is that constant scalar: LLVM calls libm's pow once per
    lane otherwise (GPT-2's GELU kernels spent most of their time there)."""
    from .static import constant_array

    value = constant_array(exponent)
    if value is None or value.size != 1:
        return None
    number = float(value.reshape(-1)[0])
    return int(number) if number in (2.0, 3.0, 4.0) else None


def elu(x, alpha: float, dtype: str):
    one, zero = relax.const(1.0, dtype), relax.const(0.0, dtype)
    negative = relax.op.multiply(relax.const(alpha, dtype), relax.op.subtract(relax.op.exp(x), one))
    return relax.op.where(relax.op.greater(x, zero), x, negative)


@register("Elu")
class Elu(onnx_frontend.OnnxOpConverter):
    """x if x > 0 else alpha * (exp(x) - 1), in the input's dtype."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return elu(inputs[0], float(attr.get("alpha", 1.0)), dtype_of(inputs[0]))


@register("Celu")
class Celu(onnx_frontend.OnnxOpConverter):
    """alpha * Elu(x / alpha)."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        x = inputs[0]
        alpha = float(attr.get("alpha", 1.0))
        scaled = relax.op.divide(x, _const(alpha, x))
        return relax.op.multiply(_const(alpha, x), elu(scaled, 1.0, dtype_of(x)))


@register("Mod")
class Mod(onnx_frontend.Mod):
    """Float floor-mod as fmod plus the divisor where the signs differ: TVM's
    x - floor(x / y) * y gives NaN for an infinite divisor (numpy gives x or y)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, y = inputs[0], inputs[1]
        if attr.get("fmod", 0) or not (_is_float(x) and _is_float(y)):
            return super()._impl_v10(bb, inputs, attr, params)
        rem = bb.emit(relax.op.mod(x, y))
        zero = _const(0.0, x)
        differ = relax.op.logical_xor(relax.op.less(rem, zero), relax.op.less(y, zero))
        fix = relax.op.logical_and(relax.op.not_equal(rem, zero), differ)
        return relax.op.where(fix, relax.op.add(rem, y), rem)


@register("BitShift")
class BitShift(onnx_frontend.OnnxOpConverter):
    """A shift by a negative amount or by the bit width or more gives the sign fill alone
    (-1 for a right shift of a negative signed value, else 0)."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        x, amount = inputs[0], inputs[1]
        direction = text_attr(attr, "direction", "LEFT")
        if direction not in ("LEFT", "RIGHT"):
            raise ModelError(f"BitShift direction {direction!r} is invalid: expected LEFT or RIGHT")
        bits = tvm.DataType(dtype_of(x)).bits
        outside = relax.op.greater_equal(amount, _const(bits, amount))
        if not dtype_of(amount).startswith("uint"):
            outside = relax.op.logical_or(outside, relax.op.less(amount, _const(0, amount)))
        outside = bb.emit(outside)
        safe = relax.op.where(outside, _const(0, amount), amount)
        zero = _const(0, x)
        if direction == "LEFT":
            return relax.op.where(outside, zero, relax.op.left_shift(x, safe))
        fill = zero
        if not dtype_of(x).startswith("uint"):
            fill = relax.op.where(relax.op.less(x, zero), _const(-1, x), zero)
        return relax.op.where(outside, fill, relax.op.right_shift(x, safe))


def _exp_pair(x):
    return relax.op.exp(x), relax.op.exp(relax.op.negative(x))


@register("Cosh")
class Cosh(onnx_frontend.OnnxOpConverter):
    """(exp(x) + exp(-x)) / 2: LLVM on x86 has no cosh intrinsic for TVM to call."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        up, down = _exp_pair(inputs[0])
        return relax.op.multiply(relax.op.add(up, down), _const(0.5, inputs[0]))


@register("Sinh")
class Sinh(onnx_frontend.OnnxOpConverter):
    """(exp(x) - exp(-x)) / 2."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        up, down = _exp_pair(inputs[0])
        return relax.op.multiply(relax.op.subtract(up, down), _const(0.5, inputs[0]))


@register("IsInf")
class IsInf(onnx_frontend.OnnxOpConverter):
    """isinf, restricted to one sign by detect_negative / detect_positive."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x = inputs[0]
        negative, positive = attr.get("detect_negative", 1), attr.get("detect_positive", 1)
        inf = relax.op.isinf(x)
        if negative and positive:
            return inf
        if not (negative or positive):
            return relax.op.zeros_like(x, "bool")
        sign = relax.op.less(x, _const(0, x)) if negative else relax.op.greater(x, _const(0, x))
        return relax.op.logical_and(inf, sign)


@register("Swish")
class Swish(onnx_frontend.OnnxOpConverter):
    """x * sigmoid(alpha * x)."""

    @classmethod
    def _impl_v24(cls, bb, inputs, attr, params):
        x = inputs[0]
        alpha = float(attr.get("alpha", 1.0))
        scaled = x if alpha == 1.0 else relax.op.multiply(x, _const(alpha, x))
        return relax.op.multiply(x, relax.op.sigmoid(scaled))


@register("EyeLike")
class EyeLike(onnx_frontend.OnnxOpConverter):
    """An identity-like matrix of the input's shape, in the dtype attribute (or the input's)."""

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        dtype = dtype_of(inputs[0])
        if "dtype" in attr:
            dtype = onnx_frontend.get_type(attr["dtype"])
        # TVM's legalization of eye_like ignores its dtype: build in the input's, then cast.
        eye = relax.op.eye_like(inputs[0], int(attr.get("k", 0)), dtype_of(inputs[0]))
        return eye if dtype == dtype_of(inputs[0]) else relax.op.astype(eye, dtype)


@register("BitCast")
class BitCast(onnx_frontend.OnnxOpConverter):
    """The same bits read as another dtype of the same width."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        x = inputs[0]
        source, target = dtype_of(x), onnx_frontend.get_type(attr["to"])
        width = {d: 8 if d == "bool" else tvm.DataType(d).bits for d in (source, target)}
        if width[source] != width[target]:
            raise ModelError(
                f"BitCast from {source} to {target} is invalid: the dtypes must have the same "
                "bit width"
            )
        if source == target:
            return x
        if "bool" in (source, target):  # bool is one byte holding 0 or 1
            return relax.op.astype(x, target)

        def reinterpret(data):
            return te.compute(
                data.shape, lambda *i: tvm.tirx.reinterpret(target, data(*i)), name="bitcast"
            )

        return bb.emit_te(reinterpret, x)


@register("CumProd")
class CumProd(onnx_frontend.OnnxOpConverter):
    """Cumulative product along a constant axis; exclusive and reverse as attributes."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        x = inputs[0]
        axis = required_int(inputs[1], "CumProd", "axis")
        reverse = bool(attr.get("reverse", 0))
        if reverse:
            x = bb.emit(relax.op.flip(x, axis))
        out = bb.emit(relax.op.cumprod(x, axis, exclusive=bool(attr.get("exclusive", 0))))
        return relax.op.flip(out, axis) if reverse else out
