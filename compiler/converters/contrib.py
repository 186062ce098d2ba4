"""onnxruntime's contrib operators (domain com.microsoft) that real exports carry.

They appear where a model was saved after onnxruntime's graph optimiser (FusedConv, FusedGemm,
FusedMatMul, QuickGelu, BiasAdd) or its transformers optimiser (SkipLayerNormalization, Gelu,
FastGelu, BiasGelu, SimplifiedLayerNormalization, ...). Each is an ordinary op with an epilogue,
written out here in Relax ops so the fusion and schedules see the usual patterns. TVM's own
converters of Gelu, FastGelu, BiasGelu, EmbedLayerNormalization and Attention are used for
those names in this domain (`TVM_CONTRIB_OPS`).
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelError
from . import MS_DOMAIN, register
from .math_ops import dtype_of

# TVM's importer has converters for these com.microsoft ops (it ignores the domain).
TVM_CONTRIB_OPS = frozenset({"Gelu", "FastGelu", "BiasGelu", "EmbedLayerNormalization"})


def _scalar(value: float, like) -> relax.Expr:
    return relax.const(value, dtype_of(like))


def _activation(x, attr) -> relax.Expr:
    """FusedConv/FusedGemm's `activation` attribute applied to x."""
    name = attr.get("activation", b"")
    name = name.decode() if isinstance(name, bytes) else str(name)
    params = list(attr.get("activation_params", []))
    if not name:
        return x
    if name == "Relu":
        return relax.op.nn.relu(x)
    if name == "Sigmoid":
        return relax.op.sigmoid(x)
    if name == "Tanh":
        return relax.op.tanh(x)
    if name == "LeakyRelu":
        return relax.op.nn.leakyrelu(x, params[0] if params else 0.01)
    if name == "Clip":
        low, high = ([*params, float("-inf"), float("inf")])[:2] if params else (-3.4e38, 3.4e38)
        return relax.op.minimum(relax.op.maximum(x, _scalar(low, x)), _scalar(high, x))
    if name == "HardSigmoid":
        alpha, beta = ([*params, 0.2, 0.5])[:2]
        y = relax.op.add(relax.op.multiply(x, _scalar(alpha, x)), _scalar(beta, x))
        return relax.op.clip(y, 0, 1)
    raise ModelError(
        f"com.microsoft fused activation {name!r} is not supported: expected Relu, Sigmoid, "
        "Tanh, LeakyRelu, Clip or HardSigmoid"
    )


# Not subclasses of TVM's Conv and Gemm: the importer would pick their newer _impl_vN over
# this _impl_v1 by the model's opset, and drop the activation.
@register("FusedConv", MS_DOMAIN)
class FusedConv(onnx_frontend.OnnxOpConverter):
    """Conv [+ Z] then an activation (onnxruntime's Conv+activation fusion)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        conv_attr = {k: v for k, v in attr.items() if k not in ("activation", "activation_params")}
        out = bb.emit(onnx_frontend.Conv._impl_v11(bb, inputs[:3], conv_attr, params))
        if len(inputs) > 3 and inputs[3] is not None:
            out = relax.op.add(out, inputs[3])
        return _activation(out, attr)


@register("FusedGemm", MS_DOMAIN)
class FusedGemm(onnx_frontend.OnnxOpConverter):
    """Gemm then an activation."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        gemm_attr = {k: v for k, v in attr.items() if k not in ("activation", "activation_params")}
        out = bb.emit(onnx_frontend.Gemm._impl_v13(bb, inputs, gemm_attr, params))
        return _activation(out, attr)


def _transpose_last(x) -> relax.Expr:
    ndim = len(x.ty.shape)
    if ndim < 2:
        raise ModelError("FusedMatMul with transA/transB needs inputs of rank 2 or more")
    axes = [*list(range(ndim - 2)), ndim - 1, ndim - 2]
    return relax.op.permute_dims(x, axes)


@register("FusedMatMul", MS_DOMAIN)
class FusedMatMul(onnx_frontend.OnnxOpConverter):
    """alpha * (A or Aᵀ) @ (B or Bᵀ), transposes over the last two axes."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if attr.get("transBatchA", 0) or attr.get("transBatchB", 0):
            raise ModelError("FusedMatMul with transBatchA/transBatchB is not supported")
        a, b = inputs[0], inputs[1]
        if attr.get("transA", 0):
            a = bb.emit(_transpose_last(a))
        if attr.get("transB", 0):
            b = bb.emit(_transpose_last(b))
        out = relax.op.matmul(a, b)
        alpha = float(attr.get("alpha", 1.0))
        return out if alpha == 1.0 else relax.op.multiply(bb.emit(out), _scalar(alpha, a))


register("TransposeMatMul", MS_DOMAIN)(type("TransposeMatMul", (FusedMatMul,), {}))


@register("QuickGelu", MS_DOMAIN)
class QuickGelu(onnx_frontend.OnnxOpConverter):
    """x * sigmoid(alpha * x), alpha 1.702 by default (CLIP's activation)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        alpha = float(attr.get("alpha", 1.702))
        return relax.op.multiply(x, relax.op.sigmoid(relax.op.multiply(x, _scalar(alpha, x))))


@register("BiasAdd", MS_DOMAIN)
class BiasAdd(onnx_frontend.OnnxOpConverter):
    """x + bias + skip."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return relax.op.add(relax.op.add(inputs[0], inputs[1]), inputs[2])


def _normalise(bb, x, gamma, beta, epsilon: float, simplified: bool):
    """(output, mean, inverse std) over the last axis, as onnxruntime's contrib norms give."""
    mean = bb.emit(relax.op.mean(x, axis=[-1], keepdims=True))
    centred = x if simplified else bb.emit(relax.op.subtract(x, mean))
    variance = relax.op.mean(relax.op.multiply(centred, centred), axis=[-1], keepdims=True)
    inv_std = bb.emit(relax.op.rsqrt(relax.op.add(variance, _scalar(epsilon, x))))
    out = relax.op.multiply(relax.op.multiply(centred, inv_std), gamma)
    if beta is not None:
        out = relax.op.add(out, beta)
    return out, mean, inv_std


@register("SkipLayerNormalization", MS_DOMAIN)
class SkipLayerNormalization(onnx_frontend.OnnxOpConverter):
    """layer_norm(input + skip [+ bias]); outputs: the result, mean, inverse std, and the sum
    (the next SkipLayerNormalization of an optimised BERT reads it). TVM's converter needs beta
    and bias and returns placeholders for the other outputs."""

    simplified = False

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        data, skip, gamma = inputs[0], inputs[1], inputs[2]
        beta = None if cls.simplified else (inputs[3] if len(inputs) > 3 else None)
        bias_at = 3 if cls.simplified else 4
        bias = inputs[bias_at] if len(inputs) > bias_at else None
        summed = relax.op.add(data, skip)
        if bias is not None:
            summed = relax.op.add(summed, bias)
        summed = bb.emit(summed)
        epsilon = float(attr.get("epsilon", 1e-12))
        out, mean, inv_std = _normalise(bb, summed, gamma, beta, epsilon, cls.simplified)
        return relax.Tuple([bb.emit(out), mean, inv_std, summed])


@register("SkipSimplifiedLayerNormalization", MS_DOMAIN)
class SkipSimplifiedLayerNormalization(SkipLayerNormalization):
    """RMS norm of input + skip [+ bias] (T5, LLaMA-style models after ORT's optimiser)."""

    simplified = True


@register("SimplifiedLayerNormalization", "", MS_DOMAIN)
class SimplifiedLayerNormalization(onnx_frontend.OnnxOpConverter):
    """x / sqrt(mean(x^2) + epsilon) * scale over the last axis (onnxruntime registers it
    in the default domain)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if int(attr.get("axis", -1)) != -1:
            raise ModelError("SimplifiedLayerNormalization over an axis other than -1")
        x = inputs[0]
        epsilon = float(attr.get("epsilon", 1e-5))
        out, _mean, inv_std = _normalise(bb, x, inputs[1], None, epsilon, True)
        return relax.Tuple([bb.emit(out), inv_std])
