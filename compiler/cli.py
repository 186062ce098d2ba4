"""The `mlc` command line: parse and validate options, call the API, print results."""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from functools import wraps
from pathlib import Path

import click

from . import __version__
from .errors import EXIT_CHECK, EXIT_INTERNAL, MlcError
from .native_log import native_logs_hidden
from .options import PRECISIONS


def _fail(message: str, hint: str | None, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def handle_errors(fn):
    """Turn every failure into `error: …` and an exit code; tracebacks only with MLC_DEBUG=1."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with native_logs_hidden():
                return fn(*args, **kwargs)
        except MlcError as exc:
            if os.environ.get("MLC_DEBUG"):
                traceback.print_exception(exc)
            _fail(exc.message, exc.hint, exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", None, 130)
        except BrokenPipeError:  # `mlc ... | head`: the reader is gone; exit as SIGPIPE would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:  # the last line of defence: no traceback for users
            if os.environ.get("MLC_DEBUG"):
                traceback.print_exception(exc)
            _fail(
                f"internal error: {type(exc).__name__}: {exc}",
                "rerun with MLC_DEBUG=1 for the traceback and report it",
                EXIT_INTERNAL,
            )

    return wrapper


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    return lambda msg: click.echo(f"… {msg}", err=True)


def _parse_shape(_ctx, _param, values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in values:
        match = re.fullmatch(r"(.+):(\d+(?:x\d+)*)", value)
        if not match or any(int(d) < 1 for d in match.group(2).split("x")):
            raise click.BadParameter(
                f"{value!r} is not NAME:DIMS, expected e.g. input:1x3x224x224 (positive sizes)"
            )
        shapes[match.group(1)] = tuple(int(d) for d in match.group(2).split("x"))
    return shapes


def _parse_dims(_ctx, _param, values: tuple[str, ...]) -> dict[str, int]:
    dims = {}
    for value in values:
        match = re.fullmatch(r"([^=]+)=(\d+)", value)
        if re.fullmatch(r"[^=]+=\d+\.\.\d+", value):  # valid for compile, not here
            raise click.BadParameter(
                f"{value!r} is a range; this command needs one size, e.g. "
                f"{value.split('=')[0]}=1 (ranges are for `mlc compile`)"
            )
        if not match:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE, expected e.g. batch=1")
        if int(match.group(2)) < 1:
            raise click.BadParameter(f"{value!r} needs a size of at least 1, e.g. batch=1")
        dims[match.group(1)] = int(match.group(2))
    return dims


def _parse_dim_specs(_ctx, _param, values: tuple[str, ...]) -> dict[str, int | tuple[int, int]]:
    """`NAME=VALUE` pins a dim; `NAME=MIN..MAX` keeps it symbolic within a range."""
    dims: dict[str, int | tuple[int, int]] = {}
    for value in values:
        match = re.fullmatch(r"([^=]+)=(\d+)(?:\.\.(\d+))?", value)
        if not match:
            raise click.BadParameter(
                f"{value!r} is not NAME=VALUE or NAME=MIN..MAX, expected e.g. batch=1 or "
                "batch=1..64"
            )
        low, high = int(match.group(2)), match.group(3)
        if low < 1 or (high is not None and int(high) < low):
            raise click.BadParameter(f"{value!r} needs sizes of at least 1, and MIN <= MAX")
        dims[match.group(1)] = low if high is None else (low, int(high))
    return dims


_PIPELINE_OPTIONS = (
    click.option(
        "--opt-level",
        type=click.IntRange(0, 3),
        default=3,
        show_default=True,
        help="0: only the passes lowering needs; 1: + constant folding, dead-code elimination; "
        "2: + batch-norm folding, CSE, layout conversion; 3: + operator fusion.",
    ),
    click.option(
        "--disable-pass",
        "disabled_passes",
        multiple=True,
        metavar="NAME",
        help="Skip a pass by name, e.g. FuseOps (a wrong name lists the valid ones). Repeatable.",
    ),
    click.option(
        "--keep-fp32",
        multiple=True,
        metavar="OP",
        help="With --precision fp16/bf16: keep this Relax operator in fp32, e.g. nn.softmax. "
        "Repeatable.",
    ),
    click.option(
        "--dump-ir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Write the IR after every pass to DIR/NNN-<pass>.py.",
    ),
    click.option(
        "--time-passes",
        is_flag=True,
        help="Print the time of each pass on stderr (with --json: in the JSON).",
    ),
)


def _pipeline_options(fn):
    for option in reversed(_PIPELINE_OPTIONS):
        fn = option(fn)
    return fn


_NUMBER = r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


def _parse_ranges(_ctx, _param, values: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """`--input-range NAME=LO..HI`: random values for that input, integers LO to HI inclusive
    (floats uniform in [LO, HI))."""
    ranges = {}
    for value in values:
        match = re.fullmatch(rf"([^=]+)=({_NUMBER})\.\.({_NUMBER})", value)
        if not match:
            raise click.BadParameter(
                f"{value!r} is not NAME=LO..HI, expected e.g. input_ids=0..999"
            )
        low, high = float(match.group(2)), float(match.group(3))
        if high < low:
            raise click.BadParameter(f"{value!r}: HI {match.group(3)} is below LO {match.group(2)}")
        ranges[match.group(1)] = (low, high)
    return ranges


_input_range_option = click.option(
    "--input-range",
    "input_ranges",
    multiple=True,
    callback=_parse_ranges,
    metavar="NAME=LO..HI",
    help="Random values for an input: integers LO..HI inclusive, floats in [LO, HI). Default: "
    "token ids within the table they index, masks of ones, else normal floats and ints 0..3.",
)


def _dims_option(help_text: str):
    return click.option(
        "--dim", "dims", multiple=True, callback=_parse_dims, metavar="NAME=VALUE", help=help_text
    )


def _json_option(help_text: str):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


_target_option = click.option(
    "--target",
    default="x86",
    show_default=True,
    help="Target preset name (see `mlc targets`) or path of a preset .toml file.",
)
_input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    callback=_parse_shape,
    metavar="NAME:DIMS",
    help=(
        "Pin an input's shape, e.g. x:1x3x224x224; a named dim it fixes is fixed for every "
        "input. Repeatable."
    ),
)


def _precision_option(help_text: str):
    return click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="fp32",
        show_default=True,
        help=help_text,
    )


_threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Worker threads (default: TVM_NUM_THREADS, else one per physical core).",
)


def _target_detail(target: dict) -> str:
    cuda = target.get("cuda")
    if not cuda:
        return target["tvm_target"].get("mcpu", target["tvm_target"]["kind"])
    why = {"default": "the default: no local GPU", "local GPU": "this host's GPU"}
    code = ", ".join(cuda["sass"]) + "".join(f" + PTX {p}" for p in cuda["ptx"])
    return f"{code}; {why.get(cuda['arches_from'], 'from the preset')}"


def _fmt_tensor(t: dict) -> str:
    if "items" in t:  # a sequence output
        return f"{t['name']} sequence of {len(t['items'])} tensors"
    return f"{t['name']} {t['dtype']}[{', '.join(str(d) for d in t['shape'])}]"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _parse_bind_specs(_ctx, _param, specs: tuple[str, ...]) -> dict[str, str]:
    bind: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{spec!r} is not NAME=FILE.npy", param_hint="--bind")
        if name in bind:
            raise click.BadParameter(f"input {name!r} is bound twice", param_hint="--bind")
        bind[name] = path
    return bind


class _OneLineUsageError(click.UsageError):
    """click's usage error shown as mlc shows every error: one `error: …` line on stderr
    (click prints the usage, a "Try --help" line and then the error)."""

    def show(self, file=None) -> None:
        words = ["mlc", *(self.ctx.command_path.split()[1:] if self.ctx else [])]
        click.echo(f"error: {self.format_message()} (see `{' '.join(words)} --help`)", err=True)


class _Commands(click.Group):
    """mlc's command group: bad options and arguments of any command are one-line errors."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage_errors():
            return super().invoke(ctx)


class _one_line_usage_errors:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, _tb):
        if isinstance(exc, click.UsageError) and not isinstance(exc, _OneLineUsageError):
            error = _OneLineUsageError(exc.format_message(), exc.ctx)
            error.exit_code = exc.exit_code
            raise error from None
        return False


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlc")
def main():
    """mlc: compile ONNX models into deployable bundles for CPUs and GPUs."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Bundle directory to create.",
)
@_target_option
@_input_shape_option
@click.option(
    "--dim",
    "dims",
    multiple=True,
    callback=_parse_dim_specs,
    metavar="NAME=VALUE|NAME=MIN..MAX",
    help="Pin a named symbolic dimension (batch=1), or keep it symbolic within a range "
    "(batch=1..64; the loader refuses other sizes). Repeatable.",
)
@click.option(
    "--bind",
    multiple=True,
    callback=_parse_bind_specs,
    metavar="NAME=FILE.npy",
    help="Freeze input NAME to the array in FILE.npy: it becomes a constant of the model "
    "(e.g. a shape or axes input) and the bundle no longer takes it. Repeatable.",
)
@_precision_option("fp16/bf16: matmul/conv in 16 bits with fp32 accumulation; I/O stays fp32.")
@_pipeline_options
@click.option(
    "--db",
    type=click.Path(file_okay=False, path_type=Path),
    help="Tuning database (from `mlc tune`): its records win over default schedules.",
)
@click.option(
    "--db-strict",
    is_flag=True,
    help="With --db: fail (exit 7) if a kernel worth tuning has no record, listing them.",
)
@click.option(
    "--tune",
    "tune_trials",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --db: first tune with N trials (as `mlc tune`; tuned kernels are skipped).",
)
@click.option("--force", is_flag=True, help="Replace the output directory if it is a bundle.")
@_json_option("Print a JSON summary on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@handle_errors
def compile(
    model,
    out_dir,
    target,
    input_shapes,
    dims,
    bind,
    precision,
    db,
    db_strict,
    tune_trials,
    force,
    as_json,
    quiet,
    **pipeline,
):
    """Compile MODEL (.onnx) into a bundle directory."""
    from .api import compile_model
    from .options import CompileOptions

    options = CompileOptions(
        target=target,
        input_shapes=input_shapes,
        dims={k: v for k, v in dims.items() if isinstance(v, int)},
        dim_ranges={k: v for k, v in dims.items() if isinstance(v, tuple)},
        bind=bind,
        precision=precision,
        db=str(db) if db else None,
        db_strict=db_strict,
        opt_level=pipeline["opt_level"],
        disabled_passes=tuple(pipeline["disabled_passes"]),
        keep_fp32=tuple(pipeline["keep_fp32"]),
        dump_ir=str(pipeline["dump_ir"]) if pipeline["dump_ir"] else None,
        time_passes=pipeline["time_passes"],
    )
    if (db_strict or tune_trials) and not db:
        from .errors import UsageError

        raise UsageError("--db-strict and --tune need --db DIR")
    if tune_trials:
        from .api import tune_model
        from .cli_tuning import ProgressPrinter

        tune_model(model, options, db, tune_trials, progress=ProgressPrinter(quiet or as_json))
    result = compile_model(
        model, out_dir, options, force=force, progress=_progress(quiet or as_json)
    )
    if result.pass_times and not as_json:
        from .passes.instruments import format_pass_times

        click.echo(format_pass_times(result.pass_times), err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    if quiet:
        return
    m = result.manifest
    total = sum(result.seconds.values())
    click.echo(
        f"compiled {model} for {m['target']['name']} ({_target_detail(m['target'])}) in "
        f"{total:.1f} s -> {out_dir}"
    )
    for t in m["inputs"]:
        click.echo(f"  input   {_fmt_tensor(t)}")
    for t in m["outputs"]:
        click.echo(f"  output  {_fmt_tensor(t)}")
    if "tuning" in m:
        from .cli_tuning import coverage_lines

        for line in coverage_lines(m["tuning"]):
            click.echo(line)
    weights = sum(w["nbytes"] for w in m["weights"])
    size = (Path(out_dir) / "model.so").stat().st_size
    click.echo(f"  weights {_fmt_bytes(weights)} in weights.bin; model.so {_fmt_bytes(size)}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@_json_option("Print the report as JSON.")
@handle_errors
def inspect(model, as_json):
    """Report MODEL's inputs, outputs, opsets, ops and what mlc cannot convert."""
    from .api import inspect as inspect_model

    report = inspect_model(model)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    click.echo(
        f"model     {model}  (IR v{report.ir_version}, {report.producer or 'unknown producer'})"
    )
    click.echo("opsets    " + ", ".join(f"{d} {v}" for d, v in report.opsets.items()))
    for t in report.inputs:
        click.echo(f"input     {_fmt_tensor(t.to_json())}")
    for t in report.outputs:
        click.echo(f"output    {_fmt_tensor(t.to_json())}")
    click.echo(f"weights   {_fmt_bytes(report.weight_bytes)}")
    for dim, where in report.dynamic_dims.items():
        click.echo(f"dynamic   {dim}: {', '.join(where)}")
    click.echo("ops       " + ", ".join(f"{op} {n}" for op, n in report.op_histogram.items()))
    if report.unsupported:
        click.echo(f"unsupported ({len(report.unsupported)} nodes):")
        for n in report.unsupported:
            click.echo(
                f"  {n.op_type:20} node {n.name or '<unnamed>'!r}  domain {n.domain or 'ai.onnx'}"
            )
    else:
        click.echo("unsupported: none")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=".npz of inputs by name (or .npy for a single input). Default: random, seeded.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the outputs to this .npz file.",
)
@click.option(
    "--check",
    "check_model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Compare every output with onnxruntime running this ONNX model.",
)
@click.option("--rtol", default=1e-4, show_default=True, help="Relative tolerance for --check.")
@click.option("--atol", default=1e-4, show_default=True, help="Absolute tolerance for --check.")
@click.option("--seed", default=0, show_default=True, help="Seed for random inputs.")
@_dims_option("Size of a symbolic dim for random inputs (default 1). Repeatable.")
@_input_range_option
@_threads_option
@_json_option("Print a JSON summary on stdout.")
@handle_errors
def run(
    bundle,
    input_path,
    output_path,
    check_model,
    rtol,
    atol,
    seed,
    dims,
    input_ranges,
    threads,
    as_json,
):
    """Run BUNDLE once; with --check, verify it against onnxruntime."""
    import numpy as np

    from .api import load_bundle, make_inputs, read_inputs, run_model

    model = load_bundle(bundle, threads=threads)
    if input_path:
        inputs = read_inputs(input_path)
    else:
        inputs = make_inputs(model, dims, seed, input_ranges)
    outputs = run_model(model, inputs)
    if output_path:
        np.savez(output_path, **outputs)
    report = {
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()}
    }
    comparison = None
    if check_model:
        from .api import bound_inputs
        from .reference import compare, run_reference

        named = inputs if "" not in inputs else {model.input_names[0]: inputs[""]}
        named = {**bound_inputs(model.manifest), **named}  # onnxruntime still takes them
        comparison = compare(outputs, run_reference(check_model, named), rtol, atol)
        report["check"] = {
            "ok": comparison.ok,
            "max_abs_diff": comparison.max_abs_diff,
            "rtol": rtol,
            "atol": atol,
            "mismatches": [vars(m) for m in comparison.mismatches],
        }
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for name, arr in outputs.items():
            line = f"output {name} {arr.dtype}{list(arr.shape)}"
            if comparison:
                line += f"  max |diff| vs onnxruntime {comparison.max_abs_diff[name]:.3g}"
            click.echo(line)
    if comparison is not None:
        if not comparison.ok:
            for m in comparison.mismatches:
                if m.reason:
                    click.echo(
                        f"error: output {m.output!r} differs from onnxruntime: {m.reason}", err=True
                    )
                    continue
                click.echo(
                    f"error: output {m.output!r} differs from onnxruntime: worst at index "
                    f"{list(m.index)}: got {m.got:.6g}, expected {m.expected:.6g} "
                    f"(|diff| {m.abs_diff:.3g} > atol {atol:g} + rtol {rtol:g}*|expected|; "
                    f"{m.bad_elements} of {m.total_elements} elements out of tolerance)",
                    err=True,
                )
            sys.exit(EXIT_CHECK)
        if not as_json:
            click.echo(
                f"check passed: all outputs match onnxruntime (rtol {rtol:g}, atol {atol:g})"
            )


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--compare",
    "compare_model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also time onnxruntime on this ONNX model with the same inputs and threads.",
)
@_threads_option
@click.option(
    "--seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Minimum measuring time per engine (with --compare both are timed in alternating blocks).",
)
@_dims_option("Size of a symbolic dim for the inputs (default 1). Repeatable.")
@_input_range_option
@_json_option("Print results as JSON.")
@handle_errors
def bench(bundle, compare_model, threads, seconds, dims, input_ranges, as_json):
    """Measure BUNDLE's latency (min/median/p90), optionally against onnxruntime."""
    from .api import bench_bundle

    result = bench_bundle(bundle, compare_model, threads, seconds, dims, input_ranges)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    click.echo(f"threads {result.threads}")
    if result.emulated_by:
        click.echo(
            f"mlc ran under emulation ({result.emulated_by}): its latency is not the device's"
        )
    click.echo(f"{'engine':12} {'runs':>7} {'min ms':>9} {'median ms':>10} {'p90 ms':>9}")
    for name, lat in result.rows():
        click.echo(
            f"{name:12} {lat.runs:7d} {lat.min_ms:9.4f} {lat.median_ms:10.4f} {lat.p90_ms:9.4f}"
        )
    if result.ratio is not None:
        click.echo(
            f"speed vs onnxruntime (median): {result.ratio:.3f}x "
            f"({'faster' if result.ratio >= 1 else 'slower'})"
        )


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The archive to write (.tar.gz); a .sha256 file is written beside it.",
)
@click.option("--force", is_flag=True, help="Replace an existing archive.")
@_json_option("Print a JSON summary on stdout.")
@handle_errors
def package(bundle, out_path, force, as_json):
    """Pack BUNDLE into a deterministic .tar.gz for devices and firmware images."""
    from .package import package_bundle

    result = package_bundle(bundle, out_path, force=force)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "path": str(result.path),
                    "sha256": result.sha256,
                    "files": result.files,
                    "bytes": result.bytes,
                },
                indent=2,
            )
        )
    else:
        click.echo(
            f"packaged {bundle} -> {result.path} ({_fmt_bytes(result.bytes)}, "
            f"{result.files} files)\nsha256 {result.sha256}"
        )


@main.command()
@_json_option("Print presets as JSON.")
@handle_errors
def targets(as_json):
    """List the target presets."""
    from .targets import list_presets

    presets = list_presets()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "description": p.description,
                        "path": str(p.path),
                        "target": p.target,
                    }
                    for p in presets
                ],
                indent=2,
            )
        )
        return
    for p in presets:
        click.echo(f"{p.name:12} {p.description}")


from .cli_tuning import register  # noqa: E402  (it uses the options defined above)

register(main)

if __name__ == "__main__":
    main(prog_name="mlc")
