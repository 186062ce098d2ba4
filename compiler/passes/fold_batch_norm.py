"""FoldBatchNorm: fold an inference-mode batch norm into the convolution before it.

`batch_norm(conv2d(x, W) [+ b])` with constant W, b and statistics becomes
`conv2d(x, W * s) + (b - mean) * s + beta`, where `s = gamma / sqrt(var + eps)`, computed here
at compile time: one kernel instead of a convolution followed by a per-channel scale and shift.

TVM's FoldBatchnormToConv2D covers only a convolution without bias; ONNX exporters often give
the Conv a bias (the importer emits it as an `add` after the convolution), so mlc has its own.
Run FoldConstant first: the importer reshapes the bias, and the pattern wants a constant.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, rewrite_call, wildcard


def _pattern():
    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    biased = is_op("relax.add")(conv, is_const())
    stats = [is_const() for _ in range(4)]  # gamma, beta, mean, var
    bn = is_op("relax.nn.batch_norm")(conv | biased, *stats)
    return TupleGetItemPattern(bn, 0), conv, biased, bn


def _foldable(conv: relax.Call, bn: relax.Call) -> bool:
    c = conv.attrs
    return (
        not bn.attrs.training
        and int(bn.attrs.axis) == 1
        and (c.data_layout, c.kernel_layout, c.out_layout) == ("NCHW", "OIHW", "NCHW")
        and c.out_dtype in (None, conv.args[1].value.dtype)
    )


def _channel_bias(bias: relax.Expr | None, channels: int) -> np.ndarray | None:
    """The conv bias as a (C,) vector, or None if its shape is not per-channel."""
    if bias is None:
        return np.zeros(channels)
    value = bias.value.numpy()
    if value.ndim in (3, 4) and value.size == channels and value.shape[-3] == channels:
        return value.reshape(channels).astype(np.float64)
    return None


def _fold(conv, bias, bn) -> relax.Expr | None:
    weight = conv.args[1].value.numpy()
    channels = weight.shape[0]
    shift = _channel_bias(bias, channels)
    if shift is None:
        return None
    gamma, beta, mean, var = (a.value.numpy().astype(np.float64) for a in bn.args[1:])
    gamma = gamma if bn.attrs.scale else np.ones(channels)
    beta = beta if bn.attrs.center else np.zeros(channels)
    scale = gamma / np.sqrt(var + float(bn.attrs.epsilon))
    new_weight = (weight * scale.reshape(-1, 1, 1, 1)).astype(weight.dtype)
    new_bias = ((shift - mean) * scale + beta).astype(weight.dtype).reshape(1, channels, 1, 1)
    folded = relax.Call(conv.op, [conv.args[0], relax.const(new_weight)], conv.attrs)
    return relax.op.add(folded, relax.const(new_bias))


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold `batch_norm(conv2d(x, W) [+ bias])` (constants, inference mode, NCHW) into the conv."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        pattern, conv_p, biased_p, bn_p = _pattern()

        def rewriter(expr, matches):
            conv, bn = matches[conv_p], matches[bn_p]
            if not _foldable(conv, bn):
                return expr
            bias = matches[biased_p].args[1] if biased_p in matches else None
            folded = _fold(conv, bias, bn)
            return expr if folded is None else folded

        updates = {
            gvar: rewrite_call(pattern, rewriter, func)
            for gvar, func in mod.functions.items()
            if isinstance(func, relax.Function)
        }
        if not updates:
            return mod
        mod = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod
