"""MetaSchedule tuning into a database directory, and compiling with its records."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import mlc, mlc_subprocess

from compiler.api import load_bundle
from compiler.cuda import gpu_available
from compiler.reference import run_reference


@pytest.mark.slow
def test_tune_then_compile_with_the_records(model_dir, tmp_path):
    db = tmp_path / "db"
    # Its own process, as users run it: tuning measures in worker processes and is sensitive
    # to what earlier tests loaded into this one (a CUDA compile loads TVM's CUDA runtime).
    r = mlc_subprocess("tune", model_dir / "mlp.onnx", "--db", db, "--trials", "8", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["tasks"] == 3 and summary["records"] >= 1
    (target_dir,) = db.iterdir()  # one directory per target and TVM version
    assert json.loads((target_dir / "target.json").read_text())["kind"] == "llvm"
    r = mlc_subprocess("compile", model_dir / "mlp.onnx", "-o", tmp_path / "b", "--db", db)
    assert r.returncode == 0, r.stderr
    tuning = json.loads((tmp_path / "b" / "manifest.json").read_text())["tuning"]
    assert tuning["kernels"] == 3 and 1 <= tuning["tuned_kernels"] <= 3
    assert len(tuning["sha256"]) == 64
    model = load_bundle(tmp_path / "b")
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    expected = run_reference(model_dir / "mlp.onnx", {"x": x})["y"]
    np.testing.assert_allclose(model(x=x)["y"], expected, rtol=1e-4, atol=1e-4)


def test_database_without_records_for_the_target(model_dir, tmp_path):
    r = mlc(
        "compile",
        model_dir / "mlp.onnx",
        "-o",
        tmp_path / "b",
        "--db",
        tmp_path / "db",
        "--target",
        "x86-avx2",
    )
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: tuning database '{tmp_path / 'db'}' has no records for target 'x86-avx2' on "
        "this machine and TVM version",
        f"hint: run `mlc tune MODEL --target x86-avx2 --db {tmp_path / 'db'}` first",
    ]
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(gpu_available(), reason="this host has a GPU")
def test_cuda_tuning_needs_a_gpu(model_dir, tmp_path):
    r = mlc("tune", model_dir / "mlp.onnx", "--db", tmp_path / "db", "--target", "cuda")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        "error: tuning for CUDA measures each candidate kernel on a GPU, and this host has none "
        "(no NVIDIA driver or GPU found)",
        "hint: run `mlc tune` on a GPU host and copy the --db directory here; compiling with --db "
        "needs no GPU (remote measurement is not supported yet)",
    ]


def test_cross_target_tuning_is_refused(model_dir, tmp_path):
    r = mlc("tune", model_dir / "mlp.onnx", "--db", tmp_path / "db", "--target", "cortex-a72")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == (
        "error: tuning for 'cortex-a72' measures candidates on an aarch64 CPU, and this host is "
        "not one; tune on the device (remote measurement is not supported yet)"
    )
