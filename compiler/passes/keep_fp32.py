"""KeepFP32: after ToMixedPrecision, run the named operators in fp32 again.

TVM's ToMixedPrecision picks each operator's precision from a per-op policy, with no per-model
list. This pass undoes its choice for the operators named by `--keep-fp32`: a 16-bit argument
that is a cast of an fp32 value is replaced by that value (no precision is lost in a round
trip), any other 16-bit argument is cast up, and a result that ToMixedPrecision left in 16 bits
is cast back down, so the operators around it see the types they had.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import rewrite_functions

_ASTYPE = tvm.ir.Op.get("relax.astype")
_HALF = ("float16", "bfloat16")


def _dtype(expr: relax.Expr) -> str | None:
    return getattr(expr.ty, "dtype", None)


@mutator
class _Restorer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, ops: set[str]):
        super().__init__(mod)
        self.ops = ops

    def _fp32(self, arg: relax.Expr) -> relax.Expr:
        if _dtype(arg) not in _HALF:
            return arg
        bound = self.lookup_binding(arg) if isinstance(arg, relax.Var) else arg
        if isinstance(bound, relax.Call) and bound.op.same_as(_ASTYPE):
            source = bound.args[0]
            if _dtype(source) == "float32":
                return source
        return relax.op.astype(arg, "float32")

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        op_name = getattr(call.op, "name", "")
        if op_name.removeprefix("relax.") not in self.ops:
            return call
        args = [self._fp32(a) for a in call.args]
        if all(a.same_as(b) for a, b in zip(args, call.args)):
            return call
        new = self.builder_.normalize(relax.Call(call.op, args, call.attrs, call.ty_args))
        old_dtype = _dtype(call)
        if old_dtype in _HALF and _dtype(new) != old_dtype:
            return relax.op.astype(new, old_dtype)
        return new


@tvm.transform.module_pass(opt_level=0, name="KeepFP32")
class KeepFP32:
    """Run the Relax operators named in `ops` (e.g. "matmul", "nn.conv2d") in fp32."""

    def __init__(self, ops):
        self.ops = set(ops)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_functions(mod, _Restorer(mod, self.ops))
