"""Model latency: onnxruntime against mlc untuned and tuned, measured in the same run.

    python benchmarks/run.py [--models mlp,bert-mini] [--tune-minutes 20] [--threads 2]

For each model (built by benchmarks/models.py into build/bench-models/ if missing): compile
it with default schedules (build/bench/<model>-untuned), tune it for --tune-minutes into
build/bench/tune-db and compile with those records (build/bench/<model>-tuned), then time
onnxruntime and both bundles in alternating rounds and compare their outputs. Writes
benchmarks/RESULTS.md and build/bench/results.json (--out moves build/bench); progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import models  # noqa: E402
import report  # noqa: E402
import timing  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(models.MODELS), help="comma-separated")
    parser.add_argument("--tune-minutes", type=float, default=20.0, help="0: no tuning")
    parser.add_argument("--tune-trials", type=int, help="trial cap (default: the time box only)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per model")
    parser.add_argument("--target", default="x86")
    parser.add_argument("--profile", action="store_true", help="per-kernel times on stderr")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "bench", help="bundles, tune-db, results.json"
    )
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in models.MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(models.MODELS)}")
    if args.threads < 1 or args.tune_minutes < 0 or (args.tune_trials or 1) < 1:
        parser.error("--threads and --tune-trials must be at least 1, --tune-minutes >= 0")
    return args


_CHECK_RESERVE_S = 120  # of the time box, for mlc tune's in-model check (three builds, timing)


def tune_command(path: Path, db: Path, args: argparse.Namespace) -> list[str]:
    """The `mlc tune` command line. Its `--time` ends the tuning early enough that the
    in-model check of the records (up to three builds, timing) also fits in the time box."""
    seconds = max(30, round(args.tune_minutes * 60) - _CHECK_RESERVE_S)
    cmd = [sys.executable, "-m", "compiler.cli", "tune", str(path), "--db", str(db), "--json"]
    cmd += ["--target", args.target, "--time", f"{seconds}s", "--threads", str(args.threads)]
    if args.tune_trials:
        cmd += ["--trials", str(args.tune_trials)]
    return cmd


def tune(path: Path, args: argparse.Namespace) -> dict:
    """`mlc tune` in its own process (as users run it, and as the tuning tests do), time-boxed:
    it ends itself; one that overruns is interrupted (the database keeps every measured batch).
    """
    db = args.out / "tune-db"
    cmd = tune_command(path, db, args)
    say(f"  tuning for {args.tune_minutes:g} min: mlc {' '.join(cmd[3:])}")
    before = _records(db)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:  # slack to finish its last batch and the in-model check
        stdout, _ = proc.communicate(timeout=args.tune_minutes * 60 + 300)
    except subprocess.TimeoutExpired:
        say("  time box reached: interrupting the tuner (the database keeps what it measured)")
        os.killpg(proc.pid, signal.SIGINT)
        try:
            stdout, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
    minutes = (time.perf_counter() - t0) / 60
    summary = {}
    if proc.returncode == 0:
        summary = json.loads(stdout)
        trials = summary.get("trials")
    elif proc.returncode in (-signal.SIGINT, 130, -signal.SIGKILL):
        trials = _records(db) - before  # interrupted: count the measurements it stored
    else:
        raise RuntimeError(f"mlc tune failed (exit {proc.returncode})")
    keep = ("records", "est_model_ms", "out_of_time", "tuned_now", "tasks", "model_check")
    keep += ("seconds", "check_seconds")  # mlc tune's own time, and its in-model check's
    return {"tune_minutes": minutes, "trials": trials, "db": str(db)} | {
        k: summary[k] for k in keep if k in summary
    }


def _records(db: Path) -> int:
    """Measured candidates in a tuning database, over all its keys."""
    from compiler.tuning_db import open_logs

    return sum(len(log.read().records) for log in open_logs(db)) if db.exists() else 0


@dataclass
class Case:
    """One model under test: its file, inputs, onnxruntime's outputs and the loaded bundles."""

    name: str
    path: Path
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    bundles: dict = field(default_factory=dict)  # "untuned"/"tuned" -> loaded model

    def variant(self, kind: str, args: argparse.Namespace, db: str | None) -> dict:
        """Compile (with tuning database `db`, if given), load and check one bundle, kept for
        timing. A compile that fails is recorded, not fatal: the other models still run."""
        from compiler.api import compile_model, load_bundle
        from compiler.errors import MlcError
        from compiler.options import CompileOptions

        options = CompileOptions(target=args.target, db=db)
        t0 = time.perf_counter()
        try:
            bundle = args.out / f"{self.name}-{kind}"
            result = compile_model(self.path, bundle, options, force=True)
        except MlcError as exc:
            say(f"  {kind}: compile failed: {exc}")
            return {"error": str(exc).splitlines()[0]}
        seconds = time.perf_counter() - t0
        say(f"  compiled {kind} in {seconds:.1f} s")
        model = self.bundles[kind] = load_bundle(result.bundle, threads=args.threads)
        got = model(**self.inputs)
        diff = max(
            float(np.max(np.abs(got[k].astype(np.float64) - v.astype(np.float64))))
            for k, v in self.expected.items()
        )
        return {"compile_s": seconds, "tuning": result.manifest.get("tuning"), "max_abs_diff": diff}


def bench_model(name: str, args: argparse.Namespace) -> dict:
    from compiler.reference import ort_session

    say(f"[{name}]")
    path = models.ensure(name)
    session = ort_session(path, args.threads)
    inputs = models.example_inputs(models.input_specs(session))
    names = [o.name for o in session.get_outputs()]
    case = Case(name, path, inputs, dict(zip(names, session.run(names, inputs))))
    entry: dict = {"model": name, "tuned": None, "untuned": case.variant("untuned", args, None)}
    if args.tune_minutes > 0:
        try:
            tuned = tune(path, args)
            tuned.update(case.variant("tuned", args, tuned["db"]))
        except RuntimeError as exc:
            tuned = {"error": str(exc)}
        entry["tuned"] = tuned
    time_all(entry, session, case.bundles, inputs, args.seconds)
    if args.profile and case.bundles:
        kind = "tuned" if "tuned" in case.bundles else "untuned"
        entry["profile"] = profile(case.bundles[kind], inputs, entry[kind]["ms"])
    return entry


def time_all(entry: dict, session, bundles: dict, inputs: dict, seconds: float) -> None:
    """onnxruntime and every bundle in alternating rounds; latencies and ratios into `entry`."""
    say(f"  timing onnxruntime and mlc, interleaved, {seconds:g} s")
    fns = {"ort": lambda: session.run(None, inputs)}
    fns.update({kind: (lambda m=m: m(**inputs)) for kind, m in bundles.items()})
    stats = timing.interleaved(fns, seconds)
    entry["ort_ms"] = stats["ort"]["median_ms"]
    entry["runs"] = stats["ort"]["runs"]
    for kind in bundles:
        e = entry[kind]
        e.update(ms=stats[kind]["median_ms"], min_ms=stats[kind]["min_ms"])
        e["ratio"] = entry["ort_ms"] / e["ms"]
        say(
            f"  {kind}: {e['ms']:.3f} ms, onnxruntime {entry['ort_ms']:.3f} ms: "
            f"{e['ratio']:.2f}x; max abs diff {e['max_abs_diff']:.1e}"
        )


def profile(model, inputs: dict, ms: float) -> list[dict]:
    """Per-kernel times over about 2 s of calls (1 to 10 calls)."""
    from compiler.api import load_bundle

    fresh = load_bundle(model.path, threads=model._threads)  # a VM of its own, instrumented
    rows = timing.kernel_profile(fresh, inputs, runs=max(1, min(10, int(2000 / ms))))
    say(f"  profile of {model.path.name} (per model call, slowest first):")
    for row in rows[:15]:
        say(f"    {row['ms']:9.3f} ms {row['share']:6.1%} x{row['calls']:<3d} {row['name']}")
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    # TVM sizes its thread pool from this when its runtime starts: set it before any import.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    load_before = round(os.getloadavg()[0], 2)
    results = []
    for name in args.models:
        results.append(bench_model(name, args))
        gc.collect()  # drop the previous model's sessions and bundles before the next
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["load_before"] = load_before
    text = report.write(results, settings, args.results, args.out / "results.json")
    print(text)
    say(f"wrote {args.results} and {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
