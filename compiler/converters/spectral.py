"""Signal-processing ops (opset 17+): DFT, STFT, the Hann/Hamming/Blackman windows and
MelWeightMatrix.

Transforms are matrix products with compile-time cosine/sine tables, so the transform length
and axis must be constants (initializers, or inputs frozen with --bind). Windows of a constant
size are constants themselves.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import register
from .static import required_constant, required_int, static_dim

op = relax.op


def _optional(x, op_name: str, what: str):
    """An optional input's compile-time value (None if absent)."""
    return None if x is None else required_constant(x, op_name, what)


def _tables(n_in: int, length: int, bins: int, inverse: bool):
    """(cos, sin) tables [n_in, bins] of the length-`length` transform; input rows past
    `length` are zero (the signal is truncated), missing rows are zero padding."""
    j = np.arange(n_in).reshape(-1, 1)
    k = np.arange(bins).reshape(1, -1)
    angle = 2 * np.pi * ((j * k) % length) / length
    live = (j < length).astype(np.float64)
    sign = 1.0 if inverse else -1.0
    return np.cos(angle) * live, sign * np.sin(angle) * live


def _spectrum(bb, re, im, tables, dtype: str):
    """(re + i·im) @ (cos + i·sin) as (real, imag), both [..., bins]."""
    cos, sin = (relax.const(t.astype(dtype), dtype) for t in tables)
    real = op.matmul(re, cos)
    imag = op.matmul(re, sin)
    if im is not None:
        real = op.subtract(real, op.matmul(im, sin))
        imag = op.add(imag, op.matmul(im, cos))
    return bb.emit(real), bb.emit(imag)


def _parts(bb, x, work: str, op_name: str):
    """The real and imaginary parts [...] of a signal [..., 1 or 2] (imag None if real)."""
    x = bb.emit(op.astype(x, work)) if str(x.ty.dtype) != work else x
    re = bb.emit(op.take(x, relax.const(0, "int64"), axis=-1))
    im = None
    if static_dim(x.ty.shape.values[-1], op_name) == 2:
        im = bb.emit(op.take(x, relax.const(1, "int64"), axis=-1))
    return re, im


def _work_dtype(dtype: str) -> str:
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def _complex(bb, real, imag, dtype: str):
    """[..., 2] from the two parts, in the output dtype."""
    parts = [op.expand_dims(real, [-1])] + (
        [op.expand_dims(imag, [-1])] if imag is not None else []
    )
    out = op.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
    return bb.emit(op.astype(out, dtype))


def _dft(bb, x, length, axis: int, inverse: bool, onesided: bool):
    dtype = str(x.ty.dtype)
    rank = len(x.ty.shape.values)
    axis = axis % rank
    if axis == rank - 1:
        raise ModelError("DFT axis is the last (real/imaginary) axis; expected a signal axis")
    n_in = static_dim(x.ty.shape.values[axis], "DFT")
    if length is None:
        length = 2 * (n_in - 1) if inverse and onesided else n_in
    length = int(length)
    if length < 1:
        raise ModelError(f"DFT dft_length {length} is not positive")
    work = _work_dtype(dtype)
    re, im = _parts(bb, x, work, "DFT")
    perm = [i for i in range(rank - 1) if i != axis] + [axis]
    back = list(np.argsort(perm))
    re = bb.emit(op.permute_dims(re, perm))
    im = bb.emit(op.permute_dims(im, perm)) if im is not None else None
    if inverse and onesided:  # irfft: Hermitian input, real output
        bins = min(n_in, length // 2 + 1)
        cos, sin = _tables(n_in, length, length, True)
        weight = np.where((np.arange(n_in) == 0) | (2 * np.arange(n_in) == length), 1.0, 2.0)
        weight = (weight * (np.arange(n_in) < bins) / length).reshape(-1, 1)
        real, _ = _spectrum(bb, re, im, (cos * weight, sin * weight), work)
        return _complex(bb, op.permute_dims(real, back), None, dtype)
    bins = length // 2 + 1 if onesided else length
    cos, sin = _tables(n_in, length, bins, inverse)
    if inverse:
        cos, sin = cos / length, sin / length
    real, imag = _spectrum(bb, re, im, (cos, sin), work)
    return _complex(bb, op.permute_dims(real, back), op.permute_dims(imag, back), dtype)


@register("DFT")
class DFT(OnnxOpConverter):
    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        length = _optional(inputs[1] if len(inputs) > 1 else None, "DFT", "dft_length")
        return _dft(
            bb,
            inputs[0],
            length,
            attr.get("axis", 1),
            bool(attr.get("inverse", 0)),
            bool(attr.get("onesided", 0)),
        )

    @classmethod
    def _impl_v20(cls, bb, inputs, attr, params):
        inputs = list(inputs) + [None] * (3 - len(inputs))
        length = _optional(inputs[1], "DFT", "dft_length")
        axis = -2 if inputs[2] is None else required_int(inputs[2], "DFT", "axis")
        inverse, onesided = bool(attr.get("inverse", 0)), bool(attr.get("onesided", 0))
        return _dft(bb, inputs[0], length, axis, inverse, onesided)


@register("STFT")
class STFT(OnnxOpConverter):
    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        signal, step, window, frame_len = list(inputs) + [None] * (4 - len(inputs))
        step = required_int(step, "STFT", "frame_step")
        frame_len = _optional(frame_len, "STFT", "frame_length")
        length = static_dim(signal.ty.shape.values[1], "STFT")
        if frame_len is None:
            frame_len = (
                static_dim(window.ty.shape.values[0], "STFT") if window is not None else length
            )
        frame_len = int(frame_len)
        if step < 1 or not 0 < frame_len <= length:
            raise ModelError(f"STFT frame_step {step} / frame_length {frame_len} out of range")
        frames = 1 + (length - frame_len) // step
        dtype = str(signal.ty.dtype)
        work = _work_dtype(dtype)
        re, im = _parts(bb, signal, work, "STFT")  # [batch, length]
        index = np.arange(frames).reshape(-1, 1) * step + np.arange(frame_len).reshape(1, -1)
        index = relax.const(index.astype(np.int64))
        re = op.take(re, index, axis=1)  # [batch, frames, frame_len]
        im = op.take(im, index, axis=1) if im is not None else None
        if window is not None:
            w = bb.emit(op.astype(window, work))
            re = op.multiply(re, w)
            im = op.multiply(im, w) if im is not None else None
        re = bb.emit(re)
        im = bb.emit(im) if im is not None else None
        onesided = bool(attr.get("onesided", 1))
        bins = frame_len // 2 + 1 if onesided else frame_len
        real, imag = _spectrum(bb, re, im, _tables(frame_len, frame_len, bins, False), work)
        return _complex(bb, real, imag, dtype)


def _window_converter(name: str, coefficients: tuple[float, ...]):
    """Windows sum_m (-1)^m a_m cos(2 pi m n / N) for N = size (periodic) or size - 1."""

    class Window(OnnxOpConverter):
        @classmethod
        def _impl_v17(cls, bb, inputs, attr, params):
            size = required_int(inputs[0], name, "size")
            dtype = helper.tensor_dtype_to_np_dtype(attr.get("output_datatype", 1))
            span = size if attr.get("periodic", 1) else size - 1
            n = np.arange(size, dtype=np.float64)
            values = np.zeros(size)
            for m, a in enumerate(coefficients):
                values += (-1) ** m * a * np.cos(2 * np.pi * m * n / span) if span else a
            return relax.const(values.astype(dtype), np.dtype(dtype).name)

    Window.__name__ = name
    return register(name)(Window)


_window_converter("HannWindow", (0.5, 0.5))
_window_converter("HammingWindow", (25.0 / 46.0, 21.0 / 46.0))
_window_converter("BlackmanWindow", (0.42, 0.5, 0.08))


@register("MelWeightMatrix")
class MelWeightMatrix(OnnxOpConverter):
    """Triangular filters [dft_length // 2 + 1, num_mel_bins] between mel-spaced bin edges; the
    three counts are constants, the edge frequencies may be run-time values."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        mels, length, rate = (
            required_int(x, "MelWeightMatrix", what)
            for x, what in zip(inputs[:3], ("num_mel_bins", "dft_length", "sample_rate"))
        )
        lower, upper = (bb.emit(op.astype(x, "float32")) for x in inputs[3:5])

        def to_mel(hz):  # 2595 * log10(1 + hz / 700), in float32 as the reference computes it
            ratio = op.add(relax.const(1.0, "float32"), op.divide(hz, relax.const(700.0)))
            return op.multiply(relax.const(2595.0 / np.log(10), "float32"), op.log(ratio))

        low, high = bb.emit(to_mel(lower)), bb.emit(to_mel(upper))
        step = op.astype(op.divide(op.subtract(high, low), relax.const(mels + 2.0)), "float64")
        edges = relax.const(np.arange(mels + 2, dtype=np.float64), "float64")
        edges = op.add(op.multiply(edges, step), op.astype(low, "float64"))
        hz = op.multiply(
            relax.const(700.0, "float64"),
            op.subtract(
                op.exp(op.multiply(edges, relax.const(np.log(10) / 2595, "float64"))),
                relax.const(1.0, "float64"),
            ),
        )
        bins = op.floor(
            op.divide(
                op.multiply(hz, relax.const(length + 1.0, "float64")),
                relax.const(float(rate), "float64"),
            )
        )
        bins = bb.emit(op.astype(bins, "int64"))
        left, center, right = (
            op.strided_slice(bins, axes=[0], begin=[i], end=[i + mels]) for i in range(3)
        )
        left, center, right = bb.emit(left), bb.emit(center), bb.emit(right)
        j = relax.const(np.arange(length // 2 + 1, dtype=np.int64).reshape(-1, 1), "int64")
        one = relax.const(1, "int64")
        rising = op.divide(
            op.astype(op.subtract(j, left), "float64"),
            op.astype(op.maximum(op.subtract(center, left), one), "float64"),
        )
        rising = op.where(op.equal(center, left), op.astype(op.equal(j, center), "float64"), rising)
        falling = op.divide(
            op.astype(op.subtract(right, j), "float64"),
            op.astype(op.maximum(op.subtract(right, center), one), "float64"),
        )
        zero = relax.const(0.0, "float64")
        out = op.where(
            op.logical_and(op.less_equal(left, j), op.less_equal(j, center)), rising, zero
        )
        out = op.where(op.logical_and(op.less_equal(center, j), op.less(j, right)), falling, out)
        dtype = helper.tensor_dtype_to_np_dtype(attr.get("output_datatype", 1)).name
        return bb.emit(op.astype(out, dtype))
