"""PadMatmulColumns: a constant weight whose column count is not a whole number of vectors
gets zero columns up to one, and the product is sliced back.

The register tiles of the default schedules (and the packed GEMV streams) vectorise the
output columns: an axis of 50257 columns (GPT-2's vocabulary, 29 x 1733) splits into no
vector width, and its kernel fell to the unvectorised fallback: GPT-2's language-model head
took 2.26 s of 2.30 s per call, 25x slower than onnxruntime. With the weight padded at
compile time to a multiple of `PAD_VECTORS` vectors (50272 columns: 0.03% more work) the
product is an ordinary tiled matmul, and a slice (its own kernel: schedules/cpu.py never
inlines a block that reads less than its producer writes) drops the padding. Exact: the
padding's columns are never read.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..schedules.cpu import vector_lanes
from .rewrite import rewrite_functions

PAD_VECTORS = 4  # the widest register tile's vectors (schedules/cpu.py _VECTOR_WIDTHS)
MIN_COLUMNS = 64  # narrower products are cheap whatever their schedule


def _padding(call: relax.Call, multiple: int) -> int | None:
    """Columns to add to the weight of an eligible matmul, else None."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
        return None
    x, w = call.args
    if not isinstance(w, GenericConst) or len(w.value.shape) != 2:
        return None
    if str(w.value.dtype) != "float32" or str(getattr(x.ty, "dtype", "")) != "float32":
        return None
    if call.attrs.out_dtype is not None and str(call.attrs.out_dtype) not in ("", "float32"):
        return None
    n = int(w.value.shape[1])
    if n < MIN_COLUMNS or n % multiple == 0:
        return None
    shape = getattr(x.ty, "shape", None)
    if shape is None or not hasattr(shape, "values") or int(shape.values[-1]) != w.value.shape[0]:
        return None
    return -n % multiple


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, multiple: int):
        super().__init__(mod)
        self.multiple = multiple
        self.padded = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        extra = _padding(call, self.multiple)
        if extra is None:
            return call
        x, w = call.args
        weight = w.value.numpy()
        padded = np.pad(weight, ((0, 0), (0, extra)))
        out = self.builder_.emit(relax.op.matmul(x, relax.const(padded)))
        ndim = len(x.ty.shape.values)
        self.padded += 1
        return relax.op.strided_slice(
            out, axes=[ndim - 1], begin=[0], end=[weight.shape[1]], assume_inbound=True
        )


@tvm.transform.module_pass(opt_level=0, name="PadMatmulColumns")
class PadMatmulColumns:
    """Pad constant matmul weights to whole vectors of columns (CPU targets)."""

    def __init__(self, target: tvm.target.Target):
        self.multiple = vector_lanes(target) * PAD_VECTORS if target.kind.name == "llvm" else 0

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.multiple:
            return mod
        return rewrite_functions(mod, _Rewriter(mod, self.multiple))
