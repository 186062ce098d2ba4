"""DecomposeConvTranspose: a strided transposed conv as one ordinary conv and a pixel shuffle.

Every segmentation and detection decoder upsamples with ConvTranspose. TVM lowers it through
topi in NCHW only (after ConvertLayout it fails to build at all), and as a stride-dilated input
convolved with the whole kernel: for stride 2, three of every four multiplies are by zero.

Output pixel `o = s*q + r` of a transposed conv (stride s, kernel k) only meets the kernel taps
`r, r + s, r + 2s, ...`, so each phase `r` is an ordinary stride-1 conv of the input with a
`J = ceil(k / s)`-tap sub-kernel. The s**2 phases (2-D) are one conv with `Cout * s * s` output
channels, whose channels a reshape/transpose interleaves into the `s`-times larger image (a
pixel shuffle), and a slice removes the padding. The sub-kernels are cut from the constant
weight at compile time; the conv then gets the default conv schedules (NHWC, register tiles,
Winograd where it pays). Exact: the same products, without the zeros.

Applies to 1-D and 2-D transposed convs with a constant weight and dilation 1 (grouped ones
too: each group's sub-kernels in its group), in
the importer's NCW/NCHW layouts; others stay as they are (ConvertLayout keeps those in NCHW,
where TVM can build them).
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

_OPS = {
    "relax.nn.conv1d_transpose": ("NCW", "IOW", relax.op.nn.conv1d),
    "relax.nn.conv2d_transpose": ("NCHW", "IOHW", relax.op.nn.conv2d),
}


@tvm.transform.module_pass(opt_level=0, name="DecomposeConvTranspose")
class DecomposeConvTranspose:
    """Rewrite constant-weight transposed convs into conv + pixel shuffle + slice (CPU)."""

    def __init__(self, target: tvm.target.Target):
        self.enabled = target.kind.name == "llvm"

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.enabled:
            return mod
        rewriter = _Rewriter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in _OPS:
            return call
        plan = _plan(call)
        return call if plan is None else _decompose(self.builder_, call, plan)


def _plan(call) -> dict | None:
    """Sizes of the decomposition, or None when it does not apply."""
    data_layout, kernel_layout, _conv = _OPS[call.op.name]
    a = call.attrs
    weight = call.args[1]
    shape = call.args[0].ty.shape if hasattr(call.args[0].ty, "shape") else None
    if (
        not isinstance(weight, GenericConst)
        or shape is None
        or (a.data_layout, a.kernel_layout) != (data_layout, kernel_layout)
        or a.out_layout != data_layout
        or any(int(d) != 1 for d in a.dilation)
        or (a.out_dtype and str(a.out_dtype) not in ("", str(weight.value.dtype)))
    ):
        return None
    sizes = [getattr(v, "value", None) for v in shape.values[2:]]
    if any(not isinstance(v, int) for v in sizes):
        return None  # symbolic spatial sizes: the slice needs them
    dims = len(sizes)
    strides = [int(s) for s in a.strides]
    kernel = list(weight.value.shape[2:])
    if all(s == 1 for s in strides):
        return None  # stride 1 is an ordinary conv already; nothing to gain
    pads = [int(p) for p in a.padding]
    begin, end = pads[:dims], pads[dims:] if len(pads) == 2 * dims else pads[:dims]
    out_pad = [int(p) for p in a.output_padding]
    axes = []
    for n, s, k, pb, pe, op in zip(sizes, strides, kernel, begin, end, out_pad):
        taps = math.ceil(k / s)
        length = (n - 1) * s + k - pb - pe + op
        skip = min(taps - 1, pb // s)  # phase rows entirely inside the leading padding
        rows = math.ceil((pb + length) / s) - skip  # phase outputs needed
        left = taps - 1 - skip
        right = rows + taps - 1 - n - left
        if length <= 0 or right < 0:
            return None
        axes.append(
            {
                "s": s,
                "taps": taps,
                "pad": (left, right),
                "rows": rows,
                "crop": pb - skip * s,
                "length": length,
            }
        )
    return {"axes": axes, "conv": _conv, "layout": (data_layout, "OI" + kernel_layout[2:])}


def _sub_kernels(weight: np.ndarray, axes: list[dict], groups: int) -> np.ndarray:
    """[Cin, Cout / groups, k...] -> [Cout * prod(s), Cin / groups, J...]: output channel
    (co, r...) holds the phase-r taps r + s*j, in correlation order (j reversed). Group g's
    input channels are rows g*Cin/groups... of the weight, its outputs channels g*Cout/groups...
    of the result, as a grouped conv reads them."""
    if groups > 1:
        parts = np.split(weight, groups, axis=0)
        return np.concatenate([_sub_kernels(p, axes, 1) for p in parts], axis=0)
    cin, cout = weight.shape[:2]
    pad = [(0, 0), (0, 0)] + [(0, a["s"] * a["taps"] - k) for a, k in zip(axes, weight.shape[2:])]
    w = np.pad(weight, pad)
    split = [cin, cout] + [n for a in axes for n in (a["taps"], a["s"])]
    w = w.reshape(split)  # [Cin, Cout, J0, s0, J1, s1, ...]: tap t = j*s + r
    dims = len(axes)
    taps_axes = [2 + 2 * i for i in range(dims)]
    phase_axes = [3 + 2 * i for i in range(dims)]
    w = np.flip(w, axis=taps_axes)
    w = w.transpose([1, *phase_axes, 0, *taps_axes])  # [Cout, s..., Cin, J...]
    phases = math.prod(a["s"] for a in axes)
    return np.ascontiguousarray(w.reshape([cout * phases, cin, *(a["taps"] for a in axes)]))


def _decompose(bb: relax.BlockBuilder, call, plan: dict) -> relax.Expr:
    axes, conv = plan["axes"], plan["conv"]
    dims = len(axes)
    weight = call.args[1].value.numpy()
    groups = int(call.attrs.groups)
    cout = weight.shape[1] * groups
    kernel = relax.const(_sub_kernels(weight, axes, groups))
    padding = [a["pad"][0] for a in axes] + [a["pad"][1] for a in axes]
    data_layout, kernel_layout = plan["layout"]
    out = bb.emit(
        conv(
            call.args[0],
            kernel,
            padding=padding,
            groups=groups,
            data_layout=data_layout,
            kernel_layout=kernel_layout,
        )
    )
    batch = call.args[0].ty.shape.values[0]
    rows = [a["rows"] for a in axes]
    strides = [a["s"] for a in axes]
    # [N, Cout, s..., rows...] -> [N, Cout, rows0, s0, rows1, s1, ...] -> [N, Cout, rows*s...]
    out = bb.emit(relax.op.reshape(out, [batch, cout, *strides, *rows]))
    order = [0, 1] + [i for d in range(dims) for i in (2 + dims + d, 2 + d)]
    out = bb.emit(relax.op.permute_dims(out, order))
    out = bb.emit(relax.op.reshape(out, [batch, cout, *(r * s for r, s in zip(rows, strides))]))
    begin = [a["crop"] for a in axes]
    return relax.op.strided_slice(
        out,
        axes=list(range(2, 2 + dims)),
        begin=begin,
        end=[b + a["length"] for b, a in zip(begin, axes)],
    )
