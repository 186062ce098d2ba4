"""End-to-end checks of the sequence, recurrent-state and signal converters: each model is
built here, compiled by mlc, run by the bundle's loader and compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_coverage import _check, _init, _model, _rand, _vi

from compiler.api import compile_model, load_bundle, run_model
from compiler.errors import ModelError
from compiler.options import CompileOptions
from compiler.reference import compare, run_reference

I64 = TensorProto.INT64


@pytest.mark.slow
def test_scan_unrolls_with_reverse_input_and_output_axis(tmp_path):
    """Running sum over axis 1 of x read backwards; the scan output stacked on axis 1."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "row"], ["acc_out"]),
            helper.make_node("Identity", ["acc_out"], ["step"]),
        ],
        "body",
        [_vi("acc_in", [3]), _vi("row", [3])],
        [_vi("acc_out", [3]), _vi("step", [3])],
    )
    scan = helper.make_node(
        "Scan",
        ["init", "x"],
        ["final", "steps"],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_input_directions=[1],
        scan_output_axes=[1],
    )
    model = _model(
        [scan], [_vi("init", [3]), _vi("x", [3, 4])], [_vi("final", [3]), _vi("steps", [3, 4])]
    )
    _check(tmp_path, model, {"init": _rand(3), "x": _rand(3, 4)})


@pytest.mark.slow
def test_linear_attention_gated_delta_gqa_and_causal_conv(tmp_path):
    heads_q, heads_kv, dk, dv, steps = 4, 2, 8, 8, 5
    attention = helper.make_node(
        "LinearAttention",
        ["q", "k", "v", "past", "decay", "beta"],
        ["y", "state"],
        q_num_heads=heads_q,
        kv_num_heads=heads_kv,
        update_rule="gated_delta",
    )
    conv = helper.make_node(
        "CausalConvWithState",
        ["y", "w", "bias", "conv_past"],
        ["z", "conv_state"],
        activation="silu",
    )
    channels = heads_q * dv
    model = _model(
        [attention, conv],
        [
            _vi("q", [1, steps, heads_q * dk]),
            _vi("k", [1, steps, heads_kv * dk]),
            _vi("v", [1, steps, heads_kv * dv]),
            _vi("past", [1, heads_kv, dk, dv]),
            _vi("decay", [1, steps, heads_kv]),
            _vi("beta", [1, steps, heads_kv]),
            _vi("conv_past", [1, steps, 2]),
        ],
        [
            _vi("z", [1, steps, channels]),
            _vi("state", [1, heads_kv, dk, dv]),
            _vi("conv_state", [1, steps, 2]),
        ],
        [_init("w", _rand(steps, 1, 3)), _init("bias", _rand(steps))],
        opset=27,
    )
    inputs = {
        "q": _rand(1, steps, heads_q * dk),
        "k": _rand(1, steps, heads_kv * dk) / 4,
        "v": _rand(1, steps, heads_kv * dv),
        "past": _rand(1, heads_kv, dk, dv),
        "decay": -np.abs(_rand(1, steps, heads_kv)),
        "beta": np.abs(_rand(1, steps, heads_kv)) / 2,
        "conv_past": _rand(1, steps, 2),
    }
    _check(tmp_path, model, inputs, atol=1e-3)


@pytest.mark.slow
def test_dft_stft_and_window(tmp_path):
    """A forward complex DFT on axis 1, an irfft back (opset 20), and a windowed STFT."""
    nodes = [
        helper.make_node("DFT", ["x", "", "axis"], ["spectrum"]),
        helper.make_node("DFT", ["half", "", "axis"], ["signal"], inverse=1, onesided=1),
        helper.make_node("HannWindow", ["size"], ["window"], periodic=1),
        helper.make_node("STFT", ["audio", "step", "window"], ["frames"]),
    ]
    model = _model(
        nodes,
        [_vi("x", [2, 6, 2]), _vi("half", [2, 5, 2]), _vi("audio", [1, 40, 1])],
        [_vi("spectrum", [2, 6, 2]), _vi("signal", [2, 8, 1]), _vi("frames", [1, 7, 5, 2])],
        [
            _init("axis", np.array(1, np.int64)),
            _init("size", np.array(8, np.int64)),
            _init("step", np.array(4, np.int64)),
        ],
        opset=20,
    )
    inputs = {"x": _rand(2, 6, 2), "half": _rand(2, 5, 2), "audio": _rand(1, 40, 1)}
    _check(tmp_path, model, inputs, atol=1e-4)


@pytest.mark.slow
def test_rotary_embedding_interleaved_partial_with_positions(tmp_path):
    node = helper.make_node(
        "RotaryEmbedding",
        ["x", "cos", "sin", "pos"],
        ["y"],
        interleaved=1,
        rotary_embedding_dim=4,
        num_heads=2,
    )
    model = _model(
        [node],
        [_vi("x", [1, 3, 12]), _vi("cos", [8, 2]), _vi("sin", [8, 2]), _vi("pos", [1, 3], I64)],
        [_vi("y", [1, 3, 12])],
        opset=23,
    )
    pos = np.array([[5, 0, 7]], np.int64)
    _check(
        tmp_path, model, {"x": _rand(1, 3, 12), "cos": _rand(8, 2), "sin": _rand(8, 2), "pos": pos}
    )


@pytest.mark.slow
def test_reverse_sequence_tensor_scatter_and_fully_masked_max(tmp_path):
    nodes = [
        helper.make_node("ReverseSequence", ["x", "lens"], ["rev"], batch_axis=0, time_axis=1),
        helper.make_node(
            "TensorScatter", ["cache", "update", "at"], ["cache_out"], mode="circular"
        ),
        helper.make_node("ReduceMax", ["masked", "max_axes"], ["row_max"], keepdims=0),
    ]
    model = _model(
        nodes,
        [
            _vi("x", [3, 4, 2]),
            _vi("lens", [3], I64),
            _vi("cache", [2, 2, 5, 3]),
            _vi("update", [2, 2, 2, 3]),
            _vi("at", [2], I64),
            _vi("masked", [2, 3]),
        ],
        [_vi("rev", [3, 4, 2]), _vi("cache_out", [2, 2, 5, 3]), _vi("row_max", [2])],
        [_init("max_axes", np.array([1], np.int64))],
        opset=24,
    )
    masked = np.array([[-np.inf] * 3, [1.0, -np.inf, 2.0]], np.float32)
    inputs = {
        "x": _rand(3, 4, 2),
        "lens": np.array([4, 1, 3], np.int64),
        "cache": _rand(2, 2, 5, 3),
        "update": _rand(2, 2, 2, 3),
        "at": np.array([4, 1], np.int64),
        "masked": masked,
    }
    got = _check(tmp_path, model, inputs)
    assert got["row_max"][0] == -np.inf


def test_scan_over_a_dynamic_length_is_a_clear_error(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Add", ["a", "r"], ["b"])],
        "body",
        [_vi("a", [2]), _vi("r", [2])],
        [_vi("b", [2])],
    )
    scan = helper.make_node("Scan", ["init", "x"], ["final"], body=body, num_scan_inputs=1)
    model = _model([scan], [_vi("init", [2]), _vi("x", ["n", 2])], [_vi("final", [2])])
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="whose shape is not static"):
        compile_model(path, tmp_path / "bundle", CompileOptions())


@pytest.mark.slow
def test_split_to_sequence_output_is_a_list(tmp_path):
    node = helper.make_node("SplitToSequence", ["x", "split"], ["parts"], axis=1)
    parts = helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)
    model = _model(
        [node], [_vi("x", [2, 5])], [parts], [_init("split", np.array([2, 3], np.int64))]
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    bundle = compile_model(path, tmp_path / "bundle", CompileOptions()).bundle
    x = _rand(2, 5)
    model = load_bundle(bundle)
    got = model(x=x)["parts"]
    assert isinstance(got, list) and len(got) == 2
    np.testing.assert_array_equal(got[0], x[:, :2])
    np.testing.assert_array_equal(got[1], x[:, 2:])
    flat = run_model(model, {"x": x})  # what `mlc run` shows, saves and checks
    assert list(flat) == ["parts[0]", "parts[1]"]
    assert compare(flat, run_reference(path, {"x": x}), rtol=1e-6, atol=0).ok
