"""ONNX Attention (opsets 23-25): scaled dot-product attention with masks, KV cache, GQA; and
RotaryEmbedding (opset 23).

TVM's "Attention" converter is the com.microsoft contrib op (it needs `num_heads`); this is
the standard one. Sequence lengths must be static: causal and sliding-window masks are built
at compile time (per batch entry from `nonpad_kv_seqlen` at run time).
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import MS_DOMAIN, register
from .static import static_dim

op = relax.op
NEG_INF = float("-inf")


@register("Attention", "", MS_DOMAIN)
class Attention(OnnxOpConverter):
    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        if "num_heads" in attr:  # the com.microsoft contrib op of the same name: TVM's
            from tvm.relax.frontend.onnx.onnx_frontend import Attention as ContribAttention

            return ContribAttention.get_converter(1)(bb, inputs, attr, params)
        inputs = list(inputs) + [None] * (7 - len(inputs))
        q, k, v, mask, past_k, past_v, nonpad = inputs[:7]
        rank = q.ty.ndim
        if rank == 3:
            q = _heads(bb, q, attr.get("q_num_heads"))
            k = _heads(bb, k, attr.get("kv_num_heads"))
            v = _heads(bb, v, attr.get("kv_num_heads"))
        dtype = q.ty.dtype
        q_len, head = (static_dim(d, "Attention") for d in q.ty.shape.values[2:])
        scale = attr.get("scale", 1.0 / np.sqrt(head))
        s = relax.const(np.sqrt(scale), dtype)
        if past_k is not None:
            k = bb.emit(op.concat([past_k, k], axis=2))
            v = bb.emit(op.concat([past_v, v], axis=2))
        present_k, present_v = k, v
        past_len = static_dim(past_k.ty.shape.values[2], "Attention") if past_k is not None else 0
        kv_len = static_dim(k.ty.shape.values[2], "Attention")
        bias = _bias(bb, attr, mask, nonpad, (q_len, kv_len, past_len, past_k is None), dtype)
        q_heads, kv_heads = (static_dim(t.ty.shape.values[1], "Attention") for t in (q, k))
        if q_heads != kv_heads:  # grouped-query attention: each KV head serves a group
            k = bb.emit(op.repeat(k, q_heads // kv_heads, axis=1))
            v = bb.emit(op.repeat(v, q_heads // kv_heads, axis=1))
        qk = bb.emit(op.matmul(op.multiply(q, s), op.permute_dims(op.multiply(k, s), [0, 1, 3, 2])))
        if attr.get("softcap", 0.0) > 0:
            cap = relax.const(attr["softcap"], dtype)
            qk = bb.emit(op.multiply(op.tanh(op.divide(qk, cap)), cap))
        qk_out = qk
        if bias is not None:
            qk = bb.emit(op.add(qk, bias))
        mode = attr.get("qk_matmul_output_mode", 0)
        if mode == 2:
            qk_out = qk
        probs = _softmax(bb, qk, bias, attr.get("softmax_precision"), dtype)
        if mode == 3:
            qk_out = probs
        y = bb.emit(op.matmul(probs, v))
        if rank == 3:
            y = bb.emit(op.permute_dims(y, [0, 2, 1, 3]))
            y = op.reshape(y, [*y.ty.shape.values[:2], -1])
        outs = [y, present_k, present_v, qk_out][: attr["tvm_custom"]["num_outputs"]]
        return outs[0] if len(outs) == 1 else relax.Tuple(outs)


def _heads(bb, x, heads):
    """[B, S, H*D] → [B, H, S, D]."""
    if heads is None:
        raise ModelError("Attention with 3-D inputs needs q_num_heads and kv_num_heads")
    b, seq, hidden = x.ty.shape.values
    x = op.reshape(x, [b, seq, heads, static_dim(hidden, "Attention") // heads])
    return bb.emit(op.permute_dims(x, [0, 2, 1, 3]))


def _bias(bb, attr, mask, nonpad, lens, dtype):
    """The additive bias (0 or -inf) from attn_mask, causal/window masks and padding."""
    q_len, kv_len, past_len, no_cache = lens
    bias = None
    if mask is not None:
        mask = _pad_mask(mask, kv_len)
        if mask.ty.dtype == "bool":
            mask = op.where(mask, relax.const(0.0, dtype), relax.const(NEG_INF, dtype))
        bias = mask
    left, right = attr.get("left_window_size", -1), attr.get("right_window_size", -1)
    if attr.get("is_causal", 0) or left >= 0 or right >= 0:
        per_batch = nonpad is not None and no_cache
        if per_batch:  # frontier j <= i + nonpad[b] - q_len, per batch entry
            shift = bb.emit(op.subtract(nonpad, relax.const(q_len, nonpad.ty.dtype)))
            shift = op.reshape(shift, [-1, 1, 1])
            diff = bb.normalize(
                op.add(relax.const(_diff(q_len, kv_len, 0), nonpad.ty.dtype), shift)
            )
        else:
            diff = relax.const(_diff(q_len, kv_len, past_len), "int64")
        allowed = _allowed(diff, bool(attr.get("is_causal", 0)), left, right)
        frontier = op.where(allowed, relax.const(0.0, dtype), relax.const(NEG_INF, dtype))
        if per_batch:
            frontier = op.expand_dims(frontier, [1])  # [B, 1, q, kv]
        bias = frontier if bias is None else op.add(bias, frontier)
    if nonpad is not None:
        keys = relax.const(np.arange(kv_len).reshape(1, kv_len), nonpad.ty.dtype)
        valid = op.less(keys, op.reshape(nonpad, [-1, 1]))
        pad = bb.emit(op.where(valid, relax.const(0.0, dtype), relax.const(NEG_INF, dtype)))
        pad = op.reshape(pad, [-1, 1, 1, kv_len])
        bias = pad if bias is None else op.add(bias, pad)
    return None if bias is None else bb.emit(bias)


def _diff(q_len: int, kv_len: int, offset: int) -> np.ndarray:
    """(i + offset) - j for query i and key j."""
    i = np.arange(q_len).reshape(q_len, 1)
    j = np.arange(kv_len).reshape(1, kv_len)
    return (i + offset - j).astype(np.int64)


def _allowed(diff, causal: bool, left: int, right: int):
    zero = relax.const(0, diff.ty.dtype)
    conds = []
    if causal:
        conds.append(op.greater_equal(diff, zero))
    if left >= 0:
        conds.append(op.less_equal(diff, relax.const(left, zero.ty.dtype)))
    if right >= 0:
        conds.append(op.less_equal(op.negative(diff), relax.const(right, zero.ty.dtype)))
    allowed = conds[0]
    for c in conds[1:]:
        allowed = op.logical_and(allowed, c)
    return allowed


def _pad_mask(mask, kv_len: int):
    """A mask shorter than the keys (past + new) is padded with 'masked'."""
    width = static_dim(mask.ty.shape.values[-1], "Attention")
    if width >= kv_len:
        return mask
    shape = [static_dim(d, "Attention") for d in mask.ty.shape.values[:-1]] + [kv_len - width]
    fill = np.zeros(shape, dtype=bool) if mask.ty.dtype == "bool" else np.full(shape, NEG_INF)
    return op.concat([mask, relax.const(fill.astype(mask.ty.dtype), mask.ty.dtype)], axis=-1)


def _softmax(bb, qk, bias, precision, dtype):
    """Softmax over keys; rows whose bias masks every key give zeros (not NaN)."""
    if precision is not None:
        from onnx import helper

        work = helper.tensor_dtype_to_np_dtype(precision).name
        qk = op.astype(qk, work)
    probs = op.nn.softmax(qk, axis=-1)
    if bias is not None:
        # Not max(bias) == -inf: TVM's max reduction starts from the lowest finite float.
        live = op.astype(op.greater(bias, relax.const(NEG_INF, dtype)), "int32")
        dead = op.equal(op.max(live, axis=[-1], keepdims=True), relax.const(0, "int32"))
        probs = op.where(dead, op.zeros_like(probs), probs)
    return bb.emit(op.astype(probs, dtype) if precision is not None else probs)


@register("RotaryEmbedding")
class RotaryEmbedding(OnnxOpConverter):
    """Rotates (x1, x2) pairs of each head by the cached angle of its position."""

    @classmethod
    def _impl_v23(cls, bb, inputs, attr, params):
        x, cos, sin, positions = list(inputs) + [None] * (4 - len(inputs))
        shape = x.ty.shape.values
        if len(shape) == 3:  # [B, S, H*D] → [B, S, H, D]; the caches broadcast over H
            heads = attr.get("num_heads", 0)
            if not heads:
                raise ModelError("RotaryEmbedding with 3-D input needs the num_heads attribute")
            x = bb.emit(
                op.reshape(x, [*shape[:2], heads, static_dim(shape[2], "RotaryEmbedding") // heads])
            )
            head_axis = 2
        else:  # [B, H, S, D]
            head_axis = 1
        if positions is not None:
            cos, sin = op.take(cos, positions, axis=0), op.take(sin, positions, axis=0)
        cos = bb.emit(op.expand_dims(cos, [head_axis]))
        sin = bb.emit(op.expand_dims(sin, [head_axis]))
        head = static_dim(x.ty.shape.values[3], "RotaryEmbedding")
        dim = attr.get("rotary_embedding_dim", 0) or head
        half = dim // 2
        if attr.get("interleaved", 0):
            x1 = op.strided_slice(x, axes=[3], begin=[0], end=[dim], strides=[2])
            x2 = op.strided_slice(x, axes=[3], begin=[1], end=[dim], strides=[2])
        else:
            x1 = op.strided_slice(x, axes=[3], begin=[0], end=[half])
            x2 = op.strided_slice(x, axes=[3], begin=[half], end=[dim])
        x1, x2 = bb.emit(x1), bb.emit(x2)
        real = op.subtract(op.multiply(cos, x1), op.multiply(sin, x2))
        imag = op.add(op.multiply(sin, x1), op.multiply(cos, x2))
        if attr.get("interleaved", 0):
            pairs = bb.emit(op.stack([real, imag], axis=4))
            rotated = op.reshape(pairs, [*pairs.ty.shape.values[:3], dim])
        else:
            rotated = op.concat([real, imag], axis=3)
        if dim < head:
            rotated = op.concat(
                [rotated, op.strided_slice(x, axes=[3], begin=[dim], end=[head])], 3
            )
        y = bb.emit(rotated)
        return op.reshape(y, list(shape)) if len(shape) == 3 else y
