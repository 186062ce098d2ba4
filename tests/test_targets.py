"""Targets are data: presets, user preset files, and their errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, mlc

from compiler.errors import UsageError
from compiler.targets import load_preset, resolve_target


def test_listing_presets_does_not_import_tvm():
    code = (
        "import sys; from compiler.targets import list_presets; "
        "names = [p.name for p in list_presets()]; "
        "assert 'tvm' not in sys.modules, 'tvm was imported'; print(' '.join(names))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert {"x86", "x86-avx2", "x86-avx512"} <= set(r.stdout.split())


def test_host_preset_detects_cpu():
    resolved = resolve_target(load_preset("x86"))
    assert resolved.target["mcpu"] not in ("host", "")
    assert resolved.target["mtriple"] == "x86_64-linux-gnu"
    flags = set(open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n")[0].split())
    assert set(resolved.cpu_features) <= flags


def test_fixed_presets_keep_their_cpu():
    assert resolve_target(load_preset("x86-avx2")).target["mcpu"] == "haswell"
    assert "avx512f" in resolve_target(load_preset("x86-avx512")).cpu_features


def test_user_preset_file(tmp_path, model_dir):
    preset = tmp_path / "mybox.toml"
    preset.write_text(
        'description = "my box"\n[target]\nkind = "llvm"\nmtriple = "x86_64-linux-gnu"\n'
        'mcpu = "x86-64"\n[runtime]\narch = "x86_64"\nlibs = ["libtvm_runtime.so"]\n'
        "cpu_features = []\n"
    )
    r = mlc("compile", model_dir / "add.onnx", "-o", tmp_path / "out", "--target", preset, "--json")
    assert r.exit_code == 0, r.stderr
    assert '"name": "mybox"' in r.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("[target\n", "is not valid TOML"),
        ("[runtime]\narch='x86_64'\nlibs=[]\n", "target must be a dict, got None"),
        (
            '[target]\nkind="llvm"\n[runtime]\narch="x86_64"\n',
            "runtime.libs must be a list, got None",
        ),
        (
            '[target]\nkind="llvm"\nmcpu="pentium9000"\n[runtime]\narch="x86_64"\nlibs=[]\n',
            "has an invalid TVM target",
        ),
    ],
)
def test_bad_preset_files(tmp_path, text, message):
    preset = tmp_path / "bad.toml"
    preset.write_text(text)
    with pytest.raises(UsageError, match=message):
        resolve_target(load_preset(str(preset)))
