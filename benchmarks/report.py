"""The benchmark report: machine description, the markdown table and the JSON results."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPU model, usable cores and the versions that decide the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("mlc", "apache-tvm", "onnxruntime", "onnx", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    versions["python"] = platform.python_version()
    versions["commit"] = _commit()
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def _commit() -> str:
    """The checkout's commit, with "+changes" when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "compiler"],
            cwd=root, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except OSError:
        return "unknown"
    return f"{head}+changes" if head and dirty else head or "unknown"


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _diff(entry: dict | None) -> str:
    return f"{entry['max_abs_diff']:.1e}" if entry and "max_abs_diff" in entry else "—"


def _latency(entry: dict | None) -> str:
    return "failed" if entry and "error" in entry else _ms(entry and entry.get("ms"))


def _tuning(tuned: dict | None) -> str:
    if not tuned:
        return "not tuned"
    if "tune_minutes" not in tuned:
        return "failed"
    trials = tuned.get("trials")
    return f"{tuned['tune_minutes']:.1f} min, {trials if trials is not None else '?'} trials"


def table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table, plus the geometric means of the ratios."""
    lines = [
        "| model | ORT ms | untuned ms | untuned ratio | tuned ms | tuned ratio | tuning "
        "| max abs diff untuned / tuned |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        u, t = r["untuned"], r.get("tuned")
        lines.append(
            f"| {r['model']} | {_ms(r['ort_ms'])} | {_latency(u)} | {_ratio(u.get('ratio'))} "
            f"| {_latency(t)} | {_ratio(t and t.get('ratio'))} | {_tuning(t)} "
            f"| {_diff(u)} / {_diff(t)} |"
        )
    lines += [
        "",
        f"Geometric mean of the ratios: untuned {_geomean(results, 'untuned')}, tuned "
        f"{_geomean(results, 'tuned')}. Ratio = onnxruntime median / mlc median, measured "
        "interleaved in the same run (above 1 = mlc is faster).",
    ]
    for r in results:
        for kind in ("untuned", "tuned"):
            if r.get(kind) and "error" in r[kind]:
                lines.append(f"\n{r['model']} {kind} failed: {r[kind]['error']}")
    return "\n".join(lines)


def _geomean(results: list[dict[str, Any]], kind: str) -> str:
    """Over every model, or "—" when a model lacks a ratio (not tuned, or failed)."""
    ratios = [r[kind]["ratio"] for r in results if r.get(kind) and "ratio" in r[kind]]
    return _ratio(geomean(ratios)) if len(ratios) == len(results) else "—"


def _busy_warning(settings: dict[str, Any], info: dict[str, Any]) -> str:
    # Only the load before the run is other work: during it, the benchmark's own threads
    # raise the average to about their number whatever else runs.
    load = settings.get("load_before") or 0.0
    if settings["threads"] < 2 or load <= info["cores"] / 2:
        return ""
    return (
        f"\n**The machine was busy** (load average {load} on {info['cores']} cores). Under "
        "contention onnxruntime's thread pool slows down more than TVM's, so ratios with "
        f"{settings['threads']} threads flatter mlc; rerun with `--threads 1` to compare.\n"
    )


def write(results: list[dict[str, Any]], settings: dict[str, Any], md: Path, js: Path) -> str:
    """Write the markdown report and the JSON results; returns the table."""
    info = machine()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python", *sys.argv]) if sys.argv else "python benchmarks/run.py"
    text = table(results)
    v = info["versions"]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(
        "# Benchmark results\n\n"
        f"Command: `{command}`  \n"
        f"Date: {when}  \n"
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; "
        f"{settings['threads']} threads for both onnxruntime and mlc; load average "
        f"{settings.get('load_before', '?')} before, {info['load_average_1min']} after  \n"
        f"Versions: mlc {v['mlc']}, apache-tvm {v['apache-tvm']}, onnxruntime "
        f"{v['onnxruntime']}, onnx {v['onnx']}, numpy {v['numpy']}, Python {v['python']}; "
        f"commit {v['commit']}\n\n"
        "Batch 1, fp32, random weights (benchmarks/models.py). Latencies are medians.\n\n"
        f"{text}\n{_busy_warning(settings, info)}"
    )
    js.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": when, "command": command, "machine": info, "settings": settings}
    js.write_text(json.dumps({**payload, "results": results}, indent=2) + "\n")
    return text
