"""`mlc package`: a bundle as one deterministic .tar.gz for firmware images and device fleets.

Same bundle in, same bytes out: entries sorted, every timestamp, owner and permission fixed,
and the gzip header without a name or time. The archive holds one top-level directory with the
bundle (loader.py for Python hosts, bin/mlc-runner for hosts without Python) and a SHA256SUMS
file that `sha256sum -c` checks on the device. A `.sha256` file is written beside the archive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError, UsageError
from .runtime import loader

SUMS_FILE = "SHA256SUMS"
_EPOCH = 0  # 1970-01-01: fixed, so the bytes do not depend on when or where it was built


@dataclass(frozen=True)
class Package:
    path: Path
    sha256: str
    files: int
    bytes: int


def package_bundle(bundle_dir: Path, out_path: Path, force: bool = False) -> Package:
    """Write `bundle_dir` as a deterministic archive at `out_path` (a .tar.gz)."""
    bundle_dir, out_path = Path(bundle_dir), Path(out_path)
    if not out_path.name.endswith((".tar.gz", ".tgz")):
        raise UsageError(f"package name {out_path.name!r} must end in .tar.gz or .tgz")
    if out_path.exists() and not force:
        raise UsageError(
            f"package {str(out_path)!r} already exists", hint="pass --force to replace it"
        )
    try:
        manifest = loader.read_manifest(bundle_dir)
        loader.verify_files(bundle_dir, manifest)  # never package a damaged bundle
    except loader.BundleError as exc:
        raise BundleError(str(exc)) from None
    root = re.sub(r"[^A-Za-z0-9._-]", "_", bundle_dir.resolve().name) or "bundle"
    files = sorted([*manifest["files"], loader.MANIFEST_FILE])
    sums = "".join(f"{_sha256_file(bundle_dir / f)}  {f}\n" for f in files)
    data = _archive(bundle_dir, root, files, sums.encode())
    digest = hashlib.sha256(data).hexdigest()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_path, data)
    _write_atomic(
        out_path.with_name(out_path.name + ".sha256"), f"{digest}  {out_path.name}\n".encode()
    )
    return Package(out_path, digest, len(files) + 1, len(data))


def _archive(bundle_dir: Path, root: str, files: list[str], sums: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_info(f"{root}/", tarfile.DIRTYPE, 0o755))
        dirs = sorted({str(Path(f).parent) for f in files} - {"."})
        for d in dirs:
            tar.addfile(_info(f"{root}/{d}/", tarfile.DIRTYPE, 0o755))
        for rel in files:
            path = bundle_dir / rel
            mode = 0o755 if os.access(path, os.X_OK) and path.suffix != ".json" else 0o644
            info = _info(f"{root}/{rel}", tarfile.REGTYPE, mode)
            info.size = path.stat().st_size
            with open(path, "rb") as f:
                tar.addfile(info, f)
        info = _info(f"{root}/{SUMS_FILE}", tarfile.REGTYPE, 0o644)
        info.size = len(sums)
        tar.addfile(info, io.BytesIO(sums))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=_EPOCH, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, _EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract an mlc package, refusing absolute paths, `..`, links and device files."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if (
                member.name.startswith("/")
                or ".." in parts
                or not (member.isfile() or member.isdir())
            ):
                raise BundleError(f"refusing to extract unsafe archive entry {member.name!r}")
        tar.extractall(dest, filter="data")
        roots = {Path(m.name).parts[0] for m in tar.getmembers()}
    if len(roots) != 1:
        raise BundleError(
            f"{str(archive)!r} is not an mlc package: it has {len(roots)} top-level entries"
        )
    return dest / roots.pop()
