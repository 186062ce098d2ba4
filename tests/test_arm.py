"""ARM: cross-compile for every aarch64 preset and run the bundles for real under qemu-user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest
from conftest import ROOT, mlc, mlc_subprocess

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
    r = mlc_subprocess(
        "compile", model_dir / "mlp.onnx", "-o", tmp_path / "out", "--target", "arm", env=env
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


@pytest.mark.parametrize("preset", ARM_PRESETS)
@pytest.mark.parametrize("model", MODELS)
def test_runs_under_qemu_and_matches_onnxruntime(arm_bundles, model_dir, preset, model):
    """`mlc run --check` runs the bundle's native runner under qemu with the preset's CPU, on
    3 threads (a kernel whose parallel tasks overlap gives wrong results only then)."""
    bundle = arm_bundles(model, preset)
    args = ["--dim", "N=2"] if model == "convnet" else []
    r = mlc(
        "run", bundle, "--check", model_dir / f"{model}.onnx", "--json", "--threads", "3", *args
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["check"]["ok"] is True


def test_emulated_cpu_is_enforced(model_dir, tmp_path):
    """SVE code on a CPU without SVE dies with an illegal instruction: a wrong preset fails."""
    from compiler.api import load_bundle, make_inputs
    from compiler.emulation import EmulatedModel
    from compiler.errors import BundleError

    # mlc's schedules vectorise with fixed-width (NEON) vectors; without them LLVM
    # auto-vectorises the plain loops with SVE, which is what this test needs.
    options = CompileOptions(target="neoverse-v1", disabled_passes=("ApplyDefaultSchedule",))
    bundle = compile_model(model_dir / "transformer.onnx", tmp_path / "sve", options).bundle
    model = load_bundle(bundle)
    assert isinstance(model, EmulatedModel)
    inputs = make_inputs(model, {})
    model(**inputs)  # runs on the preset's emulated CPU (SVE enabled)
    model._prefix[model._prefix.index("-cpu") + 1] = "cortex-a72"
    with pytest.raises(BundleError, match="the bundle failed under"):
        model(**inputs)


def test_bench_labels_emulated_latency(arm_bundles, model_dir):
    r = mlc(
        "bench",
        arm_bundles("mlp", "arm"),
        "--compare",
        model_dir / "mlp.onnx",
        "--seconds",
        "0.2",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["mlc"]["emulated_by"] == "qemu-aarch64 -cpu cortex-a53"
    assert "speedup_vs_onnxruntime" not in data  # emulated time is no measure of the device
    assert data["mlc"]["runs"] >= 10


def test_package_is_deterministic_safe_and_runs_natively(arm_bundles, model_dir, tmp_path):
    import tarfile

    from compiler.package import safe_extract

    bundle = arm_bundles("multi_io", "cortex-a72")
    a, b = tmp_path / "a" / "m.tar.gz", tmp_path / "b" / "m.tar.gz"
    assert mlc("package", bundle, "-o", a).exit_code == 0
    assert mlc("package", bundle, "-o", b).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    digest = (tmp_path / "a" / "m.tar.gz.sha256").read_text().split()
    assert digest == [__import__("hashlib").sha256(a.read_bytes()).hexdigest(), "m.tar.gz"]
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    root = members[0].name.rstrip("/")
    for m in members:
        assert m.isfile() or m.isdir(), m.name
        assert not m.name.startswith("/") and ".." not in m.name.split("/"), m.name
        assert m.name.split("/")[0] == root
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
    names = {m.name.removeprefix(root + "/") for m in members}
    assert {"loader.py", "bin/mlc-runner", "lib/libtvm_ffi.so", "SHA256SUMS"} <= names
    # On the "device": sha256sum -c, then the native runner with .npy inputs, under qemu.
    extracted = safe_extract(a, tmp_path / "device")
    sums = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=extracted, capture_output=True, text=True
    )
    assert sums.returncode == 0, sums.stdout + sums.stderr
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "ids": rng.integers(0, 10, (2, 3)).astype(np.int64),
        "mask": rng.integers(0, 2, (2, 3, 4)).astype(bool),
    }
    args = []
    for name, value in inputs.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["--input", f"{name}={tmp_path / name}.npy"]
    run = subprocess.run(
        [
            "qemu-aarch64",
            "-L",
            "/usr/aarch64-linux-gnu",
            "-cpu",
            "cortex-a72",
            str(extracted / "bin" / "mlc-runner"),
            str(extracted),
            *args,
            "--output-dir",
            str(tmp_path / "out"),
            "--repeat",
            "5",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("latency_ms min=")
    expected = run_reference(model_dir / "multi_io.onnx", inputs)
    for name, ref in expected.items():
        np.testing.assert_allclose(
            np.load(tmp_path / "out" / f"{name}.npy"), ref, rtol=1e-4, atol=1e-4
        )


def test_unsafe_archives_are_refused(tmp_path):
    import io
    import tarfile

    from compiler.errors import BundleError
    from compiler.package import safe_extract

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("bundle/../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BundleError, match="refusing to extract unsafe archive entry"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
