"""Build stage: graph passes, lowering with schedules, and TVM code generation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BuildError, ModelError
from .frontend import _OUR_BUGS, ImportedModel, _first_line, symbolic_dims_hint
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


def lowering_pipeline(target) -> Any:
    """Relax → VM code: legalize and fuse, apply schedules, then TVM's lowering and finalisation.

    Composed here instead of using TVM's default pipeline so that schedules (tuning records
    first, default rules second) sit between fusion and lowering.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda

    from .schedules import default_schedules

    # TVM's CUDA legalize_passes apply dlight themselves (before any tuning record could win);
    # only its dispatch, dataflow-lowering and finalize phases are used, around our own.
    backend = cuda if target.kind.name == "cuda" else cpu

    legalize = [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]

    @tvm.transform.module_pass(opt_level=0, name="mlc.lowering")
    def _lower(mod, _ctx):
        with target:
            return tvm.transform.Sequential(
                backend.library_dispatch_passes(target)
                + legalize
                + [default_schedules(target)]
                + backend.dataflow_lower_passes(target)
                + backend.finalize_passes(target)
            )(mod)

    return _lower


def build(imported: ImportedModel, target: ResolvedTarget, options: CompileOptions) -> BuiltModel:
    """Run the graph passes and compile `imported` for `target`."""
    import tvm
    from tvm.relax.frontend import detach_params

    from .passes import graph_passes

    tvm_target = tvm.target.Target(target.target)
    try:
        with tvm.transform.PassContext(opt_level=3):
            mod = graph_passes(options)(imported.mod)
        mod, params = detach_params(mod)
        main = mod["main"]
        num_input = len(imported.inputs)
        weight_vars = list(main.params)[num_input:]
        values = params.get("main", [])
        weights = tuple(
            Weight(str(var.name), np.from_dlpack(value))  # zero-copy view of TVM's tensor
            for var, value in zip(weight_vars, values)
        )
        with tvm.transform.PassContext(opt_level=3), _device_compiler(target) as device_code:
            executable = tvm.compile(
                mod, target=tvm_target, relax_pipeline=lowering_pipeline(tvm_target)
            )
    except (ModelError, BuildError, *_OUR_BUGS):
        raise
    except Exception as exc:  # TVM raises TVMError, ValueError, InternalError, ...
        _raise_build_error(exc, imported)
    return BuiltModel(executable, weights, target, device_code)


def _device_compiler(target: ResolvedTarget):
    """CUDA targets: nvcc builds one fatbin for all of the target's architectures."""
    if not target.gpu_arches:
        return contextlib.nullcontext()
    from .cuda import fatbin_compiler

    return fatbin_compiler(target.gpu_arches, target.gpu_ptx)


def _raise_build_error(exc: Exception, imported: ImportedModel):
    message = _first_line(exc)
    dynamic: dict[str, list[str]] = {}
    for info in imported.inputs:
        for axis, dim in enumerate(info.shape):
            if isinstance(dim, str):
                dynamic.setdefault(dim, []).append(f"{info.name}[{axis}]")
    if dynamic:
        where = ", ".join(f"{d} ({', '.join(at)})" for d, at in dynamic.items())
        raise ModelError(
            f"the model cannot be compiled with symbolic dims {where}: {message}",
            hint=symbolic_dims_hint({k: tuple(v) for k, v in dynamic.items()}),
        ) from exc
    raise BuildError(
        f"TVM failed to compile the model: {message}",
        hint="rerun with MLC_DEBUG=1 for TVM's full error",
    ) from exc
