"""Build stage: graph passes, lowering with schedules, and TVM code generation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BuildError, MlcError
from .frontend import _OUR_BUGS, ImportedModel, _first_line, symbolic_dims_error
from .options import CompileOptions
from .targets import ResolvedTarget


@dataclass(frozen=True)
class Weight:
    name: str
    array: np.ndarray  # bfloat16 weights (no numpy dtype) are their bits, as uint16
    dtype: str = ""  # the weight's dtype where it differs from array.dtype ("bfloat16")


@dataclass(frozen=True)
class BuiltModel:
    """A compiled executable and the weights its `main` takes after the model inputs."""

    executable: Any  # tvm.relax.VMExecutable
    weights: tuple[Weight, ...]
    target: ResolvedTarget
    device_code: Any = None  # cuda.DeviceCode for GPU targets
    tuning: dict | None = None  # schedules.cost.TuningCoverage.summary() with a database
    pass_times: tuple = ()  # passes.instruments.PassTime per pass, with --time-passes


def fusion_passes(target, options: CompileOptions | None = None) -> list:
    """Relax ops → fused TIR kernels: what tuning tunes and schedules then schedule."""
    from .passes.pipeline import fusion_steps, select

    return select(fusion_steps(target), options or CompileOptions())


def lowering_pipeline(
    target, schedules: list, options: CompileOptions | None = None, lifted=None
) -> Any:
    """Relax → VM code: fuse, apply `schedules` (tuning records first, default rules second),
    take the weight repacking out (into `lifted`: passes/prepack_weights.py), then TVM's
    lowering and finalisation. Composed here instead of TVM's default pipeline so that the
    schedules sit between fusion and lowering (passes/pipeline.py lists the steps)."""
    import tvm

    from .passes.pipeline import lowering_steps, select

    passes = select(lowering_steps(target, schedules, lifted), options or CompileOptions())

    @tvm.transform.module_pass(opt_level=0, name="mlc.lowering")
    def _lower(mod, _ctx):
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _lower


def prepare(
    imported: ImportedModel, options: CompileOptions, target: ResolvedTarget, instruments=()
):
    """Graph passes, then the weights split off: (module, weights) ready for lowering."""
    import tvm
    from tvm.relax.frontend import detach_params

    from .passes import graph_passes

    tvm_target = tvm.target.Target(target.target)
    mod = _bound_dims(imported.mod, options.dim_ranges)
    with tvm.transform.PassContext(opt_level=3, instruments=list(instruments)):
        mod = graph_passes(options, tvm_target)(mod)
    mod, params = detach_params(mod)
    weight_vars = list(mod["main"].params)[len(imported.inputs) :]
    weights = tuple(
        _weight(str(var.name), value) for var, value in zip(weight_vars, params.get("main", []))
    )
    return mod, weights


def _weight(name: str, value) -> Weight:
    """A zero-copy numpy view of TVM's tensor; bfloat16 (`--precision bf16`) as its bits."""
    import tvm_ffi

    if str(value.dtype) != "bfloat16":
        return Weight(name, np.from_dlpack(value))
    view = tvm_ffi.get_global_func("runtime.TVMTensorCreateView")
    bits = view(value, tuple(value.shape), tvm_ffi.dtype("uint16"), 0)
    return Weight(name, np.from_dlpack(bits), "bfloat16")


def _bound_dims(mod, ranges: dict[str, tuple[int, int]]):
    """Declare each ranged dim's maximum: memory planning then sizes buffers for it once."""
    if not ranges:
        return mod
    func = mod["main"].with_attr("tir_var_upper_bound", {k: hi for k, (_lo, hi) in ranges.items()})
    mod = mod.clone() if hasattr(mod, "clone") else type(mod)(dict(mod.functions), attrs=mod.attrs)
    mod["main"] = func
    return mod


def build(
    imported: ImportedModel,
    target: ResolvedTarget,
    options: CompileOptions,
    *,
    log=None,
    judged: bool = True,
) -> BuiltModel:
    """Run the graph passes and compile `imported` for `target`. With `options.db`: its records
    first (`log`, `judged`: see records.apply_database), the default rules for the rest."""
    import tvm

    from .passes.instruments import instruments_for
    from .passes.pipeline import check_options
    from .passes.prepack_weights import Lifted, repack
    from .schedules import default_schedules

    tvm_target = tvm.target.Target(target.target)
    check_options(options, tvm_target)
    tuned = None
    try:
        schedules = []
        database = contextlib.nullcontext()
        if options.db:
            from .schedules.cost import TuningCoverage
            from .schedules.records import apply_database

            with tvm_target:  # the pass takes the target from the context it is made in
                apply, database, info = apply_database(options.db, target, log, judged)
            tuned = TuningCoverage(info, options.db_strict, target.preset.name)
            schedules += tuned.passes(apply)
        schedules.append(default_schedules(tvm_target))
        instruments, timer = instruments_for(options, tvm_target, schedules)
        mod, weights = prepare(imported, options, target, instruments)
        lifted = Lifted()
        with (
            tvm.transform.PassContext(opt_level=3, instruments=instruments),
            database,
            _device_compiler(target) as device_code,
        ):
            pipeline = lowering_pipeline(tvm_target, schedules, options, lifted)
            executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
        if lifted.module is not None:
            weights = repack(lifted, weights)
    except (MlcError, *_OUR_BUGS):
        raise
    except Exception as exc:  # TVM raises TVMError, ValueError, InternalError, ...
        _raise_build_error(exc, imported, options)
    if tuned is not None:
        tuned.check()  # --db-strict
    times = timer.report() if timer else ()
    return BuiltModel(executable, weights, target, device_code, tuned and tuned.summary(), times)


def _device_compiler(target: ResolvedTarget):
    """CUDA targets: nvcc builds one fatbin for all of the target's architectures."""
    if not target.gpu_arches:
        return contextlib.nullcontext()
    from .cuda import fatbin_compiler

    return fatbin_compiler(target.gpu_arches, target.gpu_ptx)


def _raise_build_error(exc: Exception, imported: ImportedModel, options: CompileOptions):
    symbolic = {d: at for d, at in imported.dynamic_dims.items() if d not in options.dim_ranges}
    if imported.dynamic_dims:
        raise symbolic_dims_error("compiled", exc, symbolic or imported.dynamic_dims) from exc
    raise BuildError(
        f"TVM failed to compile the model: {_first_line(exc)}",
        hint="rerun with --dump-ir DIR to see the IR after every pass, and with MLC_DEBUG=1 "
        "for TVM's full error",
    ) from exc
