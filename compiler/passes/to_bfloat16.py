"""ToBFloat16: turn ToMixedPrecision's fp16 into bf16.

TVM's ToMixedPrecision only targets float16. Its output casts values to float16 with `astype`
and everything 16-bit downstream follows the cast's dtype, so retargeting each cast to bfloat16
(and letting types be inferred again) gives the same graph in bf16: bf16 math, fp32
accumulation where fp16 had it, fp32 inputs and outputs.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import rewrite_functions

_ASTYPE = tvm.ir.Op.get("relax.astype")


@mutator
class _Retarget(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op.same_as(_ASTYPE) and str(call.attrs.dtype) == "float16":
            return relax.op.astype(call.args[0], "bfloat16")
        return call


@tvm.transform.module_pass(opt_level=0, name="ToBFloat16")
class ToBFloat16:
    """Rewrite every cast to float16 in the module's Relax functions into a cast to bfloat16."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_functions(mod, _Retarget(mod))
