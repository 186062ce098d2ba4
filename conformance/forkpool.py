"""A fork server: the parent imports TVM once, then forks one child per case.

A child that segfaults, aborts or runs past its timeout is reported as a crash; it cannot take
the run down. Each child runs in its own process group so a compiler it started dies with it.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Task = tuple[str, Any]  # (key, argument for the work function)


def run_forked(
    tasks: Iterable[Task],
    work: Callable[[Any], dict],
    jobs: int,
    timeout: float,
    on_result: Callable[[str, dict], None],
) -> None:
    """Run work(arg) in a forked child per task, at most `jobs` at a time.

    `work` returns a JSON-able dict. on_result(key, result) gets that dict, or for a child that
    died: {"status": "crash", "reason": ...}.
    """
    pending = list(tasks)
    running: dict[int, tuple[str, float, Path]] = {}
    with tempfile.TemporaryDirectory(prefix="mlc-conformance-") as tmp:
        counter = 0
        while pending or running:
            while pending and len(running) < jobs:
                key, arg = pending.pop(0)
                counter += 1
                result_path = Path(tmp) / f"{counter}.json"
                pid = _spawn(work, arg, result_path)
                running[pid] = (key, time.monotonic(), result_path)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                _kill_overdue(running, timeout)
                time.sleep(0.02)
                continue
            key, started, result_path = running.pop(pid)
            on_result(key, _collect(status, result_path, time.monotonic() - started, timeout))


def _spawn(work: Callable[[Any], dict], arg: Any, result_path: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    # Child: never return into the parent's code; os._exit skips its atexit handlers.
    code = 0
    try:
        os.setpgid(0, 0)
        log = os.open(str(result_path) + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        result = work(arg)
    except BaseException as exc:  # report the child's own failure instead of dying silently
        result = {
            "status": "crash",
            "reason": f"{type(exc).__name__}: {_one_line(str(exc))}",
            "traceback": traceback.format_exc()[-2000:],
        }
        code = 1
    try:
        result_path.write_text(json.dumps(result, default=str))
    finally:
        os._exit(code)


def _kill_overdue(running: dict, timeout: float) -> None:
    now = time.monotonic()
    for pid, (_key, started, result_path) in running.items():
        if now - started > timeout and not result_path.with_suffix(".killed").exists():
            result_path.with_suffix(".killed").touch()
            for target in (-pid, pid):  # the group first (compilers it started), then itself
                try:
                    os.kill(target, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def _collect(status: int, result_path: Path, seconds: float, timeout: float) -> dict:
    if result_path.with_suffix(".killed").exists():
        result = {"status": "crash", "reason": f"timeout: still running after {timeout:.0f} s"}
    elif result_path.exists():
        result = json.loads(result_path.read_text())
    elif os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        result = {"status": "crash", "reason": f"killed by {sig}{_log_tail(result_path)}"}
    else:
        code = os.WEXITSTATUS(status)
        result = {"status": "crash", "reason": f"exited with {code}{_log_tail(result_path)}"}
    result["seconds"] = round(seconds, 2)
    return result


def _log_tail(result_path: Path) -> str:
    log = Path(str(result_path) + ".log")
    if not log.exists():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return f" ({_one_line(lines[-1])})" if lines else ""


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:300]
