"""Conv1dAsConv2d: a 1-D convolution as a 2-D one of height 1 (CPU targets).

The default schedules and ConvertLayout know 2-D convs (NHWC, register tiles); a conv1d fell
to the unvectorised fallback: wav2vec2's feature encoder (strided conv1d over 16000 samples)
spent 98% of its time in its conv1d kernels, 0.04x of onnxruntime. Reshaped to height 1, the
same products get the conv2d rules; exact.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import rewrite_functions


@mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv1d"):
            return call
        a = call.attrs
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCW", "OIW", "NCW"):
            return call
        bb = self.builder_
        x = bb.emit(relax.op.expand_dims(call.args[0], 2))
        w = bb.emit(relax.op.expand_dims(call.args[1], 2))
        pads = [int(p) for p in a.padding]
        conv = bb.emit(
            relax.op.nn.conv2d(
                x,
                w,
                strides=[1, int(a.strides[0])],
                padding=[0, pads[0], 0, pads[-1]],
                dilation=[1, int(a.dilation[0])],
                groups=int(a.groups),
                out_dtype=a.out_dtype,
            )
        )
        return relax.op.squeeze(conv, [2])


@tvm.transform.module_pass(opt_level=0, name="Conv1dAsConv2d")
class Conv1dAsConv2d:
    """Rewrite NCW conv1d as conv2d of height 1 on CPU targets."""

    def __init__(self, target: tvm.target.Target):
        self.enabled = target.kind.name == "llvm"

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.enabled:
            return mod
        return rewrite_functions(mod, _Rewriter(mod))
