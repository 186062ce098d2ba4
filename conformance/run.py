"""Run the ONNX backend node tests through onnxruntime and mlc; write REPORT.md + results.json.

    .venv/bin/python -m conformance.run [--jobs 2] [--filter "test_lstm*,test_gru*"] [--timeout 180]

The node test data is generated once into build/conformance-data (onnx ships the generator,
not the data). onnxruntime's results are cached there per onnxruntime version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "build" / "conformance-data"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from . import cases

    if not (args.data / "node").is_dir():
        _say(f"generating the ONNX node test cases into {args.data}")
        cases.generate(args.data)
    selected = cases.list_cases(args.data, args.filter)
    earlier = json.loads(args.failed_in.read_text()) if args.failed_in else None
    if earlier:  # iterate on what an earlier run did not pass
        passed = {k for k, r in earlier["cases"].items() if r["mlc"]["status"] == "pass"}
        selected = [c for c in selected if c.name not in passed]
    if not selected:
        left = f" that {args.failed_in} did not pass" if args.failed_in else ""
        _say(f"no case matches {args.filter!r}{left}")
        return 2
    if args.update:  # rewrite the earlier report in place
        out = args.failed_in.parent
    else:
        partial = args.filter or args.failed_in
        out = args.out or (ROOT / "build" / "conformance" if partial else ROOT / "conformance")
    _preload()
    t0 = time.monotonic()
    ort = _onnxruntime_results(args, selected)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.partial.jsonl").unlink(missing_ok=True)
    mlc = _run(selected, "mlc", args, log=out / "results.partial.jsonl")
    results = {c.name: {"ort": ort[c.name], "mlc": mlc[c.name]} for c in selected}
    meta = _meta(args, time.monotonic() - t0)
    if args.update:  # the earlier run's passes carry over; the report says so
        meta["update"] = {"rerun": len(results), **_full_run(earlier["meta"])}
        results = {**earlier["cases"], **results}
    from .report import write

    summary = write(results, out, meta)
    (out / "results.partial.jsonl").unlink(missing_ok=True)
    _say(f"wrote {out / 'REPORT.md'}: {json.dumps(summary)}")
    return 0


def _full_run(meta: dict) -> dict:
    """The full run an --update builds on (through earlier updates of it)."""
    if "update" in meta:
        return {k: meta["update"][k] for k in ("earlier_command", "earlier_seconds")}
    return {"earlier_command": meta.get("command"), "earlier_seconds": meta.get("seconds")}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="conformance.run", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="test data cache dir")
    parser.add_argument("--out", type=Path, help="report dir (default: conformance/)")
    parser.add_argument("--filter", help="only cases matching these globs (comma-separated)")
    parser.add_argument("--failed-in", type=Path, help="only cases not passed in this results.json")
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --failed-in: merge the re-run cases into that results.json and its REPORT.md "
        "(the cases it passed carry over)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (at most 2)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per case")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 2:
        parser.error(f"--jobs must be 1 or 2, got {args.jobs}")
    if args.update and not args.failed_in:
        parser.error("--update needs --failed-in RESULTS_JSON")
    if args.update and args.out:
        parser.error("--update rewrites the report next to --failed-in; it takes no --out")
    return args


def _preload() -> None:
    """Import what every case needs once, before forking (TVM alone takes seconds)."""
    import onnxruntime  # noqa: F401
    import tvm.relax.frontend.onnx  # noqa: F401

    import compiler.api
    import compiler.build
    import compiler.bundle
    import compiler.frontend
    import compiler.targets  # noqa: F401


def _onnxruntime_results(args, selected) -> dict[str, dict]:
    import onnxruntime

    cache_path = args.data / f"onnxruntime-{onnxruntime.__version__}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    missing = [c for c in selected if c.name not in cache]
    if missing:
        cache.update(_run(missing, "onnxruntime", args))
        cache_path.write_text(json.dumps(cache, indent=0, sort_keys=True))
    return {c.name: cache[c.name] for c in selected}


def _run(selected, which: str, args, log: Path | None = None) -> dict[str, dict]:
    from .check import check_mlc, check_onnxruntime
    from .forkpool import run_forked

    work = check_mlc if which == "mlc" else check_onnxruntime
    results: dict[str, dict] = {}
    t0 = time.monotonic()

    by_name = {c.name: c for c in selected}

    def on_result(key: str, result: dict) -> None:
        if which == "mlc" and "op" not in result:  # the child died before it could say
            result["op"] = _main_op(by_name[key])
        results[key] = result
        if log:  # a run that dies part-way keeps what it measured
            with log.open("a") as f:
                f.write(json.dumps({"case": key, **result}) + "\n")
        done = len(results)
        if which == "mlc" and (done % 25 == 0 or done == len(selected)):
            passed = sum(r["status"] == "pass" for r in results.values())
            _say(
                f"{which}: {done}/{len(selected)} cases, {passed} pass, "
                f"{time.monotonic() - t0:.0f} s"
            )

    run_forked(((c.name, c) for c in selected), work, args.jobs, args.timeout, on_result)
    return results


def _main_op(case) -> str:
    import onnx

    from .cases import main_op

    return main_op(case, onnx.load(str(case.model_path), load_external_data=False))


def _meta(args, seconds: float) -> dict:
    import onnx
    import onnxruntime
    import tvm

    from .cases import ATOL, RTOL

    command = "python -m conformance.run" + (f" --jobs {args.jobs}" if args.jobs > 1 else "")
    if args.filter:
        command += f" --filter '{args.filter}'"
    if args.failed_in:
        command += f" --failed-in {args.failed_in}" + (" --update" if args.update else "")
    return {
        "command": command,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tvm": tvm.__version__,
        "rtol": RTOL,
        "atol": ATOL,
        "timeout": args.timeout,
        "jobs": args.jobs,
        "seconds": round(seconds),
    }


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
