"""Dynamic shapes: one bundle with a symbolic dim declared as a range runs at any size in it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import assert_matches_onnxruntime, mlc
from onnx import helper
from onnx_cases import const, make_model, rand, vi

from compiler.api import load_bundle


@pytest.fixture(scope="module")
def convnet_1_64(model_dir, tmp_path_factory):
    """convnet (conv + batch norm) with its batch dim N compiled once, for N in 1..64."""
    out = tmp_path_factory.mktemp("dynamic") / "convnet"
    r = mlc("compile", model_dir / "convnet.onnx", "-o", out, "--dim", "N=1..64", "-q")
    assert r.exit_code == 0, r.stderr
    return out


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_one_bundle_runs_every_batch_in_range(convnet_1_64, model_dir, batch):
    assert_matches_onnxruntime(convnet_1_64, model_dir / "convnet.onnx", dims={"N": batch})


def test_manifest_records_the_range(convnet_1_64):
    manifest = json.loads((convnet_1_64 / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == ["N", 3, 16, 16]
    assert manifest["dims"] == [{"name": "N", "min": 1, "max": 64}]
    assert manifest["options"]["dim_ranges"] == {"N": [1, 64]}
    assert manifest["options"]["dims"] == {}


@pytest.mark.parametrize("batch", [0, 65])
def test_loader_refuses_a_size_outside_the_range(convnet_1_64, batch):
    model = load_bundle(convnet_1_64)
    with pytest.raises(ValueError) as err:
        model(x=np.zeros((batch, 3, 16, 16), np.float32))
    assert str(err.value) == (
        f"input 'x' has {batch} at axis 0 for dim 'N', outside the range the bundle was "
        "compiled for: 1..64 (recompile with a wider --dim N=MIN..MAX for other sizes)"
    )


def test_run_cli_reports_out_of_range_as_usage_error(convnet_1_64):
    r = mlc("run", convnet_1_64, "--dim", "N=65")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: input 'x' has 65 at axis 0 for dim 'N', outside the range")


def test_a_pinned_dim_still_pins(model_dir, tmp_path):
    r = mlc("compile", model_dir / "convnet.onnx", "-o", tmp_path / "b", "--dim", "N=4", "-q")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [4, 3, 16, 16]
    assert manifest["dims"] == []


def _attention(dim: int = 16) -> onnx.ModelProto:
    """Single-head self-attention over a symbolic sequence: softmax(x Wq (x Wk)^T) x Wv."""
    inits = [const(name, rand(dim, dim) * 0.2) for name in ("wq", "wk", "wv")]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    return make_model(nodes, [vi("x", [1, "seq", dim])], [vi("y", [1, "seq", dim])], inits)


def test_symbolic_sequence_dim(tmp_path):
    onnx.save(_attention(), tmp_path / "attention.onnx")
    bundle = tmp_path / "attention"
    r = mlc("compile", tmp_path / "attention.onnx", "-o", bundle, "--dim", "seq=1..32", "-q")
    assert r.exit_code == 0, r.stderr
    for seq in (1, 5, 32):
        assert_matches_onnxruntime(bundle, tmp_path / "attention.onnx", dims={"seq": seq})


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("N=5..2", "'N=5..2' needs sizes of at least 1, and MIN <= MAX"),
        ("N=0..4", "'N=0..4' needs sizes of at least 1, and MIN <= MAX"),
        (
            "N=1-4",
            "'N=1-4' is not NAME=VALUE or NAME=MIN..MAX, expected e.g. batch=1 or batch=1..64",
        ),
    ],
)
def test_bad_range_flags(model_dir, tmp_path, flag, message):
    r = mlc("compile", model_dir / "convnet.onnx", "-o", tmp_path / "b", "--dim", flag)
    assert r.exit_code == 2
    assert f"Invalid value for '--dim': {message}" in r.stderr


def test_range_errors_name_the_dim(model_dir, tmp_path):
    out = tmp_path / "b"
    r = mlc("compile", model_dir / "convnet.onnx", "-o", out, "--dim", "B=1..8")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == (
        "error: --dim names 'B', which is not a dimension of any input; the model's named "
        "dims are: N"
    )
    r = mlc(
        "compile", model_dir / "convnet.onnx", "-o", out, "--dim", "N=1..8",
        "--input-shape", "x:2x3x16x16",
    )  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == (
        "error: --dim N=MIN..MAX declares a range for dim 'N', which --input-shape fixes; "
        "give one or the other"
    )
    assert not out.exists()
