"""FastMath: exp, erf, tanh, sigmoid and softmax as vectorisable polynomial approximations.

LLVM lowers a vectorised `exp`/`erf` to one libm call per lane; TVM's topi `fast_*` versions
are plain arithmetic that vectorises (relative error about 1e-7, as onnxruntime's own). TVM's
`FastMathTransform` does the same but assumes every call's callee is an operator; ours skips
calls to functions (If/Loop bodies). Sigmoid (SiLU/Swish in EfficientNet, YOLO, LLaMA) is
1 / (1 + fast_exp(-x)): with libm's exp EfficientNet-B0's conv + SiLU kernels ran at 0.52x of
onnxruntime."""

from __future__ import annotations

import tvm
from tvm import topi
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import rewrite_functions


def _fast_sigmoid(x):
    one = tvm.tirx.const(1, x.dtype)
    return topi.divide(one, topi.add(one, topi.fast_exp(topi.negative(x))))


_FAST = {
    "relax.sigmoid": lambda bb, call: bb.call_te(_fast_sigmoid, call.args[0]),
    "relax.exp": lambda bb, call: bb.call_te(topi.fast_exp, call.args[0]),
    "relax.erf": lambda bb, call: bb.call_te(topi.fast_erf, call.args[0]),
    "relax.tanh": lambda bb, call: bb.call_te(topi.fast_tanh, call.args[0]),
    "relax.nn.softmax": lambda bb, call: bb.call_te(
        topi.nn.fast_softmax, call.args[0], call.attrs.axis
    ),
}


@mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name in _FAST:
            if call.args[0].ty.dtype == "float32":
                return _FAST[call.op.name](self.builder_, call)
        return call


@tvm.transform.module_pass(opt_level=0, name="FastMath")
class FastMath:
    """Replace float32 exp/erf/tanh/sigmoid/softmax with their fast approximations on CPU targets
    (GPUs have fast hardware versions already)."""

    def __init__(self, target: tvm.target.Target):
        self.enabled = target.kind.name == "llvm"

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.enabled:
            return mod
        return rewrite_functions(mod, _Rewriter(mod))
