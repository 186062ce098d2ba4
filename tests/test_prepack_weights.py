"""PrepackWeights (passes/prepack_weights.py): the CPU kernels' weights are repacked at compile time
into the layout the kernels read, and the bundle stores them that way."""

from __future__ import annotations

import json

import numpy as np
import onnx
import tvm
from onnx import helper as h
from onnx_cases import assert_same_outputs, const, make_model, rand, vi

from compiler.api import compile_model, load_bundle
from compiler.options import CompileOptions
from compiler.reference import run_reference


def _compile(tmp_path, model, name: str, **options):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    bundle = compile_model(path, tmp_path / name, CompileOptions(**options)).bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    return path, bundle, {w["name"]: tuple(w["shape"]) for w in manifest["weights"]}


def _run_both(tmp_path, model, inputs):
    """Compile with and without PrepackWeights; check both against onnxruntime; the weights
    each bundle stores (name -> shape)."""
    shapes = []
    for name, disabled in (("packed", ()), ("unpacked", ("PrepackWeights",))):
        path, bundle, weights = _compile(tmp_path, model, name, disabled_passes=disabled)
        got = load_bundle(bundle)(**inputs)
        assert_same_outputs(got, run_reference(path, inputs), atol=1e-4)
        shapes.append(weights)
    return shapes


def test_conv_weights_are_stored_packed_and_results_match(tmp_path):
    """A 3x3 conv's [O, I, 3, 3] weight becomes [O / tile, 3, 3, I, tile] (NHWC kernels read
    one tile of output channels at a time); with the pass disabled it keeps its layout."""
    w = rand(256, 8, 3, 3) * 0.2  # wider than one register tile on AVX2 and AVX-512
    model = make_model(
        [
            h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            h.make_node("Relu", ["c"], ["y"]),
        ],
        [vi("x", [1, 8, 6, 6])],  # (too small a map for Winograd)
        [vi("y", [1, 256, 6, 6])],
        [const("w", w)],
    )
    packed, unpacked = _run_both(tmp_path, model, {"x": rand(1, 8, 6, 6)})
    (shape,) = [s for n, s in packed.items() if n.endswith(".packed")]
    assert len(shape) == 5 and shape[0] * shape[-1] == 256 and shape[1:4] == (3, 3, 8)
    assert list(unpacked.values()) == [(3, 3, 8, 256)]  # HWIO after ConvertLayout, as it was


def test_gemv_weights_are_packed_into_register_tile_streams(tmp_path):
    """Batch 1 (no rows to reuse a weight vector for): each task streams its own packed
    [K, tile] panel into register accumulators: [1024, 1000] becomes [1000 / tile, 1024, tile]
    with a tile of a few vectors (5 x 8 = 40 lanes on AVX2)."""
    w = rand(1024, 1000) * 0.05
    model = make_model(
        [h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Relu", ["m"], ["y"])],
        [vi("x", [1, 1024])],
        [vi("y", [1, 1000])],
        [const("w", w)],
    )
    packed, unpacked = _run_both(tmp_path, model, {"x": rand(1, 1024)})
    (shape,) = packed.values()
    assert shape[1] == 1024 and shape[0] * shape[2] == 1000 and shape[2] <= 64, shape
    assert list(unpacked.values()) == [(1024, 1000)]


def test_a_weight_also_used_as_data_is_kept_and_packed(tmp_path):
    """W feeds a matmul (packed copy) and an elementwise op (its own layout): both stored."""
    w = rand(64, 256) * 0.1
    model = make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"]), h.make_node("Add", ["w", "b"], ["r"])],
        [vi("x", [12, 64]), vi("b", [64, 256])],
        [vi("y", [12, 256]), vi("r", [64, 256])],
        [const("w", w)],
    )
    packed, unpacked = _run_both(tmp_path, model, {"x": rand(12, 64), "b": rand(64, 256)})
    assert (64, 256) in packed.values() and len(packed) == 2
    assert any(n.endswith(".packed") and np.prod(s) == w.size for n, s in packed.items())
    assert list(unpacked.values()) == [(64, 256)]


def test_bfloat16_weights_are_packed_too(tmp_path):
    """bf16 weights go through the host-side repacking as their bits."""
    w = rand(64, 256) * 0.1
    model = make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [12, 64])],
        [vi("y", [12, 256])],
        [const("w", w)],
    )
    _, bundle, weights = _compile(tmp_path, model, "bf16", precision="bf16")
    assert any(n.endswith(".packed") for n in weights)
    x = rand(12, 64)
    got = load_bundle(bundle)(x=x)["y"]
    np.testing.assert_allclose(got, x @ w, atol=0.1, rtol=0.05)


def test_a_packing_schedule_survives_the_tuning_log_round_trip():
    """The default rules' weight packing (a transform_layout step) is written to the tuning
    log as JSON and read back into the same schedule (MetaSchedule's own as_json cannot)."""
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from compiler.schedules._ms_support import record_json
    from compiler.schedules.default import default_schedule

    a = te.placeholder((12, 64), name="A")
    b = te.placeholder((64, 256), name="B")
    k = te.reduce_axis((0, 64), name="k")
    c = te.compute((12, 256), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    func = te.create_prim_func([a, b, c]).with_attr("layout_free_buffers", [1])
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    sch = default_schedule(func, target)
    assert "layout_rewrite_preproc" in sch.mod.script()
    workload = ms.database.Workload(tvm.IRModule({"main": func}))
    args = ms.arg_info.ArgInfo.from_prim_func(func)
    record = ms.database.TuningRecord(sch.trace, workload, [1e-6], target, args)
    data = json.loads(json.dumps(record_json(record)))
    back = ms.database.TuningRecord.from_json(data, workload)
    replayed = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    back.trace.apply_to_schedule(replayed, remove_postproc=False)
    tvm.ir.assert_structural_equal(replayed.mod, sch.mod)


def test_gemm_transposed_weight_model_matches(tmp_path):
    """ONNX Gemm with transB=1 (the weight stored [N, K]) through the packed path."""
    w = rand(256, 64) * 0.1
    model = make_model(
        [h.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        [vi("x", [12, 64])],
        [vi("y", [12, 256])],
        [const("w", w)],
    )
    packed, _ = _run_both(tmp_path, model, {"x": rand(12, 64)})
    assert any(n.endswith(".packed") for n in packed)


def test_the_pass_gives_main_the_packed_weight_and_hands_over_the_transform():
    """Before: main(x, w) calls a matmul kernel whose default schedule packs w. Expected: main
    takes w packed as [N / tile, K, tile]; the lifted transform computes exactly that from w."""
    from tvm import relax, topi
    from tvm.script import relax as R

    from compiler.build import Weight
    from compiler.passes.prepack_weights import Lifted, PrepackWeights, mark_weights, repack
    from compiler.schedules import default_schedules

    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((12, 64), "float32"))
    w = relax.Var("w", R.Tensor((64, 256), "float32"))
    with bb.function("main", [x, w], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit_output(bb.emit_te(topi.matmul, x, w))
        bb.emit_func_output(y)
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    lifted = Lifted()
    with target:
        mod = mark_weights()(bb.get())
        mod = PrepackWeights(lifted)(default_schedules(target)(mod))
    _, packed_param = mod["main"].params
    shape = [int(d) for d in packed_param.ty.shape]
    assert shape[1] == 64 and shape[0] * shape[2] == 256 and shape[2] % 8 == 0
    weight = rand(64, 256)
    (packed,) = repack(lifted, (Weight("w", weight),))
    tile = shape[2]
    expected = weight.reshape(64, 256 // tile, tile).transpose(1, 0, 2)
    assert packed.name == "w.packed"
    np.testing.assert_array_equal(packed.array, expected)
