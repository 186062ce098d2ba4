"""FuseDepthwiseProject (compiler/passes/fuse_depthwise_project.py) and its schedule,
DepthwiseProject (compiler/schedules/cpu_depthwise.py): a depthwise conv and the 1x1 conv that
reads it become one kernel, which computes the depthwise rows inside the 1x1 conv's parallel
tasks, and results stay those of numpy and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import helper
from onnx_cases import check, const, make_model, rand, vi
from test_depthwise import _depthwise_reference
from test_schedules import TARGET, _func, _random, _run
from tvm import te, tirx, topi

from compiler.build import prepare
from compiler.frontend import import_model, read_onnx
from compiler.options import CompileOptions
from compiler.passes.pipeline import fusion_steps
from compiler.schedules.cpu_depthwise import DepthwiseProject
from compiler.schedules.default import default_schedule
from compiler.targets import load_preset, resolve_target

pytestmark = pytest.mark.usefixtures("parallel_small_kernels")  # see conftest.py


def _fused_func(x, w, bias, p, p_bias, stride, residual=False) -> tirx.PrimFunc:
    """What the pass gives FuseTIR for a MobileNetV2 block's second half: depthwise 3x3 conv,
    bias, Clip(0, 6), then a 1x1 conv with bias (and the block's residual add)."""
    X, W, B = (te.placeholder(a.shape, name=n) for a, n in ((x, "X"), (w, "W"), (bias, "B")))
    P, PB = te.placeholder(p.shape, name="P"), te.placeholder(p_bias.shape, name="PB")
    depthwise = topi.nn.conv(X, W, stride, 1, 1, x.shape[-1], "NHWC", "HWIO")
    clipped = topi.minimum(topi.maximum(topi.add(depthwise, B), 0.0), 6.0)
    out = topi.add(topi.nn.conv(clipped, P, 1, 0, 1, 1, "NHWC", "HWIO"), PB)
    params = [X, W, B, P, PB]
    if residual:
        R = te.placeholder([int(d) for d in out.shape], name="R")
        out, params = topi.add(out, R), [*params, R]
    # The pipeline marks weights layout-free (passes/prepack_weights.py): the 1x1 conv's is packed.
    return _func(params, out).with_attr("layout_free_buffers", [1, 2, 3, 4])


def _reference(x, w, bias, p, p_bias, stride):
    hidden = _depthwise_reference(x, w, bias, stride)
    return np.einsum("nhwc,ck->nhwk", hidden, p[0, 0]) + p_bias


@pytest.mark.parametrize(
    ("size", "channels", "out", "stride"),
    [(16, 48, 16, 1), (17, 32, 24, 2), (14, 20, 8, 1), (4, 16, 64, 1)],
)
def test_depthwise_rows_are_computed_in_the_projection_tasks(size, channels, out, stride):
    x, w, bias = _random(1, size, size, channels), _random(3, 3, 1, channels), _random(channels)
    p, p_bias = _random(1, 1, channels, out), _random(out)
    func = _fused_func(x, w, bias, p, p_bias, stride)
    sch = DepthwiseProject().apply(func, TARGET, False)
    assert sch is not None, "DepthwiseProject did not apply"
    scheduled = sch.mod["main"]
    text = scheduled.script()
    rows = (size - 1) // stride + 1
    if rows >= 8:  # enough rows for 2 cores' tasks: one parallel loop over them, both convs in it
        assert text.count("T.parallel") == 1 and f"T.parallel({rows})" in text
    else:  # too few rows: tasks split the 1x1 conv's channels; the depthwise conv runs apart
        assert text.count("T.parallel") == 2
    expected = _reference(x, w, bias, p, p_bias, stride)
    got = _run(scheduled, [x, w, bias, p, p_bias], expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_residual_add_and_default_rules():
    x, w, bias = _random(1, 14, 14, 32), _random(3, 3, 1, 32), _random(32)
    p, p_bias = _random(1, 1, 32, 16), _random(16)
    func = _fused_func(x, w, bias, p, p_bias, 1, residual=True)
    scheduled = default_schedule(func, TARGET).mod["main"]
    mine = DepthwiseProject().apply(func, TARGET, False).mod["main"]
    tvm.ir.assert_structural_equal(scheduled, mine)  # first in the default rules
    residual = _random(1, 14, 14, 16)
    expected = _reference(x, w, bias, p, p_bias, 1) + residual
    got = _run(scheduled, [x, w, bias, p, p_bias, residual], expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_declines_a_single_conv_and_two_matmuls():
    X, W = te.placeholder((1, 8, 8, 16), name="X"), te.placeholder((3, 3, 1, 16), name="W")
    single = _func([X, W], topi.nn.conv(X, W, 1, 1, 1, 16, "NHWC", "HWIO"))
    assert DepthwiseProject().apply(single, TARGET, False) is None
    A, B, C = (te.placeholder((32, 32), name=n) for n in "ABC")
    two = _func([A, B, C], topi.matmul(topi.matmul(A, B), C))
    assert DepthwiseProject().apply(two, TARGET, False) is None


def _block(channels=24, expand=4, size=12, stride=1, dw_output_too=False):
    """A MobileNetV2 inverted residual block in ONNX (NCHW): 1x1 expand + Clip, depthwise 3x3
    + Clip, 1x1 project (+ the input, where the shapes allow)."""
    hidden = channels * expand
    nodes = [
        helper.make_node("Conv", ["x", "we", "be"], ["e"]),
        helper.make_node("Clip", ["e", "lo", "hi"], ["ec"]),
        helper.make_node(
            "Conv", ["ec", "wd", "bd"], ["d"], group=hidden, pads=[1] * 4, strides=[stride] * 2
        ),
        helper.make_node("Clip", ["d", "lo", "hi"], ["dc"]),
        helper.make_node("Conv", ["dc", "wp", "bp"], ["p"]),
    ]
    out = (size - 1) // stride + 1
    outputs = [vi("y", [1, channels, out, out])]
    if stride == 1:
        nodes.append(helper.make_node("Add", ["p", "x"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    if dw_output_too:
        outputs.append(vi("dc", [1, hidden, out, out]))
    inits = [
        const("we", rand(hidden, channels, 1, 1) * 0.3),
        const("be", rand(hidden)),
        const("wd", rand(hidden, 1, 3, 3) * 0.3),
        const("bd", rand(hidden)),
        const("wp", rand(channels, hidden, 1, 1) * 0.2),
        const("bp", rand(channels)),
        const("lo", np.float32(0)),
        const("hi", np.float32(6)),
    ]
    return make_model(nodes, [vi("x", [1, channels, size, size])], outputs, inits)


def _fused(tmp_path, model, until=None) -> tvm.IRModule:
    """`model` through mlc's graph passes and fusion steps (up to the step named `until`)."""
    path = tmp_path / "block.onnx"
    onnx.save(model, path)
    mod, _ = prepare(
        import_model(read_onnx(path)), CompileOptions(), resolve_target(load_preset("x86"))
    )
    steps = [s.transform for s in fusion_steps(TARGET)]
    if until is not None:
        steps = steps[: next(i for i, s in enumerate(steps) if s.info.name == until) + 1]
    with TARGET, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(steps)(mod)


def _kernels(tmp_path, model) -> list[str]:
    fused = _fused(tmp_path, model)
    return sorted(gv.name_hint for gv, f in fused.functions.items() if isinstance(f, tirx.PrimFunc))


def test_pass_merges_the_depthwise_kernel_into_its_projection(tmp_path):
    kernels = _kernels(tmp_path, _block())
    convs = [k for k in kernels if "conv2d" in k]
    assert len(convs) == 2, kernels  # the expand conv, and depthwise + project as one
    assert sum(k.count("conv2d") == 2 for k in convs) == 1, kernels


def test_pass_pairs_kernels_only_within_one_binding_block(tmp_path):
    """A depthwise kernel and its 1x1 conv in different binding blocks stay apart (and the
    pass does not fail on them)."""
    from tvm import relax

    from compiler.passes.fuse_depthwise_project import FuseDepthwiseProject

    mod = _fused(tmp_path, _block(), until="FuseOps")
    main = mod["main"]
    (block,) = main.body.blocks
    names = [getattr(b.value.op, "name_hint", "") for b in block.bindings]
    cut = next(i for i, n in enumerate(names) if "conv2d" in n) + 2  # expand, depthwise | rest
    halves = [relax.DataflowBlock(block.bindings[:cut]), relax.DataflowBlock(block.bindings[cut:])]
    split = relax.Function(
        main.params, relax.SeqExpr(halves, main.body.body), main.ret_ty, main.is_pure, main.attrs
    )
    mod["main"] = split
    assert FuseDepthwiseProject()(mod).same_as(mod)
    mod["main"] = main
    assert not FuseDepthwiseProject()(mod).same_as(mod)  # in one block: merged


def test_pass_leaves_a_depthwise_output_that_is_also_a_model_output(tmp_path):
    kernels = _kernels(tmp_path, _block(dw_output_too=True))
    assert not any(k.count("conv2d") == 2 for k in kernels), kernels


@pytest.mark.parametrize("stride", [1, 2])
def test_block_matches_onnxruntime(tmp_path, stride):
    x = {"x": rand(1, 24, 12, 12)}
    check(tmp_path, _block(stride=stride), x, atol=1e-3)
