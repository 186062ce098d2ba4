"""Loss, reduction, elementwise-math and normalisation converters (compiler/converters/
losses.py, reductions.py, math_ops.py, norms.py, tensor_ops.py): each model is compiled by
mlc, run by the bundle's loader and compared with onnxruntime."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from onnx_cases import check, const, make_model, vi

F, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(5)


def test_losses_weights_ignore_index_and_log_prob(tmp_path):
    n, c, d = 3, 5, 4
    nodes = [
        helper.make_node(
            "SoftmaxCrossEntropyLoss", ["x", "t", "w"], ["sce", "log_prob"], ignore_index=-1
        ),
        helper.make_node(
            "NegativeLogLikelihoodLoss",
            ["log_prob", "t"],
            ["nll"],
            reduction="sum",
            ignore_index=-1,
        ),
        helper.make_node(
            "NegativeLogLikelihoodLoss",
            ["x", "t", "w"],
            ["each"],
            reduction="none",
            ignore_index=-1,
        ),
    ]
    outputs = [vi("sce", []), vi("log_prob", [n, c, d]), vi("nll", []), vi("each", [n, d])]
    model = make_model(
        nodes,
        [vi("x", [n, c, d]), vi("t", [n, d], I64)],
        outputs,
        [const("w", RNG.uniform(0.5, 2, c).astype(np.float32))],
        opset=13,
    )
    target = RNG.integers(0, c, (n, d))
    target[0, 1] = target[2, 3] = -1  # ignored: weight 0, excluded from the mean
    check(tmp_path, model, {"x": RNG.standard_normal((n, c, d)).astype(np.float32), "t": target})


def test_reductions_bool_empty_and_log_sum_exp(tmp_path):
    axes = const("axes", np.array([1], np.int64))
    nodes = [
        helper.make_node("ReduceMax", ["b", "axes"], ["any"], keepdims=0),
        helper.make_node("ReduceMin", ["b", "axes"], ["all"], keepdims=0),
        helper.make_node("ReduceMax", ["empty", "axes"], ["max_empty"], keepdims=1),
        helper.make_node("ReduceMin", ["empty", "axes"], ["min_empty"], keepdims=0),
        helper.make_node("ReduceLogSumExp", ["x"], ["lse"], keepdims=0),
    ]
    inputs = [vi("b", [4, 3], TensorProto.BOOL), vi("empty", [2, 0, 3]), vi("x", [2, 6])]
    outputs = [
        vi("any", [4], TensorProto.BOOL),
        vi("all", [4], TensorProto.BOOL),
        vi("max_empty", [2, 1, 3]),
        vi("min_empty", [2, 3]),
        vi("lse", []),
    ]
    model = make_model(nodes, inputs, outputs, [axes], opset=20)
    x = RNG.standard_normal((2, 6)).astype(np.float32) * 30
    bools = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]], bool)
    got = check(tmp_path, model, {"b": bools, "empty": np.zeros((2, 0, 3), np.float32), "x": x})
    assert np.isneginf(got["max_empty"]).all() and np.isposinf(got["min_empty"]).all()


def test_elementwise_math(tmp_path):
    s = [6]
    nodes = [
        helper.make_node("Pow", ["x", "k"], ["pow"]),
        helper.make_node("Pow", ["k", "k"], ["ipow"]),
        helper.make_node("Mod", ["x", "y"], ["mod"]),
        helper.make_node("IsInf", ["y"], ["neginf"], detect_positive=0),
        helper.make_node("Cosh", ["x"], ["cosh"]),
        helper.make_node("Sinh", ["x"], ["sinh"]),
        helper.make_node("Celu", ["x"], ["celu"], alpha=2.0),
        helper.make_node("CumProd", ["x", "axis"], ["cumprod"], exclusive=1, reverse=1),
        helper.make_node("BitCast", ["x"], ["bits"], to=TensorProto.INT32),
        helper.make_node("BitShift", ["k", "shift"], ["shl"], direction="LEFT"),
        helper.make_node("BitShift", ["k", "shift"], ["shr"], direction="RIGHT"),
    ]
    outputs = [vi(n, s) for n in ("pow", "mod", "cosh", "sinh", "celu", "cumprod")]
    outputs += [
        vi("ipow", s, I64),
        vi("neginf", s, TensorProto.BOOL),
        vi("bits", s, TensorProto.INT32),
        vi("shl", s, I64),
        vi("shr", s, I64),
    ]
    inputs = [vi("x", s), vi("y", s), vi("k", s, I64), vi("shift", s, I64)]
    model = make_model(nodes, inputs, outputs, [const("axis", np.array(0, np.int64))], opset=28)
    inf = np.inf
    feed = {
        "x": np.array([-3.0, 3.0, -1.5, 1.0, 0.5, 2.0], np.float32),
        "y": np.array([inf, inf, -inf, -inf, 2.0, -0.75], np.float32),
        "k": np.array([-3, 2, 5, -1, 3, 4], np.int64),
        "shift": np.array([1, 64, -1, 70, 0, 63], np.int64),
    }
    check(tmp_path, model, feed)


def test_normalisation_one_hot_and_det(tmp_path):
    nodes = [
        helper.make_node("RMSNormalization", ["x", "scale"], ["rms"], axis=0, epsilon=1e-3),
        helper.make_node("LpNormalization", ["x"], ["l1"], p=1, axis=0),
        helper.make_node("OneHot", ["idx", "depth", "values"], ["hot"], axis=0),
        helper.make_node("EyeLike", ["idx"], ["eye"], k=1, dtype=TensorProto.DOUBLE),
        helper.make_node("Det", ["m"], ["det"]),
    ]
    inputs = [vi("x", [3, 4]), vi("idx", [2, 3], I64), vi("values", [2]), vi("m", [2, 3, 5, 5])]
    outputs = [
        vi("rms", [3, 4]),
        vi("l1", [3, 4]),
        vi("hot", [4, 2, 3]),
        vi("eye", [2, 3], TensorProto.DOUBLE),
        vi("det", [2, 3]),
    ]
    inits = [
        const("scale", RNG.standard_normal((3, 4)).astype(np.float32)),
        const("depth", np.array(4.0, np.float32)),
    ]
    model = make_model(nodes, inputs, outputs, inits, opset=23)
    m = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    m[1, 2, 3] = m[1, 2, 0]  # a singular matrix: determinant 0
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    x[:, 2] = 0  # a zero L1 norm gives 0, not NaN
    feed = {
        "x": x,
        "idx": np.array([[0, 3, -1], [5, -4, 2]]),
        "values": np.array([-2.0, 7.0], np.float32),
        "m": m,
    }
    check(tmp_path, model, feed, atol=1e-3)
