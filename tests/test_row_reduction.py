"""RowReduction (compiler/schedules/cpu_row_reduction.py): softmax, layer norm and RMS norm with
their reductions run lane-wise, and results that stay correct."""

from __future__ import annotations

import numpy as np
import pytest
from test_schedules import TARGET, _func, _random, _run
from tvm import te, topi

from compiler.schedules.cpu_row_reduction import RowReduction
from compiler.schedules.default import default_schedule

pytestmark = pytest.mark.usefixtures("parallel_small_kernels")  # see conftest.py


def _schedule(func):
    sch = RowReduction().apply(func, TARGET, False)
    assert sch is not None, "RowReduction did not apply"
    return sch.mod["main"]


def _lane_partials(func) -> int:
    """Reductions split into per-lane partial results: vectorised, in registers."""
    return func.script().count("_rf_local = T.sblock_alloc_buffer")


@pytest.mark.parametrize("width", [768, 256, 12])
def test_layer_norm(width):
    x, g, b = _random(2, 16, width), _random(width), _random(width)
    X, G, B = (te.placeholder(a.shape, name=n) for a, n in ((x, "X"), (g, "G"), (b, "B")))
    func = _schedule(_func([X, G, B], topi.nn.layer_norm(X, G, B, axis=[-1], epsilon=1e-5)))
    assert "T.parallel" in func.script()
    # the sum and the sum of squares, lane-wise; a 12-wide row keeps the scalar reduction
    assert _lane_partials(func) == (2 if width >= 16 else 0)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * g + b
    np.testing.assert_allclose(_run(func, [x, g, b], x.shape), expected, rtol=1e-4, atol=1e-4)


def test_softmax():
    x = _random(1, 12, 128, 128) * 4
    X = te.placeholder(x.shape, name="X")
    func = _schedule(_func([X], topi.nn.softmax(X)))
    assert _lane_partials(func) == 2  # the max and the sum of exponentials
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(
        _run(func, [x], x.shape), e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6
    )


def test_rms_norm_is_taken_before_the_matmul_rule():
    x, g = _random(64, 512), _random(512)
    X, G = te.placeholder(x.shape, name="X"), te.placeholder(g.shape, name="G")
    func = _func([X, G], topi.nn.rms_norm(X, G, axis=[-1], epsilon=1e-6))
    scheduled = default_schedule(func, TARGET).mod["main"]
    assert _lane_partials(scheduled) == 1
    expected = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * g
    np.testing.assert_allclose(_run(scheduled, [x, g], x.shape), expected, rtol=1e-4, atol=1e-4)


def test_declines_a_matmul_with_an_epilogue_and_a_lone_reduction():
    A, B = te.placeholder((32, 64), name="A"), te.placeholder((64, 48), name="B")
    assert (
        RowReduction().apply(_func([A, B], topi.nn.relu(topi.matmul(A, B))), TARGET, False) is None
    )
    X = te.placeholder((8, 256), name="X")
    assert RowReduction().apply(_func([X], topi.sum(X, axis=-1)), TARGET, False) is None
