"""DeformConv (2-D): a convolution whose kernel taps sample the input at learned offsets.

Each tap's sampling point (the regular grid, a constant, plus the offset input) is read with
bilinear interpolation, zero outside the image, scaled by the optional mask; the sampled
columns [N, C*K, L] then meet the weights in one grouped matmul.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register
from .static import static_shape

F32 = "float32"


def _grid(kernel, stride, pad, dilation, out):
    """[K, out] regular sampling coordinate of each tap along one axis."""
    taps = np.arange(kernel)[:, None] * dilation
    return (np.arange(out)[None, :] * stride - pad + taps).astype(np.float32)


def _sample(bb, image, ys, xs, height: int, width: int):
    """Bilinear samples of image [N, G, Cg, H*W] at (ys, xs) [N, G, P]: [N, G, Cg, P]."""
    n, g, cg, _ = (int(d) for d in image.ty.shape)
    points = int(ys.ty.shape[2])
    y0, x0 = bb.emit(relax.op.floor(ys)), bb.emit(relax.op.floor(xs))
    fy, fx = relax.op.subtract(ys, y0), relax.op.subtract(xs, x0)
    one = relax.const(1.0, F32)
    total = None
    for dy, wy in ((0, relax.op.subtract(one, fy)), (1, fy)):
        for dx, wx in ((0, relax.op.subtract(one, fx)), (1, fx)):
            y = relax.op.add(y0, relax.const(float(dy), F32))
            x = relax.op.add(x0, relax.const(float(dx), F32))
            inside = relax.op.multiply(_within(y, height), _within(x, width))
            index = relax.op.add(
                relax.op.multiply(_clamp(y, height), relax.const(width, "int64")), _clamp(x, width)
            )
            index = relax.op.broadcast_to(relax.op.expand_dims(index, 2), (n, g, cg, points))
            value = relax.op.gather_elements(image, index, axis=3)
            weight = relax.op.expand_dims(relax.op.multiply(relax.op.multiply(wy, wx), inside), 2)
            term = bb.emit(relax.op.multiply(value, weight))
            total = term if total is None else bb.emit(relax.op.add(total, term))
    return total


def _within(coord, size: int):
    """1.0 where 0 <= coord <= size - 1, else 0.0 (as floats: no i1 vector logic)."""
    low = relax.op.astype(relax.op.greater_equal(coord, relax.const(0.0, F32)), F32)
    high = relax.op.astype(relax.op.less_equal(coord, relax.const(size - 1.0, F32)), F32)
    return relax.op.multiply(low, high)


def _clamp(coord, size: int):
    return relax.op.astype(relax.op.clip(coord, 0, size - 1), "int64")


@register("DeformConv")
class DeformConv(OnnxOpConverter):
    @classmethod
    def _impl_v19(cls, bb, inputs, attr, params):
        x, w, offset = inputs[0], inputs[1], inputs[2]
        if str(x.ty.dtype) != F32:
            raise ModelError(f"DeformConv is supported for float32 input, got {x.ty.dtype}")
        bias = inputs[3] if len(inputs) > 3 else None
        mask = inputs[4] if len(inputs) > 4 else None
        shape = static_shape(x, "DeformConv")
        if len(shape) != 4:
            raise ModelError("DeformConv is supported for 2-D images (4-D input) only")
        n, c, h, wd = shape
        oc, cpg, kh, kw = static_shape(w, "DeformConv")
        sh, sw = attr.get("strides", [1, 1])
        dh, dw = attr.get("dilations", [1, 1])
        pt, pl, _pb, _pr = attr.get("pads", [0, 0, 0, 0])
        groups, og = int(attr.get("group", 1)), int(attr.get("offset_group", 1))
        _, _, oh, ow = static_shape(offset, "DeformConv")
        k, length = kh * kw, oh * ow
        gy = _grid(kh, sh, pt, dh, oh)[:, None, :, None]  # [kh, 1, oh, 1]
        gx = _grid(kw, sw, pl, dw, ow)[None, :, None, :]  # [1, kw, 1, ow]
        base_y = np.broadcast_to(gy, (kh, kw, oh, ow)).reshape(1, 1, k, length)
        base_x = np.broadcast_to(gx, (kh, kw, oh, ow)).reshape(1, 1, k, length)
        off = relax.op.reshape(offset, (n, og, k, 2, length))
        ys = relax.op.add(relax.op.take(off, relax.const(0), axis=3), relax.const(base_y.copy()))
        xs = relax.op.add(relax.op.take(off, relax.const(1), axis=3), relax.const(base_x.copy()))
        ys = bb.emit(relax.op.reshape(ys, (n, og, k * length)))
        xs = bb.emit(relax.op.reshape(xs, (n, og, k * length)))
        image = bb.emit(relax.op.reshape(x, (n, og, c // og, h * wd)))
        cols = _sample(bb, image, ys, xs, h, wd)  # [n, og, c/og, k*L]
        if mask is not None:
            weights = relax.op.reshape(mask, (n, og, 1, k * length))
            cols = bb.emit(relax.op.multiply(cols, weights))
        cols = bb.emit(relax.op.reshape(cols, (n, groups, cpg * k, length)))
        kernel = relax.op.reshape(w, (1, groups, oc // groups, cpg * k))
        out = bb.emit(relax.op.matmul(kernel, cols))  # [n, groups, oc/groups, L]
        out = relax.op.reshape(out, (n, oc, oh, ow))
        if bias is not None:
            out = relax.op.add(out, relax.op.reshape(bias, (1, oc, 1, 1)))
        return out
