"""ExtractWeights: move large constants out of `main` into weight parameters.

After the graph passes have folded what can be folded at compile time (batch-norm arithmetic,
weight transposes), the remaining large constants become trailing parameters of `main`, with
their values in the function's "params" attribute, the convention of TVM's ONNX importer and
`relax.frontend.detach_params`. The bundle stores them in weights.bin, which the loader maps
into memory, so model.so stays small and fast to link whatever the model's size.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator


@mutator
class _ConstantLifter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, min_bytes: int):
        super().__init__(mod)
        self.min_bytes = min_bytes
        self.new_params: list[relax.Var] = []
        self.values: list[tvm.runtime.Tensor] = []
        self._lifted: dict = {}  # the same tensor, used twice, becomes one weight

    def visit_generic_const_(self, op) -> relax.Expr:
        data = op.value
        shape = getattr(data, "shape", None)
        if not shape:  # scalars and non-tensor constants stay inline
            return op
        nbytes = int(np.prod(shape)) * tvm.runtime.DataType(str(data.dtype)).bits // 8
        if nbytes < self.min_bytes:
            return op
        var = self._lifted.get(data)
        if var is None:
            var = relax.Var(f"weight{len(self.new_params)}", op.ty)
            self._lifted[data] = var
            self.new_params.append(var)
            self.values.append(data)
        return var


@tvm.transform.module_pass(opt_level=0, name="ExtractWeights")
class ExtractWeights:
    """Lift constants of at least `min_bytes` bytes in `main` into weight parameters."""

    def __init__(self, min_bytes: int = 1024):
        self.min_bytes = min_bytes

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        func = mod["main"]
        lifter = _ConstantLifter(mod, self.min_bytes)
        body = lifter.visit_expr(func.body)
        if not lifter.new_params:
            return mod
        attrs = func.attrs
        num_input = int(attrs["num_input"]) if attrs and "num_input" in attrs else len(func.params)
        existing = list(attrs["params"]) if attrs and "params" in attrs else []
        new_func = relax.Function(
            list(func.params) + lifter.new_params, body, None, func.is_pure, attrs, func.span
        ).with_attrs({"num_input": num_input, "params": existing + lifter.values})
        mod = mod.clone() if hasattr(mod, "clone") else tvm.IRModule(dict(mod.functions))
        mod["main"] = new_func
        return mod
