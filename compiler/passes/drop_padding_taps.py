"""DropPaddingTaps: kernel taps of a dilated conv that only ever read padding are dropped.

DeepLab's atrous pyramid convolves a 14x14 or 28x28 map with 3x3 kernels dilated 12, 24 and 36:
every tap but the centre of a 36-dilated kernel falls outside a 28x28 map at every output
position, so it multiplies zeros. A tap row (or column) that reads no input pixel anywhere is
cut from the constant weight, and the padding shrinks to match: the output is the same, the
work is what the remaining taps do (a 36-dilated 3x3 conv on 28x28 becomes a 1x1 conv: 9x
fewer multiplies; DeepLabV3-MobileNetV3's three ASPP convs were 62% of its time).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

from .rewrite import rewrite_functions


def _taps(size: int, out: int, kernel: int, pad: int, dilation: int, stride: int):
    """(first, last) taps of one axis that read an input element at some output position,
    or None when every tap does (nothing to drop) or no tap does."""
    valid = [
        k
        for k in range(kernel)
        if any(0 <= r * stride + k * dilation - pad < size for r in range(out))
    ]
    if not valid or len(valid) == kernel:
        return None
    return valid[0], valid[-1]


def _cropped(call: relax.Call):
    """(weight, padding, dilation) of the conv with its padding-only taps dropped, or None."""
    a = call.attrs
    x, w = call.args
    if not isinstance(w, GenericConst) or (a.data_layout, a.kernel_layout) != ("NCHW", "OIHW"):
        return None
    shape = getattr(getattr(x.ty, "shape", None), "values", None)
    out = getattr(getattr(call.ty, "shape", None), "values", None)
    if shape is None or out is None or not all(hasattr(d, "value") for d in [*shape, *out]):
        return None
    pads = [int(p) for p in a.padding]
    dilation = [int(d) for d in a.dilation]
    strides = [int(s) for s in a.strides]
    weight = w.value.numpy()
    begin, end = pads[:2], pads[2:]
    new_w, new_begin, new_end, new_dil, changed = (
        weight,
        list(begin),
        list(end),
        list(dilation),
        False,
    )
    for axis in range(2):
        kernel = weight.shape[2 + axis]
        taps = _taps(
            int(shape[2 + axis].value),
            int(out[2 + axis].value),
            kernel,
            begin[axis],
            dilation[axis],
            strides[axis],
        )
        if taps is None:
            continue
        first, last = taps
        new_begin[axis] = begin[axis] - first * dilation[axis]
        new_end[axis] = end[axis] - (kernel - 1 - last) * dilation[axis]
        if new_begin[axis] < 0 or new_end[axis] < 0:
            return None
        index = [slice(None)] * 4
        index[2 + axis] = slice(first, last + 1)
        new_w = new_w[tuple(index)]
        if last == first:
            new_dil[axis] = 1
        changed = True
    if not changed:
        return None
    return new_w.copy(), [*new_begin, *new_end], new_dil


@mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.conv2d"):
            return call
        cropped = _cropped(call)
        if cropped is None:
            return call
        weight, padding, dilation = cropped
        a = call.attrs
        return relax.op.nn.conv2d(
            call.args[0],
            relax.const(weight),
            strides=[int(s) for s in a.strides],
            padding=padding,
            dilation=dilation,
            groups=int(a.groups),
            data_layout=a.data_layout,
            kernel_layout=a.kernel_layout,
            out_layout=a.out_layout,
            out_dtype=a.out_dtype,
        )


@tvm.transform.module_pass(opt_level=0, name="DropPaddingTaps")
class DropPaddingTaps:
    """Drop the taps of dilated convs that never read an input element."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(mod, _Rewriter(mod))
