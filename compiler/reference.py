"""onnxruntime as the reference oracle: run a model, compare outputs element by element."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError, UsageError


@dataclass(frozen=True)
class Mismatch:
    """The worst element of one output."""

    output: str
    index: tuple[int, ...]
    got: float
    expected: float
    abs_diff: float
    bad_elements: int
    total_elements: int
    reason: str = ""  # set when no element can be compared: the shapes or dtypes differ


@dataclass(frozen=True)
class Comparison:
    max_abs_diff: dict[str, float]
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def ort_session(model_path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session with `threads` intra-op threads (None: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load {str(model_path)!r}: {exc}") from None


def run_reference(
    model_path: str | Path, inputs: dict[str, np.ndarray], threads: int | None = None
) -> dict[str, np.ndarray]:
    """The model's outputs according to onnxruntime."""
    session = ort_session(model_path, threads)
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, inputs)
    except Exception as exc:  # onnxruntime's own exception types: bad inputs for this model
        message = str(exc).split("Status Message:")[-1].strip().splitlines()[0][:300]
        raise UsageError(
            f"onnxruntime cannot run {str(model_path)!r} on these inputs: {message}",
            hint="check that the ONNX file is the model the bundle was compiled from, and give "
            "inputs it accepts (--input FILE, or --input-range NAME=LO..HI for indices)",
        ) from None
    return flatten_sequences(dict(zip(names, results)))


def flatten_sequences(outputs: dict) -> dict[str, np.ndarray]:
    """Sequence outputs (lists of arrays) as one entry per item, named NAME[i]."""
    flat = {}
    for name, value in outputs.items():
        if isinstance(value, list | tuple):
            flat.update({f"{name}[{i}]": np.asarray(item) for i, item in enumerate(value)})
        else:
            flat[name] = value
    return flat


def compare(
    got: dict[str, np.ndarray], expected: dict[str, np.ndarray], rtol: float, atol: float
) -> Comparison:
    """Element-wise |got - expected| <= atol + rtol * |expected|; NaNs must match NaNs."""
    diffs: dict[str, float] = {}
    mismatches = []
    for name, ref in expected.items():
        out = got.get(name)
        if out is None or out.shape != ref.shape or out.dtype != ref.dtype:
            shown = "nothing" if out is None else f"{out.dtype}{list(out.shape)}"
            reason = f"got {shown}, onnxruntime gives {ref.dtype}{list(ref.shape)}"
            mismatches.append(
                Mismatch(name, (), float("nan"), float("nan"), float("inf"), 0, 0, reason)
            )
            diffs[name] = float("inf")
            continue
        a = out.astype(np.float64)
        b = ref.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        bad = diff > atol + rtol * np.abs(np.where(both_nan, 0.0, b))
        diffs[name] = float(diff.max()) if diff.size else 0.0
        if bad.any():
            worst = np.unravel_index(int(np.argmax(np.where(bad, diff, -1.0))), diff.shape)
            mismatches.append(
                Mismatch(
                    name,
                    tuple(int(i) for i in worst),
                    float(a[worst]),
                    float(b[worst]),
                    float(diff[worst]),
                    int(bad.sum()),
                    int(bad.size),
                )
            )
    return Comparison(diffs, tuple(mismatches))
