"""The mlc API: compile, inspect, run and benchmark. The CLI is a thin layer over this module."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import BuildError, BundleError, UsageError
from .options import CompileOptions
from .targets import host_arch

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompileResult:
    bundle: Path
    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    pass_times: tuple = ()  # passes.instruments.PassTime, with options.time_passes

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        extra = {"pass_times": [t.to_json() for t in self.pass_times]} if self.pass_times else {}
        return {
            "bundle": str(self.bundle),
            "target": m["target"],
            "inputs": m["inputs"],
            "outputs": m["outputs"],
            "weights_bytes": sum(w["nbytes"] for w in m["weights"]),
            "files": m["files"],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            **({"tuning": m["tuning"]} if "tuning" in m else {}),
            **extra,
        }


def inspect(model_path: str | Path):
    """Read a model and report what it is and what mlc cannot convert."""
    from .frontend import inspect_model, read_onnx

    return inspect_model(read_onnx(model_path), str(model_path))


def compile_model(
    model_path: str | Path,
    out_dir: str | Path,
    options: CompileOptions,
    force: bool = False,
    progress: Progress | None = None,
) -> CompileResult:
    """Compile an ONNX model into a bundle directory."""
    from .bundle import check_destination
    from .targets import load_preset

    say = progress or (lambda _msg: None)
    out_dir = Path(out_dir)
    check_destination(out_dir, force)
    preset = load_preset(options.target)  # a bad target fails before any compile time
    _check_toolchain(preset)
    timer = _Timer()

    from .frontend import (
        check_convertible,
        import_model,
        inspect_model,
        pin_shapes,
        read_onnx,
        validate,
    )
    from .onnx_prepare import bind_inputs
    from .targets import has_fp16_arithmetic, resolve_target

    with timer("import"):
        say(f"reading {model_path}")
        model = read_onnx(model_path)
        check_convertible(inspect_model(model, str(model_path)))
        validate(model, model_path)
        pinned = pin_shapes(model, options.input_shapes, options.dims, options.dim_ranges)
        pinned = bind_inputs(pinned, options.bind)
        say("importing into Relax")
        target = resolve_target(preset)
        imported = import_model(pinned, fp16_in_fp32=not has_fp16_arithmetic(target))
        del model, pinned  # the Relax module holds the weights now; free the protobuf copy

    from .build import build
    from .bundle import write_bundle

    with timer("build"):
        say(f"compiling for {preset.name} ({target.target.get('mcpu', target.target['kind'])})")
        built = build(imported, target, options)
    with timer("bundle"):
        say(f"writing bundle {out_dir}")
        bundle = write_bundle(
            built, imported, options, _provenance(model_path), out_dir, force=force
        )
    return CompileResult(bundle.path, bundle.manifest, timer.seconds, built.pass_times)


@dataclass(frozen=True)
class TuneSummary:
    target: str
    result: Any  # schedules.tuning.TuneResult: per-kernel trials, best times, statuses
    seconds: float
    check_seconds: float = 0.0  # of `seconds`, the in-model check of the new records

    def to_json(self) -> dict[str, Any]:
        data = self.result.to_json()
        kernels = data["kernels"]
        return {
            "target": self.target,
            "tasks": len(kernels),
            "tuned_now": sum(k["status"] in ("tuned", "out of time") for k in kernels),
            **data,
            "seconds": round(self.seconds, 1),
            "check_seconds": round(self.check_seconds, 1),
        }


def tune_model(
    model_path: str | Path,
    options: CompileOptions,
    db: str | Path,
    trials: int | None = None,
    *,
    seconds: float | None = None,
    threads: int | None = None,
    progress: Callable[[Any], None] | None = None,
    model_check: bool = True,
) -> TuneSummary:
    """Tune the model's kernels for `options.target` into the database directory `db`: at most
    `trials` measurements and/or `seconds` (default 64 trials), measured with `threads`
    (default TVM_NUM_THREADS, else the physical cores). `progress` receives
    schedules.tuning.TuneEvent objects. Kernels the database already has enough trials for are
    not tuned again. With `model_check`, new records are then timed inside the model against
    the default schedules, and compiles use only those that win there (schedules/validate.py)."""
    from .build import prepare
    from .frontend import check_convertible, import_model, inspect_model, pin_shapes, read_onnx
    from .onnx_prepare import bind_inputs
    from .schedules.tuning import TuneSettings, tune
    from .targets import has_fp16_arithmetic, load_preset, resolve_target

    settings = TuneSettings(str(db), trials, seconds, threads, model_check)
    preset = load_preset(options.target)
    t0 = time.perf_counter()
    model = read_onnx(model_path)
    check_convertible(inspect_model(model, str(model_path)))
    pinned = pin_shapes(model, options.input_shapes, options.dims, options.dim_ranges)
    target = resolve_target(preset)
    fp16_in_fp32 = not has_fp16_arithmetic(target)
    imported = import_model(bind_inputs(pinned, options.bind), fp16_in_fp32)
    del model, pinned
    _check_fixed_sizes(imported, model_path)
    mod, _weights = prepare(imported, options, target)
    result = tune(mod, target, options, settings, progress)
    del mod
    t_check = time.perf_counter()
    if settings.model_check and result.records and target.device == "cpu":
        result = _check_in_model(imported, target, options, result, progress)
    done = time.perf_counter()
    return TuneSummary(preset.name, result, done - t0, done - t_check)


def _check_fixed_sizes(imported, model_path) -> None:
    """MetaSchedule measures kernels at fixed sizes: symbolic dims must be pinned to tune."""
    if imported.dynamic_dims:
        dims = ", ".join(f"{d} ({', '.join(at)})" for d, at in imported.dynamic_dims.items())
        first = next(iter(imported.dynamic_dims))
        raise UsageError(
            f"{str(model_path)!r} has symbolic dims {dims}; tuning measures kernels at fixed sizes",
            hint=f"pin each to the size you will run, e.g. --dim {first}=1, and compile with the "
            "same --dim so that the records apply",
        )


def _check_in_model(imported, target, options, result, progress):
    """The in-model check of the records (schedules/validate.py), its messages as progress."""
    import dataclasses

    from .schedules.records import database_key
    from .schedules.tuning_plan import TuneEvent
    from .schedules.validate import validate
    from .tuning_db import open_log

    def note(message: str) -> None:
        if progress:
            progress(TuneEvent("note", 0, 0, None, None, message))

    log = open_log(result.db.parent, database_key(target, result.threads))
    checked = validate(
        imported, target, options, log, result.kernel_workloads, result.threads, note
    )
    return dataclasses.replace(result, validation=checked)


def _check_toolchain(preset) -> None:
    if preset.target.get("kind") == "cuda":
        from .cuda import require_nvcc

        require_nvcc()
    compiler = preset.cross_compiler
    if compiler and shutil.which(compiler) is None:
        raise BuildError(
            f"target {preset.name!r} needs the cross compiler {compiler!r}, which is not installed",
            hint=preset.cross_install_hint or f"install {compiler}",
        )


def _provenance(model_path: str | Path) -> dict[str, Any]:
    import onnx
    import tvm
    import tvm_ffi

    with open(model_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {
        "mlc_version": __version__,
        "tvm_version": tvm.__version__,
        "tvm_ffi_version": tvm_ffi.__version__,
        "onnx_version": onnx.__version__,
        "source_model": {"file": Path(model_path).name, "sha256": digest},
    }


def load_bundle(bundle_dir: str | Path, threads: int | None = None):
    """Load a bundle with the loader it ships, exactly as a deploy host would."""
    bundle_dir = Path(bundle_dir)
    loader_path = bundle_dir / "loader.py"
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle directory {str(bundle_dir)!r} does not exist")
    if not loader_path.is_file():
        raise BundleError(f"{str(bundle_dir)!r} is not an mlc bundle: it has no loader.py")
    name = f"_mlc_bundle_loader_{abs(hash(loader_path.resolve()))}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, loader_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    try:
        manifest = module.read_manifest(bundle_dir)
        arch = manifest["target"]["requires"]["arch"]
        if arch != host_arch():  # a cross-compiled bundle: run it under emulation
            from .emulation import EmulatedModel

            module.verify_files(bundle_dir, manifest)
            return EmulatedModel(bundle_dir, manifest, module, threads)
        return module.load(bundle_dir, threads=threads)
    except module.BundleError as exc:
        raise BundleError(str(exc)) from None


def make_inputs(
    model, dims: dict[str, int], seed: int = 0, ranges: dict[str, tuple] | None = None
) -> dict[str, np.ndarray]:
    """Random inputs for a loaded model. `ranges` (`--input-range`) first; else the range the
    compiler read from the graph (the manifest's `sample_range`: token ids within their
    table, masks of ones); else normal floats, integers 0..3, random bools."""
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    unknown = sorted(set(ranges) - {s.name for s in model.inputs})
    if unknown:
        raise UsageError(
            f"--input-range names input {unknown[0]!r}, which the model does not have; its "
            f"inputs are: {', '.join(s.name for s in model.inputs)}"
        )
    sampled = {e["name"]: e.get("sample_range") for e in model.manifest["inputs"]}
    inputs = {}
    for spec in model.inputs:
        shape = tuple(d if isinstance(d, int) else dims.get(d, 1) for d in spec.dims)
        inputs[spec.name] = _random(rng, spec, shape, ranges.get(spec.name), sampled.get(spec.name))
    return inputs


def _random(rng, spec, shape, given: tuple | None, sampled: list | None) -> np.ndarray:
    kind = spec.dtype.kind
    if kind == "f":
        if given:
            return rng.uniform(given[0], given[1], shape).astype(spec.dtype)
        if sampled:  # a float mask: ones
            return np.full(shape, sampled[0], spec.dtype)
        return rng.standard_normal(shape).astype(spec.dtype)
    if kind in "iub":
        if given:
            low, high = int(np.ceil(given[0])), int(np.floor(given[1])) + 1
            if low >= high:
                raise UsageError(
                    f"--input-range {spec.name}={given[0]:g}..{given[1]:g} holds no integer, and "
                    f"input {spec.name!r} is {spec.dtype}"
                )
        else:
            low, high = sampled if sampled else (0, 2 if kind == "b" else 4)
        values = rng.integers(low, high, shape)
        return values.astype(bool) if kind == "b" else values.astype(spec.dtype)
    raise UsageError(f"cannot make random data for input {spec.name!r} of dtype {spec.dtype}")


def bound_inputs(manifest: dict) -> dict[str, np.ndarray]:
    """The inputs `--bind` froze into the bundle, read again from the files the manifest
    names: onnxruntime, running the original model, still needs them."""
    arrays = {}
    for name, path in manifest.get("options", {}).get("bind", {}).items():
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"input {name!r} was bound at compile time to {path!r}, which cannot be read "
                f"now ({exc}); onnxruntime needs its value to check the bundle"
            ) from None
    return arrays


def read_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """Inputs from an .npz file (keys are input names) or, for one input, an .npy file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if not head.startswith((b"PK", b"\x93NUMPY")):  # a zip archive, or numpy's array magic
            raise UsageError(
                f"cannot read inputs from {str(path)!r}: it is not an .npz or .npy file; expected "
                "an .npz with one array per input name (np.savez), or an .npy for a one-input "
                "model"
            )
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read inputs from {str(path)!r}: {exc}") from None


def run_model(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call a loaded model, turning the loader's input errors into usage errors; a sequence
    output's items come back as NAME[0], NAME[1], ..."""
    from .reference import flatten_sequences

    try:
        if "" in inputs:  # a single .npy input: bind it positionally
            return flatten_sequences(model(inputs[""]))
        return flatten_sequences(model(**inputs))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class Latency:
    runs: int
    min_ms: float
    median_ms: float
    p90_ms: float

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(self).items()}


def measure(fn: Callable[[], Any], min_seconds: float = 1.0, min_runs: int = 10) -> Latency:
    """Time `fn` after a warm-up, for at least `min_seconds` and `min_runs` calls."""
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 100_000:
            break
    return _latency(times)


@dataclass(frozen=True)
class BenchResult:
    threads: int
    mlc: Latency
    onnxruntime: Latency | None
    emulated_by: str | None = None  # set when mlc ran under an emulator: not device speed

    @property
    def ratio(self) -> float | None:
        """onnxruntime median / mlc median: above 1.0 means mlc is faster."""
        if not self.onnxruntime or self.emulated_by:
            return None
        return self.onnxruntime.median_ms / self.mlc.median_ms

    def rows(self) -> list[tuple[str, Latency]]:
        return [("mlc", self.mlc)] + (
            [("onnxruntime", self.onnxruntime)] if self.onnxruntime else []
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"threads": self.threads, "mlc": self.mlc.to_json()}
        if self.emulated_by:
            data["mlc"]["emulated_by"] = self.emulated_by
        if self.onnxruntime:
            data["onnxruntime"] = self.onnxruntime.to_json()
        if self.ratio is not None:
            data["speedup_vs_onnxruntime"] = round(self.ratio, 4)
        return data


def bench_bundle(
    bundle_dir: str | Path,
    compare_model: str | Path | None = None,
    threads: int | None = None,
    seconds: float = 2.0,
    dims: dict[str, int] | None = None,
    ranges: dict[str, tuple] | None = None,
) -> BenchResult:
    """Time a bundle and, optionally, onnxruntime on the same inputs with the same threads."""
    from .runtime.loader import physical_cores

    threads = threads or physical_cores()  # the loader's default
    model = load_bundle(bundle_dir, threads=threads)
    inputs = make_inputs(model, dims or {}, ranges=ranges)
    emulated = getattr(model, "emulated", False)
    ort = None
    if emulated:  # time inside the runner: one process start under qemu costs ~0.2 s
        _, stats = model.run(inputs, repeat=max(10, int(seconds * 20)))
        mlc = Latency(stats["runs"], stats["min_ms"], stats["median_ms"], stats["p90_ms"])
    elif compare_model:  # both in alternating blocks: the same machine for both
        from .reference import ort_session
        from .timing import interleaved_times

        session = ort_session(compare_model, threads)
        feed = {**bound_inputs(model.manifest), **inputs}  # onnxruntime still takes them
        times = interleaved_times(
            {"mlc": lambda: model(**inputs), "ort": lambda: session.run(None, feed)},
            2 * seconds,
            block_s=(block := min(1.0, max(0.1, seconds / 2))),
            settle_s=min(0.25, block / 4),
        )
        mlc, ort = _latency(times["mlc"]), _latency(times["ort"])
    else:
        mlc = measure(lambda: model(**inputs), seconds)
    if emulated and compare_model:
        from .reference import ort_session

        session = ort_session(compare_model, threads)
        ort = measure(lambda: session.run(None, inputs), seconds)
    return BenchResult(threads, mlc, ort, model.description if emulated else None)


def _latency(seconds: list[float]) -> Latency:
    ms = sorted(t * 1e3 for t in seconds)
    return Latency(len(ms), ms[0], statistics.median(ms), ms[int(0.9 * (len(ms) - 1))])


class _Timer:
    """Accumulates wall time per named stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0
