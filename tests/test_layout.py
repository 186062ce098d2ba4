"""CPU graph form: convs in NHWC with their weights' transposes folded away, Relu6 (Clip)
fused without extra transposes, and the same numbers as onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.api import compile_model, load_bundle
from compiler.build import prepare
from compiler.frontend import import_model
from compiler.options import CompileOptions
from compiler.reference import run_reference
from compiler.targets import load_preset, resolve_target


def _conv_relu6(opset: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype("float32"), "w1"),
        numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype("float32"), "w2"),
    ]
    if opset >= 11:
        weights += [
            numpy_helper.from_array(np.array(0, "float32"), "lo"),
            numpy_helper.from_array(np.array(6, "float32"), "hi"),
        ]
        clip = helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"])
    else:
        clip = helper.make_node("Clip", ["c1"], ["r1"], min=0.0, max=6.0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        clip,
        helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], group=16),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_relu6",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [13, 9])
def test_conv_relu6_is_nhwc_with_transposes_only_at_the_edges(tmp_path, opset):
    model = _conv_relu6(opset)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    mod, _ = prepare(import_model(model), CompileOptions(), resolve_target(load_preset("x86")))
    text = mod["main"].script()
    assert text.count('data_layout="NHWC"') == 2
    assert text.count("R.permute_dims") == 2  # the model's input and output only
    assert "call_tir" not in text  # Clip is operators, not an opaque kernel

    bundle = compile_model(path, tmp_path / "b", CompileOptions()).bundle
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype("float32")
    got = load_bundle(bundle)(x=x)["y"]
    np.testing.assert_allclose(got, run_reference(path, {"x": x})["y"], rtol=1e-4, atol=1e-4)
