"""The TVM runtime libraries a bundle carries, for its target's architecture.

For the build host's architecture they come from the installed apache-tvm and apache-tvm-ffi
packages. For another architecture they come from the manylinux wheels of the *same versions*
on PyPI, fetched once with pip, checked against the sha256 digests in each wheel's RECORD and
against the ELF machine type, and cached under ~/.cache/mlc (MLC_CACHE_DIR overrides).

Offline: set MLC_WHEEL_DIR to a directory holding the two wheels (made on a connected machine
with the `pip download` command in the error message) and mlc takes them from there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .errors import BuildError
from .targets import host_arch

FFI_LIB = "libtvm_ffi.so"
_ELF_MACHINE = {"x86_64": 62, "aarch64": 183}
_WHEEL_PLATFORMS = {
    "aarch64": [
        "manylinux_2_28_aarch64",
        "manylinux_2_27_aarch64",
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    ],
}
_COMPLETE = ".complete"


def cache_root() -> Path:
    return Path(os.environ.get("MLC_CACHE_DIR", Path.home() / ".cache" / "mlc"))


def runtime_lib_dir(arch: str) -> Path:
    """A directory holding the TVM runtime libraries and libtvm_ffi.so for `arch`."""
    if arch == host_arch():
        return _host_lib_dir()
    if arch not in _WHEEL_PLATFORMS:
        raise BuildError(f"mlc has no source of TVM runtime libraries for architecture {arch!r}")
    tvm_version, ffi_version = _versions()
    cache = cache_root() / "runtime" / f"tvm-{tvm_version}_ffi-{ffi_version}" / arch
    if not (cache / _COMPLETE).exists():
        _fetch(arch, tvm_version, ffi_version, cache)
    return cache


def find_runtime_library(name: str, arch: str) -> Path:
    """The file for runtime library `name` on `arch`."""
    path = runtime_lib_dir(arch) / name
    if path.is_file():
        return path
    if arch == host_arch():
        if name == "libcudart.so.13":
            from .cuda import find_cudart

            return find_cudart()
        import tvm

        path = Path(tvm.__file__).parent / "lib" / name  # e.g. libtvm_runtime_cuda.so
        if path.is_file():
            return path
    raise BuildError(f"runtime library {name!r} is not available for {arch}")


def _host_lib_dir() -> Path:
    """The installed packages keep the two halves in two places; one directory is simpler."""
    import tvm
    import tvm_ffi

    tvm_version, ffi_version = _versions()
    cache = cache_root() / "runtime" / f"tvm-{tvm_version}_ffi-{ffi_version}" / host_arch()
    if not (cache / _COMPLETE).exists():
        staging = Path(tempfile.mkdtemp(dir=_mkdir(cache.parent)))
        tvm_lib = Path(tvm.__file__).parent / "lib"
        for name in ("libtvm_runtime.so", "libtvm_runtime_extra.so"):
            shutil.copy2(tvm_lib / name, staging / name)
        shutil.copy2(Path(tvm_ffi.__file__).parent / "lib" / FFI_LIB, staging / FFI_LIB)
        _publish(staging, cache)
    return cache


def _versions() -> tuple[str, str]:
    from importlib.metadata import version

    return version("apache-tvm"), version("apache-tvm-ffi")


def _fetch(arch: str, tvm_version: str, ffi_version: str, cache: Path) -> None:
    staging = Path(tempfile.mkdtemp(dir=_mkdir(cache.parent)))
    try:
        wheels = _download(arch, tvm_version, ffi_version, staging / "wheels")
        _extract(
            wheels["apache_tvm"],
            "tvm/lib/",
            ("libtvm_runtime.so", "libtvm_runtime_extra.so"),
            staging,
            arch,
        )
        _extract(wheels["apache_tvm_ffi"], "tvm_ffi/lib/", (FFI_LIB,), staging, arch)
        shutil.rmtree(staging / "wheels")
        _publish(staging, cache)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _download(arch: str, tvm_version: str, ffi_version: str, dest: Path) -> dict[str, Path]:
    requirements = [f"apache-tvm=={tvm_version}", f"apache-tvm-ffi=={ffi_version}"]
    platforms = [arg for p in _WHEEL_PLATFORMS[arch] for arg in ("--platform", p)]
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *platforms,
        "--python-version",
        py,
        "--implementation",
        "cp",
        "--dest",
        str(dest),
    ]
    wheel_dir = os.environ.get("MLC_WHEEL_DIR")
    if wheel_dir:
        command += ["--no-index", "--find-links", wheel_dir]
    shown = (
        "pip download --no-deps --only-binary=:all: "
        + " ".join(f"--platform {p}" for p in _WHEEL_PLATFORMS[arch][:1])
        + f" --python-version {py} "
        + " ".join(requirements)
    )
    result = subprocess.run([*command, *requirements], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        where = f"MLC_WHEEL_DIR={wheel_dir}" if wheel_dir else "PyPI"
        raise BuildError(
            f"cannot fetch the {arch} TVM runtime (apache-tvm {tvm_version}, apache-tvm-ffi "
            f"{ffi_version} wheels) from {where}: {reason}",
            hint=f"offline? on a connected machine run `{shown} -d WHEELS`, copy WHEELS here "
            "and set MLC_WHEEL_DIR=WHEELS",
        )
    found = {}
    for wheel in dest.glob("*.whl"):
        found[wheel.name.split("-")[0].lower()] = wheel
    if set(found) != {"apache_tvm", "apache_tvm_ffi"}:
        raise BuildError(
            f"pip download of the {arch} runtime gave unexpected files: {sorted(found)}"
        )
    return found


def _extract(wheel: Path, prefix: str, names: tuple[str, ...], dest: Path, arch: str) -> None:
    """Copy `names` out of `wheel`, verifying each against the wheel's RECORD and ELF header."""
    with zipfile.ZipFile(wheel) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        record = {}
        for line in zf.read(record_name).decode().splitlines():
            path, digest, _size = line.rsplit(",", 2)
            record[path] = digest
        for name in names:
            member = prefix + name
            data = zf.read(member)
            expected = record.get(member, "")
            actual = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
            if actual.rstrip("=") != expected.rstrip("="):
                raise BuildError(f"{member} in {wheel.name} does not match the wheel's RECORD")
            machine = int.from_bytes(data[18:20], "little") if data[:4] == b"\x7fELF" else -1
            if machine != _ELF_MACHINE[arch]:
                raise BuildError(f"{member} in {wheel.name} is not an {arch} shared library")
            (dest / name).write_bytes(data)
            (dest / name).chmod(0o755)


def _publish(staging: Path, cache: Path) -> None:
    """Move a finished directory into place; a concurrent mlc may have won the race."""
    (staging / _COMPLETE).write_text("ok\n")
    try:
        os.rename(staging, cache)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (cache / _COMPLETE).exists():
            raise


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
