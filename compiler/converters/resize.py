"""Resize and Upsample, for every mode and attribute of the ONNX spec (opsets 7 to 19+).

Resize is separable: each resized axis is one gather of K neighbours per output position and a
weighted sum. With the input shape static and scales/sizes/roi compile-time constants, the
neighbour indices and weights are computed here in numpy (float64), so the graph gets constant
tables and the model runs a `take` + multiply + sum per axis, which fuse into one kernel.
Run-time scales or sizes would make the output shape data-dependent: they must be bound
(`--bind`), and the error says so.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register, text_attr
from .static import constant_array, needs_constant, static_shape

_COORD_MODES = {
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
}


def _source_coords(mode: str, n_in: int, n_out: int, scale: float, roi) -> np.ndarray:
    """Where each output position samples the input axis (ONNX coordinate_transformation_mode),
    in float32 arithmetic as onnxruntime computes it (ties in nearest rounding depend on it)."""
    y = np.arange(n_out, dtype=np.float32)
    scale = np.float32(scale)
    width = scale * np.float32(n_in)  # the un-truncated output length
    roi = None if roi is None else np.asarray(roi, dtype=np.float32)
    if mode == "asymmetric":
        return y / scale
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if width > 1 else np.full(n_out, -0.5)
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / width)
        return offset + (y + 0.5) / scale - 0.5
    if mode == "align_corners":
        return y * (n_in - 1) / (width - 1) if width != 1 else np.zeros(n_out)
    start, end = roi  # tf_crop_and_resize
    if width == 1:
        return np.full(n_out, (end - start) * (n_in - 1) / 2 + start * (n_in - 1))
    return y * (end - start) * (n_in - 1) / (width - 1) + start * (n_in - 1)


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _nearest(x: np.ndarray, rounding: str, downsampling: bool) -> np.ndarray:
    floor = np.floor(x)
    frac = x - floor
    if rounding == "round_prefer_floor":
        return floor + (frac > 0.5)
    if rounding == "round_prefer_ceil":
        return floor + (frac >= 0.5)
    if rounding == "floor":
        return floor
    if rounding == "ceil":
        return np.ceil(x)
    if rounding == "simple":  # Resize-10 and Upsample, as onnxruntime runs them
        return np.ceil(x) if downsampling else floor
    raise ModelError(f"Resize nearest_mode {rounding!r} is not supported")


def axis_table(n_in: int, n_out: int, scale: float, roi, opts: dict):
    """(indices [n_out, K], weights [n_out, K], extrapolated [n_out] bool or None)."""
    x = _source_coords(opts["coord"], n_in, n_out, scale, roi)
    outside = None
    if opts["coord"] == "tf_crop_and_resize":
        outside = (x < 0) | (x > n_in - 1)
    if opts["mode"] == "nearest":
        idx = _nearest(x, opts["nearest_mode"], scale < 1)[:, None]
        return np.clip(idx, 0, n_in - 1).astype(np.int64), np.ones((n_out, 1)), outside
    shrink = min(scale, 1.0) if opts["antialias"] else 1.0
    radius = 1 if opts["mode"] == "linear" else 2
    start = math.floor(-radius / shrink) + 1
    taps = 2 - 2 * start
    # the window starts left of x; an integer x counts as the right end of the previous cell
    base = np.where(x == np.floor(x), x - 1, np.floor(x))
    idx = base[:, None] + start + np.arange(taps)[None, :]
    dist = (idx - x[:, None]) * shrink
    if opts["mode"] == "linear":
        weights = np.clip(1 - np.abs(dist), 0, 1)
    else:
        weights = _cubic(dist, opts["cubic_a"])
    if opts["antialias"]:
        weights = weights / weights.sum(axis=1, keepdims=True)
    if opts["exclude_outside"]:
        weights = np.where((idx < 0) | (idx >= n_in), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, n_in - 1).astype(np.int64), weights, outside


def _resize_axis(bb, x, axis: int, table, opts: dict):
    idx, weights, outside = table
    ndim = len(x.ty.shape)
    dtype = str(x.ty.dtype)
    if idx.shape[1] == 1:
        out = bb.emit(relax.op.take(x, relax.const(idx[:, 0]), axis=axis))
    else:  # one gather per tap and a weighted sum: injective ops that fuse into one kernel
        shape = (1,) * axis + (-1,) + (1,) * (ndim - axis - 1)
        out = None
        for tap in range(idx.shape[1]):
            gathered = relax.op.take(x, relax.const(idx[:, tap]), axis=axis)
            w = relax.const(weights[:, tap].reshape(shape).astype(dtype), dtype)
            term = relax.op.multiply(gathered, w)
            out = term if out is None else relax.op.add(out, term)
        out = bb.emit(out)
    if outside is not None and outside.any():
        mask = relax.const(outside.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1)))
        fill = relax.const(np.array(opts["extrapolation_value"], dtype=dtype), dtype)
        out = bb.emit(relax.op.where(mask, fill, out))
    return out


def resize(bb, x, scales: list[float], sizes: list[int], rois: list, opts: dict):
    """Resize every axis whose size, scale or roi changes anything."""
    in_dtype = str(x.ty.dtype)
    interpolates = opts["mode"] != "nearest"
    if interpolates and in_dtype not in ("float32", "float64"):
        x = bb.emit(relax.op.astype(x, "float32"))
    shape = static_shape(x, "Resize")
    for axis, (n_in, n_out, scale, roi) in enumerate(zip(shape, sizes, scales, rois)):
        identity_roi = roi is None or (math.isclose(roi[0], 0) and math.isclose(roi[1], 1))
        if n_in == n_out and math.isclose(scale, 1.0) and identity_roi:
            continue
        if n_out == 0 or n_in == 0:
            raise ModelError(
                f"Resize to or from an empty axis ({n_in} -> {n_out}) is not supported"
            )
        x = _resize_axis(bb, x, axis, axis_table(n_in, n_out, scale, roi, opts), opts)
    if str(x.ty.dtype) != in_dtype:
        if in_dtype.startswith(("int", "uint")):
            info = np.iinfo(in_dtype)
            x = relax.op.clip(x, int(info.min), int(info.max))  # truncated, as onnxruntime does
        x = relax.op.astype(x, in_dtype)
    return x


def _plan(shape: list[int], scales, sizes, axes, policy: str):
    """Per-axis (scales, sizes) from the given scales or sizes (ONNX's axes and aspect policy)."""
    rank = len(shape)
    axes = [a % rank for a in axes] if axes is not None else list(range(rank))
    if sizes is not None:
        full = list(shape)
        for a, s in zip(axes, sizes):
            full[a] = int(s)
        ratios = [full[a] / shape[a] for a in range(rank)]
        if policy in ("not_larger", "not_smaller"):
            pick = min if policy == "not_larger" else max
            ratio = pick(ratios[a] for a in axes)
            ratios = [ratio if a in axes else 1.0 for a in range(rank)]
            full = [int(ratio * shape[a] + 0.5) if a in axes else shape[a] for a in range(rank)]
        elif policy != "stretch":
            raise ModelError(f"Resize keep_aspect_ratio_policy {policy!r} is not supported")
        return ratios, full
    ratios = [1.0] * rank
    for a, s in zip(axes, scales):
        ratios[a] = float(s)
    if any(r <= 0 for r in ratios):
        raise ModelError(f"Resize scales must be positive, got {list(scales)}")
    return ratios, [math.floor(r * n) for r, n in zip(ratios, shape)]


def _rois(roi, rank: int, axes) -> list:
    if roi is None or roi.size == 0:
        return [None] * rank
    axes = [a % rank for a in axes] if axes is not None else list(range(rank))
    count = len(axes)
    if roi.size != 2 * count:
        raise ModelError(f"Resize roi has {roi.size} values, expected {2 * count}")
    rois = [(0.0, 1.0)] * rank
    for i, a in enumerate(axes):
        rois[a] = (float(roi[i]), float(roi[count + i]))
    return rois


@register("Resize")
class Resize(OnnxOpConverter):
    """ONNX Resize (all modes, coordinate transforms, antialias, axes, aspect policies)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        opts = _resize10_options(attr)
        return _convert(bb, inputs[0], None, inputs[1], None, opts, "Resize")

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        roi = inputs[1] if len(inputs) > 1 else None
        scales = inputs[2] if len(inputs) > 2 else None
        sizes = inputs[3] if len(inputs) > 3 else None
        return _convert(bb, inputs[0], roi, scales, sizes, _options(attr), "Resize")


@register("Upsample")
class Upsample(OnnxOpConverter):
    """ONNX Upsample (deprecated): Resize-10 with scales from an input (v9) or attribute (v7)."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        scales = relax.const(np.asarray(attr.get("scales", ()), dtype=np.float32))
        opts = _resize10_options(attr)
        return _convert(bb, inputs[0], None, scales, None, opts, "Upsample")

    @classmethod
    def _impl_v9(cls, bb, inputs, attr, params):
        opts = _resize10_options(attr)
        return _convert(bb, inputs[0], None, inputs[1], None, opts, "Upsample")


def _options(attr) -> dict:
    opts = {
        "mode": text_attr(attr, "mode", "nearest"),
        "coord": text_attr(attr, "coordinate_transformation_mode", "half_pixel"),
        "nearest_mode": text_attr(attr, "nearest_mode", "round_prefer_floor"),
        "cubic_a": float(attr.get("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(attr.get("exclude_outside", 0)),
        "extrapolation_value": float(attr.get("extrapolation_value", 0.0)),
        "antialias": bool(attr.get("antialias", 0)),
        "axes": attr.get("axes"),
        "policy": text_attr(attr, "keep_aspect_ratio_policy", "stretch"),
    }
    if opts["mode"] == "bilinear":  # Upsample-7's spelling
        opts["mode"] = "linear"
    if opts["mode"] not in ("nearest", "linear", "cubic"):
        raise ModelError(f"Resize mode {opts['mode']!r} is not supported: nearest, linear, cubic")
    if opts["coord"] not in _COORD_MODES:
        raise ModelError(f"Resize coordinate_transformation_mode {opts['coord']!r} is unknown")
    return opts


def _resize10_options(attr) -> dict:
    """Resize-10 and Upsample: asymmetric coordinates, nearest rounding as onnxruntime does."""
    opts = _options({**attr, "coordinate_transformation_mode": b"asymmetric"})
    opts["nearest_mode"] = "simple"
    return opts


def _convert(bb, x, roi, scales, sizes, opts: dict, op: str):
    shape = static_shape(x, op)
    roi_v, scales_v, sizes_v = (constant_array(e) for e in (roi, scales, sizes))
    if scales_v is not None and scales_v.size == 0:
        scales_v = None
    if sizes_v is not None and sizes_v.size == 0:
        sizes_v = None
    if sizes_v is None and scales_v is None:
        raise needs_constant(op, "sizes" if sizes is not None else "scales")
    if roi is not None and roi_v is None and opts["coord"] == "tf_crop_and_resize":
        raise needs_constant(op, "roi")
    ratios, full = _plan(shape, scales_v, sizes_v, opts["axes"], opts["policy"])
    rois = _rois(roi_v, len(shape), opts["axes"]) if opts["coord"] == "tf_crop_and_resize" else None
    return resize(bb, x, ratios, full, rois or [None] * len(shape), opts)
