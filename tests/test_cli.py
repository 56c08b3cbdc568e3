"""Every CLI command and every demo, at a tiny size."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from demo_runs import tiny

from igax import cli

DEMOS = sorted(cli.find_demos())
README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_pictures() -> dict[str, str]:
    """Demo name -> file name of the picture the README shows for it ("Pictures the demos make")."""
    section = README.read_text().split("## Pictures the demos make", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"`igax demo ([\w-]+)`", section)
    images = re.findall(r"!\[[^\]]*\]\(docs/images/([\w.-]+)\)", section)
    assert len(names) == len(images) >= 4, (names, images)
    return dict(zip(names, images, strict=True))


README_PICTURES = _readme_pictures()


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
def test_every_demo_runs_tiny(name, tmp_path_factory):
    # the run the example's own test reads too (tests/demo_runs.py): `igax demo NAME --size tiny --out ...`
    run = tiny(name, tmp_path_factory)
    assert run.code == 0
    out, tmp_path = run.stdout, run.out
    assert "finished" in out
    assert any(p.is_file() and p.stat().st_size > 0 for p in tmp_path.rglob("*")), "the demo wrote no file"
    # The summary is one short line per number: arrays (the topology's densities) are summarised.
    summary = out.split("finished in", 1)[1].split("\noutput in", 1)[0].splitlines()[1:]
    assert summary and all(re.fullmatch(r"  [\w.]+: .{1,200}", line) for line in summary), summary
    # The picture the README shows for this demo is one the demo writes.
    if name in README_PICTURES:
        assert (tmp_path / README_PICTURES[name]).stat().st_size > 5000


def test_demo_names_are_consistent_and_other_spellings_resolve():
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in DEMOS), DEMOS
    assert cli.resolve_demo("spline_layer_denoise") == "spline-layer-denoise"  # the old name
    assert cli.resolve_demo("nonlinear_diffusion") == "nonlinear-diffusion"
    assert cli.resolve_demo("Plate") == "plate"
    assert cli.resolve_demo("plate_with_hole") == "plate"  # the script's file name
    assert cli.resolve_demo("topology-optimization") == "topology"
    with pytest.raises(SystemExit, match="unknown demo 'plate-with'. Available: .*spline-layer-denoise"):
        cli.resolve_demo("plate-with")
    # a demo's own name wins over another script's file name (training lives in parametric_diffusion.py)
    assert cli.resolve_demo("training") == "training"


def test_result_values_are_summarised_on_one_line():
    import numpy as np

    rho = np.linspace(0.0, 1.0, 600).reshape(20, 30)
    assert cli.summarise(rho) == "array of shape (20, 30), min 0, max 1, mean 0.5"
    assert cli.summarise([0.5, 0.25]) == "[0.5, 0.25]" and cli.summarise(3) == "3"
    assert cli._flatten({"a": {"b": 1.0}, "c": rho})["a.b"] == 1.0


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


def test_flagship_demo_writes_a_picture_of_the_field_and_a_readable_vtu(tmp_path_factory):
    """What `make demo` promises: a PNG that is not blank, a VTU meshio reads back with the field's values."""
    import importlib.util

    import matplotlib.image
    import meshio
    import numpy as np

    # cli.run_demo(FLAGSHIP_DEMOS[0], out, size="tiny"), the run test_every_demo_runs_tiny reads too
    result = tiny(cli.FLAGSHIP_DEMOS[0], tmp_path_factory).result
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
