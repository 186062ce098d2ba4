"""AmxMatmul: fp32 matmuls with a constant weight on Intel AMX tiles (x86 targets with
AMX-BF16), exact to fp32.

Each `matmul(x, W)` whose W is a constant [K, N] float32 matrix and whose x has a static shape
[..., K] becomes two kernels (schedules/cpu_amx.py) between reshapes: the activations split
into three bf16 parts, and the six-pass AMX product with W's parts (split and packed here, at
compile time). Needs whole tiles (K and N multiples of 32, the rows, x's leading dimensions
multiplied, of 16) and K, N of at least `cpu_amx.MIN_DIM`; other matmuls keep the AVX-512
kernels. A matrix-vector product (one row) is bound by the weight's bytes, which this makes
1.5x larger: it never qualifies.

Measured on a 2-core Xeon with AMX, BERT-base's 768x3072 product at sequence length 128,
2 threads, in the model: 1.43 ms per call against 2.0-2.1 ms for the AVX-512 kernel (1.1 ms
alone with its weight in cache: in the model the 6-byte weights come from memory, which the
kernel's prefetch only partly hides). Its results are closer to float64 than a sequential
fp32 kernel's (1.3e-6 against 6.0e-6 largest error on outputs of magnitude 6).

The weight is stored as 3 x bf16 = 6 bytes per value, 1.5x its fp32 size.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, tirx
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..schedules import cpu_amx
from ..schedules.cpu import cores
from ..targets import AMX_FEATURES
from .rewrite import rewrite_functions


def has_amx(target: tvm.target.Target) -> bool:
    """Whether `target` is an x86 CPU with AMX tiles and their bf16 product."""
    if target.kind.name != "llvm":
        return False
    mattr = [str(a) for a in (target.attrs.get("mattr") or [])]
    return all(f"+{f}" in mattr for f in AMX_FEATURES)


def _shape(call: relax.Call) -> tuple[int, int, int] | None:
    """(rows, K, N) of an eligible matmul, else None."""
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
        return None
    x, w = call.args
    if not isinstance(w, GenericConst) or str(w.value.dtype) != "float32":
        return None
    if len(w.value.shape) != 2 or str(x.ty.dtype) != "float32":
        return None
    if call.attrs.out_dtype is not None and str(call.attrs.out_dtype) not in ("", "float32"):
        return None
    shape = x.ty.shape
    if shape is None or not all(isinstance(d, tirx.IntImm) for d in shape.values):
        return None
    dims = [int(d) for d in shape.values]
    if len(dims) < 2:
        return None
    k, n = (int(d) for d in w.value.shape)
    rows = math.prod(dims[:-1])
    if dims[-1] != k or not cpu_amx.supported(rows, k, n):
        return None
    return rows, k, n


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, threads: int):
        super().__init__(mod)
        self.threads = threads
        self.kernels: dict[tuple, tvm.ir.GlobalVar] = {}

    def _kernel(self, key: tuple, make) -> tvm.ir.GlobalVar:
        if key not in self.kernels:
            name = "amx_" + "_".join(str(v) for v in key)
            self.kernels[key] = self.builder_.add_func(make(), name)
        return self.kernels[key]

    def visit_call_(self, call):
        call = super().visit_call_(call)
        shape = _shape(call)
        if shape is None:
            return call
        rows, k, n = shape
        bb = self.builder_
        x, w = call.args
        lead = [int(d) for d in x.ty.shape.values][:-1]
        split = self._kernel(("split", rows, k), lambda: cpu_amx.split_kernel(rows, k))
        gemm = self._kernel(
            ("gemm", rows, k, n), lambda: cpu_amx.gemm_kernel(rows, k, n, self.threads)
        )
        flat = bb.emit(relax.op.reshape(x, (rows, k)))
        parts = bb.emit(
            relax.call_tir(split, [flat], relax.TensorType(cpu_amx.parts_shape(rows, k), "uint16"))
        )
        weight = relax.const(cpu_amx.split_weight(w.value.numpy()))
        out = bb.emit(relax.call_tir(gemm, [parts, weight], relax.TensorType((rows, n), "float32")))
        return relax.op.reshape(out, (*lead, n))


@tvm.transform.module_pass(opt_level=0, name="AmxMatmul")
class AmxMatmul:
    """Rewrite eligible matmuls (see the module docstring) on targets with AMX."""

    def __init__(self, target: tvm.target.Target):
        self.enabled = has_amx(target)
        self.threads = cores(target)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.enabled:
            return mod
        rewriter = _Rewriter(mod, self.threads)
        mod = rewrite_functions(mod, rewriter)
        if not rewriter.kernels:
            return mod
        # Matmuls that share an input (attention's Q, K and V) split it once.
        return relax.transform.EliminateCommonSubexpr()(mod)
