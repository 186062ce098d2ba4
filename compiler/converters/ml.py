"""Converters for the ai.onnx.ml domain (numeric tensors only: TVM has no string tensors)."""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import ML_DOMAIN, register, text_attr


def _const(value, dtype: str) -> relax.Expr:
    dtype = str(dtype)
    return relax.const(np.asarray(value).astype(dtype), dtype)


@register("Binarizer", ML_DOMAIN)
class Binarizer(OnnxOpConverter):
    """1 where x > threshold, else 0, in x's dtype."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = x.ty.dtype
        above = relax.op.greater(x, _const(attr.get("threshold", 0.0), dtype))
        return relax.op.astype(above, dtype)


@register("ArrayFeatureExtractor", ML_DOMAIN)
class ArrayFeatureExtractor(OnnxOpConverter):
    """Select entries of the last axis by index."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x, indices = inputs
        ndim = x.ty.ndim
        flat = relax.op.reshape(indices, (-1,))
        return relax.op.take(x, flat, axis=ndim - 1 if ndim > 0 else 0)


@register("Scaler", ML_DOMAIN)
class Scaler(OnnxOpConverter):
    """(x - offset) * scale, in float32."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = relax.op.astype(inputs[0], "float32")
        offset = _const(attr.get("offset", (0.0,)), "float32")
        scale = _const(attr.get("scale", (1.0,)), "float32")
        return relax.op.multiply(relax.op.subtract(x, offset), scale)


@register("Normalizer", ML_DOMAIN)
class Normalizer(OnnxOpConverter):
    """Each row divided by its MAX, L1 or L2 norm."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = relax.op.astype(inputs[0], "float32")
        norm = text_attr(attr, "norm", "MAX")
        axis = [x.ty.ndim - 1] if x.ty.ndim else None
        if norm == "MAX":
            denom = relax.op.max(x, axis=axis, keepdims=True)
        elif norm == "L1":
            denom = relax.op.sum(relax.op.abs(x), axis=axis, keepdims=True)
        elif norm == "L2":
            denom = relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), axis=axis, keepdims=True))
        else:
            raise ModelError(f"Normalizer norm {norm!r} is not supported: expected MAX, L1 or L2")
        return relax.op.divide(x, denom)


@register("LabelEncoder", ML_DOMAIN)
class LabelEncoder(OnnxOpConverter):
    """A lookup table from numeric keys to numeric values (string keys are not supported)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        keys, values, default = _label_tables(attr)
        x = inputs[0]
        out = relax.op.full_like(x, _const(default, values.dtype.name), values.dtype.name)
        for key, value in zip(keys, values):  # tables in models are small
            hit = relax.op.equal(x, _const(key, x.ty.dtype))
            out = relax.op.where(hit, _const(value, values.dtype.name), out)
        return out


def _label_tables(attr) -> tuple[np.ndarray, np.ndarray, object]:
    from onnx import numpy_helper

    def pick(prefix: str):
        for suffix, dtype in (("int64s", np.int64), ("floats", np.float32)):
            if f"{prefix}_{suffix}" in attr:
                return np.asarray(attr[f"{prefix}_{suffix}"], dtype=dtype)
        if f"{prefix}_tensor" in attr:
            return numpy_helper.to_array(attr[f"{prefix}_tensor"])
        if f"{prefix}_strings" in attr:
            raise ModelError("LabelEncoder with string keys or values is not supported")
        return None

    keys, values = pick("keys"), pick("values")
    if keys is None or values is None or keys.dtype.kind in "OSU" or values.dtype.kind in "OSU":
        raise ModelError("LabelEncoder with string keys or values is not supported")
    if "default_tensor" in attr:
        default = numpy_helper.to_array(attr["default_tensor"]).reshape(-1)[0]
    else:
        default = attr.get("default_int64", -1) if values.dtype.kind in "iu" else -0.0
        default = attr.get("default_float", default) if values.dtype.kind == "f" else default
    return keys, values, default
