"""End-to-end checks of the sequence, recurrent-state and signal converters: each model is
built here, compiled by mlc, run by the bundle's loader and compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx_cases import check, const, make_model, rand, vi

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
        [vi("acc_in", [3]), vi("row", [3])],
        [vi("acc_out", [3]), vi("step", [3])],
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
    model = make_model(
        [scan], [vi("init", [3]), vi("x", [3, 4])], [vi("final", [3]), vi("steps", [3, 4])]
    )
    check(tmp_path, model, {"init": rand(3), "x": rand(3, 4)})


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
    model = make_model(
        [attention, conv],
        [
            vi("q", [1, steps, heads_q * dk]),
            vi("k", [1, steps, heads_kv * dk]),
            vi("v", [1, steps, heads_kv * dv]),
            vi("past", [1, heads_kv, dk, dv]),
            vi("decay", [1, steps, heads_kv]),
            vi("beta", [1, steps, heads_kv]),
            vi("conv_past", [1, steps, 2]),
        ],
        [
            vi("z", [1, steps, channels]),
            vi("state", [1, heads_kv, dk, dv]),
            vi("conv_state", [1, steps, 2]),
        ],
        [const("w", rand(steps, 1, 3)), const("bias", rand(steps))],
        opset=27,
    )
    inputs = {
        "q": rand(1, steps, heads_q * dk),
        "k": rand(1, steps, heads_kv * dk) / 4,
        "v": rand(1, steps, heads_kv * dv),
        "past": rand(1, heads_kv, dk, dv),
        "decay": -np.abs(rand(1, steps, heads_kv)),
        "beta": np.abs(rand(1, steps, heads_kv)) / 2,
        "conv_past": rand(1, steps, 2),
    }
    check(tmp_path, model, inputs, atol=1e-3)


@pytest.mark.slow
def test_dft_stft_and_window(tmp_path):
    """A forward complex DFT on axis 1, an irfft back (opset 20), and a windowed STFT."""
    nodes = [
        helper.make_node("DFT", ["x", "", "axis"], ["spectrum"]),
        helper.make_node("DFT", ["half", "", "axis"], ["signal"], inverse=1, onesided=1),
        helper.make_node("HannWindow", ["size"], ["window"], periodic=1),
        helper.make_node("STFT", ["audio", "step", "window"], ["frames"]),
    ]
    model = make_model(
        nodes,
        [vi("x", [2, 6, 2]), vi("half", [2, 5, 2]), vi("audio", [1, 40, 1])],
        [vi("spectrum", [2, 6, 2]), vi("signal", [2, 8, 1]), vi("frames", [1, 7, 5, 2])],
        [
            const("axis", np.array(1, np.int64)),
            const("size", np.array(8, np.int64)),
            const("step", np.array(4, np.int64)),
        ],
        opset=20,
    )
    inputs = {"x": rand(2, 6, 2), "half": rand(2, 5, 2), "audio": rand(1, 40, 1)}
    check(tmp_path, model, inputs, atol=1e-4)


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
    model = make_model(
        [node],
        [vi("x", [1, 3, 12]), vi("cos", [8, 2]), vi("sin", [8, 2]), vi("pos", [1, 3], I64)],
        [vi("y", [1, 3, 12])],
        opset=23,
    )
    pos = np.array([[5, 0, 7]], np.int64)
    check(tmp_path, model, {"x": rand(1, 3, 12), "cos": rand(8, 2), "sin": rand(8, 2), "pos": pos})


@pytest.mark.slow
def test_reverse_sequence_tensor_scatter_and_fully_masked_max(tmp_path):
    nodes = [
        helper.make_node("ReverseSequence", ["x", "lens"], ["rev"], batch_axis=0, time_axis=1),
        helper.make_node(
            "TensorScatter", ["cache", "update", "at"], ["cache_out"], mode="circular"
        ),
        helper.make_node("ReduceMax", ["masked", "max_axes"], ["row_max"], keepdims=0),
    ]
    model = make_model(
        nodes,
        [
            vi("x", [3, 4, 2]),
            vi("lens", [3], I64),
            vi("cache", [2, 2, 5, 3]),
            vi("update", [2, 2, 2, 3]),
            vi("at", [2], I64),
            vi("masked", [2, 3]),
        ],
        [vi("rev", [3, 4, 2]), vi("cache_out", [2, 2, 5, 3]), vi("row_max", [2])],
        [const("max_axes", np.array([1], np.int64))],
        opset=24,
    )
    masked = np.array([[-np.inf] * 3, [1.0, -np.inf, 2.0]], np.float32)
    inputs = {
        "x": rand(3, 4, 2),
        "lens": np.array([4, 1, 3], np.int64),
        "cache": rand(2, 2, 5, 3),
        "update": rand(2, 2, 2, 3),
        "at": np.array([4, 1], np.int64),
        "masked": masked,
    }
    got = check(tmp_path, model, inputs)
    assert got["row_max"][0] == -np.inf


def test_scan_over_a_dynamic_length_is_a_clear_error(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Add", ["a", "r"], ["b"])],
        "body",
        [vi("a", [2]), vi("r", [2])],
        [vi("b", [2])],
    )
    scan = helper.make_node("Scan", ["init", "x"], ["final"], body=body, num_scan_inputs=1)
    model = make_model([scan], [vi("init", [2]), vi("x", ["n", 2])], [vi("final", [2])])
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="whose shape is not static"):
        compile_model(path, tmp_path / "bundle", CompileOptions())


@pytest.mark.slow
def test_split_to_sequence_output_is_a_list(tmp_path):
    node = helper.make_node("SplitToSequence", ["x", "split"], ["parts"], axis=1)
    parts = helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)
    model = make_model(
        [node], [vi("x", [2, 5])], [parts], [const("split", np.array([2, 3], np.int64))]
    )
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    bundle = compile_model(path, tmp_path / "bundle", CompileOptions()).bundle
    x = rand(2, 5)
    model = load_bundle(bundle)
    got = model(x=x)["parts"]
    assert isinstance(got, list) and len(got) == 2
    np.testing.assert_array_equal(got[0], x[:, :2])
    np.testing.assert_array_equal(got[1], x[:, 2:])
    flat = run_model(model, {"x": x})  # what `mlc run` shows, saves and checks
    assert list(flat) == ["parts[0]", "parts[1]"]
    assert compare(flat, run_reference(path, {"x": x}), rtol=1e-6, atol=0).ok
