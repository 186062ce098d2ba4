"""CPU graph form: convs in NHWC with their weights' transposes folded away, Relu6 (Clip)
fused without extra transposes, and the same numbers as onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx_cases import check, const, make_model, rand, vi

from compiler.build import prepare
from compiler.frontend import import_model
from compiler.options import CompileOptions
from compiler.targets import load_preset, resolve_target


def _conv_relu6(opset: int) -> onnx.ModelProto:
    inits = [const("w1", rand(16, 8, 3, 3)), const("w2", rand(16, 1, 3, 3))]
    if opset >= 11:
        inits += [const("lo", np.float32(0)), const("hi", np.float32(6))]
        clip = helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"])
    else:
        clip = helper.make_node("Clip", ["c1"], ["r1"], min=0.0, max=6.0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        clip,
        helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1], group=16),
    ]
    # 6x6: too small a map for Winograd, which would replace the first conv
    return make_model(nodes, [vi("x", [1, 8, 6, 6])], [vi("y", [1, 16, 6, 6])], inits, opset)


@pytest.mark.parametrize("opset", [13, 9])
def test_conv_relu6_is_nhwc_with_transposes_only_at_the_edges(tmp_path, opset):
    model = _conv_relu6(opset)
    mod, _ = prepare(import_model(model), CompileOptions(), resolve_target(load_preset("x86")))
    text = mod["main"].script()
    assert text.count('data_layout="NHWC"') == 2
    assert text.count("R.permute_dims") == 2  # the model's input and output only
    assert "call_tir" not in text  # Clip is operators, not an opaque kernel
    check(tmp_path, model, {"x": rand(1, 8, 6, 6)})
