"""Kernels too small to pay for the thread pool run on the calling thread: single kernels below
cost.SERIAL_WORK (schedules/cpu.py: run_parallel), and every kernel of a model whose kernel
calls together do less than MODEL_SERIAL_WORK (passes/serial_tiny_model.py). Sizes that are not
known at compile time (symbolic dims) always keep their parallel loops."""

from __future__ import annotations

import models
import numpy as np
import onnx
import pytest
import tvm
from onnx_cases import assert_same_outputs
from test_schedules import TARGET, _func, _random, _run
from tvm import te, tirx, topi

from compiler.api import compile_model, load_bundle
from compiler.build import prepare
from compiler.frontend import import_model, read_onnx
from compiler.options import CompileOptions
from compiler.passes.pipeline import fusion_steps
from compiler.reference import run_reference
from compiler.schedules import cost
from compiler.schedules.default import default_schedule
from compiler.targets import load_preset, resolve_target


def _scheduled(func: tirx.PrimFunc) -> tirx.PrimFunc:
    return default_schedule(func, TARGET).mod["main"]


def _add_relu(shape) -> tirx.PrimFunc:
    a, b = te.placeholder(shape, name="A"), te.placeholder(shape, name="B")
    return _func([a, b], topi.nn.relu(topi.add(a, b)))


@pytest.mark.parametrize(("shape", "parallel"), [((4, 64), False), ((256, 1024), True)])
def test_small_kernels_stay_serial_and_large_ones_run_parallel(shape, parallel):
    # (4, 64): 4 KB of arguments; (256, 1024): 3 MB
    func = _add_relu(shape)
    assert cost.too_small_for_threads(func) is not parallel
    scheduled = _scheduled(func)
    text = scheduled.script()
    assert ("T.parallel" in text) is parallel
    assert "T.vectorized" in text  # serial, but still vectorised
    a, b = _random(*shape), _random(*shape)
    np.testing.assert_allclose(_run(scheduled, [a, b], shape), np.maximum(a + b, 0), rtol=1e-6)


def test_a_symbolic_kernel_is_never_too_small():
    n = tirx.Var("n", "int64")
    func = _add_relu((n, 4))
    assert cost.work(func) is None and not cost.too_small_for_threads(func)
    assert "T.parallel" in _scheduled(func).script()


def _fused(tmp_path, model: onnx.ModelProto) -> tvm.IRModule:
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    mod, _ = prepare(
        import_model(read_onnx(path)), CompileOptions(), resolve_target(load_preset("x86"))
    )
    with TARGET, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential([s.transform for s in fusion_steps(TARGET)])(mod)


def _marked(mod: tvm.IRModule) -> list[bool]:
    return [
        bool(f.attrs and f.attrs.get(cost.SERIAL_ATTR))
        for f in mod.functions.values()
        if isinstance(f, tirx.PrimFunc)
    ]


@pytest.mark.parametrize(
    ("batch", "serial"),
    [(4, True), (64, False), ("N", False)],  # 2.6 M of work; 42 M; unknown until it runs
)
def test_a_tiny_model_runs_every_kernel_serially(tmp_path, batch, serial):
    marked = _marked(_fused(tmp_path, models.convnet(batch=batch)))
    assert marked and all(m is serial for m in marked), marked


def _launches_threads(bundle) -> bool:
    """Whether the bundle's library calls the runtime's parallel launch at all."""
    return b"TVMBackendParallelLaunch" in (bundle / "model.so").read_bytes()


def test_tiny_bundle_never_launches_threads_and_matches_onnxruntime(tmp_path):
    path = tmp_path / "convnet4.onnx"
    onnx.save(models.convnet(batch=4), path)
    serial, default = tmp_path / "serial", tmp_path / "parallel"
    compile_model(path, serial, CompileOptions())
    compile_model(path, default, CompileOptions(disabled_passes=("SerialTinyModel",)))
    assert not _launches_threads(serial)
    assert _launches_threads(default)  # the pass, not the model's size alone, made it serial
    x = {"x": np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)}
    model = load_bundle(serial, threads=2)
    assert_same_outputs(model(**x), run_reference(path, x))
