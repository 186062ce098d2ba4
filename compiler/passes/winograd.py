"""Winograd: 3x3 stride-1 convolutions as Winograd F(4x4, 3x3) or F(2x2, 3x3) on CPU targets.

Each a x a input tile (a = m + 2, stride m) is transformed (V = Bᵀ d B), multiplied channel-wise
with the transformed weights (U = G g Gᵀ, computed here at compile time) as a*a independent
matrix products [tiles, C] x [C, K], and transformed back into an m x m output tile
(Y = Aᵀ M A). Multiply-adds per output pixel and channel pair: 9 direct, 4 with F2, 2.25 with
F4. onnxruntime's CPU convolutions are direct; 3x3 convs are most of the time of ResNet-style
nets.

Applies to NHWC/HWIO float32 convs (the layout pass runs first) with constant weights, when the
feature map has enough tiles to amortise the transforms (`MIN_TILES`, `tiles_for`): on tiny
maps the a*a transformed weight matrices (a*a/9 of the weights) are streamed for few tiles.
While each GEMM task repacked its weight panel at run time, 14x14 maps were slower this way;
with the weights prepacked at compile time (passes/prepack_weights.py), ResNet-18 gains down to
its 7x7 maps (whole model, F2 only: 27.1 -> 23.4 ms on 2 threads, against 25.0 ms for
onnxruntime). The price is weight bytes: ResNet-18's weights.bin grows from 46.8 MB (direct)
to 72.6 MB with F2 and 92.6 MB with F4 on its 14x14 and larger maps.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import numpy as np
import tvm
from tvm import relax, te, tirx, topi
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..schedules.cpu import vector_lanes
from .rewrite import rewrite_functions

# The transforms' block names and the annotation that gives m: schedules/cpu.py's
# WinogradTransform and schedules/cost.py's rule_only find the transforms by them.
INPUT, OUTPUT = "winograd_input", "winograd_output"
FIRST_PASS = {INPUT: "winograd_input_rows", OUTPUT: "winograd_output_rows"}
TILE_ATTR = "winograd_tile"

MIN_TILES = 16  # output tiles per image (of 4x4 for F4, 2x2 for F2): see tiles_for


class Tiles(NamedTuple):
    """One Winograd F(m x m, 3x3): input transform Bᵀ [a, a], weight transform G [a, 3] and
    output transform Aᵀ [m, a], for input tiles of a = m + 2 pixels a side."""

    m: int
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray

    @property
    def alpha(self) -> int:
        return self.m + 2


# Lavin & Gray (2015). F(2x2, 3x3): interpolation points 0, 1, -1 and infinity.
F2 = Tiles(
    2,
    np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
    np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
    np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
)
# F(4x4, 3x3): points 0, 1, -1, 2, -2 and infinity. 36 products per 4x4 output tile (2.25 per
# pixel, against 4 for F2 and 9 direct): the GEMMs do 44% fewer multiply-adds than F2's and
# their inputs are 44% smaller. The transforms have more terms, and the rounding error grows
# (ResNet-18 against onnxruntime: max abs diff 9.5e-6 with F2, 1.2e-5 with F4, outputs up
# to 18).
F4 = Tiles(
    4,
    np.array(
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        np.float64,
    ),
    np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        np.float64,
    ),
    np.array(
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        np.float64,
    ),
)


def tiles_for(h: int, w: int, min_tiles: int = MIN_TILES) -> Tiles | None:
    """F4 where an image has `min_tiles` 4x4 output tiles, F2 where it has `min_tiles` 2x2
    tiles, else None: each transformed weight matrix is read once per tile row of its GEMM, so
    few tiles do not amortise it. With MIN_TILES (16): F4 on 13x13 maps and larger, F2 on 7x7.
    ResNet-18, whole model, 2 threads, AVX2, interleaved: F4 down to 14x14 maps 6.5% faster than
    F2 everywhere (19.65 -> 18.37 ms); down to 7x7 maps (36/9 of the weights, 2x2 tiles) it was
    slower than 14x14. See min_tiles for AVX-512."""
    for t in (F4, F2):
        if -(-h // t.m) * -(-w // t.m) >= min_tiles:
            return t
    return None


def min_tiles(target: tvm.target.Target) -> int:
    """Tiles a GEMM needs per weight matrix on `target`: MIN_TILES, doubled with 16-lane
    vectors. AVX-512 multiplies twice as fast per weight byte streamed, so the direct conv gains
    on the Winograd GEMM's larger weights: F4 from 28x28 maps, F2 on 14x14, direct on 7x7.
    ResNet-18 on a 2-core AVX-512 Xeon, interleaved: 10.34 -> 9.38 ms against the AVX2 choice
    (F4 from 14x14, F2 on 7x7); no Winograd at all 12.5 ms."""
    return MIN_TILES * 2 if vector_lanes(target) >= 16 else MIN_TILES


def _pick(column: np.ndarray, index, dtype: str):
    """column[index] for an index expression: a select chain over the non-zero entries. The
    index is a loop variable outside the vectorised channel loop, so LLVM hoists the chain."""
    expr = tirx.const(0, dtype)
    for row, value in enumerate(column):
        if value:
            expr = tirx.Select(index == row, tirx.const(float(value), dtype), expr)
    return expr


# The GEMM's rows (one per tile) are padded to a multiple of 6: TiledReduction's largest register
# tiles (AVX2: 6 rows x 2 vectors, 3 x 4; AVX-512: 6 x 4) need the row count to divide by them.
# F4's 49 tiles of a 28x28 map otherwise get 7 x 1-vector tiles on AVX2: its GEMMs 0.59 -> 0.36
# ms standalone with 54 rows.
TILE_MULTIPLE = 6


def _sum(terms):
    return sum(terms[1:], terms[0])


def _input_transform(
    x: te.Tensor, tiles_h: int, tiles_w: int, t: Tiles, multiple: int = 1
) -> te.Tensor:
    """[N, H, W, C] -> V [a*a, rows, C], V[a*i+j] = (Bᵀ d B)[i, j] for each a x a input tile d
    (stride m), in two passes: the tile's columns (`winograd_input_rows`: Bᵀ d), then its rows.
    The terms are written out (no reduction loop), so both are elementwise and vectorise.
    `rows`: the N * tiles_h * tiles_w tiles rounded up to a multiple of `multiple`."""
    n, h, w, c = (int(d) for d in x.shape)
    m, a = t.m, t.alpha
    padded = topi.nn.pad(x, [0, 1, 1, 0], [0, m * tiles_h + 1 - h, m * tiles_w + 1 - w, 0])
    per_image = tiles_h * tiles_w
    real = n * per_image
    rows = -(-real // multiple) * multiple

    def corner(p):
        if rows > real:  # rows past the last tile repeat it; nothing reads their products
            p = tirx.min(p, real - 1)
        img, tile = p // per_image, p % per_image
        return img, (tile // tiles_w) * m, (tile % tiles_w) * m

    def bt_d(i, j, p, ch):  # (Bᵀ d)[i, j]
        img, row, col = corner(p)
        return _sum(
            [_pick(t.bt[:, r], i, x.dtype) * padded[img, row + r, col + j, ch] for r in range(a)]
        )

    half = te.compute((a, a, rows, c), bt_d, name=FIRST_PASS[INPUT])

    def v(e, p, ch):  # ((Bᵀ d) B)[i, j]
        i, j = e // a, e % a
        return _sum([_pick(t.bt[:, s], j, x.dtype) * half[i, s, p, ch] for s in range(a)])

    return te.compute((a * a, rows, c), v, name=INPUT, attrs={TILE_ATTR: m})


def _output_transform(mat: te.Tensor, shape, tiles_h: int, tiles_w: int, t: Tiles):
    """M [a*a, tiles, K] -> [N, H, W, K], each m x m output tile Aᵀ M A in two passes: Aᵀ M
    (`winograd_output_rows`), then its rows; terms written out."""
    m, a = t.m, t.alpha
    tiles = int(mat.shape[1])

    def at_m(i, j, p, k):  # (Aᵀ M)[i, j]
        return _sum([_pick(t.at[:, r], i, mat.dtype) * mat[r * a + j, p, k] for r in range(a)])

    half = te.compute((m, a, tiles, int(mat.shape[2])), at_m, name=FIRST_PASS[OUTPUT])

    def y(img, row, col, k):  # ((Aᵀ M) A)[row % m, col % m]
        p = (img * tiles_h + row // m) * tiles_w + col // m
        return _sum(
            [_pick(t.at[:, s], col % m, mat.dtype) * half[row % m, s, p, k] for s in range(a)]
        )

    return te.compute(shape, y, name=OUTPUT, attrs={TILE_ATTR: m})


def transformed_weights(weight: np.ndarray, t: Tiles) -> np.ndarray:
    """HWIO [3, 3, C, K] -> U [a*a, C, K]."""
    u = np.einsum("ai,ijck,bj->abck", t.g, weight.astype(np.float64), t.g)
    return u.reshape(t.alpha * t.alpha, *weight.shape[2:]).astype(weight.dtype)


def _eligible(call: relax.Call, min_tiles: int) -> bool:
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
    return tiles_for(h, width, min_tiles) is not None


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, min_tiles: int):
        super().__init__(mod)
        self.min_tiles = min_tiles

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not _eligible(call, self.min_tiles):
            return call
        bb = self.builder_
        x, w = call.args
        n, h, width, _c = (int(d) for d in x.ty.shape.values)
        t = tiles_for(h, width, self.min_tiles)
        tiles_h, tiles_w = -(-h // t.m), -(-width // t.m)
        u = relax.const(transformed_weights(w.value.numpy(), t))
        v = bb.emit(
            bb.call_te(
                partial(_input_transform, t=t, multiple=TILE_MULTIPLE),
                x,
                tiles_h,
                tiles_w,
                primfunc_name_hint=INPUT,
            )
        )
        m = bb.emit(relax.op.matmul(v, u))
        k = int(w.value.shape[3])
        return bb.call_te(
            partial(_output_transform, t=t),  # (call_te takes tensors and scalars only)
            m,
            (n, h, width, k),
            tiles_h,
            tiles_w,
            primfunc_name_hint=OUTPUT,
        )


@tvm.transform.module_pass(opt_level=0, name="Winograd")
class Winograd:
    """Rewrite eligible 3x3 convs (see the module docstring) on CPU targets."""

    def __init__(self, target: tvm.target.Target):
        self.enabled = target.kind.name == "llvm"
        self.min_tiles = min_tiles(target) if self.enabled else MIN_TILES

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.enabled:
            return mod
        return rewrite_functions(mod, _Rewriter(mod, self.min_tiles))
