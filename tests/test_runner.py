"""The native runner (bin/mlc-runner): built with g++ and run natively on x86-64, cross-compiled
with aarch64-linux-gnu-g++ and run under qemu-user, each compared with onnxruntime."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm_ffi

from compiler.api import compile_model
from compiler.options import CompileOptions
from compiler.reference import run_reference
from compiler.runner import build_runner, runner_command

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import models  # noqa: E402

HOST_FFI_LIB = Path(tvm_ffi.__file__).parent / "lib"
QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "-cpu", "cortex-a72"]
AARCH64_CXX = "aarch64-linux-gnu-g++"
# The aarch64 wheels of exactly the versions pyproject.toml pins.
AARCH64_WHEELS = ("apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1")
AARCH64_LIBS = {  # file in lib/ -> its path inside the wheels
    "libtvm_runtime.so": "tvm/lib/libtvm_runtime.so",
    "libtvm_runtime_extra.so": "tvm/lib/libtvm_runtime_extra.so",
    "libtvm_ffi.so": "tvm_ffi/lib/libtvm_ffi.so",
}
LATENCY = re.compile(r"latency_ms min=(\d+\.\d+) median=(\d+\.\d+) p90=(\d+\.\d+) runs=(\d+)")


def convnet_inputs(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    return {"x": rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)}


def multi_io_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "x": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "ids": rng.integers(0, 10, (2, 3)).astype(np.int64),  # rows of a 10-row table
        "mask": rng.random((2, 3, 4)) > 0.5,
    }


def write_inputs(directory: Path, inputs: dict[str, np.ndarray], raw: bool = False) -> list[str]:
    """Save `inputs` as .npy (or raw .bin) files; returns the runner's --input arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    args = []
    for name, array in inputs.items():
        path = directory / f"{name}.{'bin' if raw else 'npy'}"
        if raw:
            array.tofile(path)
        else:
            np.save(path, array)
        args += ["--input", f"{name}={path}"]
    return args


def run_runner(
    bundle: Path, args: list[str], emulator: list[str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        runner_command(bundle, [str(a) for a in args], emulator),
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_against_onnxruntime(
    bundle: Path,
    onnx_path: Path,
    inputs: dict[str, np.ndarray],
    work: Path,
    raw: bool = False,
    emulator: list[str] | None = None,
    extra: tuple[str, ...] = (),
) -> str:
    """Run the runner on `inputs` and compare every output with onnxruntime; returns stdout."""
    out_dir = work / "out"
    args = [*write_inputs(work / "in", inputs, raw), "--output-dir", out_dir, *extra]
    proc = run_runner(bundle, [*args, "--raw"] if raw else args, emulator)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    expected = run_reference(onnx_path, inputs)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        f"{name}.{'bin' if raw else 'npy'}" for name in expected
    )
    for name, ref in expected.items():
        if raw:
            got = np.fromfile(out_dir / f"{name}.bin", dtype=ref.dtype).reshape(ref.shape)
        else:
            got = np.load(out_dir / f"{name}.npy")
        assert got.dtype == ref.dtype, name
        assert got.shape == ref.shape, name
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=name)
    return proc.stdout


def assert_latency_line(stdout: str, runs: int) -> None:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    match = LATENCY.fullmatch(lines[0])
    assert match, lines[0]
    low, median, p90 = (float(v) for v in match.groups()[:3])
    assert 0 <= low <= median and low <= p90
    assert int(match.group(4)) == runs


_built_runners: dict[str, Path] = {}  # compiler -> a bundle whose runner it built


def install_runner(bundle: Path, cxx: str, ffi_lib_dir: Path) -> None:
    """build_runner, once per compiler: a runner does not depend on the model (it finds the
    bundle's libraries through its $ORIGIN/../lib runpath), so later bundles get a copy."""
    first = _built_runners.setdefault(cxx, bundle)
    if first == bundle:
        build_runner(bundle, cxx, ffi_lib_dir)
        return
    (bundle / "bin").mkdir()
    shutil.copy2(first / "bin" / "mlc-runner", bundle / "bin" / "mlc-runner")
    shutil.copyfile(ffi_lib_dir / "libtvm_ffi.so", bundle / "lib" / "libtvm_ffi.so")


# ---- x86-64, natively ----


@pytest.fixture(scope="module")
def x86(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (bundle with bin/mlc-runner, its ONNX model)."""
    out = tmp_path_factory.mktemp("runner-x86")
    onnx.save(models.multi_io(), out / "multi_io.onnx")
    onnx.save(models.add_one(("N", 4)), out / "add.onnx")  # two inputs share the dim N
    sources = {
        "convnet": ROOT / "examples" / "convnet.onnx",
        "multi_io": out / "multi_io.onnx",
        "add": out / "add.onnx",
    }
    result = {}
    for name, onnx_path in sources.items():
        # `mlc compile` puts the runner (built once, cached) into every bundle.
        bundle = compile_model(onnx_path, out / name, CompileOptions(target="x86")).bundle
        result[name] = (bundle, onnx_path)
    return result


@pytest.mark.parametrize("batch", [1, 3])
def test_convnet_matches_onnxruntime(x86, tmp_path, batch):
    bundle, onnx_path = x86["convnet"]
    extra = ("--repeat", "3", "--warmup", "1", "--threads", "2")
    stdout = check_against_onnxruntime(
        bundle, onnx_path, convnet_inputs(batch), tmp_path, extra=extra
    )
    assert_latency_line(stdout, runs=3)


def test_bundle_is_self_contained(x86):
    bundle, _ = x86["convnet"]
    runner = bundle / "bin" / "mlc-runner"
    assert (bundle / "lib" / "libtvm_ffi.so").read_bytes() == (
        HOST_FFI_LIB / "libtvm_ffi.so"
    ).read_bytes()
    needed = subprocess.run(["readelf", "-d", runner], capture_output=True, text=True).stdout
    assert "[libtvm_runtime.so]" in needed and "[libtvm_ffi.so]" in needed
    assert "[$ORIGIN/../lib]" in needed


def test_multi_io_dtypes_match_onnxruntime(x86, tmp_path):
    bundle, onnx_path = x86["multi_io"]
    stdout = check_against_onnxruntime(bundle, onnx_path, multi_io_inputs(), tmp_path)
    assert_latency_line(stdout, runs=1)


def test_raw_inputs_and_outputs(x86, tmp_path):
    bundle, onnx_path = x86["multi_io"]
    check_against_onnxruntime(bundle, onnx_path, multi_io_inputs(), tmp_path, raw=True)


def test_symbolic_dims_must_agree_across_inputs(x86, tmp_path):
    bundle, onnx_path = x86["add"]
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((5, 4)).astype(np.float32) for _ in range(2))
    check_against_onnxruntime(bundle, onnx_path, {"x": x, "y": y}, tmp_path / "ok")
    proc = run_runner(bundle, write_inputs(tmp_path / "bad", {"x": x, "y": y[:3]}))
    assert (proc.returncode, proc.stderr) == (
        2,
        "error: input 'y' has 3 at axis 0 for dim 'N', but another input already set 'N' = 5\n",
    )


def test_runs_without_output_dir(x86, tmp_path):
    bundle, _ = x86["convnet"]
    proc = run_runner(bundle, [*write_inputs(tmp_path, convnet_inputs(2)), "--repeat", "5"])
    assert proc.returncode == 0, proc.stderr
    assert_latency_line(proc.stdout, runs=5)


def _input_errors(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(model, runner arguments, the exact error line); `tmp` receives the input files."""
    good = multi_io_inputs()
    x = convnet_inputs(2)["x"]
    np.save(tmp / "f64.npy", x.astype(np.float64))
    np.save(tmp / "short.npy", x[:, :, :15])
    np.save(tmp / "flat.npy", x.reshape(-1))
    np.save(tmp / "x.npy", x)
    np.save(tmp / "fortran.npy", np.asfortranarray(x))
    np.save(tmp / "complex.npy", x.astype(np.complex64))
    (tmp / "truncated.npy").write_bytes((tmp / "x.npy").read_bytes()[:-10])
    (tmp / "garbage.npy").write_bytes(b"not an npy file")
    x.tofile(tmp / "x.bin")
    args = write_inputs(tmp / "good", good)
    good["ids"][:1].tofile(tmp / "ids_short.bin")
    np.save(tmp / "ids1.npy", good["ids"][:1])
    return [
        (
            "convnet",
            ["--input", f"x={tmp}/f64.npy"],
            "input 'x' has dtype float64, expected float32",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/short.npy"],
            "input 'x' has shape [2, 3, 15, 16], expected [N, 3, 16, 16] (axis 2 must be 16)",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/flat.npy"],
            "input 'x' has shape [1536], expected 4 dimensions [N, 3, 16, 16]",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/x.npy", "--input", f"y={tmp}/x.npy"],
            "unknown input 'y'; the model's inputs are: x",
        ),
        (
            "convnet",
            [],
            "missing input 'x' (x: float32[N, 3, 16, 16]); give it with --input x=FILE",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/x.npy", "--input", f"x={tmp}/x.npy"],
            "input 'x' was given twice",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/truncated.npy"],
            f"input 'x': '{tmp}/truncated.npy' is truncated: it holds 6134 bytes of data, and "
            "float32[2, 3, 16, 16] needs 6144",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/garbage.npy"],
            f"input 'x': '{tmp}/garbage.npy' is not a valid .npy file: bad magic or truncated",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/fortran.npy"],
            f"input 'x': '{tmp}/fortran.npy' is in Fortran order; save a C-order array "
            "(np.ascontiguousarray)",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/complex.npy"],
            f"input 'x' has numpy dtype '<c8' in '{tmp}/complex.npy', expected float32",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/x.bin"],
            f"input 'x': '{tmp}/x.bin' is raw data, which cannot give the shape of "
            "x: float32[N, 3, 16, 16]; use a .npy file",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/missing.npy"],
            f"cannot read the file for input 'x' '{tmp}/missing.npy': No such file or directory",
        ),
        (
            "multi_io",
            args[:4],
            "missing input 'mask' (mask: bool[2, 3, 4]); give it with --input mask=FILE",
        ),
        (
            "multi_io",
            [*args[:2], *args[4:], "--input", f"ids={tmp}/ids_short.bin"],
            f"input 'ids': '{tmp}/ids_short.bin' is truncated: it holds 24 bytes of data, and "
            "int64[2, 3] needs 48",
        ),
        (
            "multi_io",
            [*args[:2], *args[4:], "--input", f"ids={tmp}/ids1.npy"],
            "input 'ids' has shape [1, 3], expected [2, 3] (axis 0 must be 2)",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/x.npy", "--repeat", "0"],
            "--repeat needs an integer >= 1, got '0'",
        ),
        (
            "convnet",
            ["--input", f"x={tmp}/x.npy", "--frobnicate"],
            "unknown option '--frobnicate'; see --help",
        ),
        ("convnet", ["--input", "x"], "--input needs NAME=FILE, got 'x'"),
    ]


def test_input_and_argument_errors(x86, tmp_path):
    for model, args, message in _input_errors(tmp_path):
        proc = run_runner(x86[model][0], args)
        assert (proc.returncode, proc.stderr, proc.stdout) == (2, f"error: {message}\n", ""), args


def test_bundle_errors(x86, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(x86["convnet"][0], bundle)
    inputs = write_inputs(tmp_path, convnet_inputs(1))
    runner = [str(bundle / "bin" / "mlc-runner")]

    def error(argv: list[str], code: int) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode == code and proc.stdout == "", proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        return lines[0]

    missing = tmp_path / "nowhere"
    assert error([*runner, missing], 2) == f"error: bundle directory '{missing}' does not exist"
    assert error(runner, 2) == "error: no bundle directory given; see --help"
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["target"]["requires"]["arch"] = "aarch64"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert error([*runner, bundle, *inputs], 1) == (
        "error: bundle was compiled for aarch64, but this runner is built for x86_64"
    )
    (bundle / "manifest.json").write_text('{"format_version": 1, "inputs": [')
    assert error([*runner, bundle, *inputs], 1).startswith("error: manifest.json is damaged: ")
    del manifest["weights"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert error([*runner, bundle, *inputs], 1) == (
        'error: manifest.json is damaged: manifest has no "weights"'
    )


def test_build_runner_reports_compiler_errors(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "lib").mkdir(parents=True)
    (bundle / "lib" / "libtvm_runtime.so").write_bytes(b"")
    compiler = tmp_path / "broken-g++"
    compiler.write_text("#!/bin/sh\necho 'runner.cc:1:1: error: something broke' >&2\nexit 1\n")
    compiler.chmod(0o755)
    with pytest.raises(RuntimeError, match="something broke"):
        build_runner(bundle, str(compiler), HOST_FFI_LIB)
    assert not (bundle / "bin" / "mlc-runner").exists()
    assert list((bundle / "bin").iterdir()) == []  # no partial file left behind
    with pytest.raises(RuntimeError, match="cannot run C\\+\\+ compiler"):
        build_runner(bundle, str(tmp_path / "no-such-g++"), HOST_FFI_LIB)


def test_runner_command_makes_paths_absolute_under_an_emulator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--input", "x=in/x.npy", "--output-dir=out", "--repeat", "2", "--input=y=/abs/y.bin"]
    bundle = tmp_path / "b"
    assert runner_command(Path("b"), args) == [
        str(bundle / "bin" / "mlc-runner"),
        str(bundle),
        *args,
    ]
    assert runner_command(Path("b"), args, ["qemu-aarch64", "-L", "/sysroot"]) == [
        "qemu-aarch64",
        "-L",
        "/sysroot",
        str(bundle / "bin" / "mlc-runner"),
        str(bundle),
        "--input",
        f"x={tmp_path}/in/x.npy",
        f"--output-dir={tmp_path}/out",
        "--repeat",
        "2",
        "--input=y=/abs/y.bin",
    ]


# ---- aarch64, cross-compiled and run under qemu-user ----


@pytest.fixture(scope="module")
def aarch64_libs(request) -> Path:
    """A directory with the aarch64 runtime libraries, from the PyPI wheels (cached)."""
    for tool in (AARCH64_CXX, QEMU[0]):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is not installed (apt-get install g++-aarch64-linux-gnu qemu-user)"
            )
    cache = request.config.cache.mkdir("mlc-runner-aarch64")
    lib = cache / "lib"
    if all((lib / name).is_file() for name in AARCH64_LIBS):
        return lib
    wheels = cache / "wheels"
    pip = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--platform", "manylinux_2_28_aarch64", "--python-version", "3.11"),
            *("--implementation", "cp", *AARCH64_WHEELS, "-d", str(wheels)),
        ],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, f"pip download failed:\n{pip.stdout}{pip.stderr}"
    partial = cache / "lib.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            members = set(archive.namelist())
            for name, member in AARCH64_LIBS.items():
                if member in members:
                    (partial / name).write_bytes(archive.read(member))
    assert sorted(p.name for p in partial.iterdir()) == sorted(AARCH64_LIBS)
    shutil.rmtree(lib, ignore_errors=True)
    partial.rename(lib)  # only complete sets of libraries are ever used from the cache
    shutil.rmtree(wheels)  # ~100 MB, of which the runner needs the 7 MB above
    return lib


def build_aarch64_bundle(model: onnx.ModelProto, out: Path, libs: Path) -> Path:
    """A bundle for a Cortex-A72, cross-compiled by hand (independent of the arm presets)."""
    from tvm.support.cc import cross_compiler

    from compiler.build import build
    from compiler.bundle import _write_weights
    from compiler.frontend import import_model
    from compiler.targets import ResolvedTarget, TargetPreset

    target = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}
    target["mattr"] = ["+neon"]
    runtime = ("libtvm_runtime.so", "libtvm_runtime_extra.so")
    preset = TargetPreset("arm", Path("arm.toml"), "", target, "aarch64", runtime, ())
    # fp and asimd, as a real ARM preset requires: the runner must ignore the x86-64 host's
    # /proc/cpuinfo that qemu-user shows.
    resolved = ResolvedTarget(preset, target, ("fp", "asimd"))
    imported = import_model(model)
    built = build(imported, resolved, CompileOptions(target="arm"))
    (out / "lib").mkdir(parents=True)
    built.executable.export_library(str(out / "model.so"), fcompile=cross_compiler(AARCH64_CXX))
    manifest = {
        "format_version": 1,
        "target": resolved.manifest_entry(),
        "inputs": [t.to_json() for t in imported.inputs],
        "outputs": [t.to_json() for t in imported.outputs],
        "weights": _write_weights(out / "weights.bin", built),
        "runtime_libs": list(runtime),
        "files": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for name in runtime:
        shutil.copyfile(libs / name, out / "lib" / name)
    install_runner(out, AARCH64_CXX, libs)
    return out


@pytest.fixture(scope="module")
def aarch64(aarch64_libs, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (aarch64 bundle with bin/mlc-runner, its ONNX model)."""
    out = tmp_path_factory.mktemp("runner-aarch64")
    onnx.save(models.multi_io(), out / "multi_io.onnx")
    sources = {"convnet": ROOT / "examples" / "convnet.onnx", "multi_io": out / "multi_io.onnx"}
    return {
        name: (build_aarch64_bundle(onnx.load(path), out / name, aarch64_libs), path)
        for name, path in sources.items()
    }


@pytest.mark.slow
def test_aarch64_runner_is_arm_code(aarch64):
    for bundle, _ in aarch64.values():
        for path in (bundle / "bin" / "mlc-runner", bundle / "model.so"):
            header = path.read_bytes()[:20]
            assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
def test_aarch64_convnet_matches_onnxruntime(aarch64, tmp_path, batch):
    bundle, onnx_path = aarch64["convnet"]
    extra = ("--repeat", "2", "--threads", "2")
    stdout = check_against_onnxruntime(
        bundle, onnx_path, convnet_inputs(batch), tmp_path, emulator=QEMU, extra=extra
    )
    assert_latency_line(stdout, runs=2)


@pytest.mark.slow
@pytest.mark.parametrize("raw", [False, True], ids=["npy", "raw"])
def test_aarch64_multi_io_matches_onnxruntime(aarch64, tmp_path, raw):
    bundle, onnx_path = aarch64["multi_io"]
    check_against_onnxruntime(
        bundle, onnx_path, multi_io_inputs(), tmp_path, raw=raw, emulator=QEMU
    )


@pytest.mark.slow
def test_aarch64_input_error(aarch64, tmp_path):
    bundle, _ = aarch64["convnet"]
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.int64))
    proc = run_runner(bundle, ["--input", f"x={tmp_path}/x.npy"], QEMU)
    assert (proc.returncode, proc.stderr) == (
        2,
        "error: input 'x' has dtype int64, expected float32\n",
    )
