"""The ONNX backend node test cases: generate them, read them, compare outputs."""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RTOL = 1e-3
ATOL = 1e-3

# Inputs a real user would fix at compile time: (op type, input index) positions that carry a
# shape, axes, sizes, counts, pads or thresholds rather than data. When the plain compile fails,
# the runner binds the graph inputs whose values reach one of these (see bindable_inputs).
SHAPE_POSITIONS = {
    "Loop": {0, 1},
    "Reshape": {1},
    "Expand": {1},
    "Tile": {1},
    "ConstantOfShape": {0},
    "Slice": {1, 2, 3, 4},
    "Squeeze": {1},
    "Unsqueeze": {1},
    "Pad": {1, 2, 3},
    "Resize": {1, 2, 3},
    "Upsample": {1},
    "TopK": {1},
    "OneHot": {1},
    "Split": {1},
    "CumSum": {1},
    "CumProd": {1},
    "Range": {0, 1, 2},
    "ReduceSum": {1},
    "ReduceMean": {1},
    "ReduceMax": {1},
    "ReduceMin": {1},
    "ReduceProd": {1},
    "ReduceL1": {1},
    "ReduceL2": {1},
    "ReduceLogSum": {1},
    "ReduceLogSumExp": {1},
    "ReduceSumSquare": {1},
    "CenterCropPad": {1, 2},
    "Trilu": {1},
    "MaxUnpool": {2},
    "NonMaxSuppression": {2, 3, 4},
    "Col2Im": {1, 2},
    "DFT": {1, 2},
    "STFT": {1, 2, 3},
    "BlackmanWindow": {0},
    "HannWindow": {0},
    "HammingWindow": {0},
    "MelWeightMatrix": {0, 1, 2},
    "SplitToSequence": {1},
    "AffineGrid": {1},
}
# Ops through which a value reaching a shape position is computed from its inputs (expanded
# functions compute pads, slice starts and trip counts this way); an If computes its outputs
# from the values its branches read.
_SHAPE_ARITHMETIC = {
    *("Add", "Sub", "Mul", "Div", "Max", "Min", "Concat", "Cast", "Neg", "Abs"),
    *("Ceil", "Floor", "Round", "Relu", "If"),
}


@dataclass(frozen=True)
class Case:
    name: str
    dir: Path

    @property
    def model_path(self) -> Path:
        return self.dir / "model.onnx"


def generate(data_dir: Path) -> None:
    """Write every node test case (model + input/output protobufs) under data_dir/node."""
    import onnx.backend.test.case.node as node_cases
    import onnx.backend.test.cmd_tools as cmd_tools

    # generate_data writes whatever its collector returns: point it at the node tests.
    cmd_tools.model_test.collect_testcases = node_cases.collect_testcases
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            cmd_tools.generate_data(argparse.Namespace(output=str(data_dir)))


def list_cases(data_dir: Path, pattern: str | None = None) -> list[Case]:
    import fnmatch

    root = data_dir / "node"
    names = sorted(p.name for p in root.iterdir() if (p / "model.onnx").is_file())
    if pattern:  # comma-separated globs
        globs = pattern.split(",")
        names = [n for n in names if any(fnmatch.fnmatch(n, g) for g in globs)]
    return [Case(n, root / n) for n in names]


def load_data_sets(case: Case, model) -> list[tuple[dict, list]]:
    """[(inputs by name, expected outputs in graph order)] for each test_data_set_N."""
    sets = []
    for ds in sorted(case.dir.glob("test_data_set_*")):
        inputs = {
            vi.name: _read_value(ds / f"input_{i}.pb", vi)
            for i, vi in enumerate(model.graph.input)
            if (ds / f"input_{i}.pb").exists()
        }
        outputs = [
            _read_value(ds / f"output_{i}.pb", vi) for i, vi in enumerate(model.graph.output)
        ]
        sets.append((inputs, outputs))
    return sets


def _read_value(path: Path, value_info):
    import onnx
    from onnx import numpy_helper

    data = path.read_bytes()
    kind = value_info.type.WhichOneof("value")
    if kind == "sequence_type":
        proto = onnx.SequenceProto.FromString(data)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto.FromString(data)
        return numpy_helper.to_optional(proto)
    if kind == "map_type":
        return numpy_helper.to_dict(onnx.MapProto.FromString(data))
    return numpy_helper.to_array(onnx.TensorProto.FromString(data))


def expanded_base(case: Case):
    """The model of the case an `_expanded` case expands (same inputs, one node), or None."""
    if "_expanded" not in case.name:
        return None
    import onnx

    base = case.dir.parent / case.name.split("_expanded")[0] / "model.onnx"
    return onnx.load(str(base), load_external_data=False) if base.is_file() else None


def main_op(case: Case, model) -> str:
    """The operator a case tests: its single node, or the op of the case it expands."""
    if len(model.graph.node) == 1:
        return model.graph.node[0].op_type
    base = expanded_base(case)
    if base is not None and len(base.graph.node) == 1:
        return base.graph.node[0].op_type
    return model.graph.node[-1].op_type if model.graph.node else "?"


def bindable_inputs(model) -> list[str]:
    """The tensor graph inputs whose values reach a SHAPE_POSITIONS position, directly or
    through _SHAPE_ARITHMETIC (one backward walk: nodes are in topological order)."""
    from compiler.onnx_fold import node_reads

    shape_values = set()
    for node in reversed(model.graph.node):
        shape_values.update(
            node.input[i] for i in SHAPE_POSITIONS.get(node.op_type, ()) if i < len(node.input)
        )
        if node.op_type in _SHAPE_ARITHMETIC and shape_values.intersection(node.output):
            shape_values |= node_reads(node)  # an If's: what its branches read too
    return sorted(
        vi.name
        for vi in model.graph.input
        if vi.name in shape_values and vi.type.HasField("tensor_type")
    )


def compare_each(got: list, expected: list, count: str, item: str) -> str | None:
    """compare() item by item: None, or the first difference (`count` formats a length
    mismatch, `item` names the position)."""
    if len(got) != len(expected):
        return f"{count.format(len(got))}, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        reason = compare(g, e)
        if reason:
            return f"{item} {i}: {reason}"
    return None


def compare(got, expected) -> str | None:
    """None when `got` matches `expected`; otherwise a one-line reason."""
    if isinstance(expected, list) or isinstance(got, list):  # a sequence output
        if not isinstance(got, list | tuple) or not isinstance(expected, list):
            return f"got {type(got).__name__}, expected a sequence"
        return compare_each(list(got), expected, "sequence of {} tensors", "sequence item")
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}"
    if expected.dtype.kind in "biuUSO" or expected.size == 0:
        bad = got != expected
    else:
        g = got.astype(np.float64)
        e = expected.astype(np.float64)
        with np.errstate(invalid="ignore"):
            close = np.isclose(g, e, rtol=RTOL, atol=ATOL, equal_nan=True)
        bad = ~close
    count = int(np.count_nonzero(bad))
    if not count:
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return (
        f"{count} of {expected.size} elements differ; at {index} got {got[index]!r}, "
        f"expected {expected[index]!r}"
    )
