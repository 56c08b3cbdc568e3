"""Every CLI command and every demo, at a tiny size."""

import json
import subprocess
import sys

import pytest

from igax import cli

DEMOS = sorted(cli.find_demos())


def test_info_json_reports_versions_and_precision(capsys):
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["igax"]
    assert data["float64"] is True  # tests run in float64 (conftest)
    assert any(d.startswith(("cpu", "Cpu", "TFRT_CPU")) or "cpu" in d.lower() for d in data["devices"])
    assert data["native_kernels"] == "yes" or data["native_kernels"].startswith("no (")
    # The backends are the solver's own list; superlu and the pure-JAX Krylov methods exist everywhere.
    from igax import solvers

    assert data["solver_backends"] == list(solvers.available_methods())
    assert {"superlu", "cg", "bicgstab", "gmres"} <= set(data["solver_backends"])


def test_demo_list_names_every_demo(capsys):
    assert cli.main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    assert DEMOS, "examples/ declares no demo"
    for name in DEMOS:
        assert name in out


@pytest.mark.parametrize("name", DEMOS)
def test_every_demo_runs_tiny(name, tmp_path, capsys):
    assert cli.main(["demo", name, "--size", "tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "finished" in out
    assert any(p.is_file() and p.stat().st_size > 0 for p in tmp_path.rglob("*")), "the demo wrote no file"


def test_unknown_names_and_sizes_fail_clearly():
    with pytest.raises(SystemExit, match="unknown demo 'nosuch'. Available"):
        cli.main(["demo", "nosuch"])
    with pytest.raises(SystemExit, match="unknown benchmark 'nosuch'"):
        cli.main(["bench", "nosuch"])
    if DEMOS:
        with pytest.raises(SystemExit, match="has no size 'nosize'. Available sizes"):
            cli.run_demo(DEMOS[0], size="nosize")


def test_bench_list(capsys):
    assert cli.main(["bench", "--list"]) == 0
    assert set(capsys.readouterr().out.split()) == set(cli.find_benchmarks())


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"], ["info", "--help"], ["bench", "--help"]])
def test_help_everywhere(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 0
    assert "usage: igax" in capsys.readouterr().out


def test_module_entry_point_and_bad_option():
    # One real subprocess: `python -m igax` is wired, and argparse rejects a bad choice with exit code 2.
    r = subprocess.run(
        [sys.executable, "-m", "igax", "demo", "--size", "huge"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "invalid choice: 'huge'" in r.stderr


def test_flagship_demo_writes_a_picture_of_the_field_and_a_readable_vtu(tmp_path):
    """What `make demo` promises: a PNG that is not blank, a VTU meshio reads back with the field's values."""
    import importlib.util

    import matplotlib.image
    import meshio
    import numpy as np

    result = cli.run_demo(cli.FLAGSHIP_DEMOS[0], tmp_path, size="tiny")
    image = matplotlib.image.imread(result["png"])[..., :3]
    assert image.std() > 0.05, "the picture is blank"
    assert len(np.unique((image.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 50
    mesh = meshio.read(result["vtu"])
    u = np.asarray(mesh.point_data["u"]).ravel()
    # The written values are the discrete solution: they match the exact one to within its (small) error.
    spec = importlib.util.spec_from_file_location("poisson_example", cli.find_demos()["poisson"]["path"])
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    exact = np.asarray(example.exact(mesh.points[:, :2].T))
    assert np.max(np.abs(u - exact)) < 0.05 * np.max(np.abs(exact))
    assert np.max(np.abs(u - exact)) > 0.0  # a discrete solution, not the exact function written back
