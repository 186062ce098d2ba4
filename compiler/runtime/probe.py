"""Run in a clean process: which of the given TVM functions can a bundle resolve on a deploy host?

    python probe.py BUNDLE_DIR NAME...   -> prints a JSON list of the names that cannot resolve

It loads only what the loader loads (the bundle's runtime libraries, then model.so) in a process
without the TVM compiler, so a function that only the 250 MB compiler library provides shows up
as missing at compile time instead of on the deploy host.
"""

import ctypes
import json
import sys
from pathlib import Path

import tvm_ffi


def main() -> None:
    bundle, names = Path(sys.argv[1]), sys.argv[2:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    for lib in manifest["runtime_libs"]:
        ctypes.CDLL(str(bundle / "lib" / lib), mode=ctypes.RTLD_GLOBAL)
    module = tvm_ffi.load_module(str((bundle / "model.so").resolve()))
    missing = [
        name
        for name in names
        if not module.implements_function(name, True)
        and tvm_ffi.get_global_func(name, allow_missing=True) is None
    ]
    print(json.dumps(missing))


if __name__ == "__main__":
    main()
