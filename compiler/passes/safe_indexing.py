"""SafeIndexing: make `take` (ONNX Gather) clamp out-of-range indices instead of crashing.

TVM's ONNX importer emits `take(mode="fast")`, whose kernels read out of bounds, and can kill
the process with SIGSEGV, when an index is out of range at run time. The indices are data, so
the loader cannot check them. "clip" clamps each index into range at the cost of a min/max per
index: a bad index then reads the nearest valid row instead of crashing the deploy host.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import rewrite_functions

_TAKE = tvm.ir.Op.get("relax.take")


@mutator
class _TakeRewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op.same_as(_TAKE) and call.attrs.mode == "fast":
            data, indices = call.args
            return relax.op.take(data, indices, call.attrs.axis, mode="clip")
        return call


@tvm.transform.module_pass(opt_level=0, name="SafeIndexing")
class SafeIndexing:
    """Rewrite every `take(mode="fast")` in the module's Relax functions to `mode="clip"`."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_functions(mod, _TakeRewriter(mod))
