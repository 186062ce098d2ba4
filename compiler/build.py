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
    array: np.ndarray


@dataclass(frozen=True)
class BuiltModel:
    """A compiled executable and the weights its `main` takes after the model inputs."""

    executable: Any  # tvm.relax.VMExecutable
    weights: tuple[Weight, ...]
    target: ResolvedTarget
    device_code: Any = None  # cuda.DeviceCode for GPU targets
    tuning: dict | None = None  # {"tuned_kernels": k, "kernels": n} when a database was used


class _TuningCoverage:
    """Counts, right after the database is applied, how many kernels it scheduled."""

    def __init__(self):
        self.kernels = self.tuned = None

    def counter(self):
        import tvm
        from tvm import tirx

        @tvm.transform.module_pass(opt_level=0, name="mlc.TuningCoverage")
        def _count(mod, _ctx):
            funcs = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
            self.kernels = len(funcs)
            self.tuned = sum(bool(f.attrs and f.attrs.get("tirx.is_scheduled")) for f in funcs)
            return mod

        return _count

    def summary(self) -> dict | None:
        if self.kernels is None:
            return None
        return {"tuned_kernels": self.tuned, "kernels": self.kernels}


def _backend(target):
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda

    # TVM's CUDA legalize_passes apply dlight themselves (before any tuning record could win);
    # only its dispatch, dataflow-lowering and finalize phases are used, around our own.
    return cuda if target.kind.name == "cuda" else cpu


def fusion_passes(target) -> list:
    """Relax ops → fused TIR kernels: what tuning tunes and schedules then schedule."""
    from tvm import relax

    return [
        *_backend(target).library_dispatch_passes(target),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def lowering_pipeline(target, schedules: list) -> Any:
    """Relax → VM code: fuse, apply `schedules` (tuning records first, default rules second),
    then TVM's lowering and finalisation. Composed here instead of TVM's default pipeline so
    that the schedules sit between fusion and lowering."""
    import tvm

    backend = _backend(target)

    @tvm.transform.module_pass(opt_level=0, name="mlc.lowering")
    def _lower(mod, _ctx):
        with target:
            return tvm.transform.Sequential(
                fusion_passes(target)
                + schedules
                + backend.dataflow_lower_passes(target)
                + backend.finalize_passes(target)
            )(mod)

    return _lower


def prepare(imported: ImportedModel, options: CompileOptions):
    """Graph passes, then the weights split off: (module, weights) ready for lowering."""
    import tvm
    from tvm.relax.frontend import detach_params

    from .passes import graph_passes

    with tvm.transform.PassContext(opt_level=3):
        mod = graph_passes(options)(imported.mod)
    mod, params = detach_params(mod)
    weight_vars = list(mod["main"].params)[len(imported.inputs) :]
    weights = tuple(
        Weight(str(var.name), np.from_dlpack(value))  # zero-copy view of TVM's tensor
        for var, value in zip(weight_vars, params.get("main", []))
    )
    return mod, weights


def build(imported: ImportedModel, target: ResolvedTarget, options: CompileOptions) -> BuiltModel:
    """Run the graph passes and compile `imported` for `target`."""
    import tvm

    from .schedules import default_schedules

    tvm_target = tvm.target.Target(target.target)
    tuned = _TuningCoverage()
    try:
        mod, weights = prepare(imported, options)
        schedules = []
        database = contextlib.nullcontext()
        if options.db:
            from .schedules.tuning import apply_database

            with tvm_target:  # the pass takes the target from the context it is made in
                apply, database = apply_database(options.db, target)
            schedules += [apply, tuned.counter()]
        schedules.append(default_schedules(tvm_target))
        with (
            tvm.transform.PassContext(opt_level=3),
            database,
            _device_compiler(target) as device_code,
        ):
            executable = tvm.compile(
                mod, target=tvm_target, relax_pipeline=lowering_pipeline(tvm_target, schedules)
            )
    except (MlcError, *_OUR_BUGS):
        raise
    except Exception as exc:  # TVM raises TVMError, ValueError, InternalError, ...
        _raise_build_error(exc, imported)
    return BuiltModel(executable, weights, target, device_code, tuned.summary())


def _device_compiler(target: ResolvedTarget):
    """CUDA targets: nvcc builds one fatbin for all of the target's architectures."""
    if not target.gpu_arches:
        return contextlib.nullcontext()
    from .cuda import fatbin_compiler

    return fatbin_compiler(target.gpu_arches, target.gpu_ptx)


def _raise_build_error(exc: Exception, imported: ImportedModel):
    if imported.dynamic_dims:
        raise symbolic_dims_error("compiled", exc, imported.dynamic_dims) from exc
    raise BuildError(
        f"TVM failed to compile the model: {_first_line(exc)}",
        hint="rerun with MLC_DEBUG=1 for TVM's full error",
    ) from exc
