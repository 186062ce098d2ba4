"""Tuning: budgets, the database on disk (append-only, concurrent, killable), `mlc db`, and
compiling with the records. The slow tests run real MetaSchedule tuning on the test MLP."""

from __future__ import annotations

import io
import json
import multiprocessing
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, mlc, mlc_subprocess

from compiler.api import load_bundle
from compiler.cli_tuning import ProgressPrinter, parse_duration
from compiler.cuda import gpu_available
from compiler.reference import run_reference
from compiler.schedules.tuning_plan import TaskState, TuneEvent, allocate
from compiler.tuning_db import LOG_FILE, DatabaseKey, open_log, open_logs, schedule_id

KEY = DatabaseKey("x86", {"kind": "llvm", "mcpu": "znver3", "num-cores": 2}, "0.27.0", 2)


def _record(workload: str, trace: str, mean_s: float | None) -> dict:
    entry = {"kind": "record", "workload": workload, "record": [[trace], [mean_s], {}, []]}
    return {**entry, "mean_s": mean_s}


def _workload(digest: str, name: str) -> dict:
    return {"kind": "workload", "hash": digest, "name": name, "mod": "<mod>"}


# --- budgets and durations -------------------------------------------------------------------


def test_allocate_splits_by_share_and_keeps_the_budget():
    assert allocate([0.6, 0.3, 0.1], 100) == [60, 30, 10]
    assert sum(allocate([0.63, 0.32, 0.05], 8)) == 8
    assert allocate([0.63, 0.32, 0.05], 8)[2] >= 1  # every task gets a trial while they last
    assert allocate([0.5, 0.3, 0.2], 2) == [1, 1, 0]  # too few: the largest shares first
    assert allocate([], 10) == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("20m", 1200), ("1h30m", 5400), ("45", 45), ("1.5m", 90)]
)
def test_durations(text, seconds):
    assert parse_duration(None, None, text) == seconds


def test_bad_duration_is_a_usage_error(model_dir, tmp_path):
    r = mlc("tune", model_dir / "mlp.onnx", "--db", tmp_path / "db", "--time", "20 minutes")
    assert r.exit_code == 2
    assert "'20 minutes' is not a duration, expected e.g. 90s, 20m or 1h30m" in r.stderr


def test_progress_is_one_line_per_batch_without_a_terminal():
    out = io.StringIO()
    printer = ProgressPrinter(quiet=False, stream=out)
    task = TaskState("fused_matmul_add", "h", 1, 1e-6, share=0.5, target=128, trials=64)
    task.best_s = 0.00041
    printer(TuneEvent("plan", 0, 7, None, None, "7 kernels: 3 to tune, 4 cheap"))
    printer(TuneEvent("task", 3, 7, task, 2.3))  # a terminal would show it; a log skips it
    printer(TuneEvent("batch", 3, 7, task, 2.3))
    task.status = "tuned"
    printer(TuneEvent("end", 3, 7, task, 2.3))  # ended as planned: nothing new to say
    assert out.getvalue().splitlines() == [
        "tuning 7 kernels: 3 to tune, 4 cheap; est. model -",
        "[3/7] fused_matmul_add  trials 64/128  best 0.41 ms  est. model 2.3 ms",
    ]
    quiet = io.StringIO()
    ProgressPrinter(quiet=True, stream=quiet)(TuneEvent("batch", 3, 7, task, 2.3))
    assert quiet.getvalue() == ""


# --- the database on disk --------------------------------------------------------------------


def test_log_round_trip_and_key_directory(tmp_path):
    log = open_log(tmp_path / "db", KEY)
    log.append([_workload("w1", "k1"), _record("w1", "a", 2e-3), _record("w1", "b", None)])
    (found,) = open_logs(tmp_path / "db")
    assert found.key == KEY and found.path.name == f"x86-2t-{KEY.digest}"
    contents = found.read()
    assert contents.trials("w1") == 2 and contents.best("w1") == 2e-3
    assert contents.bad_lines == 0


def test_torn_last_line_is_skipped_and_fenced_off(tmp_path):
    log = open_log(tmp_path / "db", KEY)
    log.append([_workload("w1", "k1"), _record("w1", "a", 1e-3)])
    with open(log.path / LOG_FILE, "a") as f:  # a writer killed in the middle of a line
        f.write('{"kind": "record", "workload": "w1", "rec')
    assert log.read().bad_lines == 1 and log.read().trials("w1") == 1
    log.append([_record("w1", "b", 2e-3)])
    contents = log.read()
    assert contents.bad_lines == 1 and contents.trials("w1") == 2  # the new record survived


def _append_many(db, worker: int) -> None:
    log = open_log(db, KEY)
    for i in range(150):
        log.append([_record("w1", f"{worker}-{i}", 1e-3 + i * 1e-6) for _ in range(2)])


def test_concurrent_appends_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(tmp_path / "db", w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    contents = open_log(tmp_path / "db", KEY).read()
    assert contents.bad_lines == 0 and len(contents.records) == 4 * 150 * 2


# --- mlc db ----------------------------------------------------------------------------------


def test_db_list_merge_prune(tmp_path):
    a, b = open_log(tmp_path / "a", KEY), open_log(tmp_path / "b", KEY)
    a.append(
        [_workload("w1", "fused_matmul"), _record("w1", "t1", 3e-3), _record("w1", "t2", None)]
    )
    b.append([_workload("w1", "fused_matmul"), _record("w1", "t1", 2e-3)])
    b.append([_workload("w2", "softmax")] + [_record("w2", f"s{i}", i * 1e-3) for i in range(1, 6)])

    r = mlc("db", "merge", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "m")
    assert r.exit_code == 0, r.stderr
    r = mlc("db", "list", tmp_path / "m", "--json")
    (key,) = json.loads(r.stdout)
    assert (key["preset"], key["threads"], key["tvm"]) == ("x86", 2, "0.27.0")
    by_name = {w["name"]: w for w in key["workloads"]}
    assert by_name["fused_matmul"]["best_ms"] == 2.0  # t1 from both: the faster one kept
    assert by_name["fused_matmul"]["trials"] == 2  # t1 once, t2 (failed)
    assert (key["records"], key["failed_records"]) == (6, 1)

    r = mlc("db", "prune", tmp_path / "m", "--top-k", "2")
    assert r.exit_code == 0, r.stderr
    (key,) = json.loads(mlc("db", "list", tmp_path / "m", "--json").stdout)
    by_name = {w["name"]: w for w in key["workloads"]}
    assert (key["records"], key["failed_records"]) == (3, 0)
    assert by_name["softmax"]["trials"] == 5 and by_name["softmax"]["best_ms"] == 1.0
    text = mlc("db", "list", tmp_path / "m").stdout
    assert "2 workloads, 3 records, 0 failed" in text


def test_in_model_verdicts_choose_the_record_and_survive_merge_and_prune(tmp_path):
    base = {**_record("w", "default", 3e-3), "baseline": True}
    fast, faster = _record("w", "t1", 2e-3), _record("w", "t2", 1e-3)
    log = open_log(tmp_path / "a", KEY)
    log.append([_workload("w", "fused_conv2d"), base, fast])
    assert log.read().chosen("w") == fast  # not judged yet: the fastest alone

    def verdict(record, use):
        return {"kind": "verdict", "workload": "w", "schedule": schedule_id(record), "use": use}

    log.append([verdict(fast, "default")])  # slower than the default schedule in the model
    assert log.read().chosen("w") == base
    log.append([faster])  # a new record is not covered by the old verdict
    assert log.read().chosen("w") == faster
    log.append([verdict(faster, "record")])
    assert log.read().chosen("w") == faster
    log.append([verdict(faster, "default")])  # the latest verdict counts
    assert log.read().chosen("w") == base

    assert mlc("db", "merge", tmp_path / "a", "-o", tmp_path / "m").exit_code == 0
    assert mlc("db", "prune", tmp_path / "m", "--top-k", "1").exit_code == 0
    (merged,) = open_logs(tmp_path / "m")
    contents = merged.read()
    assert contents.chosen("w") == base  # the baseline outlives --top-k 1 for the verdict
    assert {schedule_id(r) for r in contents.records} == {schedule_id(base), schedule_id(faster)}


def test_whole_model_check_overrules_records_that_won_one_by_one(tmp_path):
    from compiler.schedules.validate import _whole_model_verdicts

    base = {**_record("w", "default", 3e-3), "baseline": True}
    fast = _record("w", "t1", 2e-3)
    log = open_log(tmp_path / "a", KEY)
    log.append([_workload("w", "fused_conv2d"), base, fast])
    kept = {"kind": "verdict", "workload": "w", "schedule": schedule_id(fast), "use": "record"}
    log.append([kept])
    assert log.read().chosen("w") == fast
    assert _whole_model_verdicts([kept], 6.2, 6.4) == []  # 3% faster together: kept
    assert _whole_model_verdicts([kept], 6.3, 6.4) != []  # 1.6%: within the noise margin
    log.append(_whole_model_verdicts([kept], 6.9, 6.4))  # slower together: overruled
    contents = log.read()
    assert contents.chosen("w") == base
    assert contents.verdicts["w"]["whole_model_ms"] == {"record": 6.9, "default": 6.4}


def test_prune_other_tvm_versions(tmp_path):
    import tvm

    old = DatabaseKey(KEY.preset, KEY.target, "0.19.0", 2)
    current = DatabaseKey(KEY.preset, KEY.target, tvm.__version__, 2)
    for key in (old, current):
        open_log(tmp_path / "db", key).append([_workload("w", "k"), _record("w", "t", 1e-3)])
    r = mlc("db", "prune", tmp_path / "db", "--other-tvm", "--json")
    assert json.loads(r.stdout)["dropped_keys"] == 1
    assert [log.key.tvm for log in open_logs(tmp_path / "db")] == [tvm.__version__]


def test_db_errors(tmp_path):
    r = mlc("db", "list", tmp_path / "nothing")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: tuning database '{tmp_path / 'nothing'}' does not exist"
    ]
    r = mlc("db", "prune", tmp_path, "--top-k", "0")
    assert r.stderr.splitlines() == ["error: --top-k must be at least 1, got 0"]


@pytest.mark.parametrize(
    "args", [["db"], ["db", "list"], ["db", "merge"], ["db", "prune"], ["tune"]]
)
def test_help(args):
    r = mlc(*args, "--help")
    assert r.exit_code == 0 and "Usage:" in r.stdout


# --- compiling with a database ---------------------------------------------------------------


def test_database_without_records_for_the_target(model_dir, tmp_path):
    r = mlc(
        "compile",
        model_dir / "mlp.onnx",
        "-o",
        tmp_path / "b",
        "--db",
        tmp_path / "db",
        "--target",
        "x86-avx2",
    )
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: tuning database '{tmp_path / 'db'}' has no records for target 'x86-avx2' on "
        "this machine and TVM version",
        f"hint: run `mlc tune MODEL --target x86-avx2 --db {tmp_path / 'db'}` first",
    ]
    assert not (tmp_path / "b").exists()


def test_db_strict_needs_a_db(model_dir, tmp_path):
    r = mlc("compile", model_dir / "mlp.onnx", "-o", tmp_path / "b", "--db-strict")
    assert r.exit_code == 2 and "--db-strict and --tune need --db DIR" in r.stderr


@pytest.mark.skipif(gpu_available(), reason="this host has a GPU")
def test_cuda_tuning_needs_a_gpu(model_dir, tmp_path):
    r = mlc("tune", model_dir / "mlp.onnx", "--db", tmp_path / "db", "--target", "cuda")
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        "error: tuning for CUDA measures each candidate kernel on a GPU, and this host has none "
        "(no NVIDIA driver or GPU found)",
        "hint: run `mlc tune` on a GPU host and copy the --db directory here; compiling with --db "
        "needs no GPU (remote measurement is not supported yet)",
    ]


def test_symbolic_dims_must_be_pinned_to_tune(model_dir, tmp_path):
    r = mlc("tune", model_dir / "convnet.onnx", "--db", tmp_path / "db")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0].endswith(
        "has symbolic dims N (x[0]); tuning measures kernels at fixed sizes"
    )
    assert not (tmp_path / "db").exists()
    r = mlc("tune", model_dir / "convnet.onnx", "--db", tmp_path / "db", "--dim", "N=1..8")
    assert r.exit_code == 2 and "'N=1..8' is a range; this command needs one size" in r.stderr
    assert not (tmp_path / "db").exists()
    r = mlc("tune", model_dir / "convnet.onnx", "--db", tmp_path / "db", "--dim", "N=0")
    assert r.exit_code == 2
    assert "'N=0' needs a size of at least 1, e.g. batch=1" in r.stderr.splitlines()[0]
    assert not (tmp_path / "db").exists()


def test_cross_target_tuning_is_refused(model_dir, tmp_path):
    r = mlc("tune", model_dir / "mlp.onnx", "--db", tmp_path / "db", "--target", "cortex-a72")
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == (
        "error: tuning for 'cortex-a72' measures candidates on an aarch64 CPU, and this host is "
        "not one; tune on the device (remote measurement is not supported yet)"
    )


# --- real tuning (slow) ----------------------------------------------------------------------


def _tune_process(model, db, *args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "compiler.cli", "tune", str(model), "--db", str(db), *args]
    # As from a terminal: a test run started in the background (`make test &`) inherits an
    # ignored SIGINT, and mlc rightly leaves an ignored Ctrl-C alone.
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.slow
def test_two_tuners_on_one_database_then_strict_compile(model_dir, tmp_path):
    db, model = tmp_path / "db", model_dir / "mlp.onnx"
    procs = [_tune_process(model, db, "--trials", "6", "--json") for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    summaries = [json.loads(out) for out, _ in outs]
    assert all(s["tasks"] == 3 and s["threads"] >= 1 for s in summaries)
    (log,) = open_logs(db)  # one key: target, TVM version and threads
    contents = log.read()
    assert contents.bad_lines == 0
    tuned = [r for r in contents.records if not r.get("baseline")]
    assert len(tuned) == sum(s["trials"] for s in summaries)  # nothing lost
    # Each kernel's default schedule was measured too: the record tuning has to beat.
    baselines = {r["workload"] for r in contents.records if r.get("baseline") and r["mean_s"]}
    assert baselines == set(contents.workloads)
    # Records that beat it alone were then timed inside the model (schedules/validate.py).
    for digest in contents.workloads:
        fastest = contents.fastest(digest)
        if not fastest.get("baseline"):
            assert contents.verdicts[digest]["schedule"] == schedule_id(fastest)
            assert contents.verdicts[digest]["use"] in ("record", "default")

    # A workload tuned once is not tuned again.
    t0 = time.monotonic()
    r = mlc_subprocess("tune", model, "--db", db, "--trials", "6")
    assert r.returncode == 0, r.stderr
    assert "3 kernels: 0 to tune, 3 already tuned" in r.stderr
    assert "0 trials measured now" in r.stdout and time.monotonic() - t0 < 60

    r = mlc_subprocess("compile", model, "-o", tmp_path / "b", "--db", db, "--db-strict")
    assert r.returncode == 0, r.stderr
    assert "tuned records cover 100% of the estimated runtime (3 of 3 kernels)" in r.stdout
    tuning = json.loads((tmp_path / "b" / "manifest.json").read_text())["tuning"]
    assert (tuning["kernels"], tuning["tuned_kernels"], tuning["coverage"]) == (3, 3, 1.0)
    assert tuning["sha256"] == contents.sha256
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    expected = run_reference(model, {"x": x})["y"]
    np.testing.assert_allclose(
        load_bundle(tmp_path / "b")(x=x)["y"], expected, rtol=1e-4, atol=1e-4
    )

    # The conv net has kernels no record covers: strict mode names them and writes nothing.
    r = mlc_subprocess(
        "compile",
        model_dir / "convnet.onnx",
        "-o",
        tmp_path / "c",
        "--db",
        db,
        "--db-strict",
        "--dim",
        "N=1",
    )
    assert r.returncode == 7
    assert (
        r.stderr.startswith("error: --db-strict: ") and "kernels worth tuning have no" in r.stderr
    )
    assert "winograd" not in r.stderr  # its Winograd transforms are left to their rule
    assert not (tmp_path / "c").exists()


def test_winograd_transforms_are_left_to_their_rule(model_dir, tmp_path):
    """MetaSchedule took over 400 s for the first 16 candidates of ResNet-18's fused Winograd
    output + input transform: tuning leaves those kernels to their default rule."""
    r = mlc_subprocess(
        "tune",
        model_dir / "convnet.onnx",
        "--db",
        tmp_path / "db",
        "--dim",
        "N=1",
        "--trials",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    kernels = {k["name"]: k["status"] for k in json.loads(r.stdout)["kernels"]}
    transforms = {n for n in kernels if "winograd" in n}
    assert transforms and {kernels[n] for n in transforms} == {"by rule"}
    assert f"{len(transforms)} by rule" in r.stderr


def _tuned(contents) -> int:
    """Records of tuning candidates, leaving out each kernel's default-schedule baseline."""
    return sum(not r.get("baseline") for r in contents.records)


def _wait_for_records(proc, db, more_than: int):
    """The database's log once it holds more than `more_than` records (the tuner runs on)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        logs = open_logs(db) if db.exists() else []
        if logs and len(logs[0].read().records) > more_than:
            return logs[0]
        time.sleep(0.5)
    raise AssertionError(f"no new records; tuner exited {proc.poll()}: {proc.communicate()[1]}")


@pytest.mark.slow
def test_interrupted_and_killed_tuners_keep_their_records_and_the_next_run_continues(
    model_dir, tmp_path
):
    db, model = tmp_path / "db", model_dir / "mlp.onnx"
    # Ctrl-C: the batch being measured is finished and kept, then exit 130.
    proc = _tune_process(model, db, "--trials", "40")
    log = _wait_for_records(proc, db, 0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and err.splitlines()[-1] == "error: interrupted", err
    interrupted = log.read()
    assert interrupted.bad_lines == 0 and interrupted.records

    # SIGKILL in the middle: at most the batch in flight is lost.
    proc = _tune_process(model, db, "--trials", "40")
    _wait_for_records(proc, db, len(interrupted.records))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = log.read()
    kept = {json.dumps(r["record"]) for r in before.records}
    assert len(kept) > len(interrupted.records) and before.bad_lines <= 1

    r = mlc_subprocess("tune", model, "--db", db, "--trials", "40", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    # the in-model check's time (when new records needed one) is reported apart, within the total
    assert 0 <= summary["check_seconds"] < summary["seconds"]
    assert (summary["check_seconds"] > 0) == (summary["model_check"] is not None)
    after = log.read()
    assert kept <= {json.dumps(r["record"]) for r in after.records}  # nothing lost
    tuned_before, tuned_after = _tuned(before), _tuned(after)  # baseline records aside
    assert summary["trials"] == tuned_after - tuned_before
    assert summary["trials"] <= 40 - tuned_before  # it continued, not started again
    for k in summary["kernels"]:
        assert k["trials"] >= k["target_trials"] or k["status"] == "exhausted", k
