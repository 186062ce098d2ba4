"""The loader that ships in every bundle: validation, integrity, and a deploy host without TVM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import random_inputs

from compiler.api import load_bundle
from compiler.reference import run_reference


@pytest.fixture
def copy_bundle(bundles, tmp_path):
    def make(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(bundles(name), dest)
        return dest

    return make


def _load(bundle):
    sys.path.insert(0, str(bundle))
    try:
        import loader  # the bundle's own copy
    finally:
        sys.path.pop(0)
    return loader


def test_input_validation_messages(bundles):
    model = load_bundle(bundles("multi_io"))
    good = random_inputs(model)
    cases = [
        (
            {**good, "x": good["x"].astype(np.float64)},
            "input 'x' has dtype float64, expected float32 (convert with .astype(np.float32))",
        ),
        (
            {**good, "ids": good["ids"][:1]},
            "input 'ids' has shape [1, 3], expected [2, 3] (axis 0 must be 2)",
        ),
        (
            {**good, "mask": good["mask"][0]},
            "input 'mask' has shape [3, 4], expected 3 dimensions [2, 3, 4]",
        ),
        ({"x": good["x"], "ids": good["ids"]}, "missing input 'mask' (mask: bool[2, 3, 4])"),
        (
            {**good, "extra": good["x"]},
            "unknown input 'extra'; the model's inputs are: x, ids, mask",
        ),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError) as info:
            model(**inputs)
        assert str(info.value) == message
    with pytest.raises(ValueError, match="^input 'x' was given twice$"):
        model(good["x"], x=good["x"], ids=good["ids"], mask=good["mask"])
    with pytest.raises(ValueError, match="^model takes 3 inputs, 4 were given$"):
        model(good["x"], good["ids"], good["mask"], good["x"])
    # positional and keyword calls agree
    a = model(good["x"], good["ids"], good["mask"])
    b = model(**good)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_symbolic_dims_must_agree(tmp_path):
    import onnx
    from onnx import TensorProto
    from onnx import helper as h

    from compiler.api import compile_model
    from compiler.options import CompileOptions

    graph = h.make_graph(
        [h.make_node("Add", ["a", "b"], ["c"])],
        "add",
        [
            h.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            h.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4]),
        ],
        [h.make_tensor_value_info("c", TensorProto.FLOAT, ["batch", 4])],
    )
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "add.onnx")
    compile_model(tmp_path / "add.onnx", tmp_path / "b", CompileOptions())
    model = load_bundle(tmp_path / "b")
    out = model(a=np.ones((5, 4), np.float32), b=np.ones((5, 4), np.float32))["c"]
    assert out.shape == (5, 4) and (out == 2).all()
    with pytest.raises(ValueError) as info:
        model(a=np.ones((5, 4), np.float32), b=np.ones((3, 4), np.float32))
    assert str(info.value) == (
        "input 'b' has 3 at axis 0 for dim 'batch', but another input already set 'batch' = 5"
    )


def test_refuses_tampered_files(copy_bundle):
    bundle = copy_bundle("mlp")
    data = bytearray((bundle / "weights.bin").read_bytes())
    data[100] ^= 0xFF
    (bundle / "weights.bin").write_bytes(data)
    loader = _load(bundle)
    with pytest.raises(loader.BundleError) as info:
        loader.load(bundle)
    assert str(info.value).startswith(
        "bundle file 'weights.bin' does not match its sha256 in the manifest (expected "
    )
    assert str(info.value).endswith("…): the bundle is damaged")


def test_refuses_missing_file(copy_bundle):
    bundle = copy_bundle("mlp")
    (bundle / "model.so").unlink()
    loader = _load(bundle)
    with pytest.raises(loader.BundleError, match="^bundle file 'model.so' is missing from "):
        loader.load(bundle)


def test_refuses_unknown_format_version(copy_bundle):
    bundle = copy_bundle("mlp")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    loader = _load(bundle)
    with pytest.raises(loader.BundleError) as info:
        loader.load(bundle)
    assert str(info.value) == (
        "bundle format version 99 is not supported: this loader reads version 1; "
        "recompile the model with a matching mlc"
    )


def test_refuses_cpu_without_required_features(copy_bundle):
    bundle = copy_bundle("mlp")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["target"]["requires"]["cpu_features"] += ["avx512_fp16", "amx_tile"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    loader = _load(bundle)
    flags = loader._cpu_flags()
    if flags is None or {"avx512_fp16", "amx_tile"} <= flags:
        pytest.skip("this CPU has the features the test pretends are missing")
    with pytest.raises(
        loader.BundleError,
        match="^this CPU lacks .*which the bundle's target 'x86' "
        "requires; recompile with a target this host supports",
    ):
        loader.load(bundle)


def test_avx512_bundle_on_this_host(tmp_path, model_dir):
    """x86-avx512 runs where the CPU has AVX-512 and is refused, not crashed, where it has not."""
    from compiler.api import compile_model
    from compiler.options import CompileOptions

    compile_model(model_dir / "mlp.onnx", tmp_path / "b", CompileOptions(target="x86-avx512"))
    loader = _load(tmp_path / "b")
    flags = loader._cpu_flags() or set()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        model = loader.load(tmp_path / "b")
        x = np.ones((1, 64), np.float32)
        np.testing.assert_allclose(
            model(x=x)["y"],
            run_reference(model_dir / "mlp.onnx", {"x": x})["y"],
            rtol=1e-4,
            atol=1e-4,
        )
    else:
        with pytest.raises(loader.BundleError, match="^this CPU lacks avx512"):
            loader.load(tmp_path / "b")


def test_loader_imports_only_stdlib_numpy_and_tvm_ffi(bundles):
    bundle = bundles("mlp")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(bundle)!r})
        from loader import load
        import numpy as np
        model = load({str(bundle)!r})
        model(x=np.ones((1, 64), np.float32))
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tvm", "onnx", "click", "compiler", "onnxruntime"))
        assert not bad, bad
        print("clean")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "clean"


DEPLOY_SCRIPT = """
import importlib.util, json, sys, threading
import numpy as np
assert importlib.util.find_spec("tvm") is None, "apache-tvm must not be installed here"
assert importlib.util.find_spec("onnx") is None and importlib.util.find_spec("compiler") is None
bundle, data = sys.argv[1], np.load(sys.argv[2])
sys.path.insert(0, bundle)
from loader import load, BundleError, InputError
model = load(bundle)
inputs = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
out = model(**inputs)
for name, ref in ((k[4:], data[k]) for k in data.files if k.startswith("out_")):
    np.testing.assert_allclose(out[name], ref, rtol=1e-4, atol=1e-4)
try:
    model(**{k: v.astype(np.float64) for k, v in inputs.items()})
    raise SystemExit("a wrong dtype was accepted")
except InputError as exc:
    print("refused:", exc)
errors = []
def worker():
    try:
        for _ in range(20):
            o = model(**inputs)
            for name in out:
                np.testing.assert_array_equal(o[name], out[name])
    except Exception as exc:
        errors.append(exc)
threads = [threading.Thread(target=worker) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
print("deploy ok")
"""


@pytest.mark.slow
def test_runs_in_fresh_venv_without_tvm(bundles, model_dir, tmp_path):
    """The deploy story: a venv holding only numpy and apache-tvm-ffi runs the bundle."""
    import tvm_ffi

    env_dir = tmp_path / "deploy-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            f"numpy=={np.__version__}",
            f"apache-tvm-ffi=={tvm_ffi.__version__}",
        ],
        capture_output=True,
        text=True,
    )
    if pip.returncode != 0:
        pytest.skip(f"cannot install numpy and apache-tvm-ffi into a venv: {pip.stderr[-300:]}")
    from compiler.api import compile_model
    from compiler.options import CompileOptions

    # TopK needs libtvm_runtime_extra.so as well: both runtime libraries must load there.
    topk = compile_model(model_dir / "topk.onnx", tmp_path / "topk", CompileOptions(dims={"N": 6}))
    (tmp_path / "deploy.py").write_text(DEPLOY_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for name, bundle in (("transformer", bundles("transformer")), ("topk", topk.bundle)):
        model = load_bundle(bundle)
        inputs = random_inputs(model)
        ref = run_reference(model_dir / f"{name}.onnx", inputs)
        data = tmp_path / f"{name}.npz"
        np.savez(
            data,
            **{f"in_{k}": v for k, v in inputs.items()},
            **{f"out_{k}": v for k, v in ref.items()},
        )
        r = subprocess.run(
            [python, tmp_path / "deploy.py", bundle, data],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "deploy ok" in r.stdout
        assert "refused: input 'x' has dtype float64, expected float32" in r.stdout
