"""Loss, reduction, elementwise-math and normalisation converters (compiler/converters/
losses.py, reductions.py, math_ops.py, norms.py, tensor_ops.py): each model is compiled by
mlc, run by the bundle's loader and compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from test_coverage import _check, _init, _model, _vi

F, I64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(5)


def _latest(nodes, inputs, outputs, inits=(), opset=26):
    model = _model(nodes, inputs, outputs, inits, opset=opset)
    model.ir_version = onnx.IR_VERSION  # new opsets need a newer IR version than _model's
    return model


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
    outputs = [_vi("sce", []), _vi("log_prob", [n, c, d]), _vi("nll", []), _vi("each", [n, d])]
    model = _model(
        nodes,
        [_vi("x", [n, c, d]), _vi("t", [n, d], I64)],
        outputs,
        [_init("w", RNG.uniform(0.5, 2, c).astype(np.float32))],
        opset=13,
    )
    target = RNG.integers(0, c, (n, d))
    target[0, 1] = target[2, 3] = -1  # ignored: weight 0, excluded from the mean
    _check(tmp_path, model, {"x": RNG.standard_normal((n, c, d)).astype(np.float32), "t": target})


def test_reductions_bool_empty_and_log_sum_exp(tmp_path):
    axes = _init("axes", np.array([1], np.int64))
    nodes = [
        helper.make_node("ReduceMax", ["b", "axes"], ["any"], keepdims=0),
        helper.make_node("ReduceMin", ["b", "axes"], ["all"], keepdims=0),
        helper.make_node("ReduceMax", ["empty", "axes"], ["max_empty"], keepdims=1),
        helper.make_node("ReduceMin", ["empty", "axes"], ["min_empty"], keepdims=0),
        helper.make_node("ReduceLogSumExp", ["x"], ["lse"], keepdims=0),
    ]
    inputs = [_vi("b", [4, 3], TensorProto.BOOL), _vi("empty", [2, 0, 3]), _vi("x", [2, 6])]
    outputs = [
        _vi("any", [4], TensorProto.BOOL),
        _vi("all", [4], TensorProto.BOOL),
        _vi("max_empty", [2, 1, 3]),
        _vi("min_empty", [2, 3]),
        _vi("lse", []),
    ]
    model = _model(nodes, inputs, outputs, [axes], opset=20)
    x = RNG.standard_normal((2, 6)).astype(np.float32) * 30
    bools = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]], bool)
    got = _check(tmp_path, model, {"b": bools, "empty": np.zeros((2, 0, 3), np.float32), "x": x})
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
    outputs = [_vi(n, s) for n in ("pow", "mod", "cosh", "sinh", "celu", "cumprod")]
    outputs += [
        _vi("ipow", s, I64),
        _vi("neginf", s, TensorProto.BOOL),
        _vi("bits", s, TensorProto.INT32),
        _vi("shl", s, I64),
        _vi("shr", s, I64),
    ]
    inputs = [_vi("x", s), _vi("y", s), _vi("k", s, I64), _vi("shift", s, I64)]
    model = _latest(nodes, inputs, outputs, [_init("axis", np.array(0, np.int64))], opset=28)
    inf = np.inf
    feed = {
        "x": np.array([-3.0, 3.0, -1.5, 1.0, 0.5, 2.0], np.float32),
        "y": np.array([inf, inf, -inf, -inf, 2.0, -0.75], np.float32),
        "k": np.array([-3, 2, 5, -1, 3, 4], np.int64),
        "shift": np.array([1, 64, -1, 70, 0, 63], np.int64),
    }
    _check(tmp_path, model, feed)


def test_normalisation_one_hot_and_det(tmp_path):
    nodes = [
        helper.make_node("RMSNormalization", ["x", "scale"], ["rms"], axis=0, epsilon=1e-3),
        helper.make_node("LpNormalization", ["x"], ["l1"], p=1, axis=0),
        helper.make_node("OneHot", ["idx", "depth", "values"], ["hot"], axis=0),
        helper.make_node("EyeLike", ["idx"], ["eye"], k=1, dtype=TensorProto.DOUBLE),
        helper.make_node("Det", ["m"], ["det"]),
    ]
    inputs = [_vi("x", [3, 4]), _vi("idx", [2, 3], I64), _vi("values", [2]), _vi("m", [2, 3, 5, 5])]
    outputs = [
        _vi("rms", [3, 4]),
        _vi("l1", [3, 4]),
        _vi("hot", [4, 2, 3]),
        _vi("eye", [2, 3], TensorProto.DOUBLE),
        _vi("det", [2, 3]),
    ]
    inits = [
        _init("scale", RNG.standard_normal((3, 4)).astype(np.float32)),
        _init("depth", np.array(4.0, np.float32)),
    ]
    model = _latest(nodes, inputs, outputs, inits, opset=23)
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
    _check(tmp_path, model, feed, atol=1e-3)
