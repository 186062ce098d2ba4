"""Compile-time facts the shape-fixing converters need: static shapes and constant inputs."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..errors import ModelError


def static_shape(x, op: str) -> list[int]:
    """x's shape as ints, or a ModelError naming the op (its output shape depends on it)."""
    shape = getattr(x.ty, "shape", None)
    if shape is None or not all(hasattr(d, "value") for d in shape):
        raise ModelError(
            f"{op} needs its input's shape at compile time, got {shape}",
            hint="pin the symbolic dims with --dim NAME=VALUE or --input-shape",
        )
    return [int(d.value) for d in shape]


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


def needs_constant(op: str, what: str) -> ModelError:
    return ModelError(
        f"{op} {what} must be known at compile time (it fixes the output shape): give it as "
        "an initializer, or --bind the input that feeds it"
    )
