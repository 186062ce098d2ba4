"""An aarch64 CPython with numpy and apache-tvm-ffi, run under qemu-user, for tests.

Bundles compiled for ARM must load through compiler/runtime/loader.py on an ARM host, whose
Python has only the standard library, numpy and apache-tvm-ffi. This module assembles such an
interpreter on an x86-64 Debian machine without installing anything into the system:

* Debian arm64 packages (PACKAGES) are fetched with ``apt-get download`` and unpacked with
  ``dpkg-deb -x`` into a sysroot. apt runs with ``APT::Architecture=arm64``, an empty dpkg
  status and private ``Dir::State::Lists`` / ``Dir::Cache`` directories in a temporary
  directory, so the system's apt configuration, package lists and installed packages are left
  alone; no ``dpkg --add-architecture`` is needed. The package sources are the system's own.
* The cp311 aarch64 wheels of numpy, apache-tvm-ffi and typing-extensions (tvm-ffi's one
  runtime dependency), at the versions installed next to the calling Python, are fetched with
  ``pip download`` and unzipped into a site-packages directory.
* Programs run as ``qemu-aarch64 -L SYSROOT ... SYSROOT/usr/bin/python3.11`` because
  binfmt_misc may not be mounted. ``-L`` makes the guest's dynamic loader and absolute-path
  opens look inside the sysroot first.

Cache layout, under the directory passed to ensure_aarch64_python:

    sysroot-<codename>-python3.11_<debian version>-<hash of PACKAGES>/   .complete marker
    site-cp311-numpy<v>-tvmffi<v>-typingext<v>/                          .complete marker

Each entry gets its marker only after it was built and an emulated interpreter imported from
it, so an interrupted setup is redone rather than half-used; a directory without a marker is
deleted and rebuilt. Entries of a kind that no longer match are deleted when a new one is built.
The Debian version of the sysroot is resolved when it is built: a later security update is not
picked up until the cache is cleared (``pytest --cache-clear``), because checking for one would
need the network on every run. A file lock serializes concurrent callers (pytest-xdist).

A cold setup downloads about 38 MB (arm64 package lists, packages, wheels), takes about 20 s
and leaves about 130 MB in the cache; a warm call only checks the markers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

PYTHON_VERSION = "3.11"  # Debian 12's python3 and the wheel tag (cp311) must agree
# The least set that runs `import numpy, tvm_ffi, ctypes, json, hashlib, threading`: the
# interpreter (needs zlib, expat), the stdlib (_ctypes needs libffi, _hashlib needs OpenSSL's
# libcrypto), glibc, and the C++ runtime that numpy's and tvm-ffi's extensions link against.
PACKAGES = (
    f"python{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-stdlib",
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libssl3",
)
# pip expands each manylinux tag to the older ones it implies; Debian 12 has glibc 2.36.
WHEEL_PLATFORMS = (
    "manylinux_2_36_aarch64",
    "manylinux_2_28_aarch64",
    "manylinux_2_17_aarch64",
    "manylinux2014_aarch64",
)
WHEELS = ("numpy", "apache-tvm-ffi", "typing-extensions")
LAYOUT_VERSION = "1"  # bump when the sysroot's construction changes, to rebuild old caches
MARKER = ".complete"
COMMAND_TIMEOUT_S = 300


class AArch64PythonUnavailable(RuntimeError):
    """This machine cannot provide an emulated aarch64 Python (a tool or the network is
    missing). Tests should skip with this reason; a broken setup raises RuntimeError instead."""


def ensure_aarch64_python(cache_dir: Path) -> list[str]:
    """Assemble (once, cached in cache_dir) an aarch64 CPython with numpy and apache-tvm-ffi,
    and return the argv prefix that runs it under qemu:

        ["/usr/bin/qemu-aarch64", "-L", SYSROOT, "-E", "PYTHONHOME=SYSROOT/usr", ...,
         "SYSROOT/usr/bin/python3.11"]

    Append the interpreter's arguments (``-c CODE``, a script path). The guest's PYTHONPATH is
    the wheels' site-packages; to set more guest environment, splice ``-E VAR=value`` in
    before the last element. numpy and apache-tvm-ffi get the versions installed for the
    calling Python.

    Raises AArch64PythonUnavailable(reason) when it cannot be set up (no qemu-aarch64, no
    apt-get, no network, no wheel for these versions).
    """
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise AArch64PythonUnavailable("qemu-aarch64 is not installed (Debian: qemu-user)")
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise AArch64PythonUnavailable(f"{tool} is not available (not a Debian system)")
    versions = _host_wheel_versions()
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        sysroot = _ensure_sysroot(qemu, cache_dir)
        site = _ensure_site(qemu, cache_dir, sysroot, versions)
    return _argv(qemu, sysroot, site)


def _argv(qemu: str, sysroot: Path, site: Path | None) -> list[str]:
    path = ["-E", f"PYTHONPATH={site}"] if site else ["-U", "PYTHONPATH"]
    return [
        qemu,
        "-L",
        str(sysroot),
        # Explicit, so the stdlib is found even where -L's path redirection would not apply.
        "-E",
        f"PYTHONHOME={sysroot / 'usr'}",
        *path,
        # qemu hands the host's environment to the guest: keep the host's user site-packages
        # (x86-64 extensions) out, and host loader settings away from the guest's ld.so.
        "-E",
        "PYTHONNOUSERSITE=1",
        "-U",
        "LD_PRELOAD",
        "-U",
        "LD_LIBRARY_PATH",
        # Compiling under emulation dominates start-up (about 9 s against 2.5 s with cached
        # bytecode), so let the guest keep .pyc files in the cache even if the host says not to.
        "-U",
        "PYTHONDONTWRITEBYTECODE",
        "-U",
        "PYTHONPYCACHEPREFIX",
        str(sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"),
    ]


def _host_wheel_versions() -> dict[str, str]:
    versions = {}
    for name in WHEELS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise AArch64PythonUnavailable(
                f"{name} is not installed for {sys.executable}, so its version is unknown"
            ) from None
    return versions


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def _start_entry(cache_dir: Path, path: Path, kind: str) -> None:
    """Clear what an interrupted build left at path and entries of this kind with other keys."""
    for stale in cache_dir.glob(f"{kind}-*"):
        if stale != path:
            shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()


def _finish_entry(path: Path, record: dict) -> None:
    (path / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _run(argv: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a setup command; a failure means this machine cannot provide the interpreter."""
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise AArch64PythonUnavailable(f"{what} took over {COMMAND_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
        raise AArch64PythonUnavailable(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc


def _check_guest(argv: list[str], code: str, what: str) -> str:
    """Run code in the emulated interpreter; a failure here is a bug in the sysroot or the
    wheels, not a missing resource, so it raises RuntimeError rather than skipping."""
    proc = subprocess.run(
        [*argv, "-c", code], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{what}: the emulated interpreter failed (exit {proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def _codename() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return "unknown"
    match = re.search(r"^VERSION_CODENAME=\"?([\w.-]+)", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def _ensure_sysroot(qemu: str, cache_dir: Path) -> Path:
    key = hashlib.sha256(repr((LAYOUT_VERSION, PACKAGES)).encode()).hexdigest()[:10]
    prefix = f"sysroot-{_codename()}-python{PYTHON_VERSION}_"
    built = [p for p in cache_dir.glob(f"{prefix}*-{key}") if _complete(p)]
    if built:
        return max(built, key=lambda p: p.stat().st_mtime)

    with tempfile.TemporaryDirectory(prefix="aarch64-apt-") as tmp:
        debs = _download_debs(Path(tmp))
        record = dict(_deb_version(deb) for deb in debs)  # package -> Debian version
        python_version = record[PACKAGES[0]].replace(":", "_")
        sysroot = cache_dir / f"{prefix}{python_version}-{key}"
        _start_entry(cache_dir, sysroot, "sysroot")
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"dpkg-deb -x {deb.name}")

    # Also compiles the stdlib modules the loader uses, while bytecode writing is allowed.
    machine = _check_guest(
        _argv(qemu, sysroot, None),
        "import ctypes, hashlib, json, platform, threading, _hashlib, pathlib, typing\n"
        "ctypes.CDLL(None); hashlib.sha256(b'')\n"
        "print(platform.machine())",
        "sysroot check",
    ).strip()
    if machine != "aarch64":
        raise RuntimeError(f"sysroot check: the emulated interpreter reports {machine!r}")
    _finish_entry(sysroot, {"packages": record})
    return sysroot


def _deb_version(deb: Path) -> tuple[str, str]:
    fields = _run(["dpkg-deb", "-f", str(deb), "Package", "Version"], f"dpkg-deb -f {deb.name}")
    values = dict(line.split(": ", 1) for line in fields.stdout.splitlines())
    return values["Package"], values["Version"]


def _download_debs(tmp: Path) -> list[Path]:
    lists = tmp / "lists"
    (lists / "partial").mkdir(parents=True)
    (tmp / "cache" / "archives" / "partial").mkdir(parents=True)
    debs = tmp / "debs"
    debs.mkdir()
    options = [
        "-q",
        "-o",
        "APT::Architecture=arm64",
        "-o",
        "APT::Architectures=arm64",
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Dir::Cache={tmp / 'cache'}",
        # The host's dpkg status (amd64 packages) has no bearing on what to download.
        "-o",
        "Dir::State::status=/dev/null",
    ]
    if os.geteuid() == 0:
        # As root, apt fetches as the _apt user, who cannot write into a private temp dir.
        options += ["-o", "APT::Sandbox::User=root"]
    update = _run(["apt-get", *options, "update"], "apt-get update (arm64 lists)")
    try:
        _run(["apt-get", *options, "download", *PACKAGES], "apt-get download", cwd=debs)
    except AArch64PythonUnavailable as error:
        # apt-get update exits 0 when no source could be fetched (no network); its errors
        # say why better than download's "Unable to locate package".
        problems = [
            line.strip()
            for line in (update.stdout + update.stderr).splitlines()
            if line.startswith(("Err:", "E:", "W:", "  "))
        ]
        if not problems:
            raise
        reason = "; ".join(problems[-6:])
        raise AArch64PythonUnavailable(f"apt-get update (arm64 lists): {reason}") from error
    found = sorted(debs.glob("*.deb"))
    if len(found) != len(PACKAGES):
        raise AArch64PythonUnavailable(f"apt-get download fetched {[d.name for d in found]}")
    return found


def _ensure_site(qemu: str, cache_dir: Path, sysroot: Path, versions: dict[str, str]) -> Path:
    site = cache_dir / (
        f"site-cp{PYTHON_VERSION.replace('.', '')}-numpy{versions['numpy']}"
        f"-tvmffi{versions['apache-tvm-ffi']}-typingext{versions['typing-extensions']}"
    )
    if _complete(site):
        return site

    _start_entry(cache_dir, site, "site")
    with tempfile.TemporaryDirectory(prefix="aarch64-wheels-") as tmp:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--no-deps",
                "--only-binary=:all:",
                *(f"--platform={tag}" for tag in WHEEL_PLATFORMS),
                f"--python-version={PYTHON_VERSION}",
                "--implementation=cp",
                f"--dest={tmp}",
                *(f"{name}=={version}" for name, version in versions.items()),
            ],
            "pip download (aarch64 wheels)",
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != len(versions):
            raise AArch64PythonUnavailable(f"pip download fetched {[w.name for w in wheels]}")
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)

    # Proves the native extensions load and compiles their modules' bytecode once.
    reported = _check_guest(
        _argv(qemu, sysroot, site),
        "import json, numpy, tvm_ffi\n"
        "print(json.dumps([numpy.__version__, tvm_ffi.__version__, numpy.__file__,"
        " tvm_ffi.__file__]))",
        "site-packages check",
    )
    numpy_version, tvm_ffi_version, *files = json.loads(reported)
    if (numpy_version, tvm_ffi_version) != (versions["numpy"], versions["apache-tvm-ffi"]):
        raise RuntimeError(f"site-packages check: the emulated interpreter reports {reported}")
    if not all(Path(f).is_relative_to(site) for f in files):
        raise RuntimeError(f"site-packages check: modules come from outside {site}: {files}")
    _finish_entry(site, {"wheels": versions})
    return site
