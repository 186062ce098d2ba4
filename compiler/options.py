"""Compile options: everything a compile depends on travels in this one object."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class CompileOptions:
    """What `mlc compile` was asked to do; recorded in the bundle's manifest."""

    target: str = "x86"
    # input name -> full shape; each entry is an int (fixed) or a str (symbolic).
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # symbolic dim name -> value, as onnxruntime's free-dimension overrides.
    dims: dict[str, int] = field(default_factory=dict)
    # initializers at least this large are written to weights.bin instead of model.so.
    weight_threshold_bytes: int = 1024
    # symbolic dim name -> (min, max): the dim stays symbolic; the loader enforces the range.
    dim_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    # "fp32", "fp16" or "bf16": matmul/conv in 16 bits with fp32 accumulation; I/O stays fp32.
    precision: str = "fp32"
    # Relax operator names (e.g. "matmul", "nn.conv2d") kept in fp32 under fp16/bf16.
    keep_fp32: tuple[str, ...] = ()
    # 0..3: which optional graph passes run (compiler/passes/pipeline.py documents the levels).
    opt_level: int = 3
    # pass names (as `--disable-pass`) that do not run, whatever the opt level.
    disabled_passes: tuple[str, ...] = ()
    # debugging: write the IR after every pass into this directory; print time per pass.
    dump_ir: str | None = None
    time_passes: bool = False
    # tuning database directory: its records win over the default schedules.
    db: str | None = None
    # fail when a kernel worth tuning has no record in `db` (for CI: nothing ships untuned).
    db_strict: bool = False
    # input name -> .npy file: the input becomes a constant of the model (`--bind`).
    bind: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        data["dim_ranges"] = {k: list(v) for k, v in self.dim_ranges.items()}
        data["keep_fp32"] = list(self.keep_fp32)
        data["disabled_passes"] = list(self.disabled_passes)
        return data
