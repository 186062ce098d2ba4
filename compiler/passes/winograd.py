"""Winograd: 3x3 stride-1 convolutions as Winograd F(2x2, 3x3) on CPU targets.

Each 4x4 input tile (stride 2) is transformed (V = Bᵀ d B), multiplied channel-wise with the
transformed weights (U = G g Gᵀ, computed here at compile time) as 16 independent matrix
products [tiles, C] x [C, K], and transformed back into a 2x2 output tile (Y = Aᵀ M A): 16
multiply-adds per output pixel and channel pair instead of 36. onnxruntime's CPU convolutions are
direct; 3x3 convs are most of the time of ResNet-style nets.

Applies to NHWC/HWIO float32 convs (the layout pass runs first) with constant weights, when the
feature map has enough tiles to amortise the transforms (`MIN_TILES`): on tiny maps the 16
transformed weight matrices (16/9 of the weights) are streamed for few tiles. While each GEMM
task repacked its weight panel at run time, 14x14 maps were slower this way; with the weights
prepacked at compile time (passes/prepack_weights.py), ResNet-18 gains down to its 7x7 maps
(whole model: 27.1 -> 23.4 ms on 2 threads, against 25.0 ms for onnxruntime).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx, topi
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import rewrite_functions

MIN_TILES = 16  # 2x2 output tiles per image: 7x7 maps and larger

# F(2x2, 3x3) (Lavin & Gray, 2015): input transform Bᵀ, weight transform G, output transform Aᵀ.
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def _pick(column: np.ndarray, index, dtype: str):
    """column[index] for an index expression: a select chain over the non-zero entries. The
    index is a loop variable outside the vectorised channel loop, so LLVM hoists the chain."""
    expr = tirx.const(0, dtype)
    for row, value in enumerate(column):
        if value:
            expr = tirx.Select(index == row, tirx.const(float(value), dtype), expr)
    return expr


def _input_transform(x: te.Tensor, tiles_h: int, tiles_w: int) -> te.Tensor:
    """[N, H, W, C] -> V [16, N * tiles_h * tiles_w, C], V[4a+b] = (Bᵀ d B)[a, b]: a sum of
    16 terms written out (no reduction loop), so the kernel is elementwise and vectorises."""
    n, h, w, c = (int(d) for d in x.shape)
    padded = topi.nn.pad(x, [0, 1, 1, 0], [0, 2 * tiles_h + 1 - h, 2 * tiles_w + 1 - w, 0])
    per_image = tiles_h * tiles_w

    def v(e, p, ch):
        img, t = p // per_image, p % per_image
        row, col = (t // tiles_w) * 2, (t % tiles_w) * 2
        terms = [
            _pick(_BT[:, i], e // 4, x.dtype)
            * _pick(_BT[:, j], e % 4, x.dtype)
            * padded[img, row + i, col + j, ch]
            for i in range(4)
            for j in range(4)
        ]
        return sum(terms[1:], terms[0])

    return te.compute((16, n * per_image, c), v, name="winograd_input")


def _output_transform(m: te.Tensor, shape, tiles_h: int, tiles_w: int) -> te.Tensor:
    """M [16, tiles, K] -> [N, H, W, K], each 2x2 output tile (Aᵀ M A), 16 terms written out."""

    def y(img, row, col, k):
        p = (img * tiles_h + row // 2) * tiles_w + col // 2
        terms = [
            _pick(_AT[:, a], row % 2, m.dtype)
            * _pick(_AT[:, b], col % 2, m.dtype)
            * m[a * 4 + b, p, k]
            for a in range(4)
            for b in range(4)
        ]
        return sum(terms[1:], terms[0])

    return te.compute(shape, y, name="winograd_output")


def transformed_weights(weight: np.ndarray) -> np.ndarray:
    """HWIO [3, 3, C, K] -> U [16, C, K]."""
    u = np.einsum("ai,ijck,bj->abck", _G, weight.astype(np.float64), _G)
    return u.reshape(16, *weight.shape[2:]).astype(weight.dtype)


def _eligible(call: relax.Call) -> bool:
    if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
        return False
    attrs, (x, w) = call.attrs, call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NHWC", "HWIO", "NHWC"):
        return False
    if not isinstance(w, GenericConst) or str(w.value.dtype) != "float32":
        return False
    if [int(v) for v in attrs.strides] != [1, 1] or [int(v) for v in attrs.dilation] != [1, 1]:
        return False
    if int(attrs.groups) != 1 or [int(v) for v in attrs.padding] != [1, 1, 1, 1]:
        return False
    shape = x.ty.shape
    if shape is None or not all(isinstance(d, tirx.IntImm) for d in shape.values):
        return False
    if str(x.ty.dtype) != "float32" or tuple(w.value.shape[:2]) != (3, 3):
        return False
    _n, h, width, _c = (int(d) for d in shape.values)
    return ((h + 1) // 2) * ((width + 1) // 2) >= MIN_TILES


@mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not _eligible(call):
            return call
        bb = self.builder_
        x, w = call.args
        n, h, width, _c = (int(d) for d in x.ty.shape.values)
        tiles_h, tiles_w = (h + 1) // 2, (width + 1) // 2
        u = relax.const(transformed_weights(w.value.numpy()))
        v = bb.emit(
            bb.call_te(_input_transform, x, tiles_h, tiles_w, primfunc_name_hint="winograd_input")
        )
        m = bb.emit(relax.op.matmul(v, u))
        k = int(w.value.shape[3])
        return bb.call_te(
            _output_transform,
            m,
            (n, h, width, k),
            tiles_h,
            tiles_w,
            primfunc_name_hint="winograd_output",
        )


@tvm.transform.module_pass(opt_level=0, name="Winograd")
class Winograd:
    """Rewrite eligible 3x3 convs (see the module docstring) on CPU targets."""

    def __init__(self, target: tvm.target.Target):
        self.enabled = target.kind.name == "llvm"

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.enabled:
            return mod
        return rewrite_functions(mod, _Rewriter(mod))
