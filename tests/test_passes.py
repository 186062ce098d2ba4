"""Graph passes: each of ours with a Before/Expected IR test."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from compiler.passes import ExtractWeights

BIG = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)  # 2 KiB: becomes a weight
SMALL = np.ones((4,), np.float32)  # 16 bytes: stays inline


def _before() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 16), "float32"))
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            big = relax.const(BIG)
            mm = bb.emit(relax.op.matmul(x, big))
            again = bb.emit(relax.op.matmul(x, big))  # the same constant used twice
            total = bb.emit(relax.op.add(mm, again))
            out = bb.emit_output(
                relax.op.add(relax.op.strided_slice(total, [1], [0], [4]), relax.const(SMALL))
            )
        bb.emit_func_output(out)
    return bb.get()


@I.ir_module
class Expected:
    @R.function
    def main(
        x: R.Tensor((1, 16), dtype="float32"), weight0: R.Tensor((16, 32), dtype="float32")
    ) -> R.Tensor((1, 4), dtype="float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            lv: R.Tensor((1, 32), dtype="float32") = R.matmul(x, weight0)
            lv1: R.Tensor((1, 32), dtype="float32") = R.matmul(x, weight0)
            lv2: R.Tensor((1, 32), dtype="float32") = R.add(lv, lv1)
            gv: R.Tensor((1, 4), dtype="float32") = R.add(
                R.strided_slice(lv2, axes=[1], begin=[0], end=[4]),
                R.const(np.ones((4,), "float32")),
            )
            R.output(gv)
        return gv


def test_extract_weights_lifts_large_constants_once():
    after = ExtractWeights(min_bytes=1024)(_before())
    params = after["main"].attrs["params"]
    assert len(params) == 1
    np.testing.assert_array_equal(params[0].numpy(), BIG)
    tvm.ir.assert_structural_equal(after["main"].without_attr("params"), Expected["main"])


def test_extract_weights_threshold_keeps_everything_inline():
    before = _before()
    after = ExtractWeights(min_bytes=1 << 20)(before)
    tvm.ir.assert_structural_equal(after, before)


def test_safe_indexing_makes_take_clamp():
    from compiler.passes import SafeIndexing

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((10, 4), "float32"), i: R.Tensor((3,), "int64")):
            with R.dataflow():
                gv = R.take(x, i, axis=0)  # mode="fast" by default: reads out of bounds
                R.output(gv)
            return gv

    @I.ir_module
    class After:
        @R.function
        def main(x: R.Tensor((10, 4), "float32"), i: R.Tensor((3,), "int64")):
            with R.dataflow():
                gv = R.take(x, i, axis=0, mode="clip")
                R.output(gv)
            return gv

    tvm.ir.assert_structural_equal(SafeIndexing()(Before), After)


def test_out_of_range_gather_index_does_not_crash(tmp_path, bundles):
    """An index far out of range is clamped (onnxruntime raises); the process survives."""
    import subprocess
    import sys
    import textwrap

    bundle = bundles("multi_io")
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(bundle)!r})
        from loader import load
        m = load({str(bundle)!r})
        ids = np.full((2, 3), 10**9, np.int64)
        out = m(x=np.zeros((2, 3, 4), np.float32), ids=ids, mask=np.ones((2, 3, 4), bool))
        print("survived", out["mixed"].shape)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "survived (2, 3, 4)" in r.stdout


# FoldBatchNorm --------------------------------------------------------------------------------

_rng = np.random.default_rng(0)
CONV_W = _rng.standard_normal((4, 3, 3, 3)).astype("float32")
CONV_B = _rng.standard_normal((1, 4, 1, 1)).astype("float32")
GAMMA, BETA, MEAN = (_rng.standard_normal(4).astype("float32") for _ in range(3))
VAR = (_rng.random(4) + 0.5).astype("float32")


def _conv_bn(bias: bool, training: bool = False) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(CONV_W)))
            if bias:
                y = bb.emit(relax.op.add(y, relax.const(CONV_B)))
            stats = [relax.const(a) for a in (GAMMA, BETA, MEAN, VAR)]
            bn = bb.emit(relax.op.nn.batch_norm(y, *stats, axis=1, training=training))
            out = bb.emit_output(relax.TupleGetItem(bn, 0))
        bb.emit_func_output(out)
    return bb.get()


def _folded_constants(bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """What the fold must give, written out independently of the pass."""
    scale = GAMMA.astype(np.float64) / np.sqrt(VAR.astype(np.float64) + 1e-5)
    shift = CONV_B.reshape(4).astype(np.float64) if bias else np.zeros(4)
    weight = (CONV_W * scale[:, None, None, None]).astype("float32")
    offset = ((shift - MEAN) * scale + BETA).astype("float32").reshape(1, 4, 1, 1)
    return weight, offset


def _expected_fold(bias: bool) -> tvm.IRModule:
    weight, offset = _folded_constants(bias)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 3, 8, 8), "float32")) -> R.Tensor((1, 4, 6, 6), "float32"):
            with R.dataflow():
                lv: R.Tensor((1, 4, 6, 6), "float32") = R.nn.conv2d(x, R.const(weight))
                gv: R.Tensor((1, 4, 6, 6), "float32") = R.add(lv, R.const(offset))
                R.output(gv)
            return gv

    return Expected


@pytest.mark.parametrize("bias", [False, True], ids=["conv", "conv+bias"])
def test_fold_batch_norm_into_conv(bias):
    from compiler.passes import FoldBatchNorm

    after = FoldBatchNorm()(_conv_bn(bias))
    tvm.ir.assert_structural_equal(after, _expected_fold(bias))


def test_fold_batch_norm_computes_the_same_values():
    from compiler.passes import FoldBatchNorm

    before = _conv_bn(bias=True)
    x = _rng.standard_normal((1, 3, 8, 8)).astype("float32")
    results = []
    for mod in (before, FoldBatchNorm()(before)):
        mod = relax.transform.DecomposeOpsForInference()(mod)
        vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        results.append(vm["main"](tvm.runtime.tensor(x)).numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)


def test_fold_batch_norm_leaves_training_mode_alone():
    from compiler.passes import FoldBatchNorm

    before = _conv_bn(bias=False, training=True)  # batch statistics: nothing to fold
    tvm.ir.assert_structural_equal(FoldBatchNorm()(before), before)


# Mixed precision: KeepFP32, ToBFloat16 --------------------------------------------------------

W16 = np.ones((16, 8), "float32")


@I.ir_module
class AfterAMP:  # what ToMixedPrecision makes of matmul → relu
    @R.function
    def main(x: R.Tensor((4, 16), "float32")) -> R.Tensor((4, 8), "float16"):
        with R.dataflow():
            lv: R.Tensor((4, 16), "float16") = R.astype(x, "float16")
            lv1: R.Tensor((16, 8), "float16") = R.astype(R.const(W16), "float16")
            lv2: R.Tensor((4, 8), "float32") = R.matmul(lv, lv1, out_dtype="float32")
            lv3: R.Tensor((4, 8), "float16") = R.astype(lv2, "float16")
            gv: R.Tensor((4, 8), "float16") = R.nn.relu(lv3)
            R.output(gv)
        return gv


def test_keep_fp32_runs_the_named_op_on_the_fp32_values():
    from compiler.passes import KeepFP32

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4, 16), "float32")) -> R.Tensor((4, 8), "float16"):
            with R.dataflow():
                lv: R.Tensor((4, 16), "float16") = R.astype(x, "float16")  # noqa: F841 (dead now; DCE removes it)
                lv1: R.Tensor((16, 8), "float16") = R.astype(R.const(W16), "float16")  # noqa: F841 (dead now; DCE removes it)
                lv2: R.Tensor((4, 8), "float32") = R.matmul(x, R.const(W16), out_dtype="float32")
                lv3: R.Tensor((4, 8), "float16") = R.astype(lv2, "float16")
                gv: R.Tensor((4, 8), "float16") = R.nn.relu(lv3)
                R.output(gv)
            return gv

    tvm.ir.assert_structural_equal(KeepFP32(["matmul"])(AfterAMP), Expected)


def test_keep_fp32_casts_back_what_others_read_in_16_bits():
    from compiler.passes import KeepFP32

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4, 16), "float32")) -> R.Tensor((4, 8), "float16"):
            with R.dataflow():
                lv: R.Tensor((4, 16), "float16") = R.astype(x, "float16")
                lv1: R.Tensor((16, 8), "float16") = R.astype(R.const(W16), "float16")
                lv2: R.Tensor((4, 8), "float32") = R.matmul(lv, lv1, out_dtype="float32")
                lv3: R.Tensor((4, 8), "float16") = R.astype(lv2, "float16")  # noqa: F841 (dead now; DCE removes it)
                lv4: R.Tensor((4, 8), "float32") = R.nn.relu(lv2)
                gv: R.Tensor((4, 8), "float16") = R.astype(lv4, "float16")
                R.output(gv)
            return gv

    tvm.ir.assert_structural_equal(KeepFP32(["nn.relu"])(AfterAMP), Expected)


def test_to_bfloat16_retargets_the_casts():
    from compiler.passes import ToBFloat16

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4, 16), "float32")) -> R.Tensor((4, 8), "bfloat16"):
            with R.dataflow():
                lv: R.Tensor((4, 16), "bfloat16") = R.astype(x, "bfloat16")
                lv1: R.Tensor((16, 8), "bfloat16") = R.astype(R.const(W16), "bfloat16")
                lv2: R.Tensor((4, 8), "float32") = R.matmul(lv, lv1, out_dtype="float32")
                lv3: R.Tensor((4, 8), "bfloat16") = R.astype(lv2, "bfloat16")
                gv: R.Tensor((4, 8), "bfloat16") = R.nn.relu(lv3)
                R.output(gv)
            return gv

    tvm.ir.assert_structural_equal(ToBFloat16()(AfterAMP), Expected)


# The pipeline ---------------------------------------------------------------------------------


def _pipeline_names(**options) -> list[str]:
    from compiler.options import CompileOptions
    from compiler.passes.pipeline import graph_steps, select

    opts = CompileOptions(**options)
    steps = graph_steps(opts, tvm.target.Target("llvm"))
    return [str(p.info.name) for p in select(steps, opts)]


def test_opt_levels_add_passes_in_order():
    assert _pipeline_names(opt_level=0) == ["DecomposeOps", "SafeIndexing", "ExtractWeights"]
    level1 = _pipeline_names(opt_level=1)
    assert level1[:4] == ["CanonicalizeBindings", "FoldConstant", "DecomposeOps", "FoldConstant"]
    assert "FoldBatchNorm" not in level1 and "FoldBatchNorm" in _pipeline_names(opt_level=2)


def test_fusion_only_at_level_3():
    from compiler.build import fusion_passes
    from compiler.options import CompileOptions

    target = tvm.target.Target("llvm")
    names = [p.info.name for p in fusion_passes(target, CompileOptions(opt_level=2))]
    assert "FuseOps" not in names and "LegalizeOps" in names
    assert "FuseOps" in [p.info.name for p in fusion_passes(target)]


def test_disabled_pass_does_not_run_but_required_ones_do():
    names = _pipeline_names(disabled_passes=("FoldConstant", "SafeIndexing"))
    assert "FoldConstant" not in names
    assert "SafeIndexing" in names  # required: check_options refuses to disable it


def test_precision_phase():
    names = _pipeline_names(precision="bf16", keep_fp32=("nn.softmax",))
    start = names.index("ToMixedPrecision")
    assert names[start : start + 3] == ["ToMixedPrecision", "KeepFP32", "ToBFloat16"]


# The pipeline's flags, through the CLI --------------------------------------------------------


def test_compile_help_lists_the_pipeline_flags():
    from conftest import mlc

    out = mlc("compile", "--help").stdout
    for flag in ("--opt-level", "--disable-pass", "--keep-fp32", "--dump-ir", "--time-passes"):
        assert flag in out
    assert "[fp32|fp16|bf16]" in out and "NAME=MIN..MAX" in out


def _compile_mlp(model_dir, out, *flags):
    from conftest import mlc

    return mlc("compile", model_dir / "mlp.onnx", "-o", out, *flags)


def test_unknown_pass_name_lists_the_valid_ones(model_dir, tmp_path):
    r = _compile_mlp(model_dir, tmp_path / "b", "--disable-pass", "FuseOp")
    assert r.exit_code == 2
    first = r.stderr.splitlines()[0]
    prefix = (
        "error: --disable-pass 'FuseOp' is not a pass of the pipeline; passes that can be "
        "disabled: "
    )
    assert first.startswith(prefix)
    names = first.removeprefix(prefix).split(", ")
    assert {"FuseOps", "FoldConstant", "FoldBatchNorm", "ExtractWeights"} <= set(names)
    assert names == sorted(names)
    assert not (tmp_path / "b").exists()


def test_required_pass_cannot_be_disabled(model_dir, tmp_path):
    r = _compile_mlp(model_dir, tmp_path / "b", "--disable-pass", "LegalizeOps")
    assert r.exit_code == 2
    assert r.stderr.startswith(
        "error: --disable-pass LegalizeOps: the fusion pass LegalizeOps is required to compile; "
        "passes that can be disabled: "
    )


def test_keep_fp32_errors(model_dir, tmp_path):
    r = _compile_mlp(model_dir, tmp_path / "b", "--keep-fp32", "matmul")
    assert r.exit_code == 2
    assert r.stderr == (
        "error: --keep-fp32 needs --precision fp16 or bf16: at fp32 every operator is fp32 "
        "already\n"
    )
    r = _compile_mlp(model_dir, tmp_path / "b", "--precision", "fp16", "--keep-fp32", "MatMul")
    assert r.exit_code == 2
    assert r.stderr == (
        "error: --keep-fp32 'MatMul' is not a Relax operator; expected a name such as matmul, "
        "nn.conv2d, nn.softmax, mean\n"
    )


def test_dump_ir_and_time_passes(model_dir, tmp_path):
    dump = tmp_path / "ir"
    dump.mkdir()
    (dump / "999-Stale.py").write_text("from an earlier run")
    r = _compile_mlp(model_dir, tmp_path / "b", "--dump-ir", dump, "--time-passes", "-q")
    assert r.exit_code == 0, r.stderr
    files = sorted(p.name for p in dump.iterdir())
    assert files[0] == "000-input.py" and "999-Stale.py" not in files
    assert files[1] == "001-CanonicalizeBindings.py"
    assert any(f.endswith("-FuseOps.py") for f in files)
    assert files[-1].endswith("-AttachGlobalSymbol.py")  # the last lowering pass
    assert "R.matmul" in (dump / "000-input.py").read_text()
    table = r.stderr.splitlines()
    assert table[0].split() == ["pass", "phase", "runs", "seconds"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["FuseOps"][1] == "fusion"
    assert rows["FoldConstant"][1].startswith("simplify,") and "fusion" in rows["FoldConstant"][1]
    assert "total" in rows


def test_time_passes_in_json(model_dir, tmp_path):
    import json

    r = _compile_mlp(model_dir, tmp_path / "b", "--time-passes", "--json")
    assert r.exit_code == 0, r.stderr
    times = {t["name"]: t for t in json.loads(r.stdout)["pass_times"]}
    assert times["LegalizeOps"]["phase"] == "fusion" and times["LegalizeOps"]["runs"] == 1
    assert r.stderr == ""


def test_opt_level_0_compiles_correctly(model_dir, tmp_path):
    from conftest import assert_matches_onnxruntime

    r = _compile_mlp(model_dir, tmp_path / "b", "--opt-level", "0", "--dump-ir", tmp_path / "ir")
    assert r.exit_code == 0, r.stderr
    assert not any("FuseOps" in p.name for p in (tmp_path / "ir").iterdir())
    assert_matches_onnxruntime(tmp_path / "b", model_dir / "mlp.onnx")


def test_bf16_bundle(model_dir, tmp_path):
    import json

    from conftest import assert_matches_onnxruntime

    r = _compile_mlp(model_dir, tmp_path / "b", "--precision", "bf16")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {w["dtype"] for w in manifest["weights"]} == {"bfloat16"}
    assert manifest["options"]["precision"] == "bf16"
    # bf16 keeps 8 bits of mantissa: about 2 significant digits
    assert_matches_onnxruntime(tmp_path / "b", model_dir / "mlp.onnx", atol=5e-2, rtol=5e-2)


def _unary_module(build) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((4, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def test_fast_math_replaces_exp_erf_sigmoid_and_softmax_on_cpu():
    from tvm import topi

    from compiler.passes.fast_math import FastMath, _fast_sigmoid

    def before(bb, x):
        e = bb.emit(relax.op.exp(x))
        s = bb.emit(relax.op.nn.softmax(e, axis=-1))
        g = bb.emit(relax.op.sigmoid(s))
        return relax.op.erf(g)

    def expected(bb, x):
        e = bb.emit(bb.call_te(topi.fast_exp, x))
        s = bb.emit(bb.call_te(topi.nn.fast_softmax, e, -1))
        g = bb.emit(bb.call_te(_fast_sigmoid, s))
        return bb.call_te(topi.fast_erf, g)

    cpu = tvm.target.Target({"kind": "llvm"})
    got = FastMath(cpu)(_unary_module(before))
    tvm.ir.assert_structural_equal(got, _unary_module(expected))
    gpu = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
    tvm.ir.assert_structural_equal(FastMath(gpu)(_unary_module(before)), _unary_module(before))


def test_convert_layout_puts_cpu_convs_in_nhwc_and_folds_weight_transposes():
    from compiler.passes.convert_layout import ConvertLayout

    w = np.ones((8, 4, 3, 3), "float32")

    def conv(bb, layout):
        x = relax.Var("x", R.Tensor((1, 4, 6, 6), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                if layout == "NCHW":
                    out = relax.op.nn.conv2d(x, relax.const(w), padding=1)
                else:
                    xt = bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
                    y = bb.emit(
                        relax.op.nn.conv2d(
                            xt,
                            relax.const(w.transpose(2, 3, 1, 0).copy()),
                            padding=1,
                            data_layout="NHWC",
                            kernel_layout="HWIO",
                        )
                    )
                    out = relax.op.permute_dims(y, [0, 3, 1, 2])
                out = bb.emit_output(out)
            bb.emit_func_output(out)
        return bb.get()

    got = ConvertLayout(tvm.target.Target({"kind": "llvm"}))(conv(relax.BlockBuilder(), "NCHW"))
    got = relax.transform.CanonicalizeBindings()(got)
    expected = relax.transform.CanonicalizeBindings()(conv(relax.BlockBuilder(), "NHWC"))
    tvm.ir.assert_structural_equal(got, expected, map_free_vars=True)


def _nhwc_conv_module(size: int, stride: int = 1) -> tvm.IRModule:
    w = np.random.default_rng(0).standard_normal((3, 3, 4, 8)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, size, size, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.nn.conv2d(
                    x,
                    relax.const(w),
                    strides=stride,
                    padding=1,
                    data_layout="NHWC",
                    kernel_layout="HWIO",
                )
            )
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def _calls(mod: tvm.IRModule) -> list[str]:
    names = []

    def visit(node):
        if isinstance(node, relax.Call) and isinstance(node.op, tvm.ir.Op):
            names.append(node.op.name)
            if node.op.name == "relax.call_tir":
                names.append(node.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"], visit)
    return names


@pytest.mark.parametrize("tiles", ["F2", "F4"])
def test_winograd_tile_algebra_is_a_3x3_correlation(tiles):
    from compiler.passes import winograd

    t = getattr(winograd, tiles)
    rng = np.random.default_rng(1)
    d, g = rng.standard_normal((t.alpha, t.alpha)), rng.standard_normal((3, 3))
    u = winograd.transformed_weights(g.reshape(3, 3, 1, 1), t).reshape(t.alpha, t.alpha)
    y = t.at @ (u * (t.bt @ d @ t.bt.T)) @ t.at.T
    direct = [[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(t.m)] for i in range(t.m)]
    np.testing.assert_allclose(y, direct, rtol=1e-5, atol=1e-6)


def _gemm_rows(mod: tvm.IRModule) -> tuple[int, int]:
    """(positions, rows) of the Winograd GEMM: its transformed input is [a*a, rows, C]."""
    shapes = []

    def visit(node):
        if isinstance(node, relax.Call) and getattr(node.op, "name", "") == "relax.matmul":
            shapes.append([int(d) for d in node.args[0].ty.shape.values])

    relax.analysis.post_order_visit(mod["main"], visit)
    (shape,) = shapes
    return shape[0], shape[1]


def test_winograd_rewrites_stride_1_convs_on_maps_of_7x7_and_up_only():
    from compiler.passes.winograd import Winograd

    cpu = Winograd(tvm.target.Target({"kind": "llvm"}))
    calls = _calls(cpu(_nhwc_conv_module(28)))
    assert "winograd_input" in calls and "relax.matmul" in calls
    assert "relax.nn.conv2d" not in calls
    # F4 where an image has 16 tiles of 4x4 (13x13 and up, the last cropped): 28x28 has 49,
    # padded to 54 GEMM rows. F2 below (12x12: 36 tiles of 2x2).
    assert _gemm_rows(cpu(_nhwc_conv_module(28))) == (36, 54)
    assert _gemm_rows(cpu(_nhwc_conv_module(13))) == (36, 18)
    assert _gemm_rows(cpu(_nhwc_conv_module(12))) == (16, 36)
    assert _gemm_rows(cpu(_nhwc_conv_module(7))) == (16, 18)
    for small_or_strided in (_nhwc_conv_module(6), _nhwc_conv_module(28, stride=2)):
        assert "relax.nn.conv2d" in _calls(cpu(small_or_strided))
    cuda = Winograd(tvm.target.Target({"kind": "cuda"}))
    assert "relax.nn.conv2d" in _calls(cuda(_nhwc_conv_module(28)))


def test_winograd_on_avx512_needs_twice_the_tiles():
    """16-lane vectors: 32 tiles per image. F4 from 28x28 (49 tiles), F2 on 14x14 (49 tiles of
    2x2, where F4 has 16), direct on 7x7 (16 tiles of 2x2)."""
    from compiler.passes.winograd import Winograd

    avx512 = Winograd(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    assert _gemm_rows(avx512(_nhwc_conv_module(28))) == (36, 54)
    assert _gemm_rows(avx512(_nhwc_conv_module(14))) == (16, 54)
    assert "relax.nn.conv2d" in _calls(avx512(_nhwc_conv_module(7)))


@pytest.mark.parametrize("size", [28, 29, 11])  # F4 (29: tiles cropped); 11: F2, cropped
def test_winograd_conv_matches_onnxruntime(tmp_path, size):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compiler.api import compile_model, load_bundle
    from compiler.options import CompileOptions
    from compiler.reference import run_reference

    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, size, size])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    compile_model(model, tmp_path / "b", CompileOptions(target="x86", dump_ir=str(tmp_path / "ir")))
    assert any("winograd_input" in p.read_text() for p in (tmp_path / "ir").rglob("*Winograd*"))
    x = rng.standard_normal((1, 8, size, size)).astype(np.float32)
    expected = run_reference(model, {"x": x})["y"]
    got = load_bundle(tmp_path / "b")(x=x)["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
