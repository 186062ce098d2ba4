"""ARM: cross-compile for every aarch64 preset and run the bundles for real under qemu-user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, mlc

from compiler.api import compile_model
from compiler.options import CompileOptions
from compiler.reference import run_reference
from compiler.targets import list_presets

ARM_PRESETS = sorted(p.name for p in list_presets() if p.arch == "aarch64")
MODELS = ["convnet", "mlp", "transformer", "multi_io"]

needs_cross = pytest.mark.skipif(
    shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("qemu-aarch64") is None,
    reason="needs g++-aarch64-linux-gnu and qemu-user (make setup-cross installs them)",
)
pytestmark = [pytest.mark.cross, needs_cross]


@pytest.fixture(scope="session")
def arm_bundles(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("arm-bundles")
    cache: dict[tuple[str, str], object] = {}

    def compile_once(model: str, preset: str):
        key = (model, preset)
        if key not in cache:
            options = CompileOptions(target=preset, dims={"N": 2} if model == "convnet" else {})
            cache[key] = compile_model(
                model_dir / f"{model}.onnx", out / f"{model}-{preset}", options
            )
        return cache[key].bundle

    return compile_once


def _elf_machine(path) -> int:
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", path
    return int.from_bytes(data[18:20], "little")


def test_all_required_presets_exist():
    assert {"arm", "cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1"} <= set(ARM_PRESETS)
    assert any("+sve" in p.target.get("mattr", []) for p in list_presets())


@pytest.mark.parametrize("preset", ARM_PRESETS)
def test_bundle_is_aarch64_throughout(arm_bundles, preset):
    bundle = arm_bundles("mlp", preset)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"]["requires"]["arch"] == "aarch64"
    assert manifest["target"]["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    assert "asimd" in manifest["target"]["requires"]["cpu_features"]
    for so in [bundle / "model.so", *(bundle / "lib").glob("*.so")]:
        assert _elf_machine(so) == 183, so  # EM_AARCH64


def test_missing_cross_compiler_is_a_clear_error(tmp_path, model_dir):
    preset = (ROOT / "targets" / "arm.toml").read_text()
    preset = preset.replace('"aarch64-linux-gnu-g++"', '"aarch64-nowhere-g++"')
    preset = preset.replace('"apt-get install g++-aarch64-linux-gnu"', '"apt-get install nowhere"')
    (tmp_path / "nowhere.toml").write_text(preset)
    r = mlc(
        "compile",
        model_dir / "mlp.onnx",
        "-o",
        tmp_path / "out",
        "--target",
        tmp_path / "nowhere.toml",
    )
    assert r.exit_code == 4
    assert r.stderr.splitlines() == [
        "error: target 'nowhere' needs the cross compiler 'aarch64-nowhere-g++', which is not "
        "installed",
        "hint: apt-get install nowhere",
    ]


def test_offline_without_cached_runtime_is_a_clear_error(tmp_path, model_dir):
    env = {
        **os.environ,
        "MLC_CACHE_DIR": str(tmp_path / "cache"),
        "MLC_WHEEL_DIR": str(tmp_path / "no-wheels"),
    }
    (tmp_path / "no-wheels").mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "compiler.cli",
            "compile",
            model_dir / "mlp.onnx",
            "-o",
            tmp_path / "out",
            "--target",
            "arm",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 4, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith(
        "error: cannot fetch the aarch64 TVM runtime (apache-tvm 0.27.0.post1, apache-tvm-ffi "
        f"0.1.14.post1 wheels) from MLC_WHEEL_DIR={tmp_path / 'no-wheels'}: "
    )
    assert lines[1].startswith("hint: offline? on a connected machine run `pip download ")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_python_loader_on_aarch64_python(arm_bundles, model_dir, request):
    """The bundle's loader.py on an emulated aarch64 CPython with only numpy and tvm-ffi."""
    from aarch64_python import AArch64PythonUnavailable, ensure_aarch64_python

    try:
        python = ensure_aarch64_python(request.config.cache.mkdir("aarch64-python"))
    except AArch64PythonUnavailable as exc:
        pytest.skip(str(exc))
    bundle = arm_bundles("transformer", "cortex-a72")
    x = np.random.default_rng(0).standard_normal((1, 16, 32)).astype(np.float32)
    np.save(bundle.parent / "x.npy", x)
    code = textwrap.dedent(f"""
        import platform, sys, numpy as np
        sys.path.insert(0, {str(bundle)!r})
        from loader import load
        model = load({str(bundle)!r})
        y = model(x=np.load({str(bundle.parent / "x.npy")!r}))["y"]
        np.save({str(bundle.parent / "y.npy")!r}, y)
        print(platform.machine())
    """)
    r = subprocess.run([*python, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["aarch64"]
    expected = run_reference(model_dir / "transformer.onnx", {"x": x})["y"]
    np.testing.assert_allclose(np.load(bundle.parent / "y.npy"), expected, rtol=1e-4, atol=1e-4)
