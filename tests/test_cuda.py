"""CUDA: compile on a host without a GPU; prove the device code and the clear errors.

Running the bundles needs a GPU, which CI does not have: `test_runs_on_gpu` runs where one is.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
from conftest import mlc, mlc_subprocess

from compiler.api import compile_model
from compiler.cuda import DEFAULT_ARCHES, fatbin_contents, gpu_available, local_gpu_arch
from compiler.options import CompileOptions
from compiler.targets import list_presets

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)"),
]
GPU_PRESETS = {p.name: p for p in list_presets() if p.target["kind"] == "cuda"}


def _embedded_fatbins(library: bytes) -> list[list[tuple[str, str]]]:
    """Every CUDA fatbin inside a compiled model library, as cuobjdump would list them."""
    found, start = [], 0
    while (at := library.find(b"\x50\xed\x55\xba", start)) != -1:
        try:
            found.append(fatbin_contents(library[at:]))
        except Exception:  # the magic number can occur by chance
            pass
        start = at + 4
    return found


@pytest.fixture(scope="module")
def cuda_bundle(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda")
    cache = {}

    def build(preset: str, model: str = "convnet"):
        if (preset, model) not in cache:
            options = CompileOptions(target=preset, dims={"N": 2} if model == "convnet" else {})
            result = compile_model(model_dir / f"{model}.onnx", out / f"{model}-{preset}", options)
            cache[preset, model] = result.bundle
        return cache[preset, model]

    return build


@pytest.mark.parametrize("preset", ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90", "h100"])
def test_device_code_for_the_requested_arch(cuda_bundle, preset):
    bundle = cuda_bundle(preset)
    manifest = json.loads((bundle / "manifest.json").read_text())
    arch = GPU_PRESETS[preset].cuda["arches"][0]
    assert manifest["target"]["device"] == "cuda"
    assert manifest["target"]["cuda"]["sass"] == [arch]
    assert manifest["target"]["cuda"]["ptx"] == [f"compute_{arch[3:]}"]
    fatbins = _embedded_fatbins((bundle / "model.so").read_bytes())
    assert fatbins, "model.so holds no CUDA fatbin"
    assert all(
        sorted(f) == sorted([("sass", arch), ("ptx", f"compute_{arch[3:]}")]) for f in fatbins
    )
    libs = sorted(p.name for p in (bundle / "lib").iterdir())
    assert {"libtvm_runtime.so", "libtvm_runtime_cuda.so", "libcudart.so.13"} <= set(libs)


def test_default_cuda_target_is_one_bundle_for_a_mixed_fleet(cuda_bundle):
    bundle = cuda_bundle("cuda", "mlp")
    cuda = json.loads((bundle / "manifest.json").read_text())["target"]["cuda"]
    local = local_gpu_arch()
    expected = [local] if local else list(DEFAULT_ARCHES)
    assert cuda["sass"] == expected
    assert cuda["arches_from"] == ("local GPU" if local else "default")
    (fatbin,) = _embedded_fatbins((bundle / "model.so").read_bytes())
    assert sorted(a for kind, a in fatbin if kind == "sass") == sorted(expected)
    assert ("ptx", f"compute_{expected[-1][3:]}") in fatbin


def test_compile_summary_says_which_arches(model_dir, tmp_path):
    r = mlc("compile", model_dir / "mlp.onnx", "-o", tmp_path / "b", "--target", "sm_86")
    assert r.exit_code == 0, r.stderr
    assert "for sm_86 (sm_86 + PTX compute_86; from the preset)" in r.stdout


@pytest.mark.skipif(gpu_available(), reason="this host has a GPU")
def test_loading_without_a_gpu_is_a_clear_error(cuda_bundle):
    r = mlc_subprocess("run", cuda_bundle("sm_80"))  # a clean process, as on a deploy host
    assert r.returncode == 6
    assert r.stderr.splitlines() == [
        "error: this bundle runs on NVIDIA GPUs, and this host has no NVIDIA driver "
        "(libcuda.so.1 was not found); install the driver (CUDA 13 or newer) or compile for a "
        "CPU target"
    ]


def test_wrong_device_is_refused(cuda_bundle):
    sys.path.insert(0, str(cuda_bundle("sm_80")))
    try:
        import loader
    finally:
        sys.path.pop(0)
    with pytest.raises(loader.BundleError) as info:
        loader.load(cuda_bundle("sm_80"), device="cpu")
    assert str(info.value) == (
        "bundle was compiled for cuda (target 'sm_80') and cannot run on device 'cpu'"
    )


def test_missing_nvcc_is_a_clear_error(model_dir, tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    if shutil.which("nvcc", path=env["PATH"]):
        pytest.skip("nvcc is in /usr/bin here")
    r = mlc_subprocess(
        "compile", model_dir / "mlp.onnx", "-o", tmp_path / "out", "--target", "cuda", env=env
    )
    assert r.returncode == 4
    assert r.stderr.splitlines() == [
        "error: compiling for CUDA needs nvcc, which is not on PATH",
        "hint: install the CUDA toolkit's nvcc (apt-get install nvidia-cuda-toolkit, or pip "
        "install nvidia-cuda-nvcc) and put it on PATH",
    ]


def test_device_transfers_round_trip_on_the_host_device(bundles):
    """The loader's GPU copy path, exercised with the runtime's CPU device."""
    from compiler.api import load_bundle

    model = load_bundle(bundles("mlp"))
    import tvm_ffi

    transfer = sys.modules[type(model).__module__]._Transfer(tvm_ffi, "cpu", 0)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    on_device = transfer.to_device(tvm_ffi.from_dlpack(x))
    np.testing.assert_array_equal(transfer.to_host(on_device), x)


@pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU and driver")
@pytest.mark.parametrize("model", ["convnet", "mlp", "transformer", "multi_io"])
def test_runs_on_gpu(cuda_bundle, model_dir, model):
    args = ["--dim", "N=2"] if model == "convnet" else []
    r = mlc("run", cuda_bundle("cuda", model), "--check", model_dir / f"{model}.onnx", *args)
    assert r.exit_code == 0, r.stderr
