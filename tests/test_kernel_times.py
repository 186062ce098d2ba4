"""The per-kernel profile (compiler/kernel_times.py) that the in-model check of tuning records and
`benchmarks/run.py --profile` read."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, random_inputs

from compiler.api import load_bundle


def test_kernel_profile_counts_every_kernel_call(bundles):
    sys.path.insert(0, str(ROOT))  # benchmarks/ is a package of the repository, not installed
    from benchmarks.timing import kernel_profile

    model = load_bundle(bundles("mlp"))
    rows = kernel_profile(model, random_inputs(model), runs=4)
    kernels = {r["name"]: r for r in rows if not r["name"].startswith("vm.builtin")}
    assert kernels and all(r["calls"] >= 1 and r["ms"] > 0 for r in kernels.values())
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-6
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)


def test_profiling_a_bundle_does_not_load_the_compiler(bundles):
    """A loaded bundle's runtime and TVM's compiler library cannot share a process."""
    code = (
        "import sys; from compiler.api import load_bundle; import benchmarks.timing as t; "
        "from compiler.kernel_times import KernelTimes; "
        f"m = load_bundle({str(bundles('mlp'))!r}); "
        "print('tvm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
