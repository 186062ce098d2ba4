"""Shared fixtures: test models built with onnx.helper, compiled once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import models  # noqa: E402
from onnx_cases import assert_same_outputs  # noqa: E402

from compiler.api import compile_model, load_bundle  # noqa: E402
from compiler.options import CompileOptions  # noqa: E402
from compiler.reference import run_reference  # noqa: E402


@pytest.fixture
def parallel_small_kernels(monkeypatch):
    """Schedule tests check the rules' parallel loops on kernels small enough to test quickly;
    mlc runs kernels that small serially (schedules/cost.py: SERIAL_WORK). Turn that off."""
    from compiler.schedules import cost

    monkeypatch.setattr(cost, "SERIAL_WORK", 0)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models")
    for name, build in models.MODELS.items():
        onnx.save(build(), path / f"{name}.onnx")
    return path


@pytest.fixture(scope="session")
def bundles(model_dir, tmp_path_factory):
    """compile(name) -> bundle path; each model is compiled once per session."""
    out = tmp_path_factory.mktemp("bundles")
    cache: dict[str, Path] = {}

    def compile_once(name: str) -> Path:
        if name not in cache:
            cache[name] = compile_model(
                model_dir / f"{name}.onnx", out / name, CompileOptions()
            ).bundle
        return cache[name]

    return compile_once


def random_inputs(model, seed: int = 0, dims: dict | None = None) -> dict[str, np.ndarray]:
    from compiler.api import make_inputs

    return make_inputs(model, dims or {}, seed)


def assert_matches_onnxruntime(bundle: Path, onnx_path: Path, dims=None, atol=1e-4, rtol=1e-4):
    model = load_bundle(bundle)
    inputs = random_inputs(model, dims=dims)
    got = model(**inputs)
    assert_same_outputs(got, run_reference(onnx_path, inputs), atol=atol, rtol=rtol)


def mlc(*args: str):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from compiler.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def mlc_subprocess(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in its own process (a crash cannot take pytest down)."""
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        **kwargs,
    )
