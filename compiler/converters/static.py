"""Compile-time facts the shape-fixing converters need: static shapes and constant inputs."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..errors import ModelError

_PIN_HINT = "pin the symbolic dims with --dim NAME=VALUE or --input-shape"


def static_shape(x, op: str) -> list[int]:
    """x's shape as ints, or a ModelError naming the op (its output shape depends on it)."""
    shape = getattr(x.ty, "shape", None)
    if shape is None or not all(hasattr(d, "value") for d in shape):
        raise ModelError(
            f"{op} needs its input's shape at compile time, got {shape}", hint=_PIN_HINT
        )
    return [int(d.value) for d in shape]


def static_dim(dim, op: str) -> int:
    """One dim (an IntImm, or a plain int) as an int, or a ModelError naming the op: the dims
    it unrolls over or builds tables for must be known at compile time."""
    value = getattr(dim, "value", dim)
    if not isinstance(value, int):
        raise ModelError(f"{op} needs a dim known at compile time, got {dim}", hint=_PIN_HINT)
    return value


def constant_array(expr) -> np.ndarray | None:
    """The value of a Relax constant or a static ShapeExpr as numpy, else None."""
    if expr is None:
        return None
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    if isinstance(expr, relax.ShapeExpr) and all(hasattr(v, "value") for v in expr.values):
        return np.array([int(v.value) for v in expr.values], dtype=np.int64)
    return None


def required_constant(expr, op: str, what: str) -> np.ndarray:
    """constant_array(expr), or a ModelError: a run-time value would make the output shape
    data-dependent."""
    value = constant_array(expr)
    if value is None:
        raise needs_constant(op, what)
    return value


def required_int(expr, op: str, what: str) -> int:
    """A constant scalar or one-element input (an axis, a count, a size) as an int."""
    return int(required_constant(expr, op, what).reshape(-1)[0])


def needs_constant(op: str, what: str) -> ModelError:
    return ModelError(
        f"{op} {what} must be known at compile time (it fixes the output shape): give it as "
        "an initializer, or --bind the input that feeds it"
    )
