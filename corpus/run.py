"""Compile every corpus model with mlc as a user would, check it against onnxruntime, time both.

    .venv/bin/python -m corpus.run [--models DIR] [--only a,b] [--modes pinned,symbolic]
                                   [--timeout 900] [--seconds 2] [--out corpus]

Each step is the real `mlc` command in its own process (a crash or a hang is that model's
result, not the run's): `mlc compile` with the model's pins (its sidecar's `--dim` /
`--input-shape` flags), `mlc run --check` against onnxruntime, and `mlc bench --compare`
(onnxruntime timed interleaved in the same process, same threads). With the `symbolic` mode a
model with dynamic axes is also compiled without pins and checked at the pinned sizes.
Writes REPORT.md and results.json into --out (the committed report is corpus/).

Models come from corpus/build.py (build/corpus/models) or any directory of NAME.onnx files
with NAME.json sidecars.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ROOT / "build" / "corpus" / "models"
# Tolerances per model precision: each element |got - expected| <= atol + rtol * |expected|.
# For fp16 and int8 models atol is that fraction of the output's largest magnitude (a
# requantisation that rounds one step the other way moves later layers by a step).
TOLERANCES = {
    "fp32": (1e-3, 1e-4),
    "fp16": (1e-2, 1e-2),
    "int8": (5e-2, 5e-2),
}
SCALED = ("fp16", "int8")
_QUANTIZED_OPS = {
    "QuantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
}
# `mlc compile` exit codes -> the corpus status (README's table).
COMPILE_STATUS = {2: "error", 3: "unsupported", 4: "error", 1: "internal", 7: "error"}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    models = _discover(args.models, args.only)
    if not models:
        print(f"no models in {args.models} (build them: make corpus-models)", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.jsonl"
    done = _resume(partial) if args.resume else {}
    results = dict(done)
    if args.update:  # rerun the selected models into the report in --out, keeping the rest
        earlier = json.loads((out / "results.json").read_text())
        results = {**earlier["models"], **results}
        for meta in models:
            results.pop(meta["name"], None)
    with tempfile.TemporaryDirectory(prefix="mlc-corpus-") as tmp:
        for index, meta in enumerate(models, 1):
            name = meta["name"]
            if name in done:
                continue
            _say(f"[{index}/{len(models)}] {name}")
            result = run_model(meta, Path(tmp), args)
            results[name] = result
            with open(partial, "a") as f:
                f.write(json.dumps({name: result}) + "\n")
            _say(f"    {_one_line(result)}")
    from .report import write

    meta = _meta(args)
    if args.update:
        earlier_meta = json.loads((out / "results.json").read_text())["meta"]
        meta = {
            **earlier_meta,
            "update": {"commit": meta["commit"], "models": [m["name"] for m in models]},
        }
    summary = write(results, out, meta)
    partial.unlink(missing_ok=True)
    _say(f"wrote {out / 'REPORT.md'}: {json.dumps(summary)}")
    return 0


def run_model(meta: dict, tmp: Path, args) -> dict:
    """Every step for one model; each field of the result is JSON."""
    model = Path(meta["path"])
    precision = _precision(model)
    result: dict = {
        "family": meta.get("family", "?"),
        "exporter": meta.get("exporter", "?"),
        "opset": meta.get("opset"),
        "source": meta.get("source", ""),
        "precision": precision,
        "size_mb": round(model.stat().st_size / 1e6, 1),
    }
    pins = list(meta.get("pins", [])) + _binds(meta, tmp)
    run_dims = _run_dims(model, pins)
    shown = [*meta.get("pins", [])]
    for name, spec in meta.get("binds", {}).items():
        shown += ["--bind", f"{name}=<{spec['dtype']} {spec['value']}>"]
    result["flags"] = " ".join(shown)
    if "pinned" in args.modes:
        result.update(_compile_and_check(model, tmp / "pinned", pins, run_dims, precision, args))
    if "symbolic" in args.modes and meta.get("dynamic_axes"):
        sym = _compile_and_check(model, tmp / "symbolic", [], run_dims, precision, args, False)
        result["symbolic"] = {
            k: sym[k] for k in ("status", "reason", "compile_seconds") if k in sym
        }
    return result


def _compile_and_check(model, bundle, pins, run_dims, precision, args, bench=True) -> dict:
    rtol, atol = TOLERANCES[precision]
    compiled = _mlc(
        ["compile", model, "-o", bundle, "--force", "--json", "-q", *pins], args.timeout
    )
    result = {
        "compile_seconds": round(compiled.seconds, 1),
        "peak_rss_mb": compiled.peak_rss_mb,
    }
    if compiled.code != 0:
        result["status"] = _failure(compiled, COMPILE_STATUS)
        result["reason"] = compiled.error
        return result
    result["bundle_mb"] = round(
        sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 1e6, 1
    )
    feed = []
    if precision in SCALED:  # atol relative to the outputs' magnitude, on inputs saved here
        inputs = bundle.parent / f"{bundle.name}-inputs.npz"
        atol = atol * _output_scale(bundle, model, inputs, run_dims)
        feed = ["--input", inputs]
    checked = _mlc(
        [
            "run",
            bundle,
            "--check",
            model,
            "--json",
            "--rtol",
            rtol,
            "--atol",
            atol,
            *run_dims,
            *feed,
        ],
        args.timeout,
    )
    report = _json(checked.stdout)
    if report and "check" in report:
        diffs = report["check"]["max_abs_diff"].values()
        result["max_abs_diff"] = max((d for d in diffs if d is not None), default=0.0)
    if checked.code != 0:
        result["status"] = _failure(checked, {5: "wrong", 2: "error", 1: "internal", 6: "error"})
        result["reason"] = checked.error
        return result
    result["status"] = "pass"
    if bench and args.seconds > 0:
        timed = _mlc(
            ["bench", bundle, "--compare", model, "--json", "--seconds", args.seconds, *run_dims],
            args.timeout,
        )
        data = _json(timed.stdout)
        if timed.code == 0 and data:
            result["mlc_ms"] = data["mlc"]["median_ms"]
            result["ort_ms"] = data["onnxruntime"]["median_ms"]
            result["speed_vs_ort"] = data.get("speedup_vs_onnxruntime")
        else:
            result["bench_error"] = timed.error or f"exit {timed.code}"
    return result


class _Ran:
    def __init__(self, code: int, stdout: str, stderr: str, seconds: float, peak_kb: int):
        self.code, self.stdout, self.stderr, self.seconds = code, stdout, stderr, seconds
        self.peak_rss_mb = round(peak_kb / 1024, 1)

    @property
    def error(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        if self.code == -9 and not lines:
            return "timed out"
        first = next((ln for ln in lines if ln.startswith("error:")), None)
        if first is None and self.code < 0:
            return f"killed by {signal.Signals(-self.code).name}"
        text = first or (lines[-1] if lines else f"exit {self.code}")
        return text.removeprefix("error: ")[:300]


def _mlc(args: list, timeout: float) -> _Ran:
    """One `mlc` command in its own process group; its peak RSS from wait4's rusage."""
    cmd = [sys.executable, "-m", "compiler.cli", *map(str, args)]
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, cwd=ROOT, start_new_session=True, text=True
        )
        deadline = t0 + timeout
        status = rusage = None
        while status is None:
            pid, status_word, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(status_word)
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _pid, _word, rusage = os.wait4(proc.pid, 0)
                status = -9
                err.write("")
                break
            time.sleep(0.05)
        proc.returncode = status
        out.seek(0)
        err.seek(0)
        stderr = err.read()
        if status == -9 and time.monotonic() > deadline:
            stderr = f"error: timed out after {timeout:.0f} s\n" + stderr
        return _Ran(status, out.read(), stderr, time.monotonic() - t0, rusage.ru_maxrss)


def _failure(ran: _Ran, by_code: dict[int, str]) -> str:
    if ran.error.startswith("timed out"):
        return "timeout"
    if ran.code < 0:
        return "crash"
    return by_code.get(ran.code, "error")


def _run_dims(model: Path, pins: list[str]) -> list[str]:
    """`--dim NAME=VALUE` for every symbolic dim of the inputs at the pinned size (what
    `--dim` pins, and what `--input-shape` gives each named or placeholder dim), to run a
    symbolic bundle at the size the pinned one was compiled for."""
    import onnx

    from compiler.frontend import name_placeholder_dims

    proto = onnx.load(str(model), load_external_data=False)
    name_placeholder_dims(proto)
    dims = {}
    shapes = {}
    for flag, value in itertools.pairwise(pins):
        if flag == "--dim":
            name, size = value.split("=", 1)
            dims[name] = size
        elif flag == "--input-shape":
            name, sizes = value.rsplit(":", 1)
            shapes[name] = sizes.split("x")
    for value in proto.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param and value.name in shapes and axis < len(shapes[value.name]):
                dims.setdefault(dim.dim_param, shapes[value.name][axis])
    return [arg for name, size in dims.items() for arg in ("--dim", f"{name}={size}")]


def _binds(meta: dict, tmp: Path) -> list[str]:
    """`--bind NAME=FILE.npy` for the sidecar's `binds` ({name: {"dtype", "value"}}): inputs
    that are configuration (silero-vad's sample rate), frozen as the error's hint says."""
    import numpy as np

    flags = []
    for name, spec in meta.get("binds", {}).items():
        path = tmp / f"{meta['name']}-{name}.npy"
        np.save(path, np.array(spec["value"], dtype=spec["dtype"]))
        flags += ["--bind", f"{name}={path}"]
    return flags


def _precision(model: Path) -> str:
    """int8 for a model with quantized operators, fp16 for one with fp16 weights, else fp32."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    if any(n.op_type in _QUANTIZED_OPS for n in proto.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "fp16"
    return "fp32"


def _output_scale(bundle: Path, model: Path, path: Path, run_dims: list[str]) -> float:
    """Make the random inputs `mlc run` would (from the bundle's manifest), save them to
    `path`, and return the largest magnitude of onnxruntime's outputs on them."""
    from types import SimpleNamespace

    import numpy as np

    from compiler.api import bound_inputs, make_inputs
    from compiler.reference import run_reference

    manifest = json.loads((bundle / "manifest.json").read_text())
    specs = [
        SimpleNamespace(name=e["name"], dtype=np.dtype(e["dtype"]), dims=tuple(e["shape"]))
        for e in manifest["inputs"]
    ]
    dims = dict(arg.split("=", 1) for arg in run_dims if arg != "--dim")
    fake = SimpleNamespace(inputs=specs, manifest=manifest)
    inputs = make_inputs(fake, {k: int(v) for k, v in dims.items()})
    np.savez(path, **inputs)
    outputs = run_reference(model, {**bound_inputs(manifest), **inputs})
    scale = max((float(np.max(np.abs(v))) for v in outputs.values() if v.size), default=1.0)
    return max(scale, 1e-6)


def _discover(folder: Path, only: str | None) -> list[dict]:
    wanted = set(only.split(",")) if only else None
    models = []
    for path in sorted(folder.glob("*.onnx")):
        sidecar = path.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        meta.setdefault("name", path.stem)
        meta["path"] = str(path)
        if wanted is None or meta["name"] in wanted:
            models.append(meta)
    return models


def _resume(partial: Path) -> dict:
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            if line.strip():
                done.update(json.loads(line))
    return done


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _one_line(result: dict) -> str:
    status = result.get("status", "?")
    extra = result.get("reason") or ""
    if status == "pass" and result.get("speed_vs_ort"):
        extra = (
            f"{result['speed_vs_ort']:.2f}x onnxruntime, max |diff| {result['max_abs_diff']:.2g}"
        )
    sym = result.get("symbolic", {}).get("status")
    return f"{status}" + (f" (symbolic: {sym})" if sym else "") + (f": {extra}" if extra else "")


def _meta(args) -> dict:
    import onnxruntime

    return {
        "date": time.strftime("%Y-%m-%d"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "modes": list(args.modes),
        "bench_seconds": args.seconds,
        "tolerances": {k: {"rtol": r, "atol": a} for k, (r, a) in TOLERANCES.items()},
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    p.add_argument("--only", help="comma-separated model names")
    p.add_argument("--modes", type=lambda s: s.split(","), default=["pinned", "symbolic"])
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per mlc command")
    p.add_argument("--seconds", type=float, default=2.0, help="bench time per engine (0: none)")
    p.add_argument("--out", type=Path, default=ROOT / "corpus")
    p.add_argument("--resume", action="store_true", help="keep results.partial.jsonl's models")
    p.add_argument(
        "--update", action="store_true", help="rerun --only's models into --out's results.json"
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
