"""ONNX graph rewrites before the Relax import: bound inputs, Constant nodes, old opsets,
and constant folding of shape arithmetic. Each works on the ModelProto in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ModelError, UsageError

# Upgrade models below this opset with onnx's version converter: TVM's converters are written
# against the newer operator definitions (e.g. Resize, Upsample, Pad, Slice take inputs).
UPGRADE_BELOW = 11
UPGRADE_TO = 11


def bind_inputs(model, bind: dict[str, str | Path]):
    """Freeze each named input to the array in its .npy file (`--bind NAME=FILE.npy`)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = {v.name: v for v in graph.input if v.name not in init_names}
    for name, path in bind.items():
        if name not in inputs:
            raise UsageError(
                f"--bind names input {name!r}, which the model does not have; "
                f"its inputs are: {', '.join(inputs) or 'none'}"
            )
        array = _load_npy(name, path)
        ttype = inputs[name].type.tensor_type
        want = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        if array.dtype != want:
            raise UsageError(
                f"--bind {name}={path}: the file holds {array.dtype}, but input {name!r} is {want}"
            )
        dims = [d.dim_value if d.dim_value > 0 else None for d in ttype.shape.dim]
        if ttype.HasField("shape") and (
            len(dims) != array.ndim or any(d not in (None, s) for d, s in zip(dims, array.shape))
        ):
            shown = "x".join(str(d or "?") for d in dims)
            raise UsageError(
                f"--bind {name}={path}: the array has shape {'x'.join(map(str, array.shape))}, "
                f"but input {name!r} has shape {shown or 'scalar'}"
            )
        graph.input.remove(inputs[name])
        graph.initializer.append(numpy_helper.from_array(array, name))
    return model


def _load_npy(name: str, path: str | Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--bind {name}={path}: cannot read a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise UsageError(f"--bind {name}={path}: expected a .npy file, not an .npz archive")
    return array


def prepare(model):
    """The rewrites every model gets before import (after --bind and shape pinning)."""
    from .onnx_fold import fold_constants
    from .onnx_loops import unroll_loops

    _check_io_types(model.graph)
    _unroll_scans(model, before_upgrade=True)  # the version converter mangles Scan-8
    model = _upgrade_opset(model)
    _normalise_constants(model.graph)
    _dequantize_lstm_weights(model.graph)
    fold_constants(model)
    if unroll_loops(model):  # the copies of the body may fold further
        fold_constants(model)
    if _unroll_scans(model):
        fold_constants(model)
    _clamp_nms_limits(model)
    return model


def _dequantize_lstm_weights(graph) -> None:
    """onnxruntime's DynamicQuantizeLSTM (com.microsoft; quantize_dynamic writes it, OCR and
    speech models ship it) is an LSTM whose int8 weights are stored transposed, [directions,
    input, 4*hidden], with a scale and zero point per direction (or per direction and gate
    column). Its weights are constants: they become an ordinary LSTM's fp32 weights here. The
    activations stay in fp32 where onnxruntime quantizes them per call, so the results are as
    close to the float model as the weights allow, within the quantization error of
    onnxruntime's."""
    from onnx import helper, numpy_helper

    consts = {t.name: t for t in graph.initializer}
    for index, node in enumerate(graph.node):
        if node.op_type != "DynamicQuantizeLSTM" or node.domain != "com.microsoft":
            continue
        names = list(node.input) + [""] * (12 - len(node.input))
        weights = [
            _dequantized(consts, names[i], names[s], names[z])
            for i, s, z in ((1, 8, 9), (2, 10, 11))
        ]
        if any(w is None for w in weights):
            continue  # weights computed at run time: left for the unsupported-op error
        new_names = []
        for which, w in zip(("W", "R"), weights):
            name = f"{node.name or node.output[0]}_{which}_dequantized"
            graph.initializer.append(numpy_helper.from_array(w.transpose(0, 2, 1).copy(), name))
            new_names.append(name)
        inputs = [names[0], *new_names, *names[3:8]]
        while inputs and not inputs[-1]:
            inputs.pop()
        lstm = helper.make_node("LSTM", inputs, list(node.output), name=node.name)
        lstm.attribute.extend(node.attribute)
        graph.node.remove(node)
        graph.node.insert(index, lstm)


def _dequantized(consts, weight: str, scale: str, zero: str):
    from onnx import numpy_helper

    if not all(n in consts for n in (weight, scale)):
        return None
    w = numpy_helper.to_array(consts[weight]).astype(np.float32)
    s = numpy_helper.to_array(consts[scale]).astype(np.float32)
    z = numpy_helper.to_array(consts[zero]).astype(np.float32) if zero in consts else 0.0
    # scale/zero point per direction [D], or per direction and output column [D, 4H]
    shape = (-1, 1, 1) if np.ndim(s) == 1 else (s.shape[0], 1, s.shape[1])
    z = np.reshape(z, shape) if np.ndim(z) else z
    return (w - z) * s.reshape(shape)


def _clamp_nms_limits(model) -> None:
    """NonMaxSuppression's max_output_boxes_per_class as torchvision exports it is INT64_MAX
    ("no limit"); TVM sizes its output by that number, in int32 ("Literal value
    9223372036854775807 exceeds range of int32"). No class can keep more boxes than there
    are, so a limit above the box count becomes the box count (2**31 - 1 where it is not
    known): the same results. A missing score threshold (none: keep every score) becomes the
    lowest float."""
    from onnx import numpy_helper

    from .onnx_fold import static_shapes

    graph = model.graph
    nms = [n for n in graph.node if n.op_type == "NonMaxSuppression" and len(n.input) > 2]
    # Without a limit (input 2) NonMaxSuppression keeps no box at all: nothing to fix.
    if not nms:
        return
    consts = {t.name: t for t in graph.initializer}
    shapes = static_shapes(model)
    for node in nms:
        if len(node.input) < 5 or not node.input[4]:  # no score threshold: keep every box
            # (TVM's converter takes a missing threshold as 0.0 and drops negative scores)
            while len(node.input) < 5:
                node.input.append("")
            name = f"{node.name or node.output[0]}_no_score_threshold"
            lowest = np.array([np.finfo(np.float32).min], np.float32)
            graph.initializer.append(numpy_helper.from_array(lowest, name))
            node.input[4] = name
        limit = consts.get(node.input[2])
        if limit is None:
            continue
        value = numpy_helper.to_array(limit)
        boxes = shapes.get(node.input[0])
        cap = boxes[1] if boxes and len(boxes) == 3 else 2**31 - 1
        if value.size == 1 and int(value.reshape(-1)[0]) > cap:
            name = f"{node.input[2]}_clamped_{node.name or id(node)}"
            graph.initializer.append(numpy_helper.from_array(np.full_like(value, cap), name))
            node.input[2] = name


def _unroll_scans(model, before_upgrade: bool = False) -> bool:
    """Scan unrolls like Loop; its trip count is a static scan-input length."""
    if not any(n.op_type == "Scan" for n in model.graph.node):
        return False
    from .onnx_fold import onnx_opset, static_shapes
    from .onnx_scan import unroll_scans

    if before_upgrade and onnx_opset(model, 13) >= UPGRADE_BELOW:
        return False
    return unroll_scans(model, static_shapes(model))


def _upgrade_opset(model):
    """Models below opset 11 are converted with onnx's version converter (Upsample and the
    attribute forms of Pad/Slice become the input forms TVM's converters handle); a model the
    converter cannot convert is imported as it is."""
    from onnx import version_converter

    from .onnx_fold import onnx_opset

    opset = onnx_opset(model)
    if opset is None or opset >= UPGRADE_BELOW:
        return model
    try:
        converted = version_converter.convert_version(model, UPGRADE_TO)
    except Exception:  # the converter has no adapter for some op: keep the original
        return model
    _keep_resize10_semantics(model, converted)
    return converted


def _keep_resize10_semantics(original, converted) -> None:
    """Upsample and Resize-10 sample asymmetrically, nearest rounding down on the axes it
    upsamples and up on those it downsamples (as onnxruntime runs them); the converter's
    Resize-11 drops that for Resize-11's defaults (half_pixel, round_prefer_floor), so it is
    written back. That rounding has no ONNX name: "simple" is mlc's, read by converters/resize."""
    from onnx import helper

    old = {n.output[0] for n in original.graph.node if n.op_type in ("Upsample", "Resize")}
    for node in converted.graph.node:
        if node.op_type != "Resize" or node.output[0] not in old:
            continue
        if any(a.name == "coordinate_transformation_mode" for a in node.attribute):
            continue
        node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        node.attribute.append(helper.make_attribute("nearest_mode", "simple"))


# numpy has no DLPack export for these (ml_dtypes), so no loader can pass them in or out.
_UNSUPPORTED_IO = {"string", "bfloat16", "float8", "int4", "uint4", "int2", "uint2", "float4"}


def _check_io_types(graph) -> None:
    """Inputs and outputs must be tensors of a dtype the loader can exchange with numpy."""
    from onnx import TensorProto

    weights = {t.name for t in graph.initializer}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if value.name in weights:
                continue
            vtype = value.type
            which = vtype.WhichOneof("value")
            if which == "sequence_type" and kind == "output":  # a sequence of tensors: a list
                vtype = vtype.sequence_type.elem_type
                which = "sequence of " + str(vtype.WhichOneof("value"))
            if which not in ("tensor_type", "sequence of tensor_type"):
                raise ModelError(
                    f"{kind} {value.name!r} is of type {which.replace('_type', '')}: "
                    f"{which.replace('_type', '')} {kind}s are not supported (only tensors"
                    + (", and sequences of tensors as outputs)" if kind == "output" else ")")
                )
            name = TensorProto.DataType.Name(vtype.tensor_type.elem_type).lower()
            if any(name.startswith(bad) for bad in _UNSUPPORTED_IO):
                raise ModelError(
                    f"{kind} {value.name!r} has dtype {name}: {name} {kind}s are not supported "
                    "(numpy cannot hand them to the runtime)"
                )


_CONSTANT_ATTRS = {  # Constant's attribute -> (numpy dtype, is a list)
    "value_float": (np.float32, False),
    "value_floats": (np.float32, True),
    "value_int": (np.int64, False),
    "value_ints": (np.int64, True),
    "value_string": (np.object_, False),
    "value_strings": (np.object_, True),
}


def _normalise_constants(graph) -> None:
    """Rewrite Constant nodes that use value_float/_ints/_string/... or sparse_value to the
    `value` tensor TVM's importer reads; in subgraphs too."""
    from onnx import helper, numpy_helper

    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _normalise_constants(sub)
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        (attr,) = node.attribute
        if attr.name in _CONSTANT_ATTRS:
            dtype, is_list = _CONSTANT_ATTRS[attr.name]
            value = helper.get_attribute_value(attr)
            array = np.array(list(value) if is_list else value, dtype=dtype)
        elif attr.name == "sparse_value":
            array = _dense(attr.sparse_tensor)
        else:
            continue
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(array)))


def _dense(sparse) -> np.ndarray:
    from onnx import numpy_helper

    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    if indices.ndim == 2:  # one row of coordinates per value
        dense[tuple(indices.T)] = values
    else:  # linear indices into the flattened tensor
        dense.reshape(-1)[indices] = values
    return dense
