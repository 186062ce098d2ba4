"""Compile options: everything a compile depends on travels in this one object."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    # "fp32", or "fp16": matmul/conv in fp16 with fp32 accumulation; inputs/outputs stay fp32.
    precision: str = "fp32"
    # tuning database directory: its records win over the default schedules.
    db: str | None = None
    # input name -> .npy file: the input becomes a constant of the model (`--bind`).
    bind: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["input_shapes"] = {k: list(v) for k, v in self.input_shapes.items()}
        return data
