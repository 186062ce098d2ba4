"""Run in a clean process: which TVM functions can a deploy host resolve?

    python probe.py LIB_DIR LIB[,LIB...] MODEL_SO|- NAME...  -> JSON list of unresolvable names

It loads only what a deploy host loads (the runtime libraries, then the model library when it
can run here) in a process without the TVM compiler, so a function that only the 250 MB compiler
library provides shows up as missing at compile time instead of on the deploy host.
"""

import ctypes
import json
import sys
from pathlib import Path

import tvm_ffi


def main() -> None:
    lib_dir, libs, model, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    for lib in libs.split(","):
        ctypes.CDLL(str(lib_dir / lib), mode=ctypes.RTLD_GLOBAL)
    module = tvm_ffi.load_module(str(Path(model).resolve())) if model != "-" else None
    missing = [
        name
        for name in names
        if not (module is not None and module.implements_function(name, True))
        and tvm_ffi.get_global_func(name, allow_missing=True) is None
    ]
    print(json.dumps(missing))


if __name__ == "__main__":
    main()
