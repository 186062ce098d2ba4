"""Per-call overhead of the bundle loader on a one-Add model (the goal: <= 10 us per call).

    python benchmarks/loader_overhead.py [--calls N]

Compiles the model, then times, in the same process: the loader's call (input checks, DLPack
conversion, VM call, outputs back to numpy), the raw VM call it wraps, and onnxruntime's run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import models

from compiler.api import compile_model, load_bundle
from compiler.options import CompileOptions
from compiler.reference import ort_session


def per_call_us(fn, calls: int) -> float:
    for _ in range(1000):
        fn()
    best = float("inf")
    for _ in range(5):  # best of 5 batches: the least disturbed by other work on the machine
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "add.onnx"
        onnx.save(models.add_one(), path)
        compile_model(path, Path(tmp) / "bundle", CompileOptions(target="x86"))
        model = load_bundle(Path(tmp) / "bundle", threads=1)
        x = np.ones((1, 4), np.float32)
        y = np.ones((1, 4), np.float32)
        loader_us = per_call_us(lambda: model(x=x, y=y), args.calls)
        positional_us = per_call_us(lambda: model(x, y), args.calls)
        import tvm_ffi

        main_fn = model._thread_state().main
        tx, ty = tvm_ffi.from_dlpack(x), tvm_ffi.from_dlpack(y)
        raw_us = per_call_us(lambda: main_fn(tx, ty), args.calls)
        session = ort_session(path, threads=1)
        ort_us = per_call_us(lambda: session.run(None, {"x": x, "y": y}), args.calls // 10)
    print(f"loader call, keyword inputs    {loader_us:7.2f} us  ({1e6 / loader_us:,.0f} calls/s)")
    print(f"loader call, positional inputs {positional_us:7.2f} us")
    print(f"raw VM call (no checks)        {raw_us:7.2f} us")
    print(f"onnxruntime session.run        {ort_us:7.2f} us")


if __name__ == "__main__":
    main()
