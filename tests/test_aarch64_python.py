"""The emulated aarch64 Python that ARM bundles are loaded with works: right machine, versions,
and tvm-ffi's native extension."""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest
import tvm_ffi
from aarch64_python import AArch64PythonUnavailable, ensure_aarch64_python

pytestmark = pytest.mark.slow  # each emulated run takes seconds; the first setup downloads


@pytest.fixture(scope="module")
def aarch64_python(request) -> list[str]:
    try:
        return ensure_aarch64_python(request.config.cache.mkdir("aarch64-python"))
    except AArch64PythonUnavailable as error:
        pytest.skip(f"no emulated aarch64 Python: {error}")


def run_emulated(argv: list[str], code: str) -> str:
    proc = subprocess.run(
        [*argv, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_runs_aarch64_with_the_hosts_numpy_and_tvm_ffi(aarch64_python):
    out = run_emulated(
        aarch64_python,
        "import platform, numpy, tvm_ffi; "
        "print(platform.machine(), numpy.__version__, tvm_ffi.__version__)",
    )
    assert out.split() == ["aarch64", np.__version__, tvm_ffi.__version__]


def test_tvm_ffi_native_extension_works_emulated(aarch64_python):
    out = run_emulated(
        aarch64_python,
        """
        import ctypes
        import numpy as np
        import tvm_ffi

        assert ctypes.sizeof(ctypes.c_void_p) == 8
        libc = ctypes.CDLL(None)
        assert libc.strlen(b"arm64") == 5

        x = np.arange(6, dtype="float32").reshape(2, 3)
        t = tvm_ffi.from_dlpack(x)
        assert tuple(t.shape) == (2, 3), t.shape
        assert str(t.dtype) == "float32", t.dtype
        back = np.from_dlpack(t)
        assert back.ctypes.data == x.ctypes.data  # zero-copy both ways
        np.testing.assert_array_equal(back, x)
        print("ok", tuple(t.shape))
        """,
    )
    assert out.split() == ["ok", "(2,", "3)"]
