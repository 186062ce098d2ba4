"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (TVM's importer has neither).

Both are decomposed into Relax operators. The target class of each element is picked with
gather_elements after ignored targets are replaced by class 0, so an ignore_index outside
[0, C) (e.g. -1) never indexes out of range; ignored elements get weight 0."""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelError
from . import register, text_attr

_REDUCTIONS = ("none", "sum", "mean")


def _reduction(attr) -> str:
    value = text_attr(attr, "reduction", "mean")
    if value not in _REDUCTIONS:
        raise ModelError(
            f"loss reduction {value!r} is not supported: expected one of {', '.join(_REDUCTIONS)}"
        )
    return value


def nll_loss(bb, log_prob, target, weight, reduction: str, ignore_index: int | None):
    """ONNX NegativeLogLikelihoodLoss on Relax expressions (log_prob: N x C x d1..dk)."""
    dtype = log_prob.ty.dtype
    target_dtype = target.ty.dtype
    safe = target
    keep = None
    if ignore_index is not None:
        keep = bb.emit(relax.op.not_equal(target, relax.const(ignore_index, target_dtype)))
        safe = bb.emit(relax.op.where(keep, target, relax.const(0, target_dtype)))
    index = bb.emit(relax.op.expand_dims(safe, axis=1))
    picked = bb.emit(relax.op.squeeze(relax.op.gather_elements(log_prob, index, axis=1), [1]))
    loss = bb.emit(relax.op.negative(picked))
    picked_weight = None
    if weight is not None:
        picked_weight = bb.emit(relax.op.take(weight, safe, axis=0))
        if keep is not None:
            picked_weight = bb.emit(
                relax.op.where(keep, picked_weight, relax.const(0, weight.ty.dtype))
            )
    elif keep is not None:
        picked_weight = bb.emit(relax.op.astype(keep, dtype))
    if picked_weight is not None:
        loss = bb.emit(relax.op.multiply(loss, picked_weight))
    if reduction == "none":
        return loss
    total = bb.emit(relax.op.sum(loss))
    if reduction == "sum":
        return total
    if picked_weight is None:
        return bb.emit(relax.op.mean(loss))
    return bb.emit(relax.op.divide(total, relax.op.sum(picked_weight)))


def _ignore_index(attr) -> int | None:
    value = attr.get("ignore_index")
    return None if value is None else int(value)


@register("NegativeLogLikelihoodLoss")
class NegativeLogLikelihoodLoss(onnx_frontend.OnnxOpConverter):
    """loss = -input[n, target[n, d..], d..] * weight[target], reduced."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        weight = inputs[2] if len(inputs) > 2 else None
        return nll_loss(bb, inputs[0], inputs[1], weight, _reduction(attr), _ignore_index(attr))


@register("SoftmaxCrossEntropyLoss")
class SoftmaxCrossEntropyLoss(onnx_frontend.OnnxOpConverter):
    """NLL of log_softmax(scores) over the class axis; the second output is log_softmax."""

    @classmethod
    def _impl_v12(cls, bb, inputs, attr, params):
        scores, labels = inputs[0], inputs[1]
        weight = inputs[2] if len(inputs) > 2 else None
        log_prob = bb.emit(relax.op.nn.log_softmax(scores, axis=1))
        loss = nll_loss(bb, log_prob, labels, weight, _reduction(attr), _ignore_index(attr))
        if attr["tvm_custom"]["num_outputs"] > 1:
            return relax.Tuple([loss, log_prob])
        return loss
