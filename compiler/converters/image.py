"""Image-layout operators: SpaceToDepth (both modes), CenterCropPad, Col2Im.

Shapes, sizes and block shapes must be compile-time constants (initializers or `--bind`): they
fix the output shape. Col2Im's overlap-add is a gather from a constant index table built here.
"""

from __future__ import annotations

import itertools

import numpy as np
from tvm import relax, topi
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register, text_attr
from .static import required_constant, static_shape


@register("SpaceToDepth")
class SpaceToDepth(OnnxOpConverter):
    """Blocks of the spatial dims moved into channels: DCR (default) or CRD (opset 28) order."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        bs = int(attr["blocksize"])
        mode = text_attr(attr, "mode", "DCR")
        if mode not in ("DCR", "CRD"):
            raise ModelError(f"SpaceToDepth mode {mode!r} is not supported: DCR or CRD")
        b, c, h, w = inputs[0].ty.shape
        x = relax.op.reshape(inputs[0], (b, c, h // bs, bs, w // bs, bs))
        perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
        x = relax.op.permute_dims(x, perm)
        return relax.op.reshape(x, (b, c * bs * bs, h // bs, w // bs))


@register("CenterCropPad")
class CenterCropPad(OnnxOpConverter):
    """Crop (centred, extra row at the end) or zero-pad (extra at the end) each axis to shape."""

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        x = inputs[0]
        shape = static_shape(x, "CenterCropPad")
        rank = len(shape)
        target = [int(v) for v in required_constant(inputs[1], "CenterCropPad", "shape")]
        axes = [a % rank for a in attr.get("axes", range(rank))]
        if len(axes) != len(target):
            raise ModelError(f"CenterCropPad shape has {len(target)} values for {len(axes)} axes")
        crop_axes, begin, end = [], [], []
        before, after = [0] * rank, [0] * rank
        for axis, want in zip(axes, target):
            have = shape[axis]
            if want < have:
                start = (have - want) // 2
                crop_axes.append(axis)
                begin.append(start)
                end.append(start + want)
            elif want > have:
                before[axis] = (want - have) // 2
                after[axis] = want - have - before[axis]
        if crop_axes:
            x = bb.emit(relax.op.strided_slice(x, crop_axes, begin, end))
        if any(before) or any(after):
            x = bb.emit_te(topi.nn.pad, x, before, after, 0)
        return x


def _col2im_table(image, block, dilations, pads, strides):
    """[P, R] indices into the flattened (block offset, column) axis for each output pixel;
    entries past the end (index K*L) read a zero."""
    d = len(image)
    cols = [
        (image[i] + pads[i] + pads[i + d] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
        for i in range(d)
    ]
    n_cols = int(np.prod(cols))
    sources: list[list[int]] = [[] for _ in range(int(np.prod(image)))]
    for k, offset in enumerate(itertools.product(*(range(b) for b in block))):
        for col, where in enumerate(itertools.product(*(range(c) for c in cols))):
            pos = [where[i] * strides[i] + offset[i] * dilations[i] - pads[i] for i in range(d)]
            if all(0 <= p < n for p, n in zip(pos, image)):
                sources[int(np.ravel_multi_index(pos, image))].append(k * n_cols + col)
    width = max(1, max(len(s) for s in sources))
    end = int(np.prod(block)) * n_cols
    table = np.full((len(sources), width), end, dtype=np.int64)
    for p, s in enumerate(sources):
        table[p, : len(s)] = s
    return table, n_cols


@register("Col2Im")
class Col2Im(OnnxOpConverter):
    """Overlap-add of sliding blocks [N, C*prod(block), L] back into an image [N, C, *image]."""

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        x = inputs[0]
        image = [int(v) for v in required_constant(inputs[1], "Col2Im", "image_shape")]
        block = [int(v) for v in required_constant(inputs[2], "Col2Im", "block_shape")]
        d = len(image)
        dilations = list(attr.get("dilations", [1] * d))
        pads = list(attr.get("pads", [0] * 2 * d))
        strides = list(attr.get("strides", [1] * d))
        n, ck, length = static_shape(x, "Col2Im")
        k = int(np.prod(block))
        table, n_cols = _col2im_table(image, block, dilations, pads, strides)
        if ck % k or n_cols != length:
            raise ModelError(
                f"Col2Im input has shape {[n, ck, length]}, which does not match "
                f"image_shape {image} and block_shape {block} ({k} x {n_cols} blocks expected)"
            )
        c = ck // k
        flat = relax.op.reshape(x, (n, c, k * length))
        zero = relax.op.zeros((n, c, 1), str(x.ty.dtype))
        flat = bb.emit(relax.op.concat([flat, zero], axis=2))
        gathered = bb.emit(relax.op.take(flat, relax.const(table), axis=2))
        summed = bb.emit(relax.op.sum(gathered, axis=[3]))
        return relax.op.reshape(summed, (n, c, *image))
