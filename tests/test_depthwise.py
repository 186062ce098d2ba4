"""The depthwise-conv CPU rule: applies to window-only reductions, declines the rest, and its
kernels compute what numpy (and onnxruntime, through the whole pipeline) compute."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from test_schedules import TARGET, _func, _loop_kinds, _random, _run
from tvm import te, tirx, topi

from compiler.schedules.cpu_depthwise import DepthwiseConv

pytestmark = pytest.mark.usefixtures("parallel_small_kernels")  # see conftest.py


def _depthwise_reference(x, w, bias, stride):
    """NHWC depthwise 3x3 conv, padding 1, + bias, clipped to [0, 6] (MobileNetV2's block)."""
    n, h, wd, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    oh, ow = (h - 1) // stride + 1, (wd - 1) // stride + 1
    out = np.zeros((n, oh, ow, c), "float32")
    for kh in range(3):
        for kw in range(3):
            window = padded[:, kh : kh + stride * oh : stride, kw : kw + stride * ow : stride]
            out += window * w[kh, kw, 0]
    return np.clip(out + bias, 0, 6)


def _depthwise_func(x, w, bias, stride) -> tirx.PrimFunc:
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    B = te.placeholder(bias.shape, name="B")
    channels = x.shape[-1]
    conv = topi.nn.conv(X, W, stride, 1, 1, channels, "NHWC", "HWIO")
    out = topi.minimum(topi.maximum(topi.add(conv, B), 0.0), 6.0)
    return _func([X, W, B], out)


@pytest.mark.parametrize(
    ("size", "channels", "stride"), [(14, 32, 1), (16, 24, 2), (7, 12, 1), (9, 12, 2)]
)
def test_depthwise_conv_with_bias_and_clip(size, channels, stride):
    x, w, bias = _random(1, size, size, channels), _random(3, 3, 1, channels), _random(channels)
    func = DepthwiseConv().apply(_depthwise_func(x, w, bias, stride), TARGET, False)
    assert func is not None, "DepthwiseConv did not apply"
    func = func.mod["main"]
    text = func.script()
    assert {"parallel", "vectorized", "unroll"} <= _loop_kinds(func)
    assert 'scope="local"' in text  # register tile, epilogue fused into its write-back
    assert text.count("T.writes(") == 3  # init, update, write-back: pad and epilogue inlined
    expected = _depthwise_reference(x, w, bias, stride)
    got = _run(func, [x, w, bias], expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_batch_of_two():
    x, w, bias = _random(2, 8, 8, 16), _random(3, 3, 1, 16), _random(16)
    func = DepthwiseConv().apply(_depthwise_func(x, w, bias, 1), TARGET, False).mod["main"]
    expected = _depthwise_reference(x, w, bias, 1)
    np.testing.assert_allclose(_run(func, [x, w, bias], expected.shape), expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_window(kind):
    x = _random(1, 16, 16, 24)
    X = te.placeholder(x.shape, name="X")
    out = topi.nn.pool2d(X, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), kind, layout="NHWC")
    func = DepthwiseConv().apply(_func([X], out), TARGET, False)
    assert func is not None
    shape = [int(d) for d in out.shape]
    expected = _run(_func([X], out), [x], shape)  # unscheduled
    np.testing.assert_allclose(_run(func.mod["main"], [x], shape), expected, rtol=1e-5)


def test_declines_normal_conv_grouped_conv_matmul_and_global_pool():
    X = te.placeholder((1, 14, 14, 32), name="X")
    rule = DepthwiseConv()
    for groups in (1, 4):
        W = te.placeholder((3, 3, 32 // groups, 32), name="W")
        conv = topi.nn.conv(X, W, 1, 1, 1, groups, "NHWC", "HWIO")
        assert rule.apply(_func([X, W], conv), TARGET, False) is None, groups
    A = te.placeholder((64, 96), name="A")
    B = te.placeholder((96, 80), name="B")
    assert rule.apply(_func([A, B], topi.matmul(A, B)), TARGET, False) is None
    mean = topi.sum(X, axis=(1, 2), keepdims=True)
    assert rule.apply(_func([X], mean), TARGET, False) is None


@pytest.mark.slow
def test_depthwise_block_matches_onnxruntime(tmp_path):
    """A MobileNetV2 block (depthwise conv + bias + Clip(0, 6)) through the whole pipeline."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compiler.api import compile_model, load_bundle
    from compiler.options import CompileOptions
    from compiler.reference import run_reference

    channels = 12
    w, bias = _random(channels, 1, 3, 3), _random(channels)
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["y"], group=channels, pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        helper.make_node("Clip", ["y", "lo", "hi"], ["z"]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.float32(0), "lo"),
        numpy_helper.from_array(np.float32(6), "hi"),
    ]
    graph = helper.make_graph(
        nodes,
        "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 15, 15])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, channels, 8, 8])],
        inits,
    )
    path = tmp_path / "dw.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    taken = _kernels_taken(path)  # the conv with its bias and clip, in NHWC after ConvertLayout
    assert len(taken) == 1 and taken[0].startswith("fused_conv2d_add_maximum_minimum"), taken
    bundle = compile_model(path, tmp_path / "b", CompileOptions()).bundle
    x = {"x": _random(1, channels, 15, 15)}
    got = load_bundle(bundle)(**x)["z"]
    np.testing.assert_allclose(got, run_reference(path, x)["z"], rtol=1e-4, atol=1e-4)


def _kernels_taken(path) -> list[str]:
    """The kernels of the ONNX model at `path`, after mlc's passes and fusion, that the rule
    schedules."""
    from compiler.build import prepare
    from compiler.frontend import import_model, read_onnx
    from compiler.options import CompileOptions
    from compiler.passes.pipeline import fusion_steps
    from compiler.targets import load_preset, resolve_target

    imported = import_model(read_onnx(path))
    mod, _ = prepare(imported, CompileOptions(), resolve_target(load_preset("x86")))
    with TARGET, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential([s.transform for s in fusion_steps(TARGET)])(mod)
    return sorted(
        gv.name_hint
        for gv, f in fused.functions.items()
        if isinstance(f, tirx.PrimFunc) and DepthwiseConv().apply(f, TARGET, False) is not None
    )


def test_default_rules_pick_it_for_depthwise():
    """In the default rule list it comes before TiledReduction, which would also take it."""
    from compiler.schedules.default import default_schedule

    x, w, bias = _random(1, 8, 8, 16), _random(3, 3, 1, 16), _random(16)
    func = _depthwise_func(x, w, bias, 1)
    scheduled = default_schedule(func, TARGET).mod["main"]
    mine = DepthwiseConv().apply(func, TARGET, False).mod["main"]
    tvm.ir.assert_structural_equal(scheduled, mine)
