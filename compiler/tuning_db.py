"""The tuning database on disk: plain JSON lines, safe to share, kill and merge. No TVM import.

    DIR/<preset>-<threads>t-<hash>/key.json       target dict, TVM version, tuning threads
    DIR/<preset>-<threads>t-<hash>/records.jsonl  the log: one JSON object per line
    DIR/<preset>-<threads>t-<hash>/.lock          flock taken around every append and rewrite

A record applies only where its key matches: the full target dict (CPU, features, cores), the
TVM version and the threads it was measured with. The log is append-only. Each batch of
measurements is appended under the lock as soon as it is measured, so a killed run loses at most
the batch in flight, and processes tuning into one database lose nothing. A torn last line (a
kill mid-write) is skipped on reading and fenced off by the next append. `merge` and `prune`
rewrite the log into a temporary file and rename it over the old one, under the same lock.

Log lines, by "kind":
    workload  {"hash", "name", "mod"}: a kernel, as MetaSchedule serialises it
    record    {"workload", "mean_s", "record"}: one measured candidate (mean_s null: it failed)
    tuned     {"workload", "trials", "exhausted"}: trials measured so far; exhausted: the search
              space ran out, so more trials would find nothing new
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

KEY_FILE = "key.json"
LOG_FILE = "records.jsonl"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class DatabaseKey:
    """What a set of records was measured for."""

    preset: str
    target: dict
    tvm: str
    threads: int

    def matches(self, other: DatabaseKey) -> bool:
        return canonical_json(self.target) == canonical_json(other.target) and self.tvm == other.tvm

    @property
    def digest(self) -> str:
        key = {"target": self.target, "tvm": self.tvm, "threads": self.threads}
        return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:12]

    @property
    def dirname(self) -> str:
        return f"{self.preset}-{self.threads}t-{self.digest}"

    def to_json(self) -> dict:
        return {
            "preset": self.preset,
            "target": self.target,
            "tvm": self.tvm,
            "threads": self.threads,
        }


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass
class LogContents:
    """A parsed log: workloads by hash, records, trial notes, and what could not be read."""

    workloads: dict[str, dict] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    notes: dict[str, dict] = field(default_factory=dict)  # workload -> merged "tuned" note
    verdicts: dict[str, dict] = field(default_factory=dict)  # workload -> latest in-model check
    bad_lines: int = 0
    sha256: str = ""

    def add(self, entry: dict) -> None:
        kind = entry.get("kind")
        if kind == "workload":
            self.workloads.setdefault(entry["hash"], entry)
        elif kind == "record":
            self.records.append(entry)
        elif kind == "verdict":
            self.verdicts[entry["workload"]] = entry
        elif kind == "tuned":
            old = self.notes.get(entry["workload"], {"trials": 0, "exhausted": False})
            self.notes[entry["workload"]] = {
                "kind": "tuned",
                "workload": entry["workload"],
                "trials": max(old["trials"], int(entry["trials"])),
                "exhausted": old["exhausted"] or bool(entry.get("exhausted")),
            }
        else:
            self.bad_lines += 1

    def records_of(self, workload: str) -> list[dict]:
        return [r for r in self.records if r["workload"] == workload]

    def trials(self, workload: str) -> int:
        """Candidates measured for `workload`, counting those a prune dropped."""
        note = self.notes.get(workload, {}).get("trials", 0)
        return max(note, len(self.records_of(workload)))

    def exhausted(self, workload: str) -> bool:
        return self.notes.get(workload, {}).get("exhausted", False)

    def best(self, workload: str) -> float | None:
        fastest = self.fastest(workload)
        return fastest["mean_s"] if fastest else None

    def fastest(self, workload: str) -> dict | None:
        """The record with the best time as the tuner measured it (the kernel alone)."""
        valid = [r for r in self.records_of(workload) if r.get("mean_s") is not None]
        return min(valid, key=lambda r: r["mean_s"]) if valid else None

    def chosen(self, workload: str) -> dict | None:
        """The record a compile uses: the fastest, unless the in-model check (a "verdict",
        schedules/validate.py) found it no faster than the default schedule inside the model;
        then the default schedule's own baseline record (None: the default rules)."""
        fastest = self.fastest(workload)
        verdict = self.verdicts.get(workload)
        if fastest is None or fastest.get("baseline") or verdict is None:
            return fastest
        if verdict["schedule"] != schedule_id(fastest) or verdict["use"] == "record":
            return fastest
        return next((r for r in self.records_of(workload) if r.get("baseline")), None)

    def entries(self) -> list[dict]:
        """Every line the log needs, workloads first (rewrite, merge)."""
        return [
            *self.workloads.values(),
            *self.notes.values(),
            *self.verdicts.values(),
            *self.records,
        ]


def schedule_id(record: dict) -> str:
    """A short id of a record's schedule (its trace): what a verdict judged."""
    return hashlib.sha256(canonical_json(record["record"][0]).encode()).hexdigest()[:16]


class TuningLog:
    """One key's directory: its key and its append-only log."""

    def __init__(self, path: Path, key: DatabaseKey):
        self.path = path
        self.key = key

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @contextlib.contextmanager
    def locked(self):
        with open(self.path / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, entries: list[dict]) -> None:
        """Append `entries` as lines, durably, in one write under the lock."""
        if not entries:
            return
        data = "".join(canonical_json(e) + "\n" for e in entries).encode()
        with self.locked():
            fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                if _ends_torn(self.log_path):  # a writer was killed mid-line: fence it off
                    data = b"\n" + data
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> LogContents:
        contents = LogContents()
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            data = b""
        contents.sha256 = hashlib.sha256(data).hexdigest()
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                contents.bad_lines += 1
                continue
            if isinstance(entry, dict):
                contents.add(entry)
            else:
                contents.bad_lines += 1
        return contents

    def rewrite(self, contents: LogContents) -> None:
        """Replace the log with `contents` atomically. Call with the lock held."""
        lines = contents.entries()
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".records-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.writelines(canonical_json(e) + "\n" for e in lines)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.log_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def open_logs(db: str | os.PathLike) -> list[TuningLog]:
    """Every key directory of database `db` (none if it does not exist)."""
    root = Path(db)
    if root.exists() and not root.is_dir():
        raise UsageError(f"tuning database {str(db)!r} is not a directory")
    logs = []
    for key_file in sorted(root.glob(f"*/{KEY_FILE}")) if root.is_dir() else []:
        try:
            key = DatabaseKey(**json.loads(key_file.read_text()))
        except (ValueError, TypeError) as exc:
            raise UsageError(
                f"tuning database {str(db)!r} has an unreadable key file {str(key_file)!r}: {exc}"
            ) from None
        logs.append(TuningLog(key_file.parent, key))
    return logs


def open_log(db: str | os.PathLike, key: DatabaseKey) -> TuningLog:
    """The directory for `key` in database `db`, created (key file written atomically) if new."""
    path = Path(db) / key.dirname
    path.mkdir(parents=True, exist_ok=True)
    key_file = path / KEY_FILE
    if not key_file.exists():
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".key-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(key.to_json(), indent=2) + "\n")
        os.replace(tmp, key_file)
    return TuningLog(path, key)
