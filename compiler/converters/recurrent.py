"""Recurrent-state sequence ops (opset 27): LinearAttention and CausalConvWithState.

LinearAttention's recurrence is unrolled over the (static) sequence length: each step is a
handful of broadcast multiplies on the [B, H, d_k, d_v] state, computed in float32 as the
spec's reference does. CausalConvWithState is a depthwise Conv1d over the past state
concatenated with the input.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register, text_attr
from .static import static_dim

op = relax.op
MAX_STEPS = 1024
_RULES = {"linear": (False, False), "gated": (True, False), "delta": (False, True)}
_RULES["gated_delta"] = (True, True)


def _split_heads(x, heads: int):
    """[B, T, H*D] → [B, H, T, D] in float32."""
    b, t, hd = (static_dim(d, "LinearAttention") for d in x.ty.shape.values)
    x = op.reshape(x, [b, t, heads, hd // heads])
    return op.astype(op.permute_dims(x, [0, 2, 1, 3]), "float32")


@register("LinearAttention")
class LinearAttention(OnnxOpConverter):
    @classmethod
    def _impl_v27(cls, bb, inputs, attr, params):
        q, k, v, past, decay, beta = list(inputs) + [None] * (6 - len(inputs))
        rule = text_attr(attr, "update_rule", "gated_delta")
        if rule not in _RULES:
            raise ModelError(f"LinearAttention update_rule {rule!r} is not one of {list(_RULES)}")
        gated, delta = _RULES[rule]
        hq, hkv = attr.get("q_num_heads"), attr.get("kv_num_heads")
        if not hq or not hkv or hq % hkv:
            raise ModelError(f"LinearAttention needs q_num_heads ({hq}) a multiple of kv ({hkv})")
        b, t, qhd = (static_dim(d, "LinearAttention") for d in q.ty.shape.values)
        if t > MAX_STEPS:
            raise ModelError(f"LinearAttention over {t} steps: mlc unrolls 1 to {MAX_STEPS}")
        dk = qhd // hq
        dv = static_dim(v.ty.shape.values[2], "LinearAttention") // hkv
        q4 = bb.emit(_split_heads(q, hq))
        k4 = bb.emit(_split_heads(k, hkv))
        v4 = bb.emit(_split_heads(v, hkv))
        g4 = _per_step(bb, decay, hkv) if gated else None
        beta4 = _per_step(bb, beta, None) if delta else None
        if past is not None:
            state = bb.emit(op.astype(past, "float32"))
        else:
            state = relax.const(np.zeros((b, hkv, dk, dv), np.float32))
        scale = attr.get("scale", 0.0) or 1.0 / np.sqrt(dk)
        scale = relax.const(np.float32(scale))
        outs = []
        for step in range(t):
            at = relax.const(step, "int64")
            k_t, v_t = op.take(k4, at, axis=2), op.take(v4, at, axis=2)
            if gated:
                state = op.multiply(state, op.expand_dims(op.exp(op.take(g4, at, axis=2)), [-1]))
            if delta:
                recalled = op.sum(op.multiply(state, op.expand_dims(k_t, [-1])), axis=[2])
                v_t = op.multiply(op.take(beta4, at, axis=2), op.subtract(v_t, recalled))
            outer = op.multiply(op.expand_dims(k_t, [-1]), op.expand_dims(v_t, [-2]))
            state = bb.emit(op.add(state, outer))
            read = state if hq == hkv else op.repeat(state, hq // hkv, axis=1)
            q_t = op.expand_dims(op.take(q4, at, axis=2), [-1])
            outs.append(bb.emit(op.sum(op.multiply(q_t, read), axis=[2], keepdims=True)))
        y = op.multiply(op.concat(outs, axis=2) if t > 1 else outs[0], scale)
        y = op.reshape(op.permute_dims(y, [0, 2, 1, 3]), [b, t, hq * dv])
        y = bb.emit(op.astype(y, q.ty.dtype))
        present = op.astype(state, past.ty.dtype if past is not None else q.ty.dtype)
        return relax.Tuple([y, bb.emit(present)])


def _per_step(bb, x, heads):
    """decay [B, T, H] or [B, T, H*d_k] and beta [B, T, H or 1] → [B, H, T, 1 or d_k]."""
    if x is None:
        raise ModelError("LinearAttention's update_rule needs its decay/beta input")
    b, t, last = (static_dim(d, "LinearAttention") for d in x.ty.shape.values)
    if heads is None or last == heads:
        x = op.reshape(x, [b, t, last, 1])
    else:
        x = op.reshape(x, [b, t, heads, last // heads])
    return bb.emit(op.astype(op.permute_dims(x, [0, 2, 1, 3]), "float32"))


@register("CausalConvWithState")
class CausalConvWithState(OnnxOpConverter):
    @classmethod
    def _impl_v27(cls, bb, inputs, attr, params):
        x, weight, bias, past = list(inputs) + [None] * (4 - len(inputs))
        act = text_attr(attr, "activation", "none")
        if act not in ("none", "silu", "swish"):
            raise ModelError(f"CausalConvWithState activation {act!r} is not none/silu/swish")
        batch, channels, _length = x.ty.shape.values
        k = static_dim(weight.ty.shape.values[2], "CausalConvWithState")
        if past is None:
            shape = [*(static_dim(d, "CausalConvWithState") for d in (batch, channels)), k - 1]
            past = relax.const(np.zeros(shape, str(x.ty.dtype)), str(x.ty.dtype))
        padded = bb.emit(op.concat([past, x], axis=2)) if k > 1 else x
        # float32 accumulation, rounded once to the input dtype (as the reference does)
        f32 = [bb.emit(op.astype(t, "float32")) for t in (padded, weight)]
        if k == 1:  # a per-channel scale (a 1-long reduction trips TVM's GEMV rule)
            y = op.multiply(f32[0], op.reshape(f32[1], [1, -1, 1]))
        else:
            y = op.nn.conv1d(*f32, groups=static_dim(channels, "CausalConvWithState"))
        if bias is not None:
            y = op.add(y, op.reshape(bb.emit(op.astype(bias, "float32")), [1, -1, 1]))
        y = op.astype(y, x.ty.dtype)
        if act != "none":
            y32 = op.astype(y, "float32")
            y = op.astype(op.multiply(y32, op.sigmoid(y32)), x.ty.dtype)
        length = static_dim(padded.ty.shape.values[2], "CausalConvWithState")
        present = op.strided_slice(padded, axes=[2], begin=[length - (k - 1)], end=[length])
        return relax.Tuple([bb.emit(y), bb.emit(present)])
