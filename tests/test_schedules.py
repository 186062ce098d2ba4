"""Default CPU schedule rules: each applies to the kernels it is for, and results stay correct.

Each kernel is built from TVM's own operator definitions (topi), scheduled by one of our rules,
compiled, run, and compared with numpy.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import s_tir, te, tirx, topi

from compiler.schedules import cpu
from compiler.schedules.default import default_schedules

TARGET = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"})
rng = np.random.default_rng(0)

pytestmark = pytest.mark.usefixtures("parallel_small_kernels")  # see conftest.py


def _func(inputs, output) -> tirx.PrimFunc:
    return te.create_prim_func([*inputs, output]).with_attr("global_symbol", "main")


def _run(func: tirx.PrimFunc, arrays: list[np.ndarray], out_shape) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"), dev)
    lib["main"](*[tvm.runtime.tensor(a, dev) for a in arrays], out)
    return out.numpy()


def _schedule(rule, func) -> tirx.PrimFunc:
    sch = rule.apply(func, TARGET, False)
    assert sch is not None, f"{type(rule).__name__} did not apply"
    return sch.mod["main"]


def _loop_kinds(func: tirx.PrimFunc) -> set[str]:
    kinds = set()
    text = func.script()
    for kind in ("T.parallel", "T.vectorized", "T.unroll"):
        if kind in text:
            kinds.add(kind.split(".")[1])
    return kinds


def _random(*shape) -> np.ndarray:
    return rng.standard_normal(shape).astype("float32")


def _vector_stores(func: tirx.PrimFunc, name: str) -> list[int]:
    """Extents of the vectorised loops around the blocks that write the buffer `name`."""
    sch = s_tir.Schedule(func)
    extents = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if any(w.source.name == name for w in sch.get(block).writes):
            for loop in sch.get_loops(block):
                if sch.get(loop).kind == tirx.ForKind.VECTORIZED:
                    extents.append(int(sch.get(loop).extent))
    return extents


@pytest.mark.parametrize("columns", [80, 24])
def test_matmul_with_bias_and_relu_is_register_tiled(columns):
    """A register tile of rows x vectors; 24 output channels on 8 lanes get 4 x 24
    (12 accumulators), each row as 3 unrolled 8-lane vectors (one <24 x float> makes LLVM
    shuffle)."""
    a, b, bias = _random(64, 96), _random(96, columns), _random(columns)
    A = te.placeholder(a.shape, name="A")
    B = te.placeholder(b.shape, name="B")
    C = te.placeholder(bias.shape, name="C")
    out = topi.nn.relu(topi.add(topi.matmul(A, B), C))
    func = _schedule(cpu.TiledReduction(), _func([A, B, C], out))
    assert {"parallel", "vectorized", "unroll"} <= _loop_kinds(func)
    assert 'scope="local"' in func.script()  # accumulators in a register tile
    if columns == 24:
        assert set(_vector_stores(func, out.op.name)) == {8}
        assert "T.unroll(3)" in func.script()  # the 3 vectors of a row
    got = _run(func, [a, b, bias], (64, columns))
    np.testing.assert_allclose(got, np.maximum(a @ b + bias, 0), rtol=1e-4, atol=1e-4)


AVX512 = tvm.target.Target(
    {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"}
)


@pytest.mark.parametrize("columns", [64, 24])
def test_avx512_register_tiles_use_its_32_registers(columns):
    """AVX-512 has 32 vector registers: a 64-column matmul gets 6 rows x 4 vectors (24
    accumulators, where AVX2's 16 registers allow 12). 24 columns are not a whole number of
    16-lane vectors: they get 8-lane ones, 3 to a row and 8 rows, not 12-lane tiles without
    rows (MobileNetV2's 24-channel depthwise -> 1x1 kernels 2.6-3.9x faster)."""
    from compiler.runtime.loader import _cpu_flags

    a, b = _random(96, 64), _random(64, columns)
    A = te.placeholder(a.shape, name="A")
    B = te.placeholder(b.shape, name="B")
    out = topi.nn.relu(topi.matmul(A, B))
    sch = cpu.TiledReduction().apply(_func([A, B], out), AVX512, False)
    assert sch is not None
    func = sch.mod["main"]
    local = [shape for name, shape in _allocations(func).items() if "local" in name]
    if columns == 64:
        assert local == [[6, 64]]  # 24 accumulators of 16 lanes
    else:
        assert local == [[8, 24]]  # 8 rows x 3 vectors of 8 lanes
        assert set(_vector_stores(func, out.op.name)) == {8}
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= (_cpu_flags() or set()):
        lib = tvm.compile(tvm.IRModule({"main": func}), target=AVX512)
        dev = tvm.cpu()
        got = tvm.runtime.tensor(np.zeros((96, columns), "float32"), dev)
        lib["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), got)
        np.testing.assert_allclose(got.numpy(), np.maximum(a @ b, 0), rtol=1e-4, atol=1e-4)


def test_an_epilogue_that_reads_part_of_the_result_is_not_fused_into_the_write_back():
    """A matmul whose epilogue keeps 40 of its 64 rows (a slice fused after it). Inlined into
    the write-back, the epilogue ran over all 64 rows and wrote 24 rows past the end of its
    40-row output: heap corruption. It now stays a block of its own, over its own 40 rows."""
    a, b = _random(64, 96), _random(96, 80)
    A = te.placeholder(a.shape, name="A")
    B = te.placeholder(b.shape, name="B")
    C = topi.matmul(A, B)
    D = te.compute((40, 80), lambda i, j: C[i, j] * 2.0, name="D")
    func = _schedule(cpu.TiledReduction(), _func([A, B], D))
    sch = s_tir.Schedule(func)
    writers = [
        sch.get(block).name_hint
        for block in sch.get_child_blocks(sch.get_sblock("root"))
        if any(w.source.name == "D" for w in sch.get(block).writes)
    ]
    assert writers == ["D"]
    np.testing.assert_allclose(_run(func, [a, b], (40, 80)), (a @ b)[:40] * 2, rtol=1e-4, atol=1e-4)


def test_gemv_streams_without_rows():
    x, w = _random(1, 256), _random(256, 200)
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    func = _schedule(cpu.TiledReduction(), _func([X, W], topi.matmul(X, W)))
    assert {"parallel", "vectorized"} <= _loop_kinds(func)
    np.testing.assert_allclose(_run(func, [x, w], (1, 200)), x @ w, rtol=1e-4, atol=1e-4)


def test_tile_narrower_than_a_vector_writes_only_its_own_columns():
    """A GEMV over 10 columns gets tiles of 5 (8 lanes do not divide 10). The write-back must
    cover those 5 columns, not a padded vector of 8: that wrote the next task's columns with
    accumulators this task never computed, a race that gave wrong results on 2+ threads."""
    x, w = _random(1, 128), _random(128, 10)
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    out = topi.matmul(X, W)
    func = _schedule(cpu.TiledReduction(), _func([X, W], out))
    extents = _vector_stores(func, out.op.name)
    assert extents and all(10 % e == 0 for e in extents), extents
    np.testing.assert_allclose(_run(func, [x, w], (1, 10)), x @ w, rtol=1e-4, atol=1e-4)


def test_batch_matmul_with_transposed_operand():
    a, b = _random(4, 32, 16), _random(4, 24, 16)
    A = te.placeholder(a.shape, name="A")
    B = te.placeholder(b.shape, name="B")
    func = _schedule(cpu.TiledReduction(), _func([A, B], topi.nn.batch_matmul(A, B)))
    expected = np.einsum("bik,bjk->bij", a, b)
    np.testing.assert_allclose(_run(func, [a, b], (4, 32, 24)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("size", "stride", "groups"), [(14, 1, 1), (7, 1, 1), (16, 2, 1), (12, 1, 32)]
)
def test_nhwc_conv_and_depthwise_conv(size, stride, groups):
    cin, cout = 32, 32 if groups > 1 else 48
    x = _random(1, size, size, cin)
    w = _random(3, 3, cin // groups, cout)
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    out = topi.nn.conv(X, W, stride, 1, 1, groups, "NHWC", "HWIO")
    func = _schedule(cpu.TiledReduction(), _func([X, W], out))
    assert {"parallel", "vectorized"} <= _loop_kinds(func)
    reference = _run(_func([X, W], out), [x, w], [int(d) for d in out.shape])  # unscheduled
    got = _run(func, [x, w], [int(d) for d in out.shape])
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("kernel", "padding", "stride"), [(1, 0, 1), (1, 0, 2), (3, 1, 1)])
def test_a_conv_reads_its_input_in_place_unless_it_is_padded(kernel, padding, stride):
    """topi's conv copies its input into pad_temp even with no padding; that copy is inlined
    (one pass over the input saved: MobileNetV2 7.07 -> 6.88 ms), a real padding step is not."""
    x, w = _random(1, 14, 14, 32), _random(kernel, kernel, 32, 48)
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    out = topi.nn.conv(X, W, stride, padding, 1, 1, "NHWC", "HWIO")
    plain = _func([X, W], out)
    assert 'T.sblock("pad_temp")' in plain.script()
    func = _schedule(cpu.TiledReduction(), plain)
    assert ('T.sblock("pad_temp")' in func.script()) is (padding > 0)
    reference = _run(plain, [x, w], [int(d) for d in out.shape])
    got = _run(func, [x, w], [int(d) for d in out.shape])
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_a_copy_that_is_also_an_output_stays():
    """A copy the kernel also returns cannot be inlined; the rule keeps it and still applies."""
    x, w = _random(1, 14, 14, 32), _random(1, 1, 32, 48)
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    copy = te.compute(x.shape, lambda *i: X(*i), name="copy")
    out = topi.nn.conv(copy, W, 1, 0, 1, 1, "NHWC", "HWIO")
    plain = te.create_prim_func([X, W, copy, out]).with_attr("global_symbol", "main")
    func = _schedule(cpu.TiledReduction(), plain)
    assert 'T.sblock("copy")' in func.script()
    lib = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    dev = tvm.cpu()
    got = [tvm.runtime.tensor(np.zeros(s, "float32"), dev) for s in (x.shape, (1, 14, 14, 48))]
    lib["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(w, dev), *got)
    np.testing.assert_allclose(got[0].numpy(), x)
    np.testing.assert_allclose(got[1].numpy(), x @ w[0, 0], rtol=1e-4, atol=1e-4)


def test_a_conv_whose_weight_is_packed_at_compile_time_runs_image_rows_in_parallel():
    """With a weight (layout-free parameter) packed ahead of time, the tasks are image rows,
    each computing all its channel tiles from input rows it reads once; an operand packed as
    the kernel runs keeps channel tiles outermost (each task copies one panel, once)."""
    x, w = _random(1, 14, 14, 32), _random(1, 1, 32, 48)
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    out = topi.nn.conv(X, W, 1, 0, 1, 1, "NHWC", "HWIO")
    plain = _func([X, W], out)
    packed = _schedule(cpu.TiledReduction(), plain.with_attr("layout_free_buffers", [1]))
    assert "meta_schedule.layout_rewrite_preproc" in packed.script()
    assert "T.parallel(14)" in packed.script()  # the 14 image rows
    assert "T.parallel(14)" not in _schedule(cpu.TiledReduction(), plain).script()
    reference = _run(plain, [x, w], [int(d) for d in out.shape])
    got = _run(packed, [x, w], [int(d) for d in out.shape])
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_a_late_stage_conv_reads_its_larger_weight_once():
    """On a small map (7x7x64) with a larger weight (64 -> 256 channels) the weight is the
    operand read once: the tasks are channel tiles, each keeping its panel in L1 for all
    image rows (MobileNetV2's 7x7 1x1 convs 5-20% faster, the model 1.5%)."""
    x, w = _random(1, 7, 7, 64), _random(1, 1, 64, 256)
    X = te.placeholder(x.shape, name="X")
    W = te.placeholder(w.shape, name="W")
    out = topi.nn.conv(X, W, 1, 0, 1, 1, "NHWC", "HWIO")
    plain = _func([X, W], out).with_attr("layout_free_buffers", [1])
    two_cores = tvm.target.Target({**TARGET.export(), "num-cores": 2})
    sch = cpu.TiledReduction().apply(plain, two_cores, False)
    assert "T.parallel(32)" in sch.mod["main"].script()  # 256 channels / 8 lanes, rows inside
    reference = _run(plain, [x, w], [int(d) for d in out.shape])
    got = _run(sch.mod["main"], [x, w], [int(d) for d in out.shape])
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_max_pool_nhwc():
    x = _random(1, 16, 16, 24)
    X = te.placeholder(x.shape, name="X")
    out = topi.nn.pool2d(X, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), "max", layout="NHWC")
    func = _schedule(cpu.TiledReduction(), _func([X], out))
    expected = _run(_func([X], out), [x], [int(d) for d in out.shape])
    np.testing.assert_allclose(_run(func, [x], [int(d) for d in out.shape]), expected)


def test_elementwise_chain_is_fused_and_vectorised():
    x, y = _random(8, 64), _random(64)
    X = te.placeholder(x.shape, name="X")
    Y = te.placeholder(y.shape, name="Y")
    out = topi.sigmoid(topi.multiply(topi.add(X, Y), 2.0))
    func = _schedule(cpu.Injective(), _func([X, Y], out))
    assert func.script().count("T.writes(") == 1  # one block: everything inlined
    assert {"parallel", "vectorized"} <= _loop_kinds(func)
    expected = 1 / (1 + np.exp(-(x + y) * 2))
    np.testing.assert_allclose(_run(func, [x, y], (8, 64)), expected, rtol=1e-5, atol=1e-6)


def test_rules_decline_what_they_do_not_fit():
    x = _random(4, 32)
    X = te.placeholder(x.shape, name="X")
    softmax = _func([X], topi.nn.softmax(X))  # several reductions
    assert cpu.TiledReduction().apply(softmax, TARGET, False) is None
    assert cpu.Injective().apply(softmax, TARGET, False) is None
    func = _schedule(cpu.ParallelFallback(), softmax)
    assert "T.parallel" in func.script()
    expected = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(_run(func, [x], (4, 32)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["transformer", "mlp"])
def test_every_kernel_of_a_model_gets_a_schedule(model_dir, name):
    """Through the real pipeline: after fusion, no kernel is left unscheduled (unscheduled
    TIR is single-threaded scalar code)."""
    from compiler.build import prepare
    from compiler.frontend import import_model, read_onnx
    from compiler.options import CompileOptions
    from compiler.passes.pipeline import fusion_steps
    from compiler.targets import load_preset, resolve_target

    imported = import_model(read_onnx(model_dir / f"{name}.onnx"))
    mod, _ = prepare(imported, CompileOptions(), resolve_target(load_preset("x86")))
    with TARGET, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential([s.transform for s in fusion_steps(TARGET)])(mod)
        scheduled = default_schedules(TARGET)(fused)
    kernels = {
        gv.name_hint: f for gv, f in scheduled.functions.items() if isinstance(f, tirx.PrimFunc)
    }
    unscheduled = [n for n, f in kernels.items() if not f.attrs.get("tirx.is_scheduled")]
    assert kernels and not unscheduled


def test_symbolic_batch_keeps_the_register_tile():
    """A dynamic batch (--dim N=1..64) leaves the outer loop symbolic; the tile still applies."""
    n = tirx.Var("n", "int64")
    a, b = _random(3, 40, 32), _random(32, 48)
    A = te.placeholder((n, 40, 32), name="A")
    B = te.placeholder(b.shape, name="B")
    k = te.reduce_axis((0, 32), name="k")
    out = te.compute((n, 40, 48), lambda i, j, c: te.sum(A[i, j, k] * B[k, c], axis=k))
    func = _schedule(cpu.TiledReduction(), _func([A, B], out))
    assert 'scope="local"' in func.script()
    lib = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    dev = tvm.cpu()
    got = tvm.runtime.tensor(np.zeros((3, 40, 48), "float32"), dev)
    lib["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), got)
    np.testing.assert_allclose(got.numpy(), a @ b, rtol=1e-4, atol=1e-4)


def test_kernels_with_extern_calls_are_left_to_the_fallback(tmp_path):
    """NonMaxSuppression's kernel mixes loops with opaque sort calls: the fusing rules must not
    inline around them (that once produced 'Buffer T_gather is used before its definition')."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compiler.api import compile_model, load_bundle
    from compiler.options import CompileOptions
    from compiler.reference import run_reference

    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "k", "iou", "min"], ["sel"])
    consts = {"k": np.array([2], np.int64), "iou": np.float32([0.5]), "min": np.float32([0])}
    graph = helper.make_graph(
        [node],
        "nms",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 5, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 5]),
        ],
        [helper.make_tensor_value_info("sel", TensorProto.INT64, [None, 3])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    path = tmp_path / "nms.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    boxes = np.float32(
        [[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 5, 1, 6], [0, 5.1, 1, 6], [3, 3, 4, 4]]]
    )
    scores = np.float32([[[0.9, 0.8, 0.7, 0.95, 0.2]]])
    bundle = compile_model(path, tmp_path / "b", CompileOptions()).bundle
    got = load_bundle(bundle)(boxes=boxes, scores=scores)["sel"]
    expected = run_reference(path, {"boxes": boxes, "scores": scores})["sel"]
    np.testing.assert_array_equal(got, expected)


def _allocations(func: tirx.PrimFunc) -> dict[str, list[int]]:
    """Intermediate buffers and their shapes once TVM's lowering has placed and compacted them."""
    from tvm.s_tir import transform as st

    mod = tvm.IRModule({"main": func})
    for step in (
        st.PlanAndUpdateBufferAllocationLocation(),
        st.ConvertBlocksToOpaque(),
        st.CompactBufferAllocation(),
    ):
        mod = step(mod)
    found = {}  # (TVM 0.27 has no TIR visitor in Python: read the script)
    for name, shape in re.findall(
        r"(\w+) = T\.(?:sblock_)?alloc_buffer\(\(([^)]*)\)", mod.script()
    ):
        found[name] = [int(d) for d in shape.split(",") if d.strip()]
    return found


@pytest.mark.parametrize("tiles", ["F2", "F4"])
def test_winograd_transforms_unroll_the_tile_and_vectorise_channels(tiles):
    from compiler.passes import winograd

    t = getattr(winograd, tiles)
    m_, a = t.m, t.alpha
    size = 3 * m_  # 3x3 tiles; the input transform pads its 9 tiles to 12 GEMM rows
    x, m = _random(1, size, size, 16), _random(a * a, 12, 16)
    X = te.placeholder(x.shape, name="X")
    M = te.placeholder(m.shape, name="M")
    inputs = _schedule(
        cpu.WinogradTransform(), _func([X], winograd._input_transform(X, 3, 3, t, multiple=6))
    )
    out = topi.nn.relu(winograd._output_transform(M, (1, size, size, 16), 3, 3, t))
    outputs = _schedule(cpu.WinogradTransform(), _func([M], out))
    lanes = cpu.vector_lanes(TARGET)
    first = winograd.FIRST_PASS
    for func, half, shape in (
        (inputs, first[winograd.INPUT], [a, a]),
        (outputs, first[winograd.OUTPUT], [m_, a]),
    ):
        assert {"parallel", "vectorized", "unroll"} <= _loop_kinds(func)
        # each transform's first pass is computed for one tile and one vector of channels
        assert _allocations(func) == {half: [*shape, 1, lanes]}
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    tiles_ = np.stack(
        [padded[0, m_ * r : m_ * r + a, m_ * c : m_ * c + a] for r in range(3) for c in range(3)]
    )  # [9, a, a, C]
    v = np.einsum("ai,pijc,bj->abpc", t.bt, tiles_, t.bt).reshape(a * a, 9, 16)
    got = _run(inputs, [x], (a * a, 12, 16))
    np.testing.assert_allclose(got[:, :9], v, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got[:, 9:], np.repeat(got[:, 8:9], 3, axis=1))  # padding rows
    y = np.einsum("ia,abpk,jb->pijk", t.at, m[:, :9].reshape(a, a, 9, 16), t.at)  # [9, m, m, K]
    y = y.reshape(3, 3, m_, m_, 16).transpose(0, 2, 1, 3, 4).reshape(1, size, size, 16)
    got = _run(outputs, [m], (1, size, size, 16))
    np.testing.assert_allclose(got, np.maximum(y, 0), rtol=1e-4, atol=1e-4)
    assert cpu.WinogradTransform().apply(_func([X], topi.nn.relu(X)), TARGET, False) is None


def test_gemv_rule_declines_what_its_analysis_cannot_read(tmp_path):
    """dlight's GEMV asserts on a reduction that reads a broadcast of its own result (log-sum-
    exp's max); the default rules must decline it and schedule it otherwise."""
    import onnx
    from onnx import TensorProto, helper

    from compiler.api import compile_model, load_bundle
    from compiler.options import CompileOptions

    node = helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[-1], keepdims=1)
    graph = helper.make_graph(
        [node],
        "lse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1])],
    )
    model = tmp_path / "lse.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    compile_model(model, tmp_path / "b", CompileOptions(target="x86"))
    x = _random(4, 6)
    expected = np.log(np.exp(x).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(load_bundle(tmp_path / "b")(x=x)["y"], expected, rtol=1e-5)


def test_length_1_reduction_with_an_epilogue_adds_it_once():
    """A matmul over K=1 looks elementwise to dlight; the epilogue must not be inlined into it."""
    a, b, s = _random(8, 1), _random(1, 8), _random(8, 8)
    A = te.placeholder(a.shape, name="A")
    B = te.placeholder(b.shape, name="B")
    S = te.placeholder(s.shape, name="S")
    func = _func([A, B, S], topi.add(S, topi.matmul(A, B)))
    for rule in default_schedules(TARGET).rules:
        sch = rule.apply(func, TARGET, False)
        if sch is not None:
            sch = sch[0] if isinstance(sch, list) else sch
            break
    got = _run(sch.mod["main"], [a, b, s], (8, 8))
    np.testing.assert_allclose(got, s + a @ b, rtol=1e-5, atol=1e-5)


def test_a_scalar_computed_in_the_kernel_is_inlined_and_the_matmul_tiled():
    """quantize_dynamic's matmul: int32 products, then a cast and a scale that the kernel
    computes once (activation scale x weight scale, a block with no loops). That block made
    the rule refuse the kernel, which then ran unvectorised (BERT at 0.01x of onnxruntime)."""
    a = rng.integers(-50, 50, (32, 64)).astype("int32")
    b = rng.integers(-50, 50, (64, 48)).astype("int32")
    A = te.placeholder(a.shape, "int32", name="A")
    B = te.placeholder(b.shape, "int32", name="B")
    S = te.placeholder((), name="S")
    acc = topi.matmul(A, B)
    scale = te.compute((), lambda: S() * tvm.tirx.const(0.5, "float32"), name="scale")
    out = te.compute(acc.shape, lambda i, j: acc[i, j].astype("float32") * scale(), name="out")
    func = _schedule(cpu.TiledReduction(), _func([A, B, S], out))
    assert {"parallel", "vectorized"} <= _loop_kinds(func)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=TARGET)
    dev = tvm.cpu()
    result = tvm.runtime.tensor(np.zeros((32, 48), "float32"), dev)
    args = [tvm.runtime.tensor(x, dev) for x in (a, b, np.array(3.0, "float32"))]
    lib["main"](*args, result)
    np.testing.assert_allclose(result.numpy(), (a @ b) * 1.5, rtol=1e-6)
