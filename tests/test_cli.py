"""The command line: --help everywhere, exit codes, and the main error messages word for word."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import mlc, mlc_subprocess
from onnx import TensorProto
from onnx import helper as h

COMMANDS = ["compile", "inspect", "run", "bench", "targets", "tune", "package"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_runs(command):
    result = mlc(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.stdout


def _model(path, nodes, opset=17, extra_opsets=(), ir_version=8):
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    opsets = [h.make_opsetid("", opset), *(h.make_opsetid(d, 1) for d in extra_opsets)]
    model = h.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    onnx.save(model, path)
    return path


@pytest.fixture
def unsupported_model(tmp_path):
    return _model(
        tmp_path / "unsup.onnx",
        [
            h.make_node("Relu", ["x"], ["a"], name="r1"),
            h.make_node("FancyOp", ["a"], ["b"], name="fancy1", domain="com.acme"),
            h.make_node("Foo", ["b"], ["c"], name="foo1"),
            h.make_node("FancyOp", ["c"], ["y"], name="fancy2", domain="com.acme"),
        ],
        extra_opsets=["com.acme"],
    )


def _error(result) -> list[str]:
    return result.stderr.strip().splitlines()


def test_missing_model(tmp_path):
    r = mlc("compile", tmp_path / "missing.onnx", "-o", tmp_path / "out")
    assert r.exit_code == 3
    assert _error(r) == [f"error: model file '{tmp_path / 'missing.onnx'}' does not exist"]


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello, I am not a protobuf\n")
    r = mlc("compile", bad, "-o", tmp_path / "out")
    assert r.exit_code == 3
    assert _error(r)[0].startswith(f"error: '{bad}' is not a valid ONNX model (protobuf parse")
    assert not (tmp_path / "out").exists()


def test_truncated_model(tmp_path, model_dir):
    data = (model_dir / "convnet.onnx").read_bytes()
    for cut in (len(data) // 2, len(data) - 7):
        trunc = tmp_path / f"trunc{cut}.onnx"
        trunc.write_bytes(data[:cut])
        r = mlc("compile", trunc, "-o", tmp_path / "out")
        assert r.exit_code == 3, r.stderr
        assert "is not a valid ONNX model" in _error(r)[0]
        assert "Traceback" not in r.stderr


def test_importer_failure_names_the_node_kind_and_both_shapes(tmp_path):
    """TVM's importer prints the operator it failed on to stdout and puts a constant in its
    message as a two-line metadata reference: the error is one line on stderr, naming the
    operator and the shapes, with nothing on stdout."""
    weight = onnx.numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    path = tmp_path / "mismatch.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    r = mlc_subprocess("compile", path, "-o", tmp_path / "out")
    assert r.returncode == 3
    assert r.stdout == ""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: the ONNX importer failed on a MatMul node: ")
    assert "R.shape([1, 4])" in errors[0] and "a constant has shape R.shape([8, 4])" in errors[0]
    assert not (tmp_path / "out").exists()


def test_unsupported_ops_are_all_listed(tmp_path, unsupported_model):
    r = mlc("compile", unsupported_model, "-o", tmp_path / "out")
    assert r.exit_code == 3
    assert _error(r) == [
        "error: 3 node(s) use operators mlc cannot convert (FancyOp, Foo): "
        "FancyOp (node 'fancy1', domain 'com.acme'); Foo (node 'foo1'); "
        "FancyOp (node 'fancy2', domain 'com.acme')",
        "hint: `mlc inspect MODEL` lists them; replace them or export with a different opset",
    ]


def test_inspect_lists_unsupported_nodes(unsupported_model):
    r = mlc("inspect", unsupported_model, "--json")
    assert r.exit_code == 0
    report = json.loads(r.stdout)
    assert report["unsupported"] == [
        {"op_type": "FancyOp", "name": "fancy1", "domain": "com.acme"},
        {"op_type": "Foo", "name": "foo1", "domain": ""},
        {"op_type": "FancyOp", "name": "fancy2", "domain": "com.acme"},
    ]
    assert report["op_histogram"] == {"FancyOp": 2, "Relu": 1, "Foo": 1}
    assert report["opsets"] == {"ai.onnx": 17, "com.acme": 1}


def test_inspect_reports_dynamic_dims(model_dir):
    r = mlc("inspect", model_dir / "convnet.onnx")
    assert r.exit_code == 0
    assert "dynamic   N: x[0]" in r.stdout
    assert "input     x float32[N, 3, 16, 16]" in r.stdout
    assert "unsupported: none" in r.stdout


def test_old_opset(tmp_path):
    old = _model(tmp_path / "old.onnx", [h.make_node("Relu", ["x"], ["y"])], opset=5, ir_version=3)
    r = mlc("compile", old, "-o", tmp_path / "out")
    assert r.exit_code == 3
    latest = onnx.defs.onnx_opset_version()
    assert _error(r) == [
        f"error: ONNX opset 5 is not supported: mlc compiles ai.onnx opsets 7 to {latest}",
        "hint: upgrade the model with onnx.version_converter.convert_version(model, 17)",
    ]


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--input-shape", "x:1x3"], "error: --input-shape x:1x3 has 2 dims, but input 'x' has 4"),
        (
            ["--input-shape", "y:1x3x16x16"],
            "error: --input-shape names input 'y', which the model does not have; its inputs are: x",
        ),
        (
            ["--input-shape", "x:1x4x16x16"],
            "error: --input-shape gives 4 for axis 1 of input 'x', which the model fixes at 3",
        ),
        (
            ["--dim", "B=2"],
            "error: --dim names 'B', which is not a dimension of any input; "
            "the model's named dims are: N",
        ),
        (  # the two flags contradict each other: N was silently 2
            ["--dim", "N=4", "--input-shape", "x:2x3x16x16"],
            "error: --input-shape x:2x3x16x16 gives 2 for axis 0 of input 'x', the dim 'N', "
            "which --dim N=4 sets to 4",
        ),
    ],
)
def test_bad_shape_options(tmp_path, model_dir, flag, message):
    r = mlc("compile", model_dir / "convnet.onnx", "-o", tmp_path / "out", *flag)
    assert r.exit_code == 2
    assert _error(r) == [message]
    assert not (tmp_path / "out").exists()


def _two_inputs_sharing_n():
    from onnx_cases import make_model, vi

    add = h.make_node("Add", ["a", "b"], ["y"])
    return make_model([add], [vi("a", ["N", 4]), vi("b", ["N", 4])], [vi("y", ["N", 4])])


def _shapes(model) -> dict[str, list]:
    return {
        v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
        for v in model.graph.input
    }


def test_input_shape_fixes_a_named_dim_for_every_input():
    """--input-shape a:2x4 makes N 2: input b, which shares N, gets 2 too (it stayed
    symbolic, so the compiled kernels took a and b of different sizes)."""
    from compiler.errors import UsageError
    from compiler.frontend import pin_shapes

    pinned = pin_shapes(_two_inputs_sharing_n(), {"a": (2, 4)}, {})
    assert _shapes(pinned) == {"a": [2, 4], "b": [2, 4]}
    with pytest.raises(UsageError, match="gives 3 for axis 0 of input 'b', the dim 'N', which "
                       "--input-shape a:2x4 sets to 2"):  # fmt: skip
        pin_shapes(_two_inputs_sharing_n(), {"a": (2, 4), "b": (3, 4)}, {})


def test_malformed_input_shape_syntax(tmp_path, model_dir):
    r = mlc("compile", model_dir / "convnet.onnx", "-o", tmp_path / "out", "--input-shape", "x=1x3")
    assert r.exit_code == 2
    assert (
        "Invalid value for '--input-shape': 'x=1x3' is not NAME:DIMS, expected e.g. "
        "input:1x3x224x224 (positive sizes)"
    ) in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tune", "m.onnx", "--db", "d", "--trials", "0"],
            "Invalid value for '--trials': 0 is not in the range x>=1. (see `mlc tune --help`)",
        ),
        (["compile"], "Missing argument 'MODEL'. (see `mlc compile --help`)"),
        (["frobnicate"], "No such command 'frobnicate'. (see `mlc --help`)"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    """click's own errors too: no usage block, one `error:` line, exit code 2."""
    r = mlc(*args)
    assert r.exit_code == 2
    assert _error(r) == [f"error: {message}"]
    assert r.stdout == ""


def test_unknown_target(tmp_path, model_dir):
    r = mlc("compile", model_dir / "convnet.onnx", "-o", tmp_path / "out", "--target", "arm9")
    assert r.exit_code == 2
    assert _error(r)[0].startswith("error: unknown target 'arm9'; expected one of: ")
    assert "x86, " in _error(r)[0] and "x86-avx2" in _error(r)[0]
    assert _error(r)[1] == "hint: `mlc targets` lists the presets"


def test_existing_output_is_refused_then_forced(tmp_path, model_dir):
    out = tmp_path / "out"
    assert mlc("compile", model_dir / "add.onnx", "-o", out, "-q").exit_code == 0
    before = (out / "manifest.json").read_text()
    r = mlc("compile", model_dir / "mlp.onnx", "-o", out)
    assert r.exit_code == 2
    assert _error(r) == [
        f"error: output directory '{out}' already exists",
        "hint: pass --force to replace it, or choose another -o",
    ]
    assert (out / "manifest.json").read_text() == before
    assert mlc("compile", model_dir / "mlp.onnx", "-o", out, "--force", "-q").exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["source_model"]["file"] == "mlp.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging dirs left


def test_force_refuses_a_directory_that_is_not_a_bundle(tmp_path, model_dir):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    r = mlc("compile", model_dir / "add.onnx", "-o", precious, "--force")
    assert r.exit_code == 2
    assert _error(r)[0] == (
        f"error: --force will only replace an mlc bundle, and '{precious}' is not one"
    )
    assert (precious / "thesis.tex").exists()


def test_compile_json_summary(tmp_path, model_dir):
    r = mlc("compile", model_dir / "multi_io.onnx", "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0
    summary = json.loads(r.stdout)
    assert [o["dtype"] for o in summary["outputs"]] == ["float32", "int64", "bool", "int32"]
    assert summary["target"]["name"] == "x86"
    assert set(summary["seconds"]) == {"import", "build", "bundle"}


def test_pinned_shape_is_recorded(tmp_path, model_dir):
    out = tmp_path / "out"
    r = mlc("compile", model_dir / "convnet.onnx", "-o", out, "--dim", "N=2", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["inputs"][0]["shape"] == [2, 3, 16, 16]
    assert json.loads((out / "manifest.json").read_text())["options"]["dims"] == {"N": 2}


def test_run_check_passes_and_writes_outputs(tmp_path, bundles, model_dir):
    out_npz = tmp_path / "out.npz"
    r = mlc("run", bundles("multi_io"), "--check", model_dir / "multi_io.onnx", "--output", out_npz)
    assert r.exit_code == 0, r.stderr
    assert "check passed: all outputs match onnxruntime (rtol 0.0001, atol 0.0001)" in r.stdout
    assert sorted(np.load(out_npz).files) == ["best", "id_sum", "mixed", "positive"]


def test_run_check_fails_with_worst_element(tmp_path, bundles):
    # Same signature, different weights: the check must catch it.
    import sys

    sys.path.insert(0, str(__import__("conftest").ROOT / "examples"))
    import models

    other = models.mlp()
    for init in other.graph.initializer:
        if init.name == "b2":
            init.CopyFrom(onnx.numpy_helper.from_array(np.full(10, 5.0, np.float32), "b2"))
    onnx.save(other, tmp_path / "other.onnx")
    r = mlc("run", bundles("mlp"), "--check", tmp_path / "other.onnx", "--json")
    assert r.exit_code == 5
    report = json.loads(r.stdout)
    assert report["check"]["ok"] is False
    line = _error(r)[0]
    assert line.startswith("error: output 'y' differs from onnxruntime: worst at index [0, ")
    assert "10 of 10 elements out of tolerance" in line


def test_run_with_input_file_and_bad_input_name(tmp_path, bundles):
    np.savez(tmp_path / "in.npz", x=np.ones((1, 64), np.float32))
    assert mlc("run", bundles("mlp"), "--input", tmp_path / "in.npz").exit_code == 0
    np.savez(tmp_path / "bad.npz", z=np.ones((1, 64), np.float32))
    r = mlc("run", bundles("mlp"), "--input", tmp_path / "bad.npz")
    assert r.exit_code == 2
    assert _error(r) == ["error: unknown input 'z'; the model's inputs are: x"]


def test_run_with_an_input_file_that_is_not_numpy(tmp_path, bundles, model_dir):
    """numpy's own message for a file that is neither .npz nor .npy is about pickled data."""
    r = mlc("run", bundles("mlp"), "--input", model_dir / "mlp.onnx")
    assert r.exit_code == 2
    assert _error(r) == [
        f"error: cannot read inputs from '{model_dir / 'mlp.onnx'}': it is not an .npz or .npy "
        "file; expected an .npz with one array per input name (np.savez), or an .npy for a "
        "one-input model"
    ]


def test_run_missing_bundle(tmp_path):
    r = mlc("run", tmp_path / "nope")
    assert r.exit_code == 6
    assert _error(r) == [f"error: bundle directory '{tmp_path / 'nope'}' does not exist"]


def test_bench_compare_json(bundles, model_dir):
    r = mlc(
        "bench", bundles("mlp"), "--compare", model_dir / "mlp.onnx", "--seconds", "0.2", "--json"
    )
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    for engine in ("mlc", "onnxruntime"):
        lat = data[engine]
        assert lat["runs"] >= 10 and lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert data["speedup_vs_onnxruntime"] > 0


def test_targets_json_lists_the_presets():
    r = mlc_subprocess("targets", "--json")
    assert r.returncode == 0
    names = {p["name"] for p in json.loads(r.stdout)}
    assert {"x86", "x86-avx2", "x86-avx512"} <= names


def test_cli_in_a_real_process_prints_no_traceback(tmp_path):
    r = mlc_subprocess("compile", tmp_path / "missing.onnx", "-o", tmp_path / "o")
    assert r.returncode == 3
    assert r.stderr == f"error: model file '{tmp_path / 'missing.onnx'}' does not exist\n"


def test_dims_that_cannot_stay_symbolic(tmp_path, model_dir):
    # Its own process: TVM's importer, stopped midway, warns from C++ when the process exits.
    r = mlc_subprocess("compile", model_dir / "topk.onnx", "-o", tmp_path / "out")
    assert r.returncode == 3
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert lines[0].startswith("error: the model cannot be imported with symbolic dims N (x[0]): ")
    assert lines[1] == "hint: pin them: --dim N=VALUE (or --input-shape NAME:1x3x224x224)"
    assert not (tmp_path / "out").exists()
    # the flag the hint shows works, and the result matches onnxruntime
    assert (
        mlc("compile", model_dir / "topk.onnx", "-o", tmp_path / "out", "--dim", "N=5").exit_code
        == 0
    )
    r = mlc("run", tmp_path / "out", "--check", model_dir / "topk.onnx")
    assert r.exit_code == 0, r.stderr


def test_functions_missing_from_the_bundled_runtime_fail_the_compile(tmp_path):
    """TVM lowers relax.nonzero to `relax.run.nonzero`, a function of its compiler library only
    (mlc's own NonZero converter avoids it): such a bundle is refused, nothing is written."""
    import tvm
    from tvm import relax

    from compiler.build import build
    from compiler.bundle import write_bundle
    from compiler.errors import BuildError
    from compiler.frontend import ImportedModel, TensorInfo
    from compiler.options import CompileOptions
    from compiler.targets import load_preset, resolve_target

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 4), "float32"))
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nonzero(x))
        bb.emit_func_output(out)
    imported = ImportedModel(
        bb.get(), (TensorInfo("x", (3, 4), "float32"),), (TensorInfo("y", (2, "M"), "int64"),), {}
    )
    options = CompileOptions()
    built = build(imported, resolve_target(load_preset("x86")), options)
    with pytest.raises(BuildError) as err:
        write_bundle(built, imported, options, {}, tmp_path / "out")
    assert str(err.value) == (
        "the compiled model calls TVM functions that the bundled runtime libraries do not "
        "provide: relax.run.nonzero"
    )
    assert list(tmp_path.iterdir()) == []
    assert tvm.get_global_func("relax.run.nonzero")  # it does exist in the compiler


def test_check_names_a_shape_or_dtype_difference():
    from compiler.reference import compare

    result = compare(
        {"y": np.zeros((2, 3), np.float32)},
        {"y": np.zeros((2, 4), np.float64)},
        rtol=1e-4,
        atol=1e-4,
    )
    assert not result.ok
    assert result.mismatches[0].reason == ("got float32[2, 3], onnxruntime gives float64[2, 4]")
