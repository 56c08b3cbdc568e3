"""The wheel: built from a copy of the sources, installed into a fresh venv, run from outside the tree.

``igax demo`` found nothing after a wheel install because ``examples/`` was not packaged, and nothing tested
an installed igax. The fresh venv has no pip and no dependencies of its own: a ``.pth`` file points it at the
test venv's site-packages for jax & co. (``.pth`` files found there are not run, so the test venv's editable
igax stays out of it), and the test venv's pip installs the wheel into it (``pip --python``).
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from igax import cli

ROOT = Path(__file__).resolve().parents[1]
BIN = "Scripts" if os.name == "nt" else "bin"


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy, so the build leaves nothing (build/, egg-info) in the working tree."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.vtu", "*.png")
    for name in ("igax", "examples"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"), str(src)]
    # pyproject's build requirements (setuptools >= 77, the test extra) in this venv: build offline with them.
    isolated = int(version("setuptools").split(".")[0]) < 77
    r = _run(cmd if isolated else cmd[:4] + ["--no-build-isolation"] + cmd[4:])
    if r.returncode != 0 and isolated and "from versions: none" in r.stderr + r.stdout:
        pytest.skip("no setuptools>=77 here and no package index to fetch it for an isolated build")
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("igax-*.whl")
    return wheel


def test_wheel_install_finds_demos_and_backends(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    # every example script ships, beside the package (not as a top-level 'examples' package)
    scripts = sorted(p.name for p in (ROOT / "examples").glob("*.py"))
    assert sorted(Path(n).name for n in names if n.startswith("igax/_examples/")) == scripts
    assert not any(n.startswith("examples/") for n in names)
    assert "igax/_native/interp_kernels.cc" in names

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    python = venv / BIN / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(purelib.stdout.strip()) / "igax_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    r = _run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)])
    assert r.returncode == 0, r.stderr[-3000:]

    # Run the installed command from a folder outside the source tree, with nothing pointing back at it.
    env = {k: v for k, v in os.environ.items() if k not in ("IGAX_ROOT", "PYTHONPATH")}
    igax = str(venv / BIN / "igax")
    code = "import igax, igax.cli as c; print(igax.__file__); print(c.examples_dir())"
    where = _run([str(python), "-c", code], cwd=tmp_path, env=env)
    module, folder = where.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(folder).is_relative_to(venv), where.stdout

    r = _run([igax, "info", "--json"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout)
    assert {"superlu", "cg", "bicgstab", "gmres"} <= set(info["solver_backends"])

    r = _run([igax, "demo", "--list"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    listed = {line.split()[0] for line in r.stdout.splitlines() if line and not line.startswith("(")}
    assert listed == set(cli.find_demos()) and len(listed) >= 10

    # One demo runs from the installed scripts and writes its picture.
    r = _run([igax, "demo", "basis", "--size", "tiny", "--out", str(tmp_path / "out")], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "out" / "basis.png").stat().st_size > 5000
