"""MaxPool's optional Indices output (TVM's converter returns only the values).

With indices requested, every pooling window of the static input is a row of a constant gather
table (padding reads a spare slot holding the dtype's lowest value); the max and its first
position come from one max and one argmax over the window axis.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from . import register, text_attr
from .static import static_shape


def _geometry(spatial: list[int], attr) -> tuple[list[int], ...]:
    """(kernel, strides, dilations, pads_begin, output size), each per spatial axis."""
    d = len(spatial)
    kernel = list(attr["kernel_shape"])
    strides = list(attr.get("strides", [1] * d))
    dilations = list(attr.get("dilations", [1] * d))
    pads = list(attr.get("pads", [0] * 2 * d))
    auto_pad = text_attr(attr, "auto_pad", "NOTSET")
    out = []
    for i in range(d):
        span = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            size = math.ceil(spatial[i] / strides[i])
            total = max((size - 1) * strides[i] + span - spatial[i], 0)
            small, large = total // 2, total - total // 2
            pads[i], pads[i + d] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        elif auto_pad == "VALID":
            pads[i] = pads[i + d] = 0
        room = spatial[i] + pads[i] + pads[i + d] - span
        size = (math.ceil if attr.get("ceil_mode", 0) else math.floor)(room / strides[i]) + 1
        if attr.get("ceil_mode", 0) and (size - 1) * strides[i] >= spatial[i] + pads[i]:
            size -= 1  # a last window that starts in the end padding is dropped
        out.append(size)
    return kernel, strides, dilations, pads[:d], out


def _window_table(spatial, kernel, strides, dilations, begin, out) -> np.ndarray:
    """[outputs, window] flat input positions; len(input) for positions in the padding."""
    size = int(np.prod(spatial))
    rows = []
    for where in itertools.product(*(range(o) for o in out)):
        row = []
        for offset in itertools.product(*(range(k) for k in kernel)):
            pos = [
                w * s + o * dl - b
                for w, s, o, dl, b in zip(where, strides, offset, dilations, begin)
            ]
            inside = all(0 <= p < n for p, n in zip(pos, spatial))
            row.append(int(np.ravel_multi_index(pos, spatial)) if inside else size)
        rows.append(row)
    return np.asarray(rows, dtype=np.int64)


@register("MaxPool")
class MaxPool(onnx_frontend.MaxPool):
    """TVM's MaxPool, plus the Indices output (flat over the whole input; storage_order 1
    counts the last two spatial axes column-major)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if attr["tvm_custom"]["num_outputs"] < 2:
            return super()._impl_v1(bb, inputs, attr, params)
        x = inputs[0]
        shape = static_shape(x, "MaxPool")
        n, c, spatial = shape[0], shape[1], shape[2:]
        kernel, strides, dilations, begin, out = _geometry(spatial, attr)
        table = _window_table(spatial, kernel, strides, dilations, begin, out)
        size = int(np.prod(spatial))
        dtype = str(x.ty.dtype)
        low = -np.inf if dtype.startswith(("float", "bfloat")) else np.iinfo(dtype).min
        flat = relax.op.reshape(x, (n, c, size))
        spare = relax.const(np.full((n, c, 1), low, dtype=dtype), dtype)
        flat = bb.emit(relax.op.concat([flat, spare], axis=2))
        windows = bb.emit(relax.op.take(flat, relax.const(table), axis=2))
        values = relax.op.max(windows, axis=[3])
        pick = relax.op.astype(relax.op.argmax(windows, axis=3), "int64")
        row_start = relax.const(np.arange(len(table), dtype=np.int64) * table.shape[1], "int64")
        position = relax.op.take(
            relax.const(table.reshape(-1), "int64"), relax.op.add(pick, row_start), axis=0
        )
        order = np.arange(size + 1, dtype=np.int64)
        if attr.get("storage_order", 0) and len(spatial) >= 2:
            grid = np.arange(size).reshape(spatial)
            order[:size] = np.swapaxes(grid, -1, -2).reshape(-1).argsort()
        stored = relax.op.take(relax.const(order, "int64"), position, axis=0)
        base = relax.const((np.arange(n * c, dtype=np.int64) * size).reshape(n, c, 1), "int64")
        indices = relax.op.add(stored, base)
        out_shape = (n, c, *out)
        return relax.Tuple(
            [
                bb.emit(relax.op.reshape(values, out_shape)),
                bb.emit(relax.op.reshape(indices, out_shape)),
            ]
        )

    _impl_v8 = _impl_v1
    _impl_v10 = _impl_v1
    _impl_v11 = _impl_v1
    _impl_v12 = _impl_v1
