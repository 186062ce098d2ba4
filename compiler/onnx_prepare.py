"""ONNX graph rewrites before the Relax import: bound inputs, Constant nodes, old opsets,
and constant folding of shape arithmetic. Each works on the ModelProto in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UsageError

# Upgrade models below this opset with onnx's version converter: TVM's converters are written
# against the newer operator definitions (e.g. Resize, Upsample, Pad, Slice take inputs).
UPGRADE_BELOW = 11
UPGRADE_TO = 13


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
