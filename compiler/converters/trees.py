"""ai.onnx.ml TreeEnsemble (opset 5): every tree walked in lock step, one level per step.

The node arrays are constants; a step gathers each (sample, tree)'s current node, compares the
feature with the split under the node's mode (set membership included), and moves to the true
or false child. After as many steps as the deepest tree, every walk stands on a leaf, whose
weight goes to its target.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from ..errors import ModelError
from . import ML_DOMAIN, register
from .static import static_shape

_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)
_COMPARE = {
    _LEQ: relax.op.less_equal,
    _LT: relax.op.less,
    _GTE: relax.op.greater_equal,
    _GT: relax.op.greater,
    _EQ: relax.op.equal,
    _NEQ: relax.op.not_equal,
}


def _array(attr, name, default=None):
    value = attr.get(name, default)
    if value is None:
        raise ModelError(f"TreeEnsemble needs the {name} attribute")
    if hasattr(value, "raw_data") or hasattr(value, "dims"):
        return numpy_helper.to_array(value)
    return np.asarray(value)


def _depth(true_ids, false_ids, true_leaf, false_leaf, roots) -> int:
    """Steps until every walk reaches a leaf (the deepest root-to-leaf path)."""
    memo: dict[int, int] = {}

    def depth(node: int, seen: tuple = ()) -> int:
        if node in seen:
            raise ModelError(f"TreeEnsemble node {node} is in a cycle")
        if node not in memo:
            children = [
                0 if leaf else depth(int(child), (*seen, node))
                for child, leaf in (
                    (true_ids[node], true_leaf[node]),
                    (false_ids[node], false_leaf[node]),
                )
            ]
            memo[node] = 1 + max(children)
        return memo[node]

    return max(depth(int(r)) for r in roots)


def _member_sets(modes, values) -> np.ndarray:
    """[nodes, widest set] membership values per node (NaN-padded; NaN equals nothing)."""
    sets = np.split(values, np.flatnonzero(np.isnan(values))) if values.size else []
    sets = [s[~np.isnan(s)] for s in sets]
    members = np.flatnonzero(modes == _MEMBER)
    width = max([len(s) for s in sets] + [1])
    table = np.full((len(modes), width), np.nan)
    for node, values_of_node in zip(members, sets):
        table[node, : len(values_of_node)] = values_of_node
    return table


@register("TreeEnsemble", ML_DOMAIN)
class TreeEnsemble(OnnxOpConverter):
    @classmethod
    def _impl_v5(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = str(x.ty.dtype)
        n = static_shape(x, "TreeEnsemble")[0]
        modes = _array(attr, "nodes_modes").astype(np.int64)
        true_ids, false_ids = _array(attr, "nodes_truenodeids"), _array(attr, "nodes_falsenodeids")
        true_leaf, false_leaf = _array(attr, "nodes_trueleafs"), _array(attr, "nodes_falseleafs")
        missing = _array(attr, "nodes_missing_value_tracks_true", np.zeros(len(modes), np.int64))
        roots = _array(attr, "tree_roots")
        steps = _depth(true_ids, false_ids, true_leaf, false_leaf, roots)

        def const(values, kind=dtype):
            return relax.const(np.asarray(values).astype(kind), kind)

        ids = bb.emit(relax.op.broadcast_to(const(roots[None, :], "int64"), (n, len(roots))))
        at_leaf = bb.emit(relax.op.zeros((n, len(roots)), "int64"))
        tables = {
            "feature": const(_array(attr, "nodes_featureids"), "int64"),
            "split": const(_array(attr, "nodes_splits")),
            "mode": const(modes, "int64"),
            "missing": const(missing, "int64"),
            "members": const(_member_sets(modes, _array(attr, "membership_values", np.zeros(0)))),
            "next": (const(true_ids, "int64"), const(false_ids, "int64")),
            "leaf": (const(true_leaf, "int64"), const(false_leaf, "int64")),
        }
        for _ in range(steps):
            ids, at_leaf = cls._step(bb, x, ids, at_leaf, tables, set(modes.tolist()))
        return cls._aggregate(bb, ids, attr, dtype, n, len(roots))

    @classmethod
    def _step(cls, bb, x, ids, at_leaf, tables, modes):
        value = bb.emit(relax.op.gather_elements(x, relax.op.take(tables["feature"], ids), axis=1))
        split = relax.op.take(tables["split"], ids)
        mode = bb.emit(relax.op.take(tables["mode"], ids))
        go_true = relax.op.zeros_like(ids)
        for kind in modes:
            if kind == _MEMBER:
                rows = relax.op.take(tables["members"], ids, axis=0)
                hits = relax.op.equal(relax.op.expand_dims(value, 2), rows)
                hit = relax.op.max(relax.op.astype(hits, "int64"), axis=[2])
            elif kind in _COMPARE:
                hit = relax.op.astype(_COMPARE[kind](value, split), "int64")
            else:
                raise ModelError(f"TreeEnsemble node mode {kind} is not supported")
            chosen = relax.op.astype(relax.op.equal(mode, relax.const(kind, "int64")), "int64")
            go_true = relax.op.add(go_true, relax.op.multiply(chosen, hit))
        nan = relax.op.isnan(value)
        go_true = bb.emit(relax.op.where(nan, relax.op.take(tables["missing"], ids), go_true))
        take_true = relax.op.not_equal(go_true, relax.const(0, "int64"))
        stay = relax.op.not_equal(at_leaf, relax.const(0, "int64"))
        nxt = relax.op.where(take_true, *(relax.op.take(t, ids) for t in tables["next"]))
        leaf = relax.op.where(take_true, *(relax.op.take(t, ids) for t in tables["leaf"]))
        return bb.emit(relax.op.where(stay, ids, nxt)), bb.emit(relax.op.where(stay, at_leaf, leaf))

    @classmethod
    def _aggregate(cls, bb, leaves, attr, dtype, n, trees):
        targets = int(attr["n_targets"])
        target_ids = _array(attr, "leaf_targetids").astype(np.int64)
        target = relax.op.take(relax.const(target_ids, "int64"), leaves)
        weight = relax.op.take(
            relax.const(_array(attr, "leaf_weights").astype(dtype), dtype), leaves
        )
        onehot = relax.op.equal(
            relax.op.expand_dims(target, 2),
            relax.const(np.arange(targets, dtype=np.int64), "int64"),
        )
        onehot = bb.emit(relax.op.astype(onehot, dtype))
        contrib = bb.emit(relax.op.multiply(onehot, relax.op.expand_dims(weight, 2)))
        how = int(attr.get("aggregate_function", 1))
        if how in (0, 1):  # AVERAGE, SUM
            out = relax.op.sum(contrib, axis=[1])
            if how == 0:
                out = relax.op.divide(out, relax.const(float(trees), dtype))
        elif how in (2, 3):  # MIN, MAX over the trees that reach the target
            fill = relax.const(np.inf if how == 2 else -np.inf, dtype)
            picked = relax.op.where(relax.op.astype(onehot, "bool"), contrib, fill)
            out = (relax.op.min if how == 2 else relax.op.max)(picked, axis=[1])
            reached = relax.op.greater(relax.op.sum(onehot, axis=[1]), relax.const(0.0, dtype))
            out = relax.op.where(reached, out, relax.const(0.0, dtype))
        else:
            raise ModelError(f"TreeEnsemble aggregate_function {how} is not supported")
        # The spec's numbering (SOFTMAX 1, LOGISTIC 2); onnxruntime 1.2x swaps 1 and 2.
        post = int(attr.get("post_transform", 0))
        if post == 1:
            return relax.op.nn.softmax(out, axis=-1)
        if post == 2:
            return relax.op.sigmoid(out)
        if post == 3:  # SOFTMAX_ZERO: zero scores stay zero and take no share
            out = bb.emit(out)
            kept = relax.op.astype(relax.op.not_equal(out, relax.const(0.0, dtype)), dtype)
            top = relax.op.max(out, axis=[-1], keepdims=True)
            exp = bb.emit(relax.op.multiply(relax.op.exp(relax.op.subtract(out, top)), kept))
            return relax.op.divide(exp, relax.op.sum(exp, axis=[-1], keepdims=True))
        if post != 0:
            raise ModelError(f"TreeEnsemble post_transform {post} (PROBIT) is not supported")
        return out
