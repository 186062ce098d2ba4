"""Graph passes: each of ours with a Before/Expected IR test."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from compiler.passes import ExtractWeights

BIG = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)  # 2 KiB: becomes a weight
SMALL = np.ones((4,), np.float32)  # 16 bytes: stays inline


def _before() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 16), "float32"))
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            big = relax.const(BIG)
            mm = bb.emit(relax.op.matmul(x, big))
            again = bb.emit(relax.op.matmul(x, big))  # the same constant used twice
            total = bb.emit(relax.op.add(mm, again))
            out = bb.emit_output(
                relax.op.add(relax.op.strided_slice(total, [1], [0], [4]), relax.const(SMALL))
            )
        bb.emit_func_output(out)
    return bb.get()


@I.ir_module
class Expected:
    @R.function
    def main(
        x: R.Tensor((1, 16), dtype="float32"), weight0: R.Tensor((16, 32), dtype="float32")
    ) -> R.Tensor((1, 4), dtype="float32"):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            lv: R.Tensor((1, 32), dtype="float32") = R.matmul(x, weight0)
            lv1: R.Tensor((1, 32), dtype="float32") = R.matmul(x, weight0)
            lv2: R.Tensor((1, 32), dtype="float32") = R.add(lv, lv1)
            gv: R.Tensor((1, 4), dtype="float32") = R.add(
                R.strided_slice(lv2, axes=[1], begin=[0], end=[4]),
                R.const(np.ones((4,), "float32")),
            )
            R.output(gv)
        return gv


def test_extract_weights_lifts_large_constants_once():
    after = ExtractWeights(min_bytes=1024)(_before())
    params = after["main"].attrs["params"]
    assert len(params) == 1
    np.testing.assert_array_equal(params[0].numpy(), BIG)
    tvm.ir.assert_structural_equal(after["main"].without_attr("params"), Expected["main"])


def test_extract_weights_threshold_keeps_everything_inline():
    before = _before()
    after = ExtractWeights(min_bytes=1 << 20)(before)
    tvm.ir.assert_structural_equal(after, before)


def test_safe_indexing_makes_take_clamp():
    from compiler.passes import SafeIndexing

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((10, 4), "float32"), i: R.Tensor((3,), "int64")):
            with R.dataflow():
                gv = R.take(x, i, axis=0)  # mode="fast" by default: reads out of bounds
                R.output(gv)
            return gv

    @I.ir_module
    class After:
        @R.function
        def main(x: R.Tensor((10, 4), "float32"), i: R.Tensor((3,), "int64")):
            with R.dataflow():
                gv = R.take(x, i, axis=0, mode="clip")
                R.output(gv)
            return gv

    tvm.ir.assert_structural_equal(SafeIndexing()(Before), After)


def test_out_of_range_gather_index_does_not_crash(tmp_path, bundles):
    """An index far out of range is clamped (onnxruntime raises); the process survives."""
    import subprocess
    import sys
    import textwrap

    bundle = bundles("multi_io")
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(bundle)!r})
        from loader import load
        m = load({str(bundle)!r})
        ids = np.full((2, 3), 10**9, np.int64)
        out = m(x=np.zeros((2, 3, 4), np.float32), ids=ids, mask=np.ones((2, 3, 4), bool))
        print("survived", out["mixed"].shape)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "survived (2, 3, 4)" in r.stdout
