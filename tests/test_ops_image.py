"""mlc's converters for image, quantized, selection and text operators: each family compiled
by mlc, run by the bundle's loader and compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_cases import check, const, make_model, rand, rank_vi, vi

from compiler.api import compile_model
from compiler.errors import ModelError
from compiler.options import CompileOptions

I64 = TensorProto.INT64
U8 = TensorProto.UINT8


def test_resize_modes_with_axes_and_antialias(tmp_path):
    """Three Resize nodes with constant scales/sizes: cubic antialias downsampling on two axes,
    linear half_pixel_symmetric upsampling, nearest with a sizes aspect-ratio policy."""
    nodes = [
        helper.make_node(
            "Resize", ["x", "", "s1"], ["a"], mode="cubic", antialias=1, axes=[2, 3],
            cubic_coeff_a=-0.5, exclude_outside=1,
        ),
        helper.make_node(
            "Resize", ["x", "", "s2"], ["b"], mode="linear",
            coordinate_transformation_mode="half_pixel_symmetric",
        ),
        helper.make_node(
            "Resize", ["x", "", "", "z3"], ["c"], mode="nearest", axes=[3, 2],
            keep_aspect_ratio_policy="not_larger", nearest_mode="ceil",
        ),
    ]  # fmt: skip
    inits = [
        const("s1", np.array([0.6, 0.45], np.float32)),
        const("s2", np.array([1, 1, 1.7, 2.3], np.float32)),
        const("z3", np.array([13, 5], np.int64)),
    ]
    outs = [rank_vi("a", 4), rank_vi("b", 4), rank_vi("c", 4)]
    model = make_model(nodes, [vi("x", [1, 2, 9, 11])], outs, inits, opset=19)
    check(tmp_path, model, {"x": rand(1, 2, 9, 11)}, atol=1e-4)


def test_quantized_matmul_and_conv(tmp_path):
    nodes = [
        helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]),
        helper.make_node(
            "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"], ["c"],
            pads=[1, 1, 1, 1], strides=[2, 1],
        ),
        helper.make_node("ConvInteger", ["x", "w", "xz"], ["ci"], group=1),
    ]  # fmt: skip
    rng = np.random.default_rng(1)
    inits = [
        const("as", np.float32(0.02)),
        const("az", np.uint8(113)),
        const("b", rng.integers(0, 255, (5, 3), dtype=np.uint8)),
        const("bs", np.array([0.01, 0.03, 0.02], np.float32)),
        const("bz", np.array([120, 110, 130], np.uint8)),
        const("ys", np.float32(0.05)),
        const("yz", np.uint8(128)),
        const("xs", np.float32(0.04)),
        const("xz", np.uint8(100)),
        const("w", rng.integers(0, 255, (4, 2, 3, 3), dtype=np.uint8)),
        const("ws", np.array([0.01, 0.02, 0.015, 0.03], np.float32)),
        const("wz", np.uint8(127)),
        const("bias", np.array([10, -20, 30, 0], np.int32)),
    ]
    inputs = [vi("a", [4, 5], U8), vi("x", [1, 2, 6, 5], U8)]
    outs = [vi("y", [4, 3], U8), rank_vi("c", 4, U8), rank_vi("ci", 4, TensorProto.INT32)]
    model = make_model(nodes, inputs, outs, inits, opset=13)
    feed = {
        "a": rng.integers(0, 255, (4, 5), dtype=np.uint8),
        "x": rng.integers(0, 255, (1, 2, 6, 5), dtype=np.uint8),
    }
    check(tmp_path, model, feed, atol=0)


def test_data_dependent_nonzero_compress_unique(tmp_path):
    """Outputs whose length depends on the data, without TVM's Python-only packed functions."""
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"]),
        helper.make_node("Compress", ["x", "keep"], ["kept"], axis=1),
        helper.make_node("Unique", ["x"], ["u", "first", "inverse", "counts"], axis=0, sorted=1),
        helper.make_node("Unique", ["x"], ["v"], sorted=0),
    ]
    outs = [
        rank_vi("nz", 2, I64),
        rank_vi("kept", 2),
        rank_vi("u", 2),
        rank_vi("first", 1, I64),
        rank_vi("inverse", 1, I64),
        rank_vi("counts", 1, I64),
        rank_vi("v", 1),
    ]
    inputs = [vi("x", [4, 3]), vi("keep", [3], TensorProto.BOOL)]
    model = make_model(nodes, inputs, outs, opset=13)
    x = np.array([[1, 0, 2], [0, 0, 3], [1, 0, 2], [4, 4, 0]], np.float32)
    got = check(tmp_path, model, {"x": x, "keep": np.array([True, False, True])})
    assert got["u"].shape == (3, 3) and got["nz"].shape == (2, 7)


def test_crop_pad_col2im_maxpool_indices_pad_value(tmp_path):
    nodes = [
        helper.make_node("CenterCropPad", ["x", "shape"], ["crop"], axes=[2, 3]),
        helper.make_node("Col2Im", ["cols", "image", "block"], ["img"], pads=[1, 0, 0, 1]),
        helper.make_node("MaxPool", ["x"], ["mp", "idx"], kernel_shape=[3, 2], strides=[2, 2],
                         pads=[1, 0, 1, 1], storage_order=1),
        helper.make_node("Pad", ["x", "pads", "value"], ["padded"], mode="constant"),
    ]  # fmt: skip
    inits = [
        const("shape", np.array([3, 8], np.int64)),
        const("image", np.array([4, 5], np.int64)),
        const("block", np.array([2, 3], np.int64)),
        const("pads", np.array([0, 0, 1, 2, 0, 0, 2, 0], np.int64)),
    ]
    inputs = [vi("x", [1, 2, 5, 6]), vi("cols", [1, 12, 16]), vi("value", [])]
    outs = [rank_vi(n, 4) for n in ("crop", "img", "mp", "padded")] + [rank_vi("idx", 4, I64)]
    model = make_model(nodes, inputs, outs, inits, opset=19)
    feed = {"x": rand(1, 2, 5, 6), "cols": rand(1, 12, 16), "value": np.array(-3.5, np.float32)}
    check(tmp_path, model, feed)


def test_tfidf_vectorizer_and_dropout_mask(tmp_path):
    nodes = [
        helper.make_node(
            "TfIdfVectorizer", ["t"], ["tfidf"], mode="TFIDF", min_gram_length=1,
            max_gram_length=2, max_skip_count=2, ngram_counts=[0, 3],
            ngram_indexes=[4, 0, 1, 2, 3], pool_int64s=[2, 3, 5, 5, 6, 3, 2],
            weights=[0.5, 1.0, 2.0, 1.5, 3.0],
        ),
        helper.make_node("Dropout", ["x"], ["y", "mask"]),
    ]  # fmt: skip
    inputs = [vi("t", [2, 7], TensorProto.INT32), vi("x", [3, 4])]
    outs = [vi("tfidf", [2, 5]), vi("y", [3, 4]), vi("mask", [3, 4], TensorProto.BOOL)]
    model = make_model(nodes, inputs, outs, opset=13)
    tokens = np.array([[2, 3, 5, 5, 6, 3, 2], [5, 6, 2, 3, 3, 2, 7]], np.int32)
    check(tmp_path, model, {"t": tokens, "x": rand(3, 4)})


def test_constant_if_is_inlined_and_scalar_unsqueeze_axes(tmp_path):
    """An If on a constant condition becomes its branch before import (expanded functions such
    as AffineGrid's branch on the rank of a bound size input)."""
    then = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "axis"], ["t"])], "then", [], [rank_vi("t", 3)]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [], [rank_vi("e", 2)]
    )
    nodes = [
        helper.make_node("Size", ["shape"], ["rank"]),
        helper.make_node("Equal", ["rank", "two"], ["is_2d"]),
        helper.make_node("If", ["is_2d"], ["y"], then_branch=then, else_branch=other),
    ]
    inits = [
        const("shape", np.array([2, 3], np.int64)),
        const("two", np.int64(2)),
        const("axis", np.int64(-1)),
    ]
    model = make_model(nodes, [vi("x", [2, 3])], [rank_vi("y", 3)], inits, opset=13)
    got = check(tmp_path, model, {"x": rand(2, 3)})
    assert got["y"].shape == (2, 3, 1)


def test_resize10_and_upsample_keep_their_semantics_through_the_opset_upgrade(tmp_path):
    """onnx's version converter turns them into Resize-11 with half_pixel sampling; mlc keeps
    the asymmetric sampling and the rounding onnxruntime uses (nearest: up on an axis it
    downsamples, down on one it upsamples)."""
    nodes = [
        helper.make_node("Resize", ["x", "down"], ["a"], mode="nearest"),
        helper.make_node("Resize", ["x", "up"], ["b"], mode="linear"),
        helper.make_node("Resize", ["x", "mixed"], ["c"], mode="nearest"),
    ]
    inits = [
        const("down", np.array([1, 1, 0.6, 0.75], np.float32)),
        const("up", np.array([1, 1, 2.5, 1.7], np.float32)),
        const("mixed", np.array([1, 1, 0.6, 1.7], np.float32)),
    ]
    outs = [rank_vi("a", 4), rank_vi("b", 4), rank_vi("c", 4)]
    model = make_model(nodes, [vi("x", [1, 2, 7, 9])], outs, inits, opset=10)
    check(tmp_path, model, {"x": rand(1, 2, 7, 9)})


def test_integer_resize_rounds_like_onnxruntime(tmp_path):
    """Coordinates in float32 (a nearest tie at 3.5 / 0.7 - 0.5 rounds down, not up as in
    float64) and interpolated uint8 values truncated."""
    nodes = [
        helper.make_node("Resize", ["q", "", "s"], ["a"], mode="nearest"),
        helper.make_node("Resize", ["u", "", "s"], ["b"], mode="linear"),
    ]
    inits = [const("s", np.array([1, 1, 1.6, 0.7], np.float32))]
    inputs = [vi("q", [1, 1, 5, 7], TensorProto.INT8), vi("u", [1, 1, 5, 7], U8)]
    outs = [rank_vi("a", 4, TensorProto.INT8), rank_vi("b", 4, U8)]
    model = make_model(nodes, inputs, outs, inits, opset=13)
    rng = np.random.default_rng(2)
    feed = {
        "q": rng.integers(-100, 100, (1, 1, 5, 7)).astype(np.int8),
        "u": rng.integers(0, 255, (1, 1, 5, 7)).astype(np.uint8),
    }
    check(tmp_path, model, feed, atol=0)


def test_run_time_resize_scales_are_a_clear_error(tmp_path):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear")
    inputs = [vi("x", [1, 1, 4, 4]), vi("scales", [4])]
    model = make_model([node], inputs, [rank_vi("y", 4)], opset=13)
    onnx.save(model, tmp_path / "model.onnx")
    with pytest.raises(ModelError) as err:
        compile_model(tmp_path / "model.onnx", tmp_path / "bundle", CompileOptions())
    assert err.value.message == (
        "the ONNX importer failed on a Resize node: Resize scales must be known at compile time "
        "(it fixes the output shape): give it as an initializer, or --bind the input that feeds it"
    )
