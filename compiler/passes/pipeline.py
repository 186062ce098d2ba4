"""The pass pipeline: every pass mlc runs, in order, in named phases.

Graph phases (`graph_passes`, run by build.prepare on the imported Relax module):
  simplify   CanonicalizeBindings, FoldConstant, FoldBatchNorm, DecomposeOps, FoldConstant,
             EliminateCommonSubexpr, DeadCodeElimination
  safety     SafeIndexing
  precision  ToMixedPrecision, KeepFP32, ToBFloat16, FoldConstant, DeadCodeElimination
             (with --precision fp16|bf16; KeepFP32 with --keep-fp32)
  layout     DropPaddingTaps (dilated conv taps that read only padding), DecomposeConvTranspose
             (CPU: strided transposed convs as conv + pixel shuffle), Conv1dAsConv2d (CPU),
             ConvertLayout (conv layouts the target's schedules prefer), Winograd (3x3
             convs on CPU), PadMatmulColumns (CPU: weights to whole vectors of columns),
             AmxMatmul (constant-weight matmuls on CPUs with AMX), FastMath (CPU)
  weights    ExtractWeights
Lowering phases (`lowering_passes`, run inside tvm.compile by build.lowering_pipeline):
  fusion     library dispatch, LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps,
             FuseDepthwiseProject (CPU), FuseTIR, PrepackWeights (CPU: marks the kernels' weight
             parameters), SerialTinyModel (CPU: a tiny model's kernels stay on one thread)
  schedules  the tuning database, then the default schedule rules
  prepack    PrepackWeights (CPU: weight layout copies out of the kernels, repacked at compile
             time by the build; passes/prepack_weights.py)
  lowering   TVM's dataflow-lowering and finalisation passes

Each step has the lowest `--opt-level` that runs it (`OPT_LEVELS` says what each level adds),
or is required: needed to produce a correct, loadable bundle, whatever the level.
`--disable-pass NAME` skips every step of that name; naming a required one is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

from ..errors import UsageError
from ..options import PRECISIONS, CompileOptions
from .amx_matmul import AmxMatmul
from .conv1d_as_conv2d import Conv1dAsConv2d
from .convert_layout import ConvertLayout
from .decompose_conv_transpose import DecomposeConvTranspose
from .drop_padding_taps import DropPaddingTaps
from .extract_weights import ExtractWeights
from .fast_math import FastMath
from .fold_batch_norm import FoldBatchNorm
from .fuse_depthwise_project import FuseDepthwiseProject
from .keep_fp32 import KeepFP32
from .pad_matmul_columns import PadMatmulColumns
from .prepack_weights import Lifted, PrepackWeights, mark_weights
from .safe_indexing import SafeIndexing
from .serial_tiny_model import SerialTinyModel
from .to_bfloat16 import ToBFloat16
from .winograd import Winograd

OPT_LEVELS = {
    0: "only what lowering needs: no folding, no fusion (one kernel per operator)",
    1: "+ canonicalisation, constant folding, dead-code elimination",
    2: "+ batch-norm folding into conv, common-subexpression elimination, layout conversion",
    3: "+ operator fusion (the default)",
}


@dataclass(frozen=True)
class Step:
    """One pass in the pipeline."""

    phase: str
    transform: tvm.transform.Pass
    level: int = 0  # the lowest --opt-level that runs it
    required: bool = False

    @property
    def name(self) -> str:
        return str(self.transform.info.name)


def graph_steps(options: CompileOptions, target: tvm.target.Target) -> list[Step]:
    """The graph phases' steps, in order (before selection by opt level and --disable-pass)."""
    t = relax.transform
    simplify = [
        Step("simplify", t.CanonicalizeBindings(), 1),
        Step("simplify", t.FoldConstant(), 1),  # makes reshaped conv biases constants
        Step("simplify", FoldBatchNorm(), 2),
        Step("simplify", t.DecomposeOpsForInference(), required=True),  # batch norm → arithmetic
        # Folds weight-only arithmetic (batch-norm scales, transposes) at compile time.
        Step("simplify", t.FoldConstant(), 1),
        Step("simplify", t.EliminateCommonSubexpr(), 2),
        Step("simplify", t.DeadCodeElimination(), 1),
    ]
    return [
        *simplify,
        Step("safety", SafeIndexing(), required=True),
        # ToMixedPrecision cannot read the call_tir kernels that the layout phase may emit.
        *_precision_steps(options),
        Step("layout", DropPaddingTaps(), 2),
        Step("layout", DecomposeConvTranspose(target), 2),
        Step("layout", Conv1dAsConv2d(target), 2),
        Step("layout", ConvertLayout(target), 2),
        Step("layout", Winograd(target), 2),
        Step("layout", PadMatmulColumns(target), 2),
        Step("layout", AmxMatmul(target), 2),
        Step("layout", FastMath(target), 2),
        Step("weights", ExtractWeights(options.weight_threshold_bytes)),
    ]


def _precision_steps(options: CompileOptions) -> list[Step]:
    if options.precision == "fp32":
        return []
    # fp16 compute with fp32 accumulation; FoldConstant stores the weights in 16 bits.
    steps = [Step("precision", relax.transform.ToMixedPrecision(out_dtype="float32"), 0, True)]
    if options.keep_fp32:
        steps.append(Step("precision", KeepFP32(options.keep_fp32), required=True))
    if options.precision == "bf16":  # TVM's pass knows only fp16: retarget its casts
        steps.append(Step("precision", ToBFloat16(), required=True))
    return [
        *steps,
        Step("precision", relax.transform.FoldConstant(), 1),
        Step("precision", relax.transform.DeadCodeElimination(), 1),  # casts KeepFP32 bypassed
    ]


def _backend(target: tvm.target.Target):
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda

    # TVM's CUDA legalize_passes apply dlight themselves (before any tuning record could win);
    # only its dispatch, dataflow-lowering and finalize phases are used, around our own.
    return cuda if target.kind.name == "cuda" else cpu


def fusion_steps(target: tvm.target.Target) -> list[Step]:
    """Relax ops → fused TIR kernels: what tuning tunes and schedules then schedule."""
    t = relax.transform
    dispatch = _backend(target).library_dispatch_passes(target)
    cpu = target.kind.name == "llvm"
    return [
        *(Step("fusion", p, required=True) for p in dispatch),
        Step("fusion", t.LegalizeOps(), required=True),
        Step("fusion", t.AnnotateTIROpPattern(), 3),
        Step("fusion", t.FoldConstant(), 1),
        Step("fusion", t.FuseOps(), 3),
        *([Step("fusion", FuseDepthwiseProject(), 3)] if cpu else []),
        Step("fusion", t.FuseTIR(), 3),
        *([Step("fusion", mark_weights(), 2)] if cpu else []),
        *([Step("fusion", SerialTinyModel(), 3)] if cpu else []),
    ]


def lowering_steps(
    target: tvm.target.Target, schedules: list, lifted: Lifted | None = None
) -> list[Step]:
    """Fusion, `schedules` (tuning records first, default rules second), the weight prepacking
    (the weight transform goes to `lifted`, for the build to run), then TVM's lowering."""
    backend = _backend(target)
    gpu = target.kind.name == "cuda"  # GPU kernels cannot run unscheduled
    lower = backend.dataflow_lower_passes(target) + backend.finalize_passes(target)
    prepack = [] if gpu else [Step("prepack", PrepackWeights(lifted or Lifted()), 2)]
    return [
        *fusion_steps(target),
        *(Step("schedules", p, required=gpu) for p in schedules),
        *prepack,
        *(Step("lowering", p, required=True) for p in lower),
    ]


def select(steps: list[Step], options: CompileOptions) -> list[tvm.transform.Pass]:
    """The passes that run at `options.opt_level` without `options.disabled_passes`."""
    disabled = set(options.disabled_passes)
    return [
        s.transform
        for s in steps
        if s.required or (s.level <= options.opt_level and s.name not in disabled)
    ]


def graph_passes(options: CompileOptions, target: tvm.target.Target) -> tvm.transform.Pass:
    """The graph phases' selected passes as one Sequential."""
    return tvm.transform.Sequential(
        select(graph_steps(options, target), options), name="mlc.graph_passes"
    )


def all_steps(options: CompileOptions, target: tvm.target.Target) -> list[Step]:
    """Every step of both halves, with the default schedules standing in for `schedules`."""
    from ..schedules import default_schedules

    return graph_steps(options, target) + lowering_steps(target, [default_schedules(target)])


def phases(options: CompileOptions, target: tvm.target.Target) -> list[tuple[str, list[str]]]:
    """(phase, [pass names that run]) in order: the pipeline as `--time-passes` shows it."""
    disabled = set(options.disabled_passes)
    out: list[tuple[str, list[str]]] = []
    for s in all_steps(options, target):
        if not out or out[-1][0] != s.phase:
            out.append((s.phase, []))
        if s.required or (s.level <= options.opt_level and s.name not in disabled):
            out[-1][1].append(s.name)
    return out


def check_options(options: CompileOptions, target: tvm.target.Target) -> None:
    """Refuse an opt level, pass name, precision or keep-fp32 op the pipeline does not know."""
    if options.opt_level not in OPT_LEVELS:
        raise UsageError(f"--opt-level {options.opt_level} is not valid; expected 0, 1, 2 or 3")
    if options.precision not in PRECISIONS:
        raise UsageError(
            f"--precision {options.precision!r} is not valid; expected fp32, fp16 or bf16"
        )
    steps = all_steps(options, target)
    optional = sorted({s.name for s in steps if not s.required})
    required = {s.name: s.phase for s in steps if s.required}
    for name in options.disabled_passes:
        if name in optional:
            continue
        if name in required:
            raise UsageError(
                f"--disable-pass {name}: the {required[name]} pass {name} is required to "
                f"compile; passes that can be disabled: {', '.join(optional)}"
            )
        raise UsageError(
            f"--disable-pass {name!r} is not a pass of the pipeline; passes that can be "
            f"disabled: {', '.join(optional)}"
        )
    _check_keep_fp32(options)


def _check_keep_fp32(options: CompileOptions) -> None:
    if options.keep_fp32 and options.precision == "fp32":
        raise UsageError(
            "--keep-fp32 needs --precision fp16 or bf16: at fp32 every operator is fp32 already"
        )
    for name in options.keep_fp32:
        try:
            tvm.ir.Op.get(f"relax.{name}")
        except (AttributeError, RuntimeError, ValueError):  # TVM: "not registered"
            raise UsageError(
                f"--keep-fp32 {name!r} is not a Relax operator; expected a name such as "
                "matmul, nn.conv2d, nn.softmax, mean"
            ) from None
