"""AmxMatmul (passes/amx_matmul.py, schedules/cpu_amx.py): fp32 matmuls as six bf16 AMX passes.

The splitting and packing are checked everywhere (numpy); the rewrite is checked on an AMX
target whatever this host is (it only compiles); the kernels run only where this CPU has AMX
and Linux grants it (others skip)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from conftest import mlc_subprocess
from onnx import helper
from onnx_cases import const, make_model, vi
from tvm import relax

from compiler.api import compile_model, load_bundle
from compiler.options import CompileOptions
from compiler.passes.amx_matmul import AmxMatmul, has_amx
from compiler.reference import run_reference
from compiler.runtime.loader import AMX_FLAG, _cpu_flags, enable_amx
from compiler.schedules import cpu_amx

AMX_TARGET = {"kind": "llvm", "mcpu": "skylake-avx512", "mattr": ["+amx-tile", "+amx-bf16"]}
host_amx = AMX_FLAG in (_cpu_flags() or set()) and "amx_bf16" in (_cpu_flags() or set())
needs_amx = pytest.mark.skipif(
    not (host_amx and enable_amx()), reason="this CPU has no AMX-BF16, or Linux refuses it"
)


def _float(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def test_three_bf16_parts_hold_an_fp32_value_to_fp32_precision():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.standard_normal(10000), rng.standard_normal(100) * 1e30, [0.0, -0.0, 1.0, -3.5]]
    ).astype(np.float32)
    parts = cpu_amx.bf16_parts(x)
    total = sum(_float(p).astype(np.float64) for p in parts)
    rel = np.abs(total - x.astype(np.float64)) / np.maximum(np.abs(x), 1e-30)
    assert rel.max() <= 2.0**-24
    # The first part is the nearest bf16: no neighbouring bf16 value is closer.
    first = _float(parts[0]).astype(np.float64)
    for step in (-1, 1):
        neighbour = _float((parts[0].astype(np.int32) + step).astype(np.uint16)).astype(np.float64)
        # (the neighbours of ±0 across the sign bit are NaN bit patterns)
        assert ((np.abs(first - x) <= np.abs(neighbour - x)) | np.isnan(neighbour)).all()


def test_split_weight_packs_pairs_of_k_rows_per_16_columns():
    w = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    packed = cpu_amx.split_weight(w)  # [3, N/16, K/2, 32]
    assert packed.shape == (3, 2, 32, 32)
    parts = cpu_amx.bf16_parts(w)
    for p, nb, kk, col, pair in [(0, 0, 0, 0, 0), (1, 1, 5, 3, 1), (2, 1, 31, 15, 1)]:
        assert packed[p, nb, kk, 2 * col + pair] == parts[p, 2 * kk + pair, 16 * nb + col]


def test_only_whole_blocks_of_large_products_qualify():
    assert cpu_amx.supported(128, 768, 3072)
    assert not cpu_amx.supported(1, 768, 3072)  # a matrix-vector product
    assert not cpu_amx.supported(100, 768, 3072)  # rows not whole 16-row tiles
    assert cpu_amx.supported(48, 768, 3072)
    assert cpu_amx.supported(128, 256, 1024)  # BERT-mini's
    assert not cpu_amx.supported(128, 128, 1024)  # below MIN_DIM


def _matmul_module(rows: int, k: int, n: int) -> tuple[tvm.IRModule, np.ndarray]:
    w = np.random.default_rng(2).standard_normal((k, n)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, rows, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(w)))
        bb.emit_func_output(out)
    return bb.get(), w


def _amx_kernels(mod: tvm.IRModule) -> list[str]:
    return sorted(gv.name_hint for gv in mod.get_global_vars() if gv.name_hint.startswith("amx_"))


def test_rewrite_only_on_targets_with_amx():
    mod, _ = _matmul_module(128, 512, 512)
    assert has_amx(tvm.target.Target(AMX_TARGET))
    plain = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    assert not has_amx(plain)
    assert _amx_kernels(AmxMatmul(plain)(mod)) == []
    rewritten = AmxMatmul(tvm.target.Target(AMX_TARGET))(mod)
    assert _amx_kernels(rewritten) == ["amx_gemm_128_512_512", "amx_split_128_512"]
    assert "relax.matmul" not in rewritten["main"].script()
    small, _ = _matmul_module(128, 128, 128)  # below MIN_DIM: kept
    assert _amx_kernels(AmxMatmul(tvm.target.Target(AMX_TARGET))(small)) == []


def test_rewritten_main_is_reshape_split_product_reshape():
    """Before: main(x [1, 128, 512]) = matmul(x, W). Expected: x reshaped to its rows, split,
    the product with W's packed parts (a constant), reshaped back."""
    mod, w = _matmul_module(128, 512, 512)
    got = AmxMatmul(tvm.target.Target(AMX_TARGET))(mod)
    split, gemm = (got.get_global_var(f"amx_{n}") for n in ("split_128_512", "gemm_128_512_512"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 128, 512), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            rows = bb.emit(relax.op.reshape(x, (128, 512)))
            parts = bb.emit(
                relax.call_tir(split, [rows], relax.TensorType((3, 128, 544), "uint16"))
            )
            weight = relax.const(cpu_amx.split_weight(w))
            product = bb.emit(
                relax.call_tir(gemm, [parts, weight], relax.TensorType((128, 512), "float32"))
            )
            out = bb.emit_output(relax.op.reshape(product, (1, 128, 512)))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(got["main"], bb.get()["main"])


def test_long_products_go_in_chunks_of_k_with_column_blocks_grouped():
    assert cpu_amx.blocking(128, 768, 3072, 2) == (768, 1)  # parts of 576 KB: one chunk
    # BERT-base's 3072-deep product: parts of 2.3 MB do not stay in L2; 24 column blocks
    assert cpu_amx.blocking(128, 3072, 768, 2) == (1024, 6)  # 4 tasks for 2 threads
    assert cpu_amx.blocking(128, 3072, 768, 8) == (1024, 1)  # 24 tasks for 8 threads
    assert cpu_amx.blocking(256, 1536, 512, 2) == (512, 4)


# (48, 512, 512) in one chunk, three 16-row tiles; (256, 1536, 512) in three chunks
@needs_amx
@pytest.mark.parametrize("m, k, n", [(48, 512, 512), (256, 1536, 512)])
def test_kernels_are_more_accurate_than_fp32_products(m, k, n):
    target = tvm.target.Target({**AMX_TARGET, "mcpu": "sapphirerapids"})
    mod = tvm.IRModule(
        {
            "split": cpu_amx.split_kernel(m, k).with_attr("global_symbol", "split"),
            "gemm": cpu_amx.gemm_kernel(m, k, n, 2).with_attr("global_symbol", "gemm"),
        }
    )
    lib = tvm.compile(mod, target=target)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    # the parts' rows are padded (cpu_amx.ROW_PAD); the kernels never touch the pad, so fill
    # it with NaNs' bits: a product that read it would be NaN
    parts = tvm.runtime.tensor(np.full(cpu_amx.parts_shape(m, k), 0x7FC0, np.uint16))
    out = tvm.runtime.tensor(np.zeros((m, n), np.float32))
    lib["split"](tvm.runtime.tensor(x), parts)
    np.testing.assert_array_equal(parts.numpy()[:, :, k:], 0x7FC0)
    np.testing.assert_array_equal(parts.numpy()[:, :, :k], cpu_amx.bf16_parts(x))
    lib["gemm"](parts, tvm.runtime.tensor(cpu_amx.split_weight(w)), out)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    sequential = np.zeros((m, n), np.float32)
    for i in range(k):
        sequential += x[:, i : i + 1] * w[i : i + 1, :]
    error = np.abs(out.numpy() - exact).max()
    assert error <= np.abs(sequential - exact).max()
    # and than numpy's blocked fp32 product: the chunked kernel with its small passes added
    # onto the earlier chunks' large products was not (5.9e-6 against 4.9e-6 at 256 x 1536)
    assert error <= np.abs(x @ w - exact).max()


@needs_amx
def test_bundle_with_amx_matches_onnxruntime(tmp_path):
    rng = np.random.default_rng(4)
    w1 = (rng.standard_normal((512, 1024)) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((1024, 512)) * 0.05).astype(np.float32)
    b = rng.standard_normal(1024).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        [vi("x", [2, 64, 512])],
        [vi("y", [2, 64, 512])],
        [const("w1", w1), const("b", b), const("w2", w2)],
    )
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    bundle = compile_model(path, tmp_path / "bundle", CompileOptions()).bundle
    manifest = (bundle / "manifest.json").read_text()
    assert "amx_tile" in manifest
    assert '"uint16"' in manifest  # the weights' bf16 parts: the products did run on AMX
    x = rng.standard_normal((2, 64, 512)).astype(np.float32)
    got = load_bundle(bundle)(x=x)["y"]
    np.testing.assert_allclose(got, run_reference(path, {"x": x})["y"], atol=2e-5, rtol=1e-5)


@needs_amx
def test_tuning_leaves_the_amx_kernels_alone(tmp_path):
    """The AMX kernels are written whole: tuning skips them, and --db-strict does not ask for
    their records. (Tuning took their module's attributes for theirs and sent the product to
    MetaSchedule, which failed on it: `mlc tune` of any model with an AMX product exited 4.)"""
    w = (np.random.default_rng(5).standard_normal((256, 256)) * 0.05).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [1, 64, 256])],
        [vi("y", [1, 64, 256])],
        [const("w", w)],
    )
    path, db = tmp_path / "mm.onnx", tmp_path / "db"
    onnx.save(model, path)
    r = mlc_subprocess("tune", path, "--db", db, "--trials", "2", "--json")
    assert r.returncode == 0, r.stderr
    kernels = {k["name"]: k["status"] for k in json.loads(r.stdout)["kernels"]}
    amx = {n for n in kernels if n.startswith("amx_")}
    assert amx and {kernels[n] for n in amx} == {"scheduled"}
    r = mlc_subprocess("compile", path, "-o", tmp_path / "b", "--db", db, "--db-strict")
    assert r.returncode == 0, r.stderr
