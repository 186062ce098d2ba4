"""ONNX Scan (opset 9+), unrolled on the ONNX graph like Loop (compiler/onnx_loops.py).

The trip count is the length of the scan inputs along their scan axes, so those lengths must
be static (after constant folding, shape inference and --input-shape/--dim pinning). Each
iteration takes one slice of every scan input (Gather with a constant index, which drops the
axis), runs a renamed copy of the body, and the per-iteration scan outputs are stacked along
their output axes (in reverse order for a reverse direction).
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError
from .onnx_loops import MAX_TRIPS, copy_body, replace_nodes, stack


def unroll_scans(model, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Replace every top-level Scan node by copies of its body; True if any was unrolled.
    `shapes` maps value names to static shapes (onnx_fold's shape inference)."""
    from .onnx_fold import onnx_opset

    opset = onnx_opset(model, 13)

    def unroll(node, tag: str):
        if opset < 9:
            return _unroll_batched(node, tag, shapes)
        return _ScanUnroller(node, tag, opset >= 13).unroll(shapes)

    return replace_nodes(model.graph, "Scan", unroll)


class _ScanUnroller:
    def __init__(self, node, tag: str, axes_as_input: bool):
        self.node = node
        self.tag = tag
        self.axes_as_input = axes_as_input
        attrs = {a.name: a for a in node.attribute}
        self.body = attrs["body"].g
        self.n_scan = attrs["num_scan_inputs"].i
        self.n_state = len(node.input) - self.n_scan
        self.n_out = len(self.body.output) - self.n_state
        self.in_axes = _ints(attrs, "scan_input_axes", self.n_scan, 0)
        self.in_dirs = _ints(attrs, "scan_input_directions", self.n_scan, 0)
        self.out_axes = _ints(attrs, "scan_output_axes", self.n_out, 0)
        self.out_dirs = _ints(attrs, "scan_output_directions", self.n_out, 0)

    def trips(self, shapes) -> int:
        name = self.node.name or "<unnamed>"
        lengths = set()
        for value, axis in zip(self.node.input[self.n_state :], self.in_axes):
            shape = shapes.get(value)
            if shape is None:
                raise ModelError(
                    f"Scan {name!r} scans {value!r}, whose shape is not static: mlc unrolls "
                    "Scan and needs the scan length at compile time",
                    hint="pin the input shapes with --input-shape or --dim NAME=VALUE",
                )
            lengths.add(shape[axis])
        if len(lengths) != 1:
            raise ModelError(f"Scan {name!r} scans inputs of different lengths {sorted(lengths)}")
        trips = lengths.pop()
        if not 0 < trips <= MAX_TRIPS:
            raise ModelError(
                f"Scan {name!r} runs {trips} times: mlc unrolls scans of 1 to {MAX_TRIPS} steps"
            )
        return trips

    def unroll(self, shapes):
        from onnx import helper, numpy_helper

        body, node = self.body, self.node
        trips = self.trips(shapes)
        states = list(node.input[: self.n_state])
        scans = [node.input[self.n_state + j] for j in range(self.n_scan)]
        parts: list[list[str]] = [[] for _ in range(self.n_out)]
        nodes, inits = [], []
        for it in range(trips):
            rename, body_nodes, body_inits, outs = copy_body(body, f"__scan{self.tag}_it{it}")
            for value, state in zip(body.input[: self.n_state], states):
                nodes.append(helper.make_node("Identity", [state], [rename[value.name]]))
            for j, value in enumerate(body.input[self.n_state :]):
                index = it if self.in_dirs[j] == 0 else trips - 1 - it
                index_name = f"{rename[value.name]}__index"
                inits.append(numpy_helper.from_array(np.array(index, np.int64), index_name))
                nodes.append(
                    helper.make_node(
                        "Gather", [scans[j], index_name], [rename[value.name]], axis=self.in_axes[j]
                    )
                )
            inits.extend(body_inits)
            nodes.extend(body_nodes)
            states = outs[: self.n_state]
            for k, name in enumerate(outs[self.n_state :]):
                parts[k].append(name)
        for out, final in zip(node.output[: self.n_state], states):
            if out:
                nodes.append(helper.make_node("Identity", [final], [out]))
        for k, out in enumerate(node.output[self.n_state :]):
            if out:
                order = parts[k] if self.out_dirs[k] == 0 else parts[k][::-1]
                new_nodes, new_inits = stack(order, out, self.out_axes[k], self.axes_as_input)
                nodes.extend(new_nodes)
                inits.extend(new_inits)
        return nodes, inits


def _ints(attrs, name: str, count: int, default: int) -> list[int]:
    values = list(attrs[name].ints) if name in attrs else []
    return values or [default] * count


def _unroll_batched(node, tag: str, shapes):
    """Scan-8: every input has a leading batch axis and the body sees one batch entry; each
    entry is unrolled as a Scan-9 over its slices, and the results stacked on axis 0."""
    from onnx import helper, numpy_helper

    if node.input[0]:
        raise ModelError(
            f"Scan {node.name or '<unnamed>'!r} with sequence_lens is not supported: mlc "
            "unrolls scans of one static length"
        )
    attrs = {a.name: a for a in node.attribute}
    values = list(node.input[1:])
    batch = shapes.get(values[-1], (None,))[0]
    if batch is None:
        raise ModelError(f"Scan {node.name or '<unnamed>'!r} needs a static batch size")
    nodes, inits = [], []
    outs: list[list[str]] = [[] for _ in node.output]
    for b in range(batch):
        index = f"{node.output[0]}__scan{tag}_b{b}"
        inits.append(numpy_helper.from_array(np.array(b, np.int64), index))
        views = [f"{v}__b{b}" for v in values]
        for value, view in zip(values, views):
            nodes.append(helper.make_node("Gather", [value, index], [view], axis=0))
            if value in shapes:
                shapes[view] = shapes[value][1:]
        names = [f"{o}__b{b}" if o else "" for o in node.output]
        step = helper.make_node(
            "Scan", views, names, body=attrs["body"].g, num_scan_inputs=attrs["num_scan_inputs"].i
        )
        if "directions" in attrs:
            step.attribute.append(
                helper.make_attribute("scan_input_directions", list(attrs["directions"].ints))
            )
        more_nodes, more_inits = _ScanUnroller(step, f"{tag}b{b}", False).unroll(shapes)
        nodes.extend(more_nodes)
        inits.extend(more_inits)
        for k, name in enumerate(names):
            outs[k].append(name)
    for out, parts in zip(node.output, outs):
        if out:
            nodes.extend(stack(parts, out, 0, False)[0])
    return nodes, inits
