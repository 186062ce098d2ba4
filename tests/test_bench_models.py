"""The benchmark models (benchmarks/models.py) and the benchmark script (benchmarks/run.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report  # noqa: E402
import timing  # noqa: E402

from compiler.reference import ort_session  # noqa: E402


def _load(name: str, path: Path):
    # `models` is examples/models.py in this process (conftest imports it): load ours by path.
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models = _load("bench_models", ROOT / "benchmarks" / "models.py")

# Reduced versions of the five (one bert for both sizes): the same structure, small enough to
# build and run in seconds.
SMALL = {
    "mlp": lambda: models.mlp(width=64),
    "resnet18": lambda: models.resnet18(width=8, size=32, classes=10),
    "mobilenetv2": lambda: models.mobilenetv2(size=32, classes=10),
    "bert": lambda: models.bert(layers=2, hidden=32, heads=2, ff=64, seq=16, vocab=50),
}


def _run(path: Path, vocab: int = models.VOCAB) -> list[np.ndarray]:
    session = ort_session(path)
    return session.run(None, models.example_inputs(models.input_specs(session), vocab=vocab))


@pytest.mark.parametrize("name", list(SMALL))
def test_small_models_are_valid_and_give_finite_outputs(name, tmp_path):
    path = models.save_checked(SMALL[name](), tmp_path / f"{name}.onnx", vocab=50)
    model = onnx.load(path)
    assert model.opset_import[0].version == 17
    (out,) = _run(path, vocab=50)
    assert np.isfinite(out).all()
    # Weight scales keep activations near unit size: neither vanishing nor exploding.
    assert 0.05 < float(out.std()) < 50.0, float(out.std())


def test_structure_is_what_pytorch_exports():
    ops = {n.op_type for n in SMALL["resnet18"]().graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "Gemm"} <= ops
    mobilenet = SMALL["mobilenetv2"]().graph.node
    assert "Clip" in {n.op_type for n in mobilenet}
    groups = [a.i for n in mobilenet for a in n.attribute if a.name == "group" and a.i > 1]
    assert groups, "MobileNetV2 has depthwise convolutions (group = channels)"
    bert = SMALL["bert"]()
    assert {"Gather", "LayerNormalization", "Softmax", "Erf", "MatMul"} <= {
        n.op_type for n in bert.graph.node
    }
    (ids,) = bert.graph.input
    assert ids.name == "input_ids" and ids.type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_ensure_builds_once_into_the_cache(tmp_path):
    path = models.ensure("mlp", cache=tmp_path)
    stamp = path.stat().st_mtime_ns
    assert models.ensure("mlp", cache=tmp_path).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["mlp.onnx"]  # no temporary file left
    with pytest.raises(KeyError, match="unknown benchmark model 'vgg'"):
        models.ensure("vgg", cache=tmp_path)


def test_interleaved_times_every_function_in_rotating_blocks():
    calls = []
    stats = timing.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        seconds=0.0,
        block_s=0.0,  # a block is one call
        settle_s=0.0,
        min_rounds=4,
    )
    # One warm-up each (every call counts as slow), then the rounds in rotating order.
    assert calls[:2] == ["a", "b"]
    assert calls[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert stats["a"]["runs"] == stats["b"]["runs"] == 4


def test_calls_in_the_settling_time_of_a_block_are_not_counted():
    calls = []

    def sleeper():
        calls.append(time.perf_counter())
        time.sleep(0.01)

    from compiler.timing import _block

    kept = _block(sleeper, block_s=0.1, settle_s=0.05)
    # (Counts, not times: on a loaded machine a 10 ms sleep can take much longer.)
    settled = [t for t in calls if t - calls[0] >= 0.05]
    assert len(calls) - len(kept) >= 1  # the first call started inside the settling time
    assert len(settled) <= len(kept) <= len(settled) + 1 and all(t >= 0.01 for t in kept)
    assert len(_block(lambda: time.sleep(0.03), block_s=0.01, settle_s=0.01)) == 1


def test_table_reports_ratios_failures_and_geomean():
    results = [
        {"model": "m1", "ort_ms": 1.0, "untuned": {"ms": 2.0, "ratio": 0.5, "max_abs_diff": 1e-6},
         "tuned": {"ms": 0.5, "ratio": 2.0, "max_abs_diff": 2e-6, "tune_minutes": 3.0,
                   "trials": 64}},
        {"model": "m2", "ort_ms": 4.0, "untuned": {"ms": 2.0, "ratio": 2.0, "max_abs_diff": 0.0},
         "tuned": {"tune_minutes": 1.0, "trials": 8, "error": "TVM failed"}},
    ]  # fmt: skip
    text = report.table(results)
    assert (
        "| m1 | 1.00 | 2.00 | 0.50x | 0.500 | 2.00x | 3.0 min, 64 trials | 1.0e-06 / 2.0e-06 |"
        in text
    )
    assert "| m2 | 4.00 | 2.00 | 2.00x | failed | — | 1.0 min, 8 trials | 0.0e+00 / — |" in text
    assert "untuned 1.00x, tuned —" in text  # no tuned geomean while one model failed
    assert "m2 tuned failed: TVM failed" in text


@pytest.mark.slow
def test_benchmark_script_untuned_mlp(tmp_path):
    results = tmp_path / "RESULTS.md"
    cmd = [sys.executable, "benchmarks/run.py", "--models", "mlp", "--tune-minutes", "0"]
    cmd += ["--seconds", "0.5", "--results", str(results), "--out", str(tmp_path), "--profile"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| mlp |" in r.stdout and "not tuned" in r.stdout
    assert "fused_matmul" in r.stderr  # the per-kernel profile names the kernels
    assert "Command: `python benchmarks/run.py --models mlp" in results.read_text()
    data = json.loads((tmp_path / "results.json").read_text())
    (mlp,) = data["results"]
    assert mlp["untuned"]["max_abs_diff"] < 1e-3 and mlp["ort_ms"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(models.MODELS))
def test_full_size_models_build_and_run(name, tmp_path):
    path = models.save_checked(models.MODELS[name](), tmp_path / f"{name}.onnx")
    (out,) = _run(path)
    assert np.isfinite(out).all() and 0.05 < float(out.std()) < 50.0
