"""What each forked child does: run one case through onnxruntime, or through mlc."""

from __future__ import annotations

import shutil
import tempfile
import traceback
from pathlib import Path

import numpy as np

from .cases import Case, bindable_inputs, compare_each, load_data_sets, main_op

PASS, WRONG, UNSUPPORTED, IMPORT_ERROR, CRASH = (
    "pass",
    "wrong",
    "unsupported",
    "import error",
    "crash",
)
CATEGORIES = (PASS, WRONG, UNSUPPORTED, IMPORT_ERROR, CRASH)
# Phrases of mlc's own "this operator/feature is not supported" errors.
_UNSUPPORTED_PHRASES = ("operators mlc cannot convert", "not supported")


def check_onnxruntime(case: Case) -> dict:
    """Does onnxruntime reproduce the case's expected outputs?"""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(case.model_path))
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(case.model_path), opts, providers=["CPUExecutionProvider"]
        )
        for inputs, expected in load_data_sets(case, model):
            got = session.run(None, inputs)
            reason = _compare_all(got, expected)
            if reason:
                return {"status": "fail", "reason": reason}
    except Exception as exc:  # onnxruntime raises its own exception types
        return {"status": "fail", "reason": _one_line(str(exc))}
    return {"status": PASS}


def check_mlc(case: Case) -> dict:
    """Compile the case with mlc, run it with the bundle's loader, compare; categorise."""
    import onnx

    model = onnx.load(str(case.model_path))
    data = load_data_sets(case, model)
    work = Path(tempfile.mkdtemp(prefix="mlc-case-"))
    try:
        result = _compile_and_run(case, data, work / "plain", {})
        if result["status"] != PASS:
            bind = _bind_files(model, data, work)
            if bind:
                bound = _compile_and_run(case, data, work / "bound", bind)
                if bound["status"] == PASS:
                    result = {**bound, "bound": sorted(bind)}
                else:
                    result["bound_reason"] = bound["reason"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["op"] = main_op(case, model)
    return result


def _compile_and_run(case: Case, data, out: Path, bind: dict[str, str]) -> dict:
    from compiler.api import compile_model, load_bundle
    from compiler.errors import MlcError
    from compiler.options import CompileOptions

    stage = "compile"
    try:
        compile_model(case.model_path, out, CompileOptions(target="x86", bind=bind))
        stage = "load"
        model = load_bundle(out, threads=1)
        stage = "run"
        for inputs, expected in data:
            feed = {k: v for k, v in inputs.items() if k not in bind}
            try:
                got = model(**feed)
            except ValueError as exc:  # the loader's InputError: the signature is wrong
                return {"status": WRONG, "reason": f"loader refused the inputs: {_one_line(exc)}"}
            reason = _compare_all(list(got.values()), expected)
            if reason:
                return {"status": WRONG, "reason": reason}
    except MlcError as exc:
        unsupported = any(p in exc.message for p in _UNSUPPORTED_PHRASES)
        return {
            "status": UNSUPPORTED if unsupported and stage == "compile" else IMPORT_ERROR,
            "reason": f"{stage}: {_one_line(exc.message)}",
        }
    except Exception as exc:  # anything else is a bug in mlc or TVM: a crash
        return {
            "status": CRASH,
            "reason": f"{stage}: {type(exc).__name__}: {_one_line(str(exc))}",
            "traceback": traceback.format_exc()[-3000:],
        }
    return {"status": PASS}


def _bind_files(model, data, work: Path) -> dict[str, str]:
    """.npy files for the shape/axes inputs, when every data set gives them the same value."""
    files = {}
    for name in bindable_inputs(model):
        values = [inputs[name] for inputs, _ in data if name in inputs]
        if not values or any(not np.array_equal(values[0], v) for v in values[1:]):
            continue
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"bind-{len(files)}.npy"
        np.save(path, values[0])
        files[name] = str(path)
    return files


def _compare_all(got: list, expected: list) -> str | None:
    return compare_each(got, expected, "{} outputs", "output")


def _one_line(text) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    for line in reversed(lines):  # TVM puts the useful sentence last, after C++ frames
        if not line.startswith(("File ", "at ", "#")) and "Traceback" not in line:
            return line[:300]
    return (lines[-1] if lines else "")[:300]
