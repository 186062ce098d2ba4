"""PadMatmulColumns: a matmul whose column count is not a whole number of vectors gets zero
columns in its right operand up to a whole number of `PAD_VECTORS` vectors, and the product
is sliced back.

The register tiles of the default schedules (and the packed GEMV streams) vectorise the
output columns: an axis of 50257 columns (GPT-2's vocabulary, 29 x 1733) splits into no
vector width, and its kernel fell to the unvectorised fallback: GPT-2's language-model head
took 2.26 s of 2.30 s per call, 25x slower than onnxruntime. With the weight padded at
compile time to a multiple of `PAD_VECTORS` vectors (50272 columns: 0.03% more work) the
product is an ordinary tiled matmul, and a slice (its own kernel: schedules/cpu.py never
inlines a block that reads less than its producer writes) drops the padding. Exact: the
padding's columns are never read. A right operand computed at run time (attention scores over
a ViT's 197 tokens: 0.71x of onnxruntime) is padded by a copy, which costs far less than the
unvectorised product.
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


def _padding(call: relax.Call, lanes: int) -> int | None:
    """Columns to add to the right operand of an eligible matmul, else None."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
        return None
    x, w = call.args
    dims = [_static(x), _static(w)]
    if None in dims or len(dims[1]) < 2 or len(dims[0]) < 1:
        return None
    if str(x.ty.dtype) != "float32" or str(w.ty.dtype) != "float32":
        return None
    if call.attrs.out_dtype is not None and str(call.attrs.out_dtype) not in ("", "float32"):
        return None
    n = dims[1][-1]
    if n < MIN_COLUMNS or n % lanes == 0 or dims[0][-1] != dims[1][-2]:
        return None  # whole vectors already: the schedules tile it (1000 classes on 8 lanes)
    return -n % (lanes * PAD_VECTORS)


def _static(expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(hasattr(v, "value") for v in values):
        return None
    return [int(v.value) for v in values]


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, lanes: int):
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call):
        call = super().visit_call_(call)
        extra = _padding(call, self.lanes)
        if extra is None:
            return call
        x, w = call.args
        n = _static(w)[-1]
        if isinstance(w, GenericConst):  # a weight: padded at compile time
            padding = [(0, 0)] * (w.value.ndim - 1) + [(0, extra)]
            padded = relax.const(np.pad(w.value.numpy(), padding))
        else:  # activations (attention's K transposed, 197 tokens in a ViT): a padded copy
            widths = [0] * (2 * len(_static(w)))
            widths[-1] = extra
            padded = self.builder_.emit(relax.op.nn.pad(w, widths))
        out = self.builder_.emit(relax.op.matmul(x, padded))
        ndim = len(_static(out))
        return relax.op.strided_slice(out, axes=[ndim - 1], begin=[0], end=[n], assume_inbound=True)


@tvm.transform.module_pass(opt_level=0, name="PadMatmulColumns")
class PadMatmulColumns:
    """Pad constant matmul weights to whole vectors of columns (CPU targets)."""

    def __init__(self, target: tvm.target.Target):
        self.lanes = vector_lanes(target) if target.kind.name == "llvm" else 0

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.lanes:
            return mod
        return rewrite_functions(mod, _Rewriter(mod, self.lanes))
