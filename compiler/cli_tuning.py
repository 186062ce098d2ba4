"""`mlc tune` and `mlc db`: tuning with a progress display, and managing tuning databases.

`register(main)` adds the commands to the `mlc` group; cli.py calls it once it has defined
the options these commands share with the others.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(_ctx, _param, value: str | None) -> float | None:
    """'90s', '20m', '1h30m' or plain seconds ('45') -> seconds."""
    if value is None:
        return None
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    elif re.fullmatch(r"(\d+(\.\d+)?[hms])+", text):
        seconds = sum(float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([hms])", text))
    else:
        raise click.BadParameter(f"{value!r} is not a duration, expected e.g. 90s, 20m or 1h30m")
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration")
    return seconds


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.4g} ms"


class ProgressPrinter:
    """Tuning progress on stderr: one updating line on a terminal, one line per task and batch
    otherwise (for logs), nothing when quiet."""

    def __init__(self, quiet: bool, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self._open = False  # a terminal line is waiting to be finished

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if event.kind == "plan":
            self._line(f"tuning {event.message}; est. model {_ms_or_none(event.model_ms)}")
            return
        if event.kind == "note":
            self._line(event.message)
            return
        t = event.task
        status = {"batch": "", "task": "", "end": f"  {t.status}", "skip": f"  {event.message}"}
        trials = f"{t.trials}" if event.open_ended else f"{t.trials}/{t.target}"
        text = (
            f"[{event.index}/{event.total}] {t.name}  trials {trials}  "
            f"best {_ms(t.best_s)}  est. model {_ms_or_none(event.model_ms)}{status[event.kind]}"
        )
        if self.tty:
            self.stream.write(f"\r\x1b[K{text}")
            self._open = event.kind not in ("end", "skip")
            if not self._open:
                self.stream.write("\n")
            self.stream.flush()
        elif event.kind == "batch" or (event.kind != "task" and t.status != "tuned"):
            self._line(text)  # a log gets each batch, and how a task ended unless as planned

    def _line(self, text: str) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(text + "\n")
        self.stream.flush()


def _ms_or_none(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.4g} ms"


def _check_part(summary) -> str:
    seconds = summary.check_seconds
    return f" (the in-model check {seconds:.0f} s of it)" if seconds >= 0.5 else ""


def print_tune_summary(model, summary) -> None:
    data = summary.to_json()
    r = summary.result
    click.echo(
        f"tuned {model} for {summary.target} with {r.threads} threads in "
        f"{summary.seconds:.0f} s{_check_part(summary)}: {r.trials} trials measured now, "
        f"{r.records} records in {r.db}"
    )
    for k in data["kernels"]:
        best = "-" if k["best_ms"] is None else f"{k['best_ms']:.4g} ms"
        target = "" if k["target_trials"] is None else f"/{k['target_trials']}"
        click.echo(
            f"  {k['name'][:44]:44} {k['share']:6.1%}  trials {k['trials']:>5}{target:<6} "
            f"best {best:>11}  {k['status']}"
        )
    if r.model_ms is not None:
        click.echo(f"estimated model latency {r.model_ms:.4g} ms (measured kernels + estimates)")
    if r.validation is not None:
        v = r.validation
        click.echo(
            f"in-model check: {v.kept} of {v.checked} new records kept; their kernels take "
            f"{v.chosen_ms:.4g} ms in the model (default schedules {v.default_ms:.4g} ms)"
        )
    if r.out_of_time:
        click.echo("the time budget ran out: run again to continue where it stopped")


def coverage_lines(t: dict) -> list[str]:
    """The compile summary's tuning lines, from the manifest's "tuning" entry."""
    lines = [
        f"  tuning  tuned records cover {t['coverage']:.0%} of the estimated runtime "
        f"({t['tuned_kernels']} of {t['kernels']} kernels) from {t['db']}"
    ]
    if t["untuned"]:
        more = f" and {len(t['untuned']) - 4} more" if len(t["untuned"]) > 4 else ""
        lines.append(f"          worth tuning, no record: {', '.join(t['untuned'][:4])}{more}")
    if t["threads"] != t["runtime_threads"]:
        lines.append(
            f"  note    the records were measured with {t['threads']} threads; bundles run "
            f"with {t['runtime_threads']} here by default (TVM_NUM_THREADS sets it)"
        )
    return lines


def register(main: click.Group) -> None:
    """Add `tune` and `db` to `main`."""
    from .cli import (
        _dims_option,
        _input_shape_option,
        _json_option,
        _precision_option,
        _target_option,
        handle_errors,
    )

    @main.command()
    @click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
    @_target_option
    @click.option(
        "--db",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Tuning database directory (created if missing; reused and extended).",
    )
    @click.option(
        "--trials",
        type=click.IntRange(min=1),
        help="Measurement trials across all kernels, split by their estimated share of the "
        "runtime.  [default: 64, or no limit with --time]",
    )
    @click.option(
        "--time",
        "seconds",
        callback=parse_duration,
        metavar="DURATION",
        help="Stop after this long, e.g. 90s, 20m, 1h (with --trials: whichever comes first).",
    )
    @click.option(
        "--threads",
        type=click.IntRange(min=1),
        help="Threads to measure with.  [default: TVM_NUM_THREADS, else the physical cores]",
    )
    @_input_shape_option
    @_dims_option("Pin a named symbolic dimension, as for compile.")
    @_precision_option("As for compile: the kernels differ by precision, and so do their records.")
    @_json_option("Print a JSON summary on stdout.")
    @click.option(
        "--no-model-check",
        is_flag=True,
        help="Skip the in-model check: by default new records are timed inside the model "
        "against the default schedules, and compiles use only those that win there.",
    )
    @click.option("-q", "--quiet", is_flag=True, help="No progress display.")
    @handle_errors
    def tune(model, target, db, trials, seconds, threads, input_shapes, dims, precision, **out):
        """Tune MODEL's kernels with MetaSchedule; compile with --db to use the records.

        Kernels are tuned largest estimated share first; those under 1% keep the default
        schedules, and those with enough trials in the database are not tuned again."""
        from .api import tune_model
        from .options import CompileOptions

        as_json, quiet = out["as_json"], out["quiet"]
        options = CompileOptions(
            target=target, input_shapes=input_shapes, dims=dims, precision=precision
        )
        summary = tune_model(
            model,
            options,
            db,
            trials,
            seconds=seconds,
            threads=threads,
            progress=ProgressPrinter(quiet),
            model_check=not out["no_model_check"],
        )
        if as_json:
            click.echo(json.dumps(summary.to_json(), indent=2))
        else:
            print_tune_summary(model, summary)

    main.add_command(_db_group(handle_errors, _json_option))


def _db_group(handle_errors, json_option) -> click.Group:
    from .tuning_admin import list_database, merge_databases, prune_database

    @click.group()
    def db():
        """Manage tuning databases: list, merge, prune."""

    @db.command(name="list")
    @click.argument("path", metavar="DIR", type=click.Path(path_type=Path))
    @json_option("Print the listing as JSON.")
    @handle_errors
    def list_(path, as_json):
        """List DIR's records: per target key, the workloads with trials and best time."""
        keys = list_database(path)
        if as_json:
            click.echo(json.dumps(keys, indent=2))
            return
        for k in keys:
            target = k["target"]
            detail = target.get("mcpu", target["kind"])
            cores = f", {target['num-cores']} cores" if "num-cores" in target else ""
            click.echo(
                f"{k['dir']}: {k['preset']} ({detail}{cores}), TVM {k['tvm']}, measured with "
                f"{k['threads']} threads: {len(k['workloads'])} workloads, {k['records']} "
                f"records, {k['failed_records']} failed"
                + (f", {k['unreadable_lines']} unreadable lines" if k["unreadable_lines"] else "")
            )
            for w in k["workloads"]:
                best = "-" if w["best_ms"] is None else f"{w['best_ms']:.4g} ms"
                done = "  (search exhausted)" if w["exhausted"] else ""
                click.echo(f"  {w['name'][:48]:48} trials {w['trials']:>5}  best {best}{done}")
        if not keys:
            click.echo(f"{path}: no records")

    @db.command()
    @click.argument("sources", metavar="SRC...", nargs=-1, required=True, type=click.Path())
    @click.option("-o", "--output", "dest", required=True, type=click.Path(), help="Into DIR.")
    @json_option("Print a JSON summary.")
    @handle_errors
    def merge(sources, dest, as_json):
        """Merge the databases SRC... into DST (kept: every workload, the fastest record per
        schedule, trial counts)."""
        stats = merge_databases(list(sources), dest)
        _echo(
            stats,
            as_json,
            f"merged {len(sources)} databases into {dest}: {stats['keys']} target keys, "
            f"{stats['records']} records",
        )

    @db.command()
    @click.argument("path", metavar="DIR", type=click.Path(path_type=Path))
    @click.option("--top-k", default=8, show_default=True, help="Records kept per workload.")
    @click.option("--keep-failed", is_flag=True, help="Keep the records of failed candidates.")
    @click.option("--other-tvm", is_flag=True, help="Delete the records of other TVM versions.")
    @json_option("Print a JSON summary.")
    @handle_errors
    def prune(path, top_k, keep_failed, other_tvm, as_json):
        """Keep the fastest records per workload; trial counts are kept, so pruned workloads
        are still not tuned again."""
        stats = prune_database(path, top_k, keep_failed, other_tvm)
        deleted = f", {stats['dropped_keys']} keys of other TVM versions deleted"
        _echo(
            stats,
            as_json,
            f"pruned {path}: {stats['dropped_records']} records dropped, {stats['records']} kept"
            + (deleted if other_tvm else ""),
        )

    return db


def _echo(stats: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(stats) if as_json else text)
