"""Compile each test model for the host, run the bundle, and compare with onnxruntime."""

from __future__ import annotations

import hashlib
import json
import threading

import numpy as np
import pytest
from conftest import assert_matches_onnxruntime, mlc_subprocess, random_inputs

from compiler.api import load_bundle
from compiler.reference import run_reference


@pytest.mark.parametrize("name", ["mlp", "transformer", "multi_io", "add"])
def test_matches_onnxruntime(bundles, model_dir, name):
    assert_matches_onnxruntime(bundles(name), model_dir / f"{name}.onnx")


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_symbolic_batch_runs_at_any_size(bundles, model_dir, batch):
    # convnet's batch dim is the symbolic "N": one bundle serves every batch size.
    assert_matches_onnxruntime(bundles("convnet"), model_dir / "convnet.onnx", dims={"N": batch})


def test_manifest_is_complete(bundles):
    bundle = bundles("convnet")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    for key in ("mlc_version", "tvm_version", "tvm_ffi_version", "onnx_version"):
        assert manifest[key]
    assert manifest["target"]["name"] == "x86"
    assert manifest["target"]["tvm_target"]["kind"] == "llvm"
    assert manifest["target"]["requires"]["arch"] == "x86_64"
    assert manifest["inputs"] == [{"name": "x", "shape": ["N", 3, 16, 16], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "logits", "shape": ["N", 10], "dtype": "float32"}]
    assert manifest["options"]["target"] == "x86"
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    files -= {"manifest.json"}
    files = {f for f in files if "__pycache__" not in f}
    assert set(manifest["files"]) == files
    assert {"model.so", "weights.bin", "loader.py", "lib/libtvm_runtime.so"} <= files
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest


def test_weights_live_in_weights_bin(bundles):
    bundle = bundles("mlp")
    manifest = json.loads((bundle / "manifest.json").read_text())
    total = sum(w["nbytes"] for w in manifest["weights"])
    assert total >= (64 * 128 + 128 * 128 + 128 * 10) * 4  # every MatMul weight
    assert all(w["offset"] % 64 == 0 for w in manifest["weights"])
    assert (bundle / "weights.bin").stat().st_size >= total


def test_misaligned_inputs_are_safe(bundles, model_dir):
    # Kernels use 64-byte-aligned vector loads; numpy arrays are often only 16-byte aligned.
    # Without the loader's staging copy this crashed with SIGSEGV.
    model = load_bundle(bundles("transformer"))
    x = np.random.default_rng(0).standard_normal((1, 16, 32)).astype(np.float32)
    expected = run_reference(model_dir / "transformer.onnx", {"x": x})["y"]
    raw = np.zeros(x.size + 64, np.float32)
    base = raw.ctypes.data
    for shift in range(0, 64, 4):  # every 4-byte offset within a 64-byte line
        start = ((-base % 64) + shift) // 4
        view = raw[start : start + x.size].reshape(x.shape)
        view[...] = x
        np.testing.assert_allclose(model(x=view)["y"], expected, rtol=1e-4, atol=1e-4)


def test_output_never_aliases_input(tmp_path):
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    from compiler.api import compile_model
    from compiler.options import CompileOptions

    graph = h.make_graph(
        [h.make_node("Identity", ["x"], ["y"])],
        "identity",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "id.onnx")
    compile_model(tmp_path / "id.onnx", tmp_path / "b", CompileOptions())
    loaded = load_bundle(tmp_path / "b")
    x = np.ones((2, 2), np.float32)
    y = loaded(x=x)["y"]
    x[0, 0] = 5
    assert y[0, 0] == 1


def test_concurrent_calls_from_threads(bundles):
    model = load_bundle(bundles("convnet"))
    batches = {n: random_inputs(model, seed=n, dims={"N": n}) for n in (1, 2, 3, 4)}
    expected = {n: model(**inp)["logits"] for n, inp in batches.items()}
    errors = []

    def worker(n: int):
        try:
            for _ in range(30):
                np.testing.assert_array_equal(model(**batches[n])["logits"], expected[n])
        except Exception as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in batches for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_slice_of_a_matmul_result(tmp_path):
    """MatMul -> Slice (40 of 64 rows) -> Relu fuses into one kernel. Its write-back used to
    apply the slice over all 64 rows, writing past the end of the output: the process died of
    heap corruption. Run in a process of its own, so that a regression fails this test alone."""
    import onnx
    from onnx import helper as h
    from onnx_cases import const, make_model, rand, vi

    ints = lambda v: np.array([v], np.int64)  # noqa: E731
    model = make_model(
        [
            h.make_node("MatMul", ["x", "w"], ["m"]),
            h.make_node("Slice", ["m", "start", "end", "axis"], ["s"]),
            h.make_node("Relu", ["s"], ["y"]),
        ],
        [vi("x", [64, 96])],
        [vi("y", [40, 80])],
        [
            const("w", rand(96, 80)),
            const("start", ints(0)),
            const("end", ints(40)),
            const("axis", ints(0)),
        ],
    )
    onnx.save(model, tmp_path / "m.onnx")
    compiled = mlc_subprocess(
        "compile", tmp_path / "m.onnx", "--target", "x86", "-o", tmp_path / "b"
    )
    assert compiled.returncode == 0, compiled.stderr
    for _ in range(3):
        ran = mlc_subprocess("run", tmp_path / "b", "--check", tmp_path / "m.onnx")
        assert ran.returncode == 0, ran.stderr
