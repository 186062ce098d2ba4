"""Failure classes found by compiling third-party models as a new user would (issue 22): each
test builds the pattern an exporter writes and fails without its fix."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import mlc, mlc_subprocess
from onnx import TensorProto
from onnx import helper as h
from onnx_cases import check, const, make_model, rand, vi

ROOT = Path(__file__).resolve().parents[1]
TVM_ROOTS = ("tvm", "tvm_ffi")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            return False
    return True


def _tvm_references(tree: ast.AST) -> list[tuple[int, str]]:
    """Every dotted name rooted at an import of tvm or tvm_ffi: `tvm.error.TVMError`,
    `relax.op.nn.conv2d` after `from tvm import relax`, `from tvm.x import Y`."""
    local: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in TVM_ROOTS:
                    local[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
                    found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in TVM_ROOTS:
                for alias in node.names:
                    local[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    found.append((node.lineno, f"{node.module}.{alias.name}"))
    for node in ast.walk(tree):
        chain, inner = [], node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if chain and isinstance(inner, ast.Name) and inner.id in local:
            found.append((node.lineno, ".".join([local[inner.id], *reversed(chain)])))
    return found


def test_every_tvm_name_the_compiler_uses_exists():
    """A name from an older TVM (tvm.error.TVMError, relax.Constant) is an AttributeError only
    on the path that reaches it: the fallback paths no test takes."""
    missing = []
    for path in sorted((ROOT / "compiler").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for line, dotted in _tvm_references(tree):
            if not _resolves(dotted):
                missing.append(f"{path.relative_to(ROOT)}:{line} {dotted}")
    assert missing == []


def test_convert_layout_keeps_the_layout_where_tvm_has_no_rule():
    """relax.op.stack has no layout rule: TVM's ConvertLayout raises (an IndexError), and the
    model must keep its layout instead of ending in an internal error."""
    import tvm
    from tvm import relax

    from compiler.passes.convert_layout import ConvertLayout

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ones((4, 3, 3, 3), "float32"))))
            out = bb.emit_output(bb.emit(relax.op.stack([conv, conv], axis=1)))
        bb.emit_func_output(out)
    mod = bb.get()
    result = ConvertLayout(tvm.target.Target({"kind": "llvm"}))(mod)
    tvm.ir.assert_structural_equal(result, mod)


def _paddle_style(path: Path) -> Path:
    """Paddle2ONNX writes every unknown dim as "?"."""
    w = const("w", rand(8, 3, 3, 3))
    model = make_model(
        [h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [vi("x", ["?", 3, "?", "?"])],
        [vi("y", ["?", 8, "?", "?"])],
        [w],
        opset=11,
    )
    onnx.save(model, path)
    return path


def test_placeholder_dims_are_each_their_own_dim(tmp_path):
    path = _paddle_style(tmp_path / "det.onnx")
    shown = mlc("inspect", path).stdout
    assert "input     x float32[x_dim0, 3, x_dim2, x_dim3]" in shown
    r = mlc("compile", path, "--input-shape", "x:1x3x48x192", "-o", tmp_path / "b", "-q")
    assert r.exit_code == 0, r.stderr
    r = mlc("run", tmp_path / "b", "--check", path)
    assert r.exit_code == 0, r.stderr


def _deep_shape_arithmetic() -> onnx.ModelProto:
    """What Swin's window partition looks like to onnx's shape inference: each Reshape to a
    shape computed from `Shape` hides the next size until that level is folded, deeper than
    folding's rounds; then Pad's pads are computed from a Shape (the importer needs them
    constant: "Dynamic pads are not supported yet")."""
    nodes, prev = [], "x"
    for i in range(12):
        nodes += [
            h.make_node("Relu", [prev], [f"r{i}"]),
            h.make_node("Shape", [prev], [f"s{i}"]),
            h.make_node("Reshape", [f"r{i}", f"s{i}"], [f"y{i}"]),
        ]
        prev = f"y{i}"
    nodes += [
        h.make_node("Shape", [prev], ["shp"]),
        h.make_node("Gather", ["shp", "last"], ["w"], axis=0),
        h.make_node("Mod", ["w", "four"], ["rem"]),
        h.make_node("Sub", ["four", "rem"], ["extra"]),
        h.make_node("Concat", ["zeros", "extra"], ["pads"], axis=0),
        h.make_node("Pad", [prev, "pads"], ["out"]),
    ]
    inits = [
        const("last", np.array([3], np.int64)),
        const("four", np.array([4], np.int64)),
        const("zeros", np.zeros(7, np.int64)),
    ]
    return make_model(nodes, [vi("x", [1, 2, 5, 6])], [vi("out", [1, 2, 5, 8])], inits)


def test_shape_arithmetic_deeper_than_inference_folds(tmp_path):
    check(tmp_path, _deep_shape_arithmetic(), {"x": rand(1, 2, 5, 6)})


def test_shapes_that_depend_on_values_are_not_measured():
    """NonZero's output size depends on the input's values: its Shape must stay a run-time
    value, and a Reshape to a shape read from an input makes everything after it so too."""
    from compiler.onnx_shapes import value_dependent_shapes

    graph = h.make_graph(
        [
            h.make_node("NonZero", ["x"], ["nz"]),
            h.make_node("Shape", ["nz"], ["nz_shape"]),
            h.make_node("Relu", ["x"], ["r"]),
            h.make_node("Shape", ["r"], ["r_shape"]),
            h.make_node("Reshape", ["r", "r_shape"], ["same"]),  # a shape from a shape: fixed
            h.make_node("Reshape", ["r", "target"], ["moved"]),  # a shape from input values
            h.make_node("Relu", ["moved"], ["after"]),
        ],
        "g",
        [vi("x", [2, 3]), vi("target", [2], TensorProto.INT64)],
        [vi("nz_shape", [2], TensorProto.INT64), vi("after", None), vi("same", None)],
    )
    dependent = value_dependent_shapes(graph)
    assert {"nz", "moved", "after"} <= dependent
    assert not {"r", "same", "r_shape"} & dependent


def _conv_transpose_model(kernel=4, stride=2, pads=(1, 1, 1, 1), group=1, dims=2, **extra):
    """A conv, then the decoder's upsampling ConvTranspose (after layout conversion it used to
    fail to build: conv2d_transpose NHWC), then a ReLU."""
    cin, cout = 8, 6
    size = [9, 11][:dims]
    attrs = {"strides": [stride] * dims, "pads": list(pads), "group": group, **extra}
    inits = [
        const("cw", rand(cin, 3, *[3] * dims)),
        const("w", rand(cin, cout // group, *[kernel] * dims)),
        const("b", rand(cout)),
    ]
    nodes = [
        h.make_node("Conv", ["x", "cw"], ["c"], pads=[1] * (2 * dims)),
        h.make_node("Relu", ["c"], ["r"]),
        h.make_node("ConvTranspose", ["r", "w", "b"], ["t"], **attrs),
        h.make_node("Relu", ["t"], ["y"]),
    ]
    out = vi("y", [f"y{i}" for i in range(dims + 2)])
    return make_model(nodes, [vi("x", [1, 3, *size])], [out], inits), {"x": rand(1, 3, *size)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # k4 s2 p1: U-Net, DCGAN
        {"kernel": 2, "pads": (0, 0, 0, 0)},  # k2 s2: FPN-style 2x upsampling
        {"kernel": 3, "output_padding": [1, 1]},
        {"kernel": 7, "stride": 4, "pads": (3, 0, 5, 1)},  # uneven pads, stride 4
        {"group": 2},
        {"kernel": 3, "dilations": [2, 2]},  # not decomposed: stays NCHW for TVM
        {"dims": 1, "pads": (1, 1)},
    ],
    ids=["k4s2p1", "k2s2", "output-padding", "k7s4-uneven", "grouped", "dilated", "1d"],
)
def test_conv_transpose_after_a_conv(tmp_path, kwargs):
    model, inputs = _conv_transpose_model(**kwargs)
    check(tmp_path, model, inputs)


def test_conv_transpose_becomes_a_conv_and_a_pixel_shuffle():
    import tvm
    from tvm import relax

    from compiler.passes.decompose_conv_transpose import DecomposeConvTranspose

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 5, 5), "float32"))
    weight = relax.const(np.ones((8, 6, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            up = relax.op.nn.conv2d_transpose(x, weight, strides=2, padding=1)
            out = bb.emit_output(bb.emit(up))
        bb.emit_func_output(out)
    mod = DecomposeConvTranspose(tvm.target.Target({"kind": "llvm"}))(bb.get())
    calls = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) else None
    )
    ops = [c.op.name for c in calls if isinstance(c.op, tvm.ir.Op)]
    assert "relax.nn.conv2d_transpose" not in ops
    conv = next(c for c in calls if isinstance(c.op, tvm.ir.Op) and c.op.name == "relax.nn.conv2d")
    assert tuple(conv.args[1].ty.shape) == (6 * 2 * 2, 8, 2, 2)  # 4 phases of 2x2 taps
    assert ops[-1] == "relax.strided_slice"
    assert tuple(mod["main"].ret_ty.shape) == (1, 6, 10, 10)


def test_run_with_an_npy_the_loader_refuses_is_a_usage_error(tmp_path, bundles):
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.int32))
    r = mlc("run", bundles("mlp"), "--input", tmp_path / "bad.npy")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: input ")
    assert "internal error" not in r.stderr


def test_quiet_compile_prints_nothing(tmp_path):
    """TVM's C++ code logs 'Fast mode segfaults when there are out-of-bounds indices' for an
    embedding Gather; -q means nothing but errors."""
    table = const("emb", rand(50, 8))
    model = make_model(
        [h.make_node("Gather", ["emb", "ids"], ["y"])],
        [vi("ids", [1, 6], TensorProto.INT64)],
        [vi("y", [1, 6, 8])],
        [table],
    )
    onnx.save(model, tmp_path / "m.onnx")
    r = mlc_subprocess("compile", tmp_path / "m.onnx", "-o", tmp_path / "b", "-q")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = mlc_subprocess("compile", tmp_path / "m.onnx", "-o", tmp_path / "b")  # exists: an error
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "Warning" not in r.stderr


def _saved_by_onnxruntime(tmp_path, model: onnx.ModelProto) -> Path:
    """The model as onnxruntime's extended graph optimiser saves it (FusedConv, FusedGemm,
    FusedMatMul, Gelu in com.microsoft), as some shipped models are."""
    import onnxruntime as ort

    src, dst = tmp_path / "plain.onnx", tmp_path / "optimised.onnx"
    onnx.save(model, src)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return dst


@pytest.mark.parametrize(
    ("build", "contrib"),
    [
        ("convnet", "FusedConv"),
        ("mlp", "FusedGemm"),
        ("transformer_block", "FusedMatMul"),
    ],
)
def test_models_saved_by_onnxruntimes_optimiser(tmp_path, build, contrib):
    import models

    model = models.convnet(batch=2) if build == "convnet" else getattr(models, build)()
    path = _saved_by_onnxruntime(tmp_path, model)
    ops = {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node}
    assert ("com.microsoft", contrib) in ops
    r = mlc("compile", path, "-o", tmp_path / "b", "-q")
    assert r.exit_code == 0, r.stderr
    r = mlc("run", tmp_path / "b", "--check", path)
    assert r.exit_code == 0, r.stderr


def _contrib_model(nodes, inputs, outputs, inits=()):
    graph = h.make_graph(nodes, "contrib", inputs, outputs, initializer=list(inits))
    opsets = [h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]
    return h.make_model(graph, opset_imports=opsets, ir_version=8)


def test_skip_layer_norm_and_quick_gelu(tmp_path):
    """An optimised BERT's SkipLayerNormalization feeds its fourth output (input + skip +
    bias) to the next one; CLIP's QuickGelu."""
    ms = {"domain": "com.microsoft"}
    nodes = [
        h.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "g", "b", "bias"],
            ["n1", "", "", "sum1"],
            epsilon=1e-5,
            **ms,
        ),
        h.make_node("QuickGelu", ["n1"], ["act"], alpha=1.702, **ms),
        h.make_node("SkipLayerNormalization", ["act", "sum1", "g"], ["y"], **ms),
        h.make_node("FusedMatMul", ["y", "w"], ["z"], transB=1, alpha=0.5, **ms),
    ]
    inits = [
        const("g", rand(8)),
        const("b", rand(8)),
        const("bias", rand(8)),
        const("w", rand(5, 8)),
    ]
    model = _contrib_model(
        nodes, [vi("x", [2, 3, 8]), vi("skip", [2, 3, 8])], [vi("z", [2, 3, 5])], inits
    )
    check(tmp_path, model, {"x": rand(2, 3, 8), "skip": rand(2, 3, 8)})


def test_unsupported_contrib_op_says_where_it_comes_from(tmp_path):
    model = _contrib_model(
        [h.make_node("QLinearSoftmax", ["x"], ["y"], name="qs", domain="com.microsoft")],
        [vi("x", [1, 4])],
        [vi("y", [1, 4])],
    )
    onnx.save(model, tmp_path / "m.onnx")
    r = mlc("compile", tmp_path / "m.onnx", "-o", tmp_path / "b")
    assert r.exit_code == 3
    lines = r.stderr.strip().splitlines()
    assert lines[0] == (
        "error: 1 node(s) use operators mlc cannot convert (QLinearSoftmax): QLinearSoftmax "
        "(node 'qs', domain 'com.microsoft')"
    )
    assert lines[1].startswith("hint: com.microsoft operators are onnxruntime's contrib ops")
    assert "QuantFormat.QDQ" in lines[1]


def test_dynamic_quantize_lstm(tmp_path):
    """quantize_dynamic's LSTM (ddddocr ships one): int8 weights stored transposed, a scale
    and zero point per direction; checked against the float LSTM with the same weights."""
    hidden, feat, seq = 6, 5, 4
    w = np.random.default_rng(3).integers(-100, 100, (2, feat, 4 * hidden)).astype(np.int8)
    r = np.random.default_rng(4).integers(-100, 100, (2, hidden, 4 * hidden)).astype(np.int8)
    scales = {"ws": np.array([0.01, 0.02], np.float32), "rs": np.array([0.015, 0.005], np.float32)}
    zeros = {"wz": np.array([3, -2], np.int8), "rz": np.array([0, 1], np.int8)}
    inits = [const("w", w), const("r", r), *(const(k, v) for k, v in {**scales, **zeros}.items())]
    node = h.make_node(
        "DynamicQuantizeLSTM",
        ["x", "w", "r", "", "", "", "", "", "ws", "wz", "rs", "rz"],
        ["y"],
        hidden_size=hidden,
        direction="bidirectional",
        domain="com.microsoft",
    )
    quantized = _contrib_model(
        [node], [vi("x", [seq, 1, feat])], [vi("y", [seq, 2, 1, hidden])], inits
    )
    onnx.save(quantized, tmp_path / "q.onnx")
    wf = (w.astype(np.float32) - zeros["wz"].reshape(2, 1, 1)) * scales["ws"].reshape(2, 1, 1)
    rf = (r.astype(np.float32) - zeros["rz"].reshape(2, 1, 1)) * scales["rs"].reshape(2, 1, 1)
    reference = make_model(
        [
            h.make_node(
                "LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden, direction="bidirectional"
            )
        ],
        [vi("x", [seq, 1, feat])],
        [vi("y", [seq, 2, 1, hidden])],
        [const("w", wf.transpose(0, 2, 1).copy()), const("r", rf.transpose(0, 2, 1).copy())],
    )
    onnx.save(reference, tmp_path / "float.onnx")
    assert mlc("compile", tmp_path / "q.onnx", "-o", tmp_path / "b", "-q").exit_code == 0
    r = mlc("run", tmp_path / "b", "--check", tmp_path / "float.onnx")
    assert r.exit_code == 0, r.stderr
    r = mlc("run", tmp_path / "b", "--check", tmp_path / "q.onnx", "--atol", "0.1")
    assert r.exit_code == 0, r.stderr  # onnxruntime's own, with activations quantized


def test_nms_without_a_box_limit(tmp_path):
    """torchvision exports max_output_boxes_per_class as INT64_MAX; TVM sized NMS's output
    by it in int32 and failed to build."""
    nodes = [h.make_node("NonMaxSuppression", ["boxes", "scores", "limit", "iou"], ["sel"])]
    inits = [
        const("limit", np.array([2**63 - 1], np.int64)),
        const("iou", np.array([0.5], np.float32)),
    ]
    model = make_model(
        nodes,
        [vi("boxes", [1, 6, 4]), vi("scores", [1, 2, 6])],
        [vi("sel", ["n", 3], TensorProto.INT64)],
        inits,
    )
    corners = np.random.default_rng(5).uniform(0, 10, (1, 6, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + 3], axis=2)
    # Scores as detectors give them, probabilities: TVM's NMS marks a suppressed box with a
    # score of -1 and counts only scores above 0 as boxes.
    scores = np.random.default_rng(6).uniform(0.05, 1, (1, 2, 6)).astype(np.float32)
    check(tmp_path, model, {"boxes": boxes, "scores": scores})


def test_a_value_needed_at_compile_time_names_the_input_and_the_bind(tmp_path):
    """silero-vad branches on its sample-rate input: the importer meets a run-time value, and
    the error says which input and how to freeze it."""
    then_graph = h.make_graph(
        [
            h.make_node("Constant", [], ["no_pads"], value=const("v", np.array([0, 0], np.int64))),
            h.make_node("Shape", ["x"], ["shape"]),  # pads computed in the branch
            h.make_node("Concat", ["no_pads", "shape"], ["branch_pads"], axis=0),
            h.make_node("Pad", ["x", "branch_pads"], ["p"]),
        ],
        "then",
        [],
        [vi("p", [2, 8])],
    )
    else_graph = h.make_graph(
        [h.make_node("Identity", ["x"], ["e"])], "else", [], [vi("e", [1, 4])]
    )
    nodes = [
        h.make_node("Equal", ["sr", "rate"], ["is16k"]),
        h.make_node(
            "If",
            ["is16k"],
            ["y"],
            name="rate_check",
            then_branch=then_graph,
            else_branch=else_graph,
        ),
    ]
    inits = [const("rate", np.array(16000, np.int64))]
    model = make_model(
        nodes, [vi("x", [1, 4]), vi("sr", [], TensorProto.INT64)], [vi("y", [1, "w"])], inits
    )
    onnx.save(model, tmp_path / "m.onnx")
    r = mlc("compile", tmp_path / "m.onnx", "-o", tmp_path / "b")
    assert r.exit_code == 3, r.stderr
    assert r.stderr.strip().splitlines()[1] == (
        "hint: If node 'rate_check' branches on the value of input 'sr', known only at run time; "
        "mlc needs it at compile time: freeze it with --bind sr=sr.npy (an .npy of the value you "
        "will run with)"
    )
    # In a real process: the failed import's TVM objects log as they are destroyed
    # ("BlockBuilder destroyed with remaining blocks"), which must not follow the error.
    r = mlc_subprocess("compile", tmp_path / "m.onnx", "-o", tmp_path / "b")
    assert (r.returncode, len(r.stderr.strip().splitlines())) == (3, 2), r.stderr
    np.save(tmp_path / "sr.npy", np.array(16000, np.int64))
    r = mlc(
        "compile", tmp_path / "m.onnx", "-o", tmp_path / "b", "--bind", f"sr={tmp_path / 'sr.npy'}"
    )
    assert r.exit_code == 0, r.stderr
    r = mlc("run", tmp_path / "b", "--check", tmp_path / "m.onnx")  # onnxruntime gets sr too
    assert r.exit_code == 0, r.stderr


def test_input_range_flag(tmp_path, bundles):
    r = mlc("run", bundles("mlp"), "--input-range", "nope=0..3")
    assert r.exit_code == 2
    assert r.stderr.startswith(
        "error: --input-range names input 'nope', which the model does not have"
    )
    r = mlc("run", bundles("mlp"), "--input-range", "x=3..1")
    assert r.exit_code == 2 and "HI 1 is below LO 3" in r.stderr
    r = mlc("run", bundles("mlp"), "--input-range", "x=-1..1", "--json")
    assert r.exit_code == 0, r.stderr


def _while_loop(limit_from_input: bool = False) -> onnx.ModelProto:
    """tf2onnx's while loop (every Keras RNN): a huge trip count, and a condition computed in
    the body from the iteration number and a carried counter, `i < 5 and n + 1 < 4`."""
    body = h.make_graph(
        [
            h.make_node("Less", ["it", "five"], ["c1"]),
            h.make_node("Add", ["n_in", "one"], ["n_out"]),
            h.make_node("Less", ["n_out", "four"], ["c2"]),
            h.make_node("And", ["c1", "c2"], ["cond_out"]),
            h.make_node("Add", ["acc_in", "x"], ["acc_out"]),
            h.make_node("Identity", ["acc_out"], ["step"]),
        ],
        "body",
        [
            vi("it", [], TensorProto.INT64),
            vi("cond_in", [], TensorProto.BOOL),
            vi("n_in", [], TensorProto.INT64),
            vi("acc_in", [3]),
        ],
        [
            vi("cond_out", [], TensorProto.BOOL),
            vi("n_out", [], TensorProto.INT64),
            vi("acc_out", [3]),
            vi("step", [3]),
        ],
        [
            const("five", np.array(5, np.int64)),
            const("one", np.array(1, np.int64)),
            const("four", np.array(4, np.int64)),
        ],
    )
    start = "n0_input" if limit_from_input else "n0"
    node = h.make_node("Loop", ["m", "go", start, "zeros"], ["n", "acc", "steps"], body=body)
    inits = [
        const("m", np.array(2**31 - 1, np.int64)),
        const("go", np.array(True)),
        const("zeros", np.zeros(3, np.float32)),
        const("n0", np.array(0, np.int64)),
    ]
    inputs = [vi("x", [3])] + ([vi("n0_input", [], TensorProto.INT64)] if limit_from_input else [])
    outputs = [vi("n", [], TensorProto.INT64), vi("acc", [3]), vi("steps", ["k", 3])]
    return make_model([node], inputs, outputs, inits)


def test_while_loop_whose_condition_counts(tmp_path):
    got = check(tmp_path, _while_loop(), {"x": rand(3)})
    assert got["steps"].shape == (4, 3)  # n + 1 < 4 stops it after the fourth step


def test_while_loop_whose_condition_reads_an_input(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(_while_loop(limit_from_input=True), path)
    r = mlc("compile", path, "-o", tmp_path / "b")
    assert r.exit_code == 3
    assert "computes its condition in the body from values known only at run time" in r.stderr


def test_matmul_with_an_odd_column_count_is_padded_and_sliced(tmp_path):
    """GPT-2's language-model head has 50257 columns, a whole number of no vector width: its
    kernel fell to the unvectorised fallback (25x slower than onnxruntime). The weight is
    padded at compile time to whole vectors and the product sliced back."""
    import tvm
    from tvm import relax

    from compiler.passes.pad_matmul_columns import PadMatmulColumns

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(rand(16, 101))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = PadMatmulColumns(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))(bb.get())
    calls = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) else None
    )
    matmul = next(c for c in calls if c.op.name == "relax.matmul")
    assert tuple(matmul.args[1].ty.shape) == (16, 128)  # 4 vectors of 8 lanes: 101 -> 128
    assert tuple(mod["main"].ret_ty.shape) == (1, 4, 101)
    model = make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [1, 4, 16])],
        [vi("y", [1, 4, 101])],
        [const("w", rand(16, 101))],
    )
    check(tmp_path, model, {"x": rand(1, 4, 16)})


def test_pow_by_a_small_integer_is_multiplication(tmp_path):
    """tanh-GELU's x ** 3 (GPT-2): a libm call per lane as a power."""
    model = make_model(
        [h.make_node("Pow", ["x", "three"], ["y"]), h.make_node("Pow", ["x", "half"], ["z"])],
        [vi("x", [2, 8])],
        [vi("y", [2, 8]), vi("z", [2, 8])],
        [const("three", np.array(3.0, np.float32)), const("half", np.array(0.5, np.float32))],
    )
    check(tmp_path, model, {"x": np.abs(rand(2, 8)) + 0.1})


def test_an_fp16_model_computes_in_fp32_on_a_cpu_without_fp16_arithmetic(tmp_path):
    """A model exported in float16 keeps its fp16 inputs and outputs; on an x86 CPU without
    AVX512-FP16 its weights and arithmetic become fp32 (as onnxruntime's CPU kernels do)."""
    from compiler.targets import has_fp16_arithmetic, load_preset, resolve_target

    if has_fp16_arithmetic(resolve_target(load_preset("x86"))):
        pytest.skip("this CPU computes fp16 natively (AVX512-FP16)")
    w = (rand(64, 32) * 0.1).astype(np.float16)
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["m"]),
        h.make_node("Cast", ["m"], ["m16"], to=TensorProto.FLOAT16),  # a Cast to fp16 too
        h.make_node("Add", ["m16", "b"], ["y"]),
    ]
    model = make_model(
        nodes,
        [vi("x", [4, 64], TensorProto.FLOAT16)],
        [vi("y", [4, 32], TensorProto.FLOAT16)],
        [const("w", w), const("b", rand(32).astype(np.float16))],
    )
    onnx.save(model, tmp_path / "m.onnx")
    r = mlc("compile", tmp_path / "m.onnx", "-o", tmp_path / "b", "-q")
    assert r.exit_code == 0, r.stderr
    import json

    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [i["dtype"] for i in manifest["inputs"]] == ["float16"]
    assert [o["dtype"] for o in manifest["outputs"]] == ["float16"]
    assert {w["dtype"] for w in manifest["weights"]} == {"float32"}
    r = mlc(
        "run", tmp_path / "b", "--check", tmp_path / "m.onnx", "--atol", "1e-2", "--rtol", "1e-2"
    )
    assert r.exit_code == 0, r.stderr


def test_attention_scores_over_an_odd_token_count(tmp_path):
    """A ViT's 197 tokens: Q @ Kᵀ's columns are activations, padded by a copy."""
    model = make_model(
        [h.make_node("MatMul", ["q", "kt"], ["s"]), h.make_node("Softmax", ["s"], ["p"], axis=-1)],
        [vi("q", [2, 97, 16]), vi("kt", [2, 16, 97])],
        [vi("p", [2, 97, 97])],
    )
    check(tmp_path, model, {"q": rand(2, 97, 16), "kt": rand(2, 16, 97)})


@pytest.mark.parametrize("dilation", [6, 3])
def test_dilated_conv_taps_that_read_only_padding(tmp_path, dilation):
    """DeepLab's atrous convs on small maps: at dilation 6 on a 5x5 map only the centre tap
    reads pixels (it becomes a 1x1 conv); at dilation 3 every tap reads some."""
    from tvm import relax

    from compiler.passes.drop_padding_taps import DropPaddingTaps

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 5, 5), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = relax.op.nn.conv2d(
                x, relax.const(rand(8, 4, 3, 3)), padding=dilation, dilation=dilation
            )
            out = bb.emit_output(bb.emit(conv))
        bb.emit_func_output(out)
    mod = DropPaddingTaps()(bb.get())
    calls = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) else None
    )
    kernel = tuple(calls[0].args[1].ty.shape)
    assert kernel == ((8, 4, 1, 1) if dilation == 6 else (8, 4, 3, 3))
    model = make_model(
        [h.make_node("Conv", ["x", "w"], ["y"], pads=[dilation] * 4, dilations=[dilation] * 2)],
        [vi("x", [1, 4, 5, 5])],
        [vi("y", [1, 8, 5, 5])],
        [const("w", rand(8, 4, 3, 3))],
    )
    check(tmp_path, model, {"x": rand(1, 4, 5, 5)})


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [5], "pads": [0, 0]},  # wav2vec2's feature encoder: kernel 10, stride 5
        {"pads": [4, 3], "dilations": [2], "group": 2},  # a grouped positional conv
    ],
    ids=["strided", "grouped-dilated"],
)
def test_conv1d_runs_as_a_conv2d_of_height_one(tmp_path, attrs):
    """wav2vec2 spent 98% of its time in unvectorised conv1d kernels (0.04x of onnxruntime)."""
    group = attrs.get("group", 1)
    model = make_model(
        [h.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[10], **attrs)],
        [vi("x", [1, 4, 200])],
        [vi("y", ["n", "c", "w"])],
        [const("w", rand(8, 4 // group, 10)), const("b", rand(8))],
    )
    check(tmp_path, model, {"x": rand(1, 4, 200)})
