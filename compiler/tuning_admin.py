"""`mlc db`: list, merge and prune tuning databases (tuning_db.py has the format). No TVM import,
except to learn the installed TVM version when pruning other versions' records."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import UsageError
from .tuning_db import LogContents, TuningLog, canonical_json, open_log, open_logs


def list_database(db: str | os.PathLike) -> list[dict]:
    """Per key: what it is for, and per workload its trials and best time."""
    if not Path(db).is_dir():
        raise UsageError(f"tuning database {str(db)!r} does not exist")
    out = []
    for log in open_logs(db):
        contents = log.read()
        valid = sum(r.get("mean_s") is not None for r in contents.records)
        workloads = []
        for digest, w in contents.workloads.items():
            best = contents.best(digest)
            workloads.append(
                {
                    "name": w.get("name", "?"),
                    "hash": digest,
                    "trials": contents.trials(digest),
                    "best_ms": None if best is None else round(best * 1e3, 6),
                    "exhausted": contents.exhausted(digest),
                }
            )
        workloads.sort(key=lambda w: w["name"])
        out.append(
            {
                "dir": str(log.path),
                **log.key.to_json(),
                "workloads": workloads,
                "records": valid,
                "failed_records": len(contents.records) - valid,
                "unreadable_lines": contents.bad_lines,
                "sha256": contents.sha256,
            }
        )
    return out


def compact(contents: LogContents, top_k: int | None = None, keep_failed: bool = True):
    """One record per (workload, schedule trace), the fastest; then at most `top_k` valid
    records per workload. Trial counts survive in the "tuned" notes (a schedule measured in two
    merged databases counts once, so merging again changes nothing)."""
    original = len(contents.records)
    best: dict[tuple[str, str], dict] = {}
    for r in contents.records:
        key = (r["workload"], canonical_json(r["record"][0]))
        if key not in best or _speed(r) < _speed(best[key]):
            best[key] = r
    contents.records = list(best.values())
    for digest in {r["workload"] for r in contents.records}:
        note = contents.notes.get(digest, {"exhausted": False})
        contents.notes[digest] = {
            "kind": "tuned",
            "workload": digest,
            "trials": contents.trials(digest),
            "exhausted": note["exhausted"],
        }
    kept, per_workload = [], {}
    for r in sorted(best.values(), key=_speed):
        if r.get("mean_s") is None:
            if keep_failed:
                kept.append(r)
            continue
        n = per_workload[r["workload"]] = per_workload.get(r["workload"], 0) + 1
        if top_k is None or n <= top_k or r.get("baseline"):  # verdicts may fall back to it
            kept.append(r)
    contents.records = kept
    return original - len(kept)


def _speed(record: dict) -> float:
    return record["mean_s"] if record.get("mean_s") is not None else float("inf")


def merge_databases(sources: list[str | os.PathLike], dest: str | os.PathLike) -> dict:
    """Union of `sources` into `dest` (created if missing), key by key, without duplicates."""
    logs = []
    for src in sources:
        if not Path(src).is_dir():
            raise UsageError(f"tuning database {str(src)!r} does not exist")
        if Path(src).resolve() == Path(dest).resolve():
            raise UsageError(f"cannot merge {str(src)!r} into itself")
        logs += open_logs(src)
    stats = {"keys": 0, "records": 0}
    for digest in dict.fromkeys(log.key.digest for log in logs):
        group = [log for log in logs if log.key.digest == digest]
        target = open_log(dest, group[0].key)
        with target.locked():
            merged = target.read()
            for log in group:
                for entry in log.read().entries():
                    merged.add(entry)
            compact(merged)
            target.rewrite(merged)
        stats["keys"] += 1
        stats["records"] += len(merged.records)
    return stats


def prune_database(
    db: str | os.PathLike, top_k: int, keep_failed: bool = False, other_tvm: bool = False
) -> dict:
    """Keep the `top_k` fastest records per workload; drop failed ones unless `keep_failed`;
    with `other_tvm`, delete the keys of other TVM versions."""
    if not Path(db).is_dir():
        raise UsageError(f"tuning database {str(db)!r} does not exist")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    stats = {"dropped_records": 0, "dropped_keys": 0, "records": 0}
    version = _tvm_version() if other_tvm else None
    for log in open_logs(db):
        if version is not None and log.key.tvm != version:
            _remove_key(log)
            stats["dropped_keys"] += 1
            continue
        with log.locked():
            contents = log.read()
            stats["dropped_records"] += compact(contents, top_k, keep_failed)
            log.rewrite(contents)
        stats["records"] += len(contents.records)
    return stats


def _tvm_version() -> str:
    import tvm

    return tvm.__version__


def _remove_key(log: TuningLog) -> None:
    with log.locked():  # no append is half done; rename first so nothing reads a partial dir
        trash = log.path.with_name(f".deleting-{log.path.name}")
        log.path.rename(trash)
    shutil.rmtree(trash)
