"""Frontend stage: read and check an ONNX model, pin its shapes, import it into Relax."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ModelError, UsageError

MIN_OPSET = 7
STANDARD_DOMAINS = ("", "ai.onnx")
# Exceptions that mean a bug in mlc's own code: never reported as a problem with the model.
_OUR_BUGS = (AttributeError, NameError, ImportError)


@dataclass(frozen=True)
class TensorInfo:
    """An input or output: shape entries are ints (fixed) or strings (symbolic dims)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    items: tuple[TensorInfo, ...] | None = None  # a sequence output: one entry per tensor
    sample_range: tuple[int, int] | None = None  # valid random values [low, high): onnx_ranges

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.sample_range is not None:
            data["sample_range"] = list(self.sample_range)
        if self.items is not None:
            data["items"] = [t.to_json() for t in self.items]
        return data


@dataclass(frozen=True)
class UnsupportedNode:
    op_type: str
    name: str
    domain: str


@dataclass(frozen=True)
class ModelReport:
    """What `mlc inspect` shows, computed before any compile time is spent."""

    path: str
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_histogram: dict[str, int]
    dynamic_dims: dict[str, tuple[str, ...]]  # dim name -> ("input[axis]", ...)
    unsupported: tuple[UnsupportedNode, ...]
    weight_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ir_version": self.ir_version,
            "producer": self.producer,
            "opsets": self.opsets,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "op_histogram": self.op_histogram,
            "dynamic_dims": {k: list(v) for k, v in self.dynamic_dims.items()},
            "unsupported": [vars(n) for n in self.unsupported],
            "weight_bytes": self.weight_bytes,
        }


@dataclass(frozen=True)
class ImportedModel:
    """The frontend's product: a Relax module whose `main` takes the model's inputs."""

    mod: Any  # tvm.IRModule
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    dynamic_dims: dict[str, tuple[str, ...]]  # symbolic dim -> ("input[axis]", ...)


def read_onnx(path: str | Path):
    """Parse an ONNX file, turning every way it can be broken into a one-line ModelError."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise ModelError(f"model path {str(path)!r} is not a file")
    try:
        model = onnx.load(str(path))
    except DecodeError as exc:
        raise ModelError(
            f"{str(path)!r} is not a valid ONNX model (protobuf parse failed: {exc}); "
            "the file may be truncated or not ONNX at all"
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot read ONNX model {str(path)!r}: {_first_line(exc)}") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{str(path)!r} is not an ONNX model: it has no graph")
    name_placeholder_dims(model)
    return model


def is_placeholder_dim(name: str) -> bool:
    """A dim_param that names no dim: empty, "?" (Paddle2ONNX), "-1", "None". Exporters write
    these for every unknown size, so two axes with "?" are not the same dim."""
    return not re.search(r"[A-Za-z]", name) or name in ("None", "unk", "unknown")


def name_placeholder_dims(model) -> None:
    """Give each placeholder dim of an input its own name (`x_dim2`), as an unnamed dim gets;
    in outputs and value_info a placeholder becomes an unknown size. In place."""
    graph = model.graph
    for value in graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and is_placeholder_dim(dim.dim_param):
                dim.dim_param = f"{_identifier(value.name)}_dim{axis}"
    for value in [*graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and is_placeholder_dim(dim.dim_param):
                dim.ClearField("dim_param")


def validate(model, path: str | Path) -> None:
    """onnx's own checker; run after `check_convertible`, which names unknown ops better."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises ValidationError and C++ errors alike
        raise ModelError(
            f"{str(path)!r} is not a valid ONNX model: {_first_line(exc)}",
            hint="the file may be truncated or damaged; re-export it",
        ) from None


def inspect_model(model, path: str = "") -> ModelReport:
    """Summarise a model and find every node the importer cannot convert."""
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = tuple(_tensor_info(v) for v in graph.input if v.name not in init_names)
    outputs = tuple(_tensor_info(v) for v in graph.output)
    dynamic: dict[str, list[str]] = {}
    for info in inputs:
        for axis, dim in enumerate(info.shape):
            if isinstance(dim, str):
                dynamic.setdefault(dim, []).append(f"{info.name}[{axis}]")
    nodes = list(_all_nodes(graph))
    return ModelReport(
        path=path,
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        inputs=inputs,
        outputs=outputs,
        op_histogram=dict(Counter(n.op_type for n in nodes).most_common()),
        dynamic_dims={k: tuple(v) for k, v in dynamic.items()},
        unsupported=tuple(_unsupported(nodes)),
        weight_bytes=sum(_nbytes(t) for t in graph.initializer),
    )


def check_convertible(report: ModelReport) -> None:
    """Stop before compiling when the opset or any operator cannot be converted."""
    import onnx

    latest = onnx.defs.onnx_opset_version()
    opset = report.opsets.get("ai.onnx")
    only_other_domains = opset is None and bool(report.opsets)  # e.g. only ai.onnx.ml ops
    if not only_other_domains and (opset is None or not MIN_OPSET <= opset <= latest):
        raise ModelError(
            f"ONNX opset {opset} is not supported: mlc compiles ai.onnx opsets {MIN_OPSET} "
            f"to {latest}",
            hint="upgrade the model with onnx.version_converter.convert_version(model, 17)",
        )
    if report.unsupported:
        listing = "; ".join(
            f"{n.op_type} (node {n.name or '<unnamed>'!r}"
            + (f", domain {n.domain!r})" if n.domain not in STANDARD_DOMAINS else ")")
            for n in report.unsupported
        )
        kinds = sorted({n.op_type for n in report.unsupported})
        hint = "`mlc inspect MODEL` lists them; replace them or export with a different opset"
        if any(n.domain == "com.microsoft" for n in report.unsupported):
            hint = (
                "com.microsoft operators are onnxruntime's contrib ops, written by its graph "
                "optimisers (a session's optimized_model_filepath, onnxruntime.transformers."
                "optimizer, optimum's --optimize) or by QOperator quantisation: export the model "
                "again without onnxruntime's optimisations, or quantise with QuantFormat.QDQ"
            )
        raise ModelError(
            f"{len(report.unsupported)} node(s) use operators mlc cannot convert "
            f"({', '.join(kinds)}): {listing}",
            hint=hint,
        )


def pin_shapes(
    model, input_shapes: dict[str, tuple], dims: dict[str, int], ranges: dict | None = None
):
    """Fix input shapes and named dims in `model`, ORT-style; modifies and returns `model`
    (a copy of a large model's weights would cost its size again in memory). Dims named in
    `ranges` (`--dim NAME=LO..HI`) are checked and stay symbolic."""
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = {v.name: v for v in graph.input if v.name not in init_names}
    for name in input_shapes:
        if name not in inputs:
            raise UsageError(
                f"--input-shape names input {name!r}, which the model does not have; "
                f"its inputs are: {', '.join(inputs)}"
            )
    seen_dims = {d.dim_param for v in inputs.values() for d in v.type.tensor_type.shape.dim}
    for name in [*dims, *(ranges or {})]:
        if name not in seen_dims:
            named = sorted(d for d in seen_dims if d)
            raise UsageError(
                f"--dim names {name!r}, which is not a dimension of any input; "
                f"the model's named dims are: {', '.join(named) or 'none'}"
            )
    dims = {**dims, **_dims_named_by_input_shapes(inputs, input_shapes, dims)}
    for name, value in inputs.items():
        shape = value.type.tensor_type.shape
        if name in input_shapes:
            _pin_input(name, shape, input_shapes[name])
        for axis, dim in enumerate(shape.dim):
            if dim.dim_param in dims:
                dim.dim_value = dims[dim.dim_param]
            elif not dim.dim_param and dim.dim_value <= 0:
                dim.dim_param = f"{_identifier(name)}_dim{axis}"  # unnamed dims get a name
    left = {d.dim_param for v in inputs.values() for d in v.type.tensor_type.shape.dim}
    for name in ranges or {}:
        if name not in left:
            raise UsageError(
                f"--dim {name}=MIN..MAX declares a range for dim {name!r}, which --input-shape "
                "fixes; give one or the other"
            )
    return model


def _dims_named_by_input_shapes(inputs, input_shapes: dict, dims: dict) -> dict[str, int]:
    """The named dims (`batch`, say) that --input-shape fixes, so that every input with that
    dim gets the same size; a size that contradicts --dim or another --input-shape is an
    error, not a silent choice of one."""
    named: dict[str, int] = {}
    said = {dim: f"--dim {dim}={value}" for dim, value in dims.items()}
    for name, wanted in input_shapes.items():
        shape = inputs[name].type.tensor_type.shape
        flag = f"--input-shape {name}:{'x'.join(map(str, wanted))}"
        if len(shape.dim) != len(wanted):
            raise UsageError(
                f"{flag} has {len(wanted)} dims, but input {name!r} has {len(shape.dim)}"
            )
        for axis, (dim, want) in enumerate(zip(shape.dim, wanted)):
            if not dim.dim_param:
                continue
            known = dims.get(dim.dim_param, named.get(dim.dim_param))
            if known is not None and known != want:
                raise UsageError(
                    f"{flag} gives {want} for axis {axis} of input {name!r}, the dim "
                    f"{dim.dim_param!r}, which {said[dim.dim_param]} sets to {known}"
                )
            named[dim.dim_param] = want
            said.setdefault(dim.dim_param, flag)
    return named


def _pin_input(name: str, shape, wanted: tuple[int, ...]) -> None:
    for axis, (dim, want) in enumerate(zip(shape.dim, wanted)):
        if dim.dim_value > 0 and dim.dim_value != want:
            raise UsageError(
                f"--input-shape gives {want} for axis {axis} of input {name!r}, which the model "
                f"fixes at {dim.dim_value}"
            )
        dim.dim_value = want


def import_model(model, fp16_in_fp32: bool = False) -> ImportedModel:
    """Convert a checked, shape-pinned ONNX model into a Relax module; with `fp16_in_fp32`
    (a CPU without fp16 arithmetic) an fp16 model computes in fp32 (onnx_fp16.py)."""
    from tvm.relax.frontend.onnx import from_onnx

    from . import converters
    from .onnx_fp16 import computes_in_fp16, upcast_fp16
    from .onnx_prepare import prepare
    from .onnx_ranges import sample_ranges

    converters.install()
    if fp16_in_fp32 and computes_in_fp16(model):
        upcast_fp16(model)
    model = prepare(model)
    report = inspect_model(model)
    printed = io.StringIO()  # the importer prints the operator it failed on to stdout
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore")
            mod = from_onnx(model, keep_params_in_input=False)
    except _OUR_BUGS as exc:
        if not _raised_in_tvm_importer(exc):
            raise
        _raise_import_error(exc, report, printed.getvalue(), model)
    except Exception as exc:  # the importer raises anything from ValueError to TVMError
        _raise_import_error(exc, report, printed.getvalue(), model)
    outputs = _output_infos(mod["main"], report.outputs)
    ranges = sample_ranges(model)
    inputs = tuple(replace(t, sample_range=ranges.get(t.name)) for t in report.inputs)
    return ImportedModel(mod=mod, inputs=inputs, outputs=outputs, dynamic_dims=report.dynamic_dims)


def symbolic_dims_error(stage: str, exc: Exception, dims: dict[str, tuple[str, ...]]):
    """The error for a model that fails to be `stage` ("imported", "compiled") with dims left
    symbolic: it names each dim and where it appears, and shows the flags that pin them."""
    where = ", ".join(f"{d} ({', '.join(at)})" for d, at in dims.items())
    flags = " ".join(f"--dim {d}=VALUE" for d in dims)
    return ModelError(
        f"the model cannot be {stage} with symbolic dims {where}: {_first_line(exc)}",
        hint=f"pin them: {flags} (or --input-shape NAME:1x3x224x224)",
    )


def _raised_in_tvm_importer(exc: BaseException) -> bool:
    """TVM's converters raise AttributeError where they meet a run-time value in a place they
    need a constant (e.g. Pad's constant_value): that is a limit of the importer, not our bug."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return "/tvm/relax/frontend/" in tb.tb_frame.f_code.co_filename.replace("\\", "/")


def _raise_import_error(exc: Exception, report: ModelReport, printed: str, model=None):
    if report.dynamic_dims:
        raise symbolic_dims_error("imported", exc, report.dynamic_dims) from None
    what = f"{type(exc).__name__}: " if isinstance(exc, _OUR_BUGS) else ""
    op = re.search(r"Error converting operator (\w+)", printed)
    where = f" on a {op.group(1)} node" if op else ""
    hint = _run_time_values_hint(model, op.group(1) if op else None, str(exc)) if model else None
    raise ModelError(f"the ONNX importer failed{where}: {what}{_first_line(exc)}", hint) from None


def _run_time_values_hint(model, op_type: str | None, message: str) -> str | None:
    """Where the importer met a run-time value it needs as a constant: which input's value
    it comes from (and the --bind that freezes it), or which data-dependent op decided it.
    The node is the one the message names ("Node /inner/ReduceMin cannot ..."), else the
    first of the failing operator's kind."""
    from .onnx_shapes import compile_time_values

    found = compile_time_values(model.graph)
    named = re.search(r"Node (\S+)", message)
    matching = [f for f in found if named and f[0].name == named.group(1)]
    matching = (
        matching
        or [f for f in found if f[0].op_type == op_type]
        or [f for f in found if f[0].op_type in ("If", "Loop") and any(f[2].get(i) for i in f[1])]
    )
    if not matching:
        return None
    node, reads, per_input = matching[0]
    needed = [per_input[i] for i in reads if per_input.get(i)] or list(per_input.values())
    sources = sorted(frozenset().union(*needed))
    label = f"{node.op_type} node {node.name or '<unnamed>'!r}"
    decided = [s for s in sources if s[0] == "node"]
    if decided:
        _kind, op, name = decided[0]
        return (
            f"{label} reads a size that {op} node {name!r} decides at run time (how many "
            "elements it keeps); mlc needs it at compile time: export the model without "
            "that data-dependent post-processing and run it on the host"
        )
    names = [s[1] for s in sources]
    what = "branches on" if node.op_type == "If" else "reads"
    binds = " ".join(f"--bind {n}={_identifier(n)}.npy" for n in names)
    return (
        f"{label} {what} the value of input {', '.join(map(repr, names))}, known only at run "
        f"time; mlc needs it at compile time: freeze it with {binds} (an .npy of the value "
        "you will run with)"
    )


def _output_infos(func, onnx_outputs: tuple[TensorInfo, ...]) -> tuple[TensorInfo, ...]:
    """Output shapes and dtypes as the compiled function returns them."""
    from tvm.ir import TupleType

    ret = func.ret_ty
    fields = [ret] if len(onnx_outputs) == 1 else ret.fields
    infos = []
    for onnx_out, field in zip(onnx_outputs, fields):
        if isinstance(field, TupleType):  # a sequence output: the loader returns a list
            items = tuple(
                _field_info(f"{onnx_out.name}_{i}", f) for i, f in enumerate(field.fields)
            )
            dtype = items[0].dtype if items else onnx_out.dtype
            infos.append(TensorInfo(onnx_out.name, (), dtype, items))
        else:
            infos.append(_field_info(onnx_out.name, field))
    return tuple(infos)


def _field_info(name: str, field) -> TensorInfo:
    shape_expr = getattr(field, "shape", None)
    ndim = getattr(field, "ndim", -1)
    if shape_expr is not None and hasattr(shape_expr, "values"):
        shape = tuple(_dim(d) for d in shape_expr.values)
    elif ndim >= 0:  # data-dependent sizes (NonZero, Range): known only when it runs
        shape = tuple(f"{_identifier(name)}_dim{axis}" for axis in range(ndim))
    else:
        raise ModelError(f"output {name!r} is not a tensor of known rank")
    return TensorInfo(name, shape, str(field.dtype))


def _dim(expr) -> int | str:
    value = getattr(expr, "value", None)  # IntImm for a fixed size, a Var or expression if not
    return int(value) if isinstance(value, int) else str(expr)


def _tensor_info(value) -> TensorInfo:
    import onnx

    ttype = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name if ttype.elem_type else "?"
    shape: list[int | str] = []
    for axis, dim in enumerate(ttype.shape.dim):
        if dim.dim_value > 0:
            shape.append(dim.dim_value)
        else:
            shape.append(dim.dim_param or f"{_identifier(value.name)}_dim{axis}")
    return TensorInfo(value.name, tuple(shape), dtype)


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _unsupported(nodes) -> list[UnsupportedNode]:
    from .converters import supports

    return [
        UnsupportedNode(n.op_type, n.name, n.domain)
        for n in nodes
        if not supports(n.op_type, n.domain)
    ]


def _nbytes(tensor) -> int:
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return next((int(e.value) for e in tensor.external_data if e.key == "length"), 0)
    count = 1
    for d in tensor.dims:
        count *= d
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


# How TVM prints a constant inside a message: a metadata reference, then a comment line.
_METADATA = re.compile(r'metadata\["[\w.]+"\]\[\d+\]\s*# Metadata omitted\.[^\n]*?show it\.')


def _first_line(exc: BaseException) -> str:
    text = _METADATA.sub("a constant", str(exc))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # TVM errors put the useful sentence last, after a traceback of C++ frames.
    for line in reversed(lines):
        if not line.startswith(("File ", "at ", "  ", "#")) and "Traceback" not in line:
            return line[:400]
    return type(exc).__name__
