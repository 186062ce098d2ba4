"""Small ONNX models built with onnx.helper, and the check every operator test makes: compile
with mlc, run with the bundle's loader, compare with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.api import compile_model, load_bundle
from compiler.options import CompileOptions
from compiler.reference import run_reference

RNG = np.random.default_rng(0)


def make_model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    """A checked model; IR version 8, or the newer one its opsets need."""
    graph = helper.make_graph(nodes, "case", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = max(8, helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


def const(name, array):
    """An initializer."""
    return numpy_helper.from_array(np.asarray(array), name)


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def rank_vi(name, rank, dtype=TensorProto.FLOAT):
    """An output of known rank whose dims mlc works out."""
    return vi(name, [f"{name}_{i}" for i in range(rank)], dtype)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def assert_same_outputs(got: dict, expected: dict, atol=1e-4, rtol=1e-4) -> None:
    """The same output names in the same order, each with onnxruntime's dtype, shape, values."""
    assert list(got) == list(expected)
    for name, ref in expected.items():
        assert got[name].dtype == ref.dtype, name
        assert got[name].shape == ref.shape, name
        np.testing.assert_allclose(got[name], ref, rtol=rtol, atol=atol, err_msg=name)


def check(tmp_path, model, inputs, atol=1e-4) -> dict:
    """Compile with mlc, run with the bundle's loader, compare with onnxruntime; mlc's outputs."""
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    bundle = compile_model(path, tmp_path / "bundle", CompileOptions()).bundle
    got = load_bundle(bundle)(**inputs)
    assert_same_outputs(got, run_reference(path, inputs), atol=atol)
    return got
