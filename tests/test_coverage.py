"""Operator coverage: each common real-world pattern compiled by mlc, run by the bundle's loader
and compared with onnxruntime; plus the conformance runner's categorisation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import mlc_subprocess
from onnx import TensorProto, helper
from onnx_cases import assert_same_outputs, check, const, make_model, rand, vi

from compiler.api import compile_model, load_bundle
from compiler.errors import ModelError, UsageError
from compiler.options import CompileOptions
from compiler.reference import run_reference

ROOT = Path(__file__).resolve().parents[1]
F = TensorProto.FLOAT


@pytest.mark.slow
def test_lstm_bidirectional(tmp_path):
    t, b, i, h = 5, 2, 4, 3
    node = helper.make_node(
        "LSTM", ["x", "w", "r", "b"], ["y", "y_h", "y_c"], hidden_size=h, direction="bidirectional"
    )
    inits = [
        const("w", rand(2, 4 * h, i)),
        const("r", rand(2, 4 * h, h)),
        const("b", rand(2, 8 * h)),
    ]
    outs = [vi("y", [t, 2, b, h]), vi("y_h", [2, b, h]), vi("y_c", [2, b, h])]
    model = make_model([node], [vi("x", [t, b, i])], outs, inits, opset=14)
    check(tmp_path, model, {"x": rand(t, b, i)})


@pytest.mark.slow
def test_gru_linear_before_reset_with_initial_state(tmp_path):
    t, b, i, h = 4, 3, 5, 6
    node = helper.make_node(
        "GRU", ["x", "w", "r", "", "", "h0"], ["y", "y_h"], hidden_size=h, linear_before_reset=1
    )
    inits = [const("w", rand(1, 3 * h, i)), const("r", rand(1, 3 * h, h))]
    inputs = [vi("x", [t, b, i]), vi("h0", [1, b, h])]
    model = make_model([node], inputs, [vi("y", [t, 1, b, h]), vi("y_h", [1, b, h])], inits)
    check(tmp_path, model, {"x": rand(t, b, i), "h0": rand(1, b, h)})


@pytest.mark.slow
def test_rnn_activations_with_alphas_and_betas(tmp_path):
    """Non-default activations per direction; Elu takes the first alpha, Affine the second
    alpha and the first beta (they are consumed in order by the functions that take one)."""
    t, b, i, h = 3, 2, 4, 3
    node = helper.make_node(
        "RNN", ["x", "w", "r"], ["y", "y_h"], hidden_size=h, direction="bidirectional",
        activations=["Elu", "Affine"], activation_alpha=[0.7, 0.5], activation_beta=[0.2],
    )  # fmt: skip
    inits = [const("w", rand(2, h, i)), const("r", rand(2, h, h))]
    outs = [vi("y", [t, 2, b, h]), vi("y_h", [2, b, h])]
    model = make_model([node], [vi("x", [t, b, i])], outs, inits, opset=14)
    check(tmp_path, model, {"x": rand(t, b, i)})


def test_if_both_branches(tmp_path):
    then = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["t"])], "then", [], [vi("t", [2, 3])]
    )
    other = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["e"])], "else", [], [vi("e", [2, 3])]
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
    inits = [const("one", np.float32(1)), const("two", np.float32(2))]
    inputs = [vi("c", [], TensorProto.BOOL), vi("x", [2, 3])]
    model = make_model([node], inputs, [vi("y", [2, 3])], inits)
    x = rand(2, 3)
    got = check(tmp_path, model, {"c": np.array(True), "x": x})
    np.testing.assert_allclose(got["y"], x + 1, rtol=1e-6)
    bundle = load_bundle(tmp_path / "bundle")
    np.testing.assert_allclose(bundle(c=np.array(False), x=x)["y"], x * 2, rtol=1e-6)


def _loop_model(trips_as_input: bool):
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["fi"], to=F),
            helper.make_node("Add", ["acc_in", "fi"], ["acc_out"]),
            helper.make_node("Mul", ["acc_out", "acc_out"], ["sq"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("acc_in", [3])],
        [vi("cond_out", [], TensorProto.BOOL), vi("acc_out", [3]), vi("sq", [3])],
    )
    node = helper.make_node("Loop", ["m", "", "x"], ["final", "squares"], body=body)
    inputs = [vi("x", [3])]
    inits = []
    if trips_as_input:
        inputs.append(vi("m", [], TensorProto.INT64))
    else:
        inits.append(const("m", np.int64(4)))
    return make_model([node], inputs, [vi("final", [3]), vi("squares", [4, 3])], inits)


@pytest.mark.slow
def test_loop_unrolled(tmp_path):
    check(tmp_path, _loop_model(trips_as_input=False), {"x": rand(3)})


def test_loop_with_runtime_trip_count_is_a_clear_error(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(_loop_model(trips_as_input=True), path)
    with pytest.raises(ModelError) as info:
        compile_model(path, tmp_path / "bundle", CompileOptions())
    assert info.value.message == (
        "Loop '<unnamed>' without a constant trip count is not supported: mlc unrolls loops"
    )
    assert "--bind" in info.value.hint


@pytest.mark.slow
def test_loop_trip_count_bound_on_the_command_line(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(_loop_model(trips_as_input=True), path)
    np.save(tmp_path / "m.npy", np.int64(4))
    out = tmp_path / "bundle"
    result = mlc_subprocess("compile", path, "-o", out, "-q", "--bind", f"m={tmp_path / 'm.npy'}")
    assert result.returncode == 0, result.stderr
    bundle = load_bundle(out)
    assert [i.name for i in bundle.inputs] == ["x"]
    x = rand(3)
    expected = run_reference(path, {"x": x, "m": np.array(4, np.int64)})
    got = bundle(x=x)
    assert_same_outputs(got, expected, atol=0, rtol=1e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["bind"] == {"m": str(tmp_path / "m.npy")}


def test_bind_errors(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(_loop_model(trips_as_input=True), path)
    np.save(tmp_path / "f.npy", np.float32(4))
    with pytest.raises(UsageError) as info:
        compile_model(path, tmp_path / "b", CompileOptions(bind={"n": str(tmp_path / "f.npy")}))
    assert info.value.message == (
        "--bind names input 'n', which the model does not have; its inputs are: x, m"
    )
    with pytest.raises(UsageError) as info:
        compile_model(path, tmp_path / "b", CompileOptions(bind={"m": str(tmp_path / "f.npy")}))
    assert info.value.message == (
        f"--bind m={tmp_path / 'f.npy'}: the file holds float32, but input 'm' is int64"
    )


def test_resize_linear_and_nearest(tmp_path):
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="linear"),
        helper.make_node(
            "Resize", ["x", "", "", "sizes"], ["near"], mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        ),
    ]  # fmt: skip
    inits = [
        const("scales", np.array([1, 1, 2, 2], np.float32)),
        const("sizes", np.array([1, 2, 3, 6], np.int64)),
    ]
    outs = [vi("up", [1, 2, 8, 8]), vi("near", [1, 2, 3, 6])]
    model = make_model(nodes, [vi("x", [1, 2, 4, 4])], outs, inits)
    check(tmp_path, model, {"x": rand(1, 2, 4, 4)})


def test_conv_transpose(tmp_path):
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
        output_padding=[1, 1],
    )  # fmt: skip
    inits = [const("w", rand(2, 3, 3, 3)), const("b", rand(3))]
    model = make_model([node], [vi("x", [1, 2, 5, 5])], [vi("y", [1, 3, 10, 10])], inits)
    check(tmp_path, model, {"x": rand(1, 2, 5, 5)})


def test_hard_sigmoid_and_hard_swish(tmp_path):
    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["hs"], alpha=0.3, beta=0.4),
        helper.make_node("HardSwish", ["x"], ["hw"]),
    ]
    model = make_model(nodes, [vi("x", [4, 8])], [vi("hs", [4, 8]), vi("hw", [4, 8])])
    check(tmp_path, model, {"x": 4 * rand(4, 8)})


def test_pad_reflect_and_constant(tmp_path):
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["r"], mode="reflect"),
        helper.make_node("Pad", ["x", "pads", "value"], ["c"], mode="constant"),
    ]
    inits = [const("pads", np.array([0, 1, 2, 0, 2, 1], np.int64)), const("value", np.float32(7))]
    outs = [vi("r", [2, 7, 7]), vi("c", [2, 7, 7])]
    model = make_model(nodes, [vi("x", [2, 4, 4])], outs, inits)
    check(tmp_path, model, {"x": rand(2, 4, 4)})


def test_einsum(tmp_path):
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")
    model = make_model([node], [vi("a", [2, 3, 4]), vi("b", [2, 4, 5])], [vi("y", [2, 3, 5])])
    check(tmp_path, model, {"a": rand(2, 3, 4), "b": rand(2, 4, 5)})


def test_gather_nd_and_scatter_nd(tmp_path):
    nodes = [
        helper.make_node("GatherND", ["x", "gi"], ["g"]),
        helper.make_node("ScatterND", ["x", "si", "u"], ["s"]),
    ]
    inits = [
        const("gi", np.array([[0, 1], [2, 3]], np.int64)),
        const("si", np.array([[1], [3]], np.int64)),
    ]
    inputs = [vi("x", [4, 4, 3]), vi("u", [2, 4, 3])]
    model = make_model(nodes, inputs, [vi("g", [2, 3]), vi("s", [4, 4, 3])], inits)
    check(tmp_path, model, {"x": rand(4, 4, 3), "u": rand(2, 4, 3)})


def test_topk(tmp_path):
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1)
    outs = [vi("v", [3, 3]), vi("i", [3, 3], TensorProto.INT64)]
    model = make_model([node], [vi("x", [3, 10])], outs, [const("k", np.array([3], np.int64))])
    check(tmp_path, model, {"x": rand(3, 10)})


@pytest.mark.slow
def test_non_max_suppression(tmp_path):
    node = helper.make_node(
        "NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_min"], ["sel"]
    )
    inits = [
        const("max_out", np.array([3], np.int64)),
        const("iou", np.array([0.5], np.float32)),
        const("score_min", np.array([0.0], np.float32)),
    ]
    inputs = [vi("boxes", [1, 6, 4]), vi("scores", [1, 1, 6])]
    outs = [vi("sel", [None, 3], TensorProto.INT64)]
    model = make_model([node], inputs, outs, inits, opset=11)
    boxes = np.array(
        [[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11], [0, 10.1, 1, 11.1],
          [0, 100, 1, 101]]], np.float32,
    )  # fmt: skip
    scores = np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], np.float32)
    check(tmp_path, model, {"boxes": boxes, "scores": scores})


def test_ai_onnx_ml_ops(tmp_path):
    ml = helper.make_opsetid("ai.onnx.ml", 3)
    nodes = [
        helper.make_node("Scaler", ["x"], ["s"], domain="ai.onnx.ml", offset=[1.0], scale=[2.0]),
        helper.make_node("Binarizer", ["s"], ["y"], domain="ai.onnx.ml", threshold=0.5),
    ]
    model = make_model(nodes, [vi("x", [3, 4])], [vi("y", [3, 4])], extra_opsets=[ml])
    check(tmp_path, model, {"x": rand(3, 4)})


@pytest.mark.slow
def test_opset7_model(tmp_path):
    """Opset 7: Upsample with a `scales` attribute, BatchNormalization, Reshape."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "bt", "mu", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Upsample", ["r"], ["u"], scales=[1.0, 1.0, 2.0, 2.0], mode="nearest"),
        helper.make_node("Reshape", ["u", "shape"], ["y"]),
    ]
    inits = [
        const("w", rand(4, 3, 3, 3)),
        const("g", rand(4)),
        const("bt", rand(4)),
        const("mu", rand(4)),
        const("var", np.abs(rand(4)) + 0.5),
        const("shape", np.array([1, -1], np.int64)),
    ]
    model = make_model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 256])], inits, opset=7)
    check(tmp_path, model, {"x": rand(1, 3, 4, 4)})


def test_read_only_inputs(tmp_path):
    """numpy_helper.to_array and np.frombuffer give read-only arrays; DLPack cannot export them."""
    model = make_model([helper.make_node("Abs", ["x"], ["y"])], [vi("x", [4])], [vi("y", [4])])
    x = np.frombuffer(np.arange(-2, 2, dtype=np.float32).tobytes(), dtype=np.float32)
    assert not x.flags.writeable
    check(tmp_path, model, {"x": x})


def _conformance_run(*args) -> None:
    """python -m conformance.run ARGS over the cached node test data; it must succeed."""
    command = [sys.executable, "-m", "conformance.run", *args]
    command += ["--data", ROOT / "build" / "conformance-data"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]


def test_conformance_runner_categorises(tmp_path):
    """Runs known node test cases through the runner: a pass, a pass with bound inputs, and two
    of mlc's clear 'unsupported' errors."""
    cases = {
        "test_abs": ("pass", None),
        "test_reshape_reduced_dims": ("pass", ["shape"]),
        "test_regex_full_match_basic": ("unsupported", None),  # string tensors
        "test_loop16_seq_none": ("unsupported", None),
    }
    pattern = ",".join(cases)
    out = tmp_path / "report"
    _conformance_run("--filter", pattern, "--out", out)
    data = json.loads((out / "results.json").read_text())
    for name, (status, bound) in cases.items():
        got = data["cases"][name]["mlc"]
        assert got["status"] == status, (name, got)
        assert got.get("bound") == bound, (name, got)
    assert data["summary"]["categories"]["crash"] == 0
    assert "## unsupported" in (out / "REPORT.md").read_text()


def test_conformance_update_reruns_what_failed_and_keeps_the_passes(tmp_path):
    """--failed-in runs only the cases an earlier report did not pass; --update merges them
    into that report, which keeps naming the full run it started from."""
    earlier = {
        "meta": {"command": "python -m conformance.run", "seconds": 600},
        "cases": {
            "test_abs": {"ort": {"status": "pass"}, "mlc": {"status": "pass", "op": "Abs"}},
            "test_neg": {"ort": {"status": "pass"}, "mlc": {"status": "wrong", "op": "Neg"}},
        },
    }
    report = tmp_path / "results.json"
    report.write_text(json.dumps(earlier))
    _conformance_run("--filter", "test_abs,test_neg", "--failed-in", report, "--update")
    data = json.loads(report.read_text())
    assert data["cases"]["test_abs"]["mlc"] == {"status": "pass", "op": "Abs"}  # not re-run
    assert data["cases"]["test_neg"]["mlc"]["status"] == "pass"
    assert data["meta"]["update"] == {
        "rerun": 1,
        "earlier_command": "python -m conformance.run",
        "earlier_seconds": 600,
    }
    assert (
        "updates an earlier full run (`python -m conformance.run`, 10 min)"
        in (tmp_path / "REPORT.md").read_text()
    )


def _segfault(_arg):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(_arg):
    import time

    time.sleep(60)


def _answer(arg):
    return {"status": "pass", "arg": arg}


def test_fork_pool_reports_crashes_and_timeouts():
    sys.path.insert(0, str(ROOT))
    from conformance.forkpool import run_forked

    results = {}
    run_forked(
        [("ok", 1), ("segv", 2), ("hang", 3)],
        lambda arg: {1: _answer, 2: _segfault, 3: _hang}[arg](arg),
        jobs=2,
        timeout=3,
        on_result=results.__setitem__,
    )
    assert results["ok"]["status"] == "pass" and results["ok"]["arg"] == 1
    assert results["segv"]["status"] == "crash"
    assert results["segv"]["reason"].startswith("killed by SIGSEGV")
    assert results["hang"] == {**results["hang"], "status": "crash",
                               "reason": "timeout: still running after 3 s"}  # fmt: skip


def test_conformance_comparison_rules():
    sys.path.insert(0, str(ROOT))
    from conformance.cases import compare

    nan = np.float32("nan")
    assert compare(np.array([1.0, nan], np.float32), np.array([1.0005, nan], np.float32)) is None
    assert "1 of 2 elements differ" in compare(
        np.array([1.0, 0.0], np.float32), np.array([1.0, nan], np.float32)
    )
    assert compare(np.array([3], np.int64), np.array([3], np.int64)) is None
    assert (
        compare(np.array([3], np.int32), np.array([3], np.int64)) == "dtype int32, expected int64"
    )
    assert compare(np.zeros((2, 1)), np.zeros(2)) == "shape (2, 1), expected (2,)"
    assert compare([np.ones(2)], [np.ones(2), np.ones(2)]) == "sequence of 1 tensors, expected 2"


def test_layer_normalization_mean_and_inverse_std_outputs(tmp_path):
    """ONNX's optional outputs 1 and 2 (TVM's converter gave scalar placeholders)."""
    node = helper.make_node(
        "LayerNormalization", ["x", "g", "b"], ["y", "mean", "inv_std"], axis=1, epsilon=1e-3
    )
    inits = [const("g", rand(4, 5)), const("b", rand(4, 5))]
    outs = [vi("y", [3, 4, 5]), vi("mean", [3, 1, 1]), vi("inv_std", [3, 1, 1])]
    model = make_model([node], [vi("x", [3, 4, 5])], outs, inits)
    check(tmp_path, model, {"x": rand(3, 4, 5)})
