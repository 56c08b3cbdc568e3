"""The FEM examples run at a tiny size and print the numbers they promise."""

import importlib.util
import pathlib

import pytest
from demo_runs import tiny

ROOT = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_poisson_annulus_example(tmp_path_factory):
    # the demo's tiny size, run once for this test and tests/test_cli.py (tests/demo_runs.py)
    assert _load("poisson_annulus").DEMO["sizes"]["tiny"] == {"degree": 2, "elements": 4}
    r = tiny("poisson", tmp_path_factory).result
    # Degree 2, 4 x 4 elements: the errors of the reference study (3.95e-2 in L2 at this size).
    assert r["l2_error"] == pytest.approx(0.03946674695, rel=1e-6)
    assert r["h1_error"] == pytest.approx(0.93119953827, rel=1e-6)
    assert pathlib.Path(r["vtu"]).stat().st_size > 1000 and pathlib.Path(r["png"]).stat().st_size > 5000


def test_plate_with_hole_example(tmp_path_factory):
    # the demo's tiny size, run once for this test, the next one and tests/test_cli.py (tests/demo_runs.py)
    assert _load("plate_with_hole").DEMO["sizes"]["tiny"] == {"degree": 2, "elements": 4}
    r = tiny("plate", tmp_path_factory).result
    # Degree 2, 4 x 4 elements: displacement L2 error against Kirsch's solution 1.27e-5 (2.2e-6 at 8 x 8).
    assert r["l2_error"] == pytest.approx(1.2732164e-05, rel=1e-5)
    # Recovered (L2-projected) stress at the hole, exact 30: 29.73 at this size, 30.44 at 8 x 8, 30.013 at
    # degree 3, 16 x 16.
    assert r["sigma_xx_at_hole"] == pytest.approx(29.725835, abs=1e-4)
    assert abs(r["sigma_xx_at_hole"] - 30.0) < 0.6
    assert pathlib.Path(r["vtu"]).exists()


@pytest.mark.slow  # the 8 x 8 run (about 3 s CPU warm): convergence, which the tiny run above does not show
def test_plate_with_hole_example_at_8x8(tmp_path):
    r = _load("plate_with_hole").main(out=str(tmp_path), degree=2, elements=8)
    assert r["l2_error"] < 3e-6  # 2.2e-6 at this size; 1.3e-5 at 4 x 4 elements
    # Recovered (L2-projected) stress: 30.44 at this size (the pointwise stress of u.grad gave 31.52),
    # 30.013 at degree 3, 16 x 16.
    assert abs(r["sigma_xx_at_hole"] - 30.0) < 0.6
    assert pathlib.Path(r["vtu"]).exists()


def _picture(path):
    """The RGB pixels of a PNG, values in [0, 1]."""
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3]


def test_plate_demo_writes_the_picture_the_readme_shows(tmp_path_factory):
    import numpy as np

    r = tiny("plate", tmp_path_factory).result  # main(out=..., **tiny size), also read by test_cli
    assert pathlib.Path(r["png"]).name == "plate_with_hole.png"
    image = _picture(r["png"])
    assert image.std() > 0.05, "the picture is blank"
    # the colour map of the displacement magnitude, not just black edges on white
    assert len(np.unique((image.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 50
    readme = (ROOT.parent / "README.md").read_text()
    assert (
        "docs/images/plate_with_hole.png" in readme
        and (ROOT.parent / "docs/images/plate_with_hole.png").exists()
    )


def test_heat_decay_figure_is_labelled_and_follows_the_exact_decay():
    import numpy as np

    mod = _load("heat_equation")
    M, K, X, Y = mod.heat_matrices(7)
    u0 = mod.sine_mode(X, Y)
    fig = mod.decay_figure(u0, M, K, T=0.05)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "t" and ax.get_ylabel().startswith("max u")
    dots, line = ax.get_lines()
    # 20 Crank-Nicolson steps with Q1 on the 7 x 7 interior nodes follow exp(-2 pi^2 t) to 2 %: the discrete
    # decay rate (lambda_h = 19.99 against 2 pi^2 = 19.74) is 1.3 % higher, so the curves part by 1.3 % at
    # t = 0.05
    np.testing.assert_allclose(dots.get_ydata(), line.get_ydata(), rtol=0.02)


def test_topology_picture_has_no_blank_band(tmp_path):
    """The layout image is sized from its aspect ratio: no band of empty rows around the wide beam."""
    import numpy as np

    mod = _load("topology_optimization")
    nely, nelx = 10, 30
    y, x = np.mgrid[:nely, :nelx]
    rho = ((x + y) % 7 < 3).astype(float)  # any layout with contrast
    hist = 1000.0 * np.exp(-np.arange(40) / 10) + 250.0
    result = {"compliance_final": 250.0, "volume_fraction": 0.43}
    png, vtu = mod._pictures(str(tmp_path), "mbb", rho, hist, result)
    assert pathlib.Path(vtu).exists()
    blank = np.all(_picture(png) > 0.99, axis=(1, 2))  # rows with no ink
    longest, run = 0, 0
    for b in blank:
        run = run + 1 if b else 0
        longest = max(longest, run)
    assert longest < 0.06 * blank.size, f"a blank band of {longest} of {blank.size} rows"


def test_help_of_a_library_form_shows_its_kernels_docstring():
    import inspect
    import pydoc

    from igax.fem import forms, library

    text = pydoc.render_doc(library.robin, renderer=pydoc.plaintext)
    assert "``alpha u v`` on a boundary" in text  # robin's own docstring, not the Form class's
    assert "A weak form: a pointwise kernel" not in text
    assert 'assemble(robin, V, boundary="...", alpha=...)' in text
    assert str(inspect.signature(library.robin)) == "(u, v, w)"
    assert forms.Form.__doc__.startswith("A weak form")  # the class keeps its own
    # still a static, identity-hashed object: usable as a dict key / jit static argument
    assert {library.robin: 1}[library.robin] == 1 and library.robin != library.mass


def test_allen_cahn_example_gradient_through_the_trajectory(tmp_path_factory):
    """The nonlinear transient example: an energy that falls at every step, the phases forming, an adaptive
    schedule, and d(free energy at T)/d(mobility) through the whole trajectory against central differences."""
    r = tiny("allen-cahn", tmp_path_factory).result  # main(out=..., **tiny size), also read by test_cli
    assert r["energy_max_increase"] < 0 and r["energy_final"] < 0.7 * r["energy_initial"]
    assert r["u_final_range"][1] > 0.8  # a phase near u = 1 has formed (from a 0.3 perturbation)
    assert r["dt_max"] > 20 * r["dt_min"]
    assert abs(r["grad_mobility"] - r["grad_mobility_fd"]) < 1e-6 * abs(r["grad_mobility_fd"])
    assert r["grad_mobility"] < 0  # a faster relaxation ends at a lower energy
    assert pathlib.Path(r["png"]).stat().st_size > 5000
