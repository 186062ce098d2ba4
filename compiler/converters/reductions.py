"""ReduceMax, ReduceMin and ReduceLogSumExp with ONNX's results on bool and empty inputs.

TVM's converters take bool max/min to kernels that have no identity for bool, give
-FLT_MAX/FLT_MAX (not -inf/inf) for a max/min over zero elements, and subtract a max that may
be infinite in LogSumExp. Axes come from the attribute (opset < 18) or a constant input."""

from __future__ import annotations

import math

from tvm import relax, te, tirx
from tvm.relax.frontend.onnx import onnx_frontend

from . import register
from .static import required_constant


def reduce_axes(inputs, attr, op: str, ndim: int) -> list[int] | None:
    """The normalised axes to reduce; None for all; [] for none (noop_with_empty_axes)."""
    axes = attr.get("axes")
    if len(inputs) > 1 and inputs[1] is not None:
        axes = required_constant(inputs[1], op, "axes").reshape(-1).tolist()
    if not axes:
        return [] if attr.get("noop_with_empty_axes", 0) else None
    return sorted(int(a) + ndim if int(a) < 0 else int(a) for a in axes)


def _extreme(bb, inputs, attr, largest: bool):
    x = inputs[0]
    axes = reduce_axes(inputs, attr, "ReduceMax" if largest else "ReduceMin", len(x.ty.shape))
    keepdims = bool(attr.get("keepdims", 1))
    if axes == []:
        return x
    if str(x.ty.dtype) == "bool":  # max is any (a count > 0), min is all (no false element)
        flags = x if largest else relax.op.logical_not(x)
        count = bb.emit(relax.op.sum(relax.op.astype(flags, "int32"), axes, keepdims))
        zero = relax.const(0, "int32")
        return relax.op.greater(count, zero) if largest else relax.op.equal(count, zero)
    if "float" not in str(x.ty.dtype):
        return (relax.op.max if largest else relax.op.min)(x, axes, keepdims)
    edge = -math.inf if largest else math.inf
    return bb.emit_te(_reduce_from, x, axes or list(range(len(x.ty.shape))), keepdims, edge)


def _reduce_from(data, axes: list[int], keepdims: bool, edge: float):
    """max (edge -inf) or min (edge inf) over `axes`, starting from `edge`: TVM's max starts
    from the lowest finite value, so an all -inf row (a fully masked attention row) or an
    empty one would give -FLT_MAX."""
    pick = tirx.max if edge < 0 else tirx.min
    reducer = te.comm_reducer(lambda a, b: pick(a, b), lambda t: tirx.const(edge, t))
    reduced = {a: te.reduce_axis((0, data.shape[a]), f"k{a}") for a in axes}
    kept = [a for a in range(len(data.shape)) if keepdims or a not in reduced]
    shape = [1 if a in reduced else data.shape[a] for a in kept]

    def element(*index):
        at = dict(zip(kept, index))
        source = [reduced[a] if a in reduced else at[a] for a in range(len(data.shape))]
        return reducer(data[tuple(source)], axis=list(reduced.values()))

    return te.compute(shape, element, name="max" if edge < 0 else "min")


@register("ReduceMax")
class ReduceMax(onnx_frontend.OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _extreme(bb, inputs, attr, largest=True)


@register("ReduceMin")
class ReduceMin(onnx_frontend.OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return _extreme(bb, inputs, attr, largest=False)


@register("ReduceLogSumExp")
class ReduceLogSumExp(onnx_frontend.OnnxOpConverter):
    """log(sum(exp(x - m))) + m with m the max, taken as 0 where it is not finite."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x = inputs[0]
        axes = reduce_axes(inputs, attr, "ReduceLogSumExp", len(x.ty.shape))
        keepdims = bool(attr.get("keepdims", 1))
        if axes == []:
            return x
        top = bb.emit(relax.op.max(x, axes, keepdims=True))
        top = bb.emit(relax.op.where(relax.op.isfinite(top), top, relax.const(0, x.ty.dtype)))
        total = relax.op.sum(relax.op.exp(relax.op.subtract(x, top)), axes, keepdims)
        if not keepdims:
            top = relax.op.squeeze(top, axes)
        return bb.emit(relax.op.add(relax.op.log(total), top))
