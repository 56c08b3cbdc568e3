"""Pictures: headless PNGs that show the field (not blank), geometry of warps and clips, line plots."""

from __future__ import annotations

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from igax import fem
from igax.fem.output.plotting import plot, plot_convergence, plot_history

# `fem.plot` is the function (re-exported); the module is reached through sys.modules.
plot_module = sys.modules["igax.fem.output.plotting"]

pv = pytest.importorskip("pyvista")


def _image_stats(path):
    """Pixel standard deviation, number of distinct colours, fraction of non-white pixels."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    colours = np.unique(img.reshape(-1, 3), axis=0).shape[0]
    non_white = np.mean(np.any(img < 250, axis=-1))
    return img.std(), colours, non_white


def _assert_shows_something(path, min_colours=60):
    std, colours, non_white = _image_stats(path)
    assert std > 20.0, f"{path}: nearly uniform picture (pixel std {std:.1f})"
    assert colours > min_colours, f"{path}: only {colours} distinct colours"
    assert non_white > 0.15, f"{path}: the field covers only {non_white:.0%} of the picture"


@pytest.fixture(scope="module")
def annulus():
    geo = fem.geometry.quarter_annulus().refine(degree=2, elements=4)
    V = fem.SplineSpace(geo)
    cp = np.asarray(V.control_points).reshape(-1, 2)
    return fem.Field(V, jnp.asarray(np.sin(2 * cp[:, 0]) * cp[:, 1]))


def test_spline_field_png(tmp_path, annulus):
    path = tmp_path / "spline.png"
    pl = plot(annulus, show_edges=True, control_net=True, screenshot=path)
    assert isinstance(pl, pv.Plotter)
    _assert_shows_something(path)
    assert Image.open(path).size == (1024, 768)  # the default: a paper figure (was 400 x 300)
    # The control net is drawn in red: pure red pixels exist only with control_net=True.
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() > 200
    pl.close()


def test_lagrange_field_png(tmp_path):
    V = fem.LagrangeSpace(fem.unit_square(6, cell="triangle"), 2)
    X = np.asarray(V.dof_coordinates())
    path = tmp_path / "p2.png"
    plot(fem.Field(V, jnp.asarray(np.sin(3 * X[:, 0]) * X[:, 1])), show_edges=True, screenshot=path).close()
    _assert_shows_something(path)


def test_deformed_vector_field_with_glyphs_png(tmp_path):
    V = fem.SplineSpace(fem.geometry.plate_with_hole().refine(degree=2, elements=4), shape=(2,))
    cp = np.asarray(V.control_points).reshape(-1, 2)
    disp = fem.Field(V, jnp.asarray(np.concatenate([0.05 * cp[:, 1], -0.02 * cp[:, 0]])))
    path = tmp_path / "disp.png"
    plot(disp, warp=2.0, glyphs=True, show_edges=True, screenshot=path).close()
    _assert_shows_something(path)


def test_warp_moves_the_shape_by_the_scaled_displacement():
    """A constant displacement (1, 0) (partition of unity) warped by 0.5 shifts the bounds by exactly 0.5."""
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
    d = fem.Field(V, jnp.concatenate([jnp.ones(V.nscalar), jnp.zeros(V.nscalar)]))
    pl = plot(d, warp=0.5, screenshot=None, show=False)
    b = np.asarray(pl.renderer.actors[next(iter(pl.renderer.actors))].GetBounds())  # first actor: the field
    np.testing.assert_allclose(b[:4], [0.5, 1.5, 0.0, 1.0], atol=1e-12)
    pl.close()


def test_3d_clipped_field_png(tmp_path):
    V = fem.SplineSpace(fem.geometry.thick_quarter_cylinder().refine(degree=2, elements=3))
    cp = np.asarray(V.control_points).reshape(-1, 3)
    u = fem.Field(V, jnp.asarray(cp[:, 0] ** 2 + cp[:, 1] * cp[:, 2]))
    path = tmp_path / "clip.png"
    pl = plot(u, clip="z", show_edges=True, screenshot=path)
    _assert_shows_something(path)
    # The clip keeps the half below the plane through the centre (pyvista removes the side the normal points
    # to).
    field_actor = pl.renderer.actors[next(iter(pl.renderer.actors))]
    zmin, zmax = np.asarray(field_actor.GetBounds())[4:]
    assert zmin == pytest.approx(0.0, abs=1e-12) and zmax == pytest.approx(0.5, abs=1e-9)
    pl.close()


def test_3d_lagrange_clip_and_geometry_only(tmp_path):
    V = fem.LagrangeSpace(fem.unit_cube(2, cell="tetra"), 2)
    X = np.asarray(V.dof_coordinates())
    path = tmp_path / "tet.png"
    plot(fem.Field(V, jnp.asarray(X[:, 0] * X[:, 1] + X[:, 2])), clip=True, screenshot=path).close()
    _assert_shows_something(path)
    path = tmp_path / "patch.png"  # a bare patch with its control net (no colour map)
    plot(fem.geometry.plate_with_hole().refine(degree=2, elements=3), control_net=True, show_edges=True,
         screenshot=path).close()  # fmt: skip
    std, colours, non_white = _image_stats(path)
    assert std > 20.0 and non_white > 0.15


def test_offscreen_only_inside_plot_calls(monkeypatch, annulus):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("PYVISTA_OFF_SCREEN", raising=False)
    monkeypatch.setattr(pv, "OFF_SCREEN", False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert not plot_module.has_display()
    with plot_module._headless_if_needed() as headless:
        assert headless and pv.OFF_SCREEN and os.environ["PYVISTA_OFF_SCREEN"] == "true"
    assert pv.OFF_SCREEN is False and "PYVISTA_OFF_SCREEN" not in os.environ
    monkeypatch.setenv("DISPLAY", ":0")
    assert plot_module.has_display()
    with plot_module._headless_if_needed() as headless:
        assert not headless and pv.OFF_SCREEN is False


def test_import_does_not_touch_pyvista():
    code = "import sys, igax, igax.fem; print('pyvista' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_plot_errors(annulus):
    with pytest.raises(ValueError, match="clip= cuts 3D"):
        plot(annulus, clip=True, show=False)
    with pytest.raises(ValueError, match="needs a vector field"):
        plot(annulus, warp=1.0, show=False)
    V = fem.LagrangeSpace(fem.unit_square(2), 1)
    with pytest.raises(ValueError, match="control_net=True needs a spline"):
        plot(fem.Field(V, jnp.zeros(V.ndofs)), control_net=True, show=False)
    with pytest.raises(TypeError, match="plot needs a Field"):
        plot(np.zeros(3), show=False)
    with pytest.raises(ValueError, match="scalars="):
        plot(annulus, scalars="nope", show=False)


def test_plot_convergence_fits_rates(tmp_path):
    h = np.array([0.5, 0.25, 0.125, 0.0625])
    path = tmp_path / "rates.png"
    fig = plot_convergence(h, {"L2": 0.3 * h**3, "H1": 2 * h**2 * (1 + 0.01 * h)}, rates={"L2": 3, "H1": 2},
                           path=path)  # fmt: skip
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "L2 (rate 3.00)" and labels[2].startswith("H1 (rate 2.0")
    _assert_shows_something(path, min_colours=20)
    with pytest.raises(ValueError, match="one per h"):
        plot_convergence(h, h[:2])


def test_plot_history(tmp_path):
    from igax.inverse.optimize import History

    hist = History(fun=np.geomspace(1, 1e-6, 12), grad_norm=np.geomspace(1, 1e-4, 12), time=np.ones(12))
    fig = plot_history(hist, path=tmp_path / "h.png")
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), hist.fun)
    assert fig.axes[0].get_yscale() == "log"
    fig = plot_history(np.array([3.0, -1.0, 0.5]))
    assert fig.axes[0].get_yscale() == "linear"


# --- issue 16: paper-sized pictures, 3D axes and orientation widget, no X-server noise ----------------------


@pytest.fixture(scope="module")
def cylinder_field():
    V = fem.SplineSpace(fem.geometry.thick_quarter_cylinder().refine(degree=2, elements=2))
    cp = np.asarray(V.control_points).reshape(-1, 3)
    return fem.Field(V, jnp.asarray(cp[:, 0] ** 2 + cp[:, 1] * cp[:, 2]))


def test_window_size_default_and_explicit(tmp_path, annulus):
    path = tmp_path / "small.png"
    plot(annulus, window_size=(400, 300), screenshot=path).close()
    assert Image.open(path).size == (400, 300)
    _assert_shows_something(path)
    for bad in [(0, 300), (400.5, 300), 800, (1, 2, 3)]:
        with pytest.raises(ValueError, match=r"window_size must be \(width, height\)"):
            plot(annulus, window_size=bad, show=False)


def _widget_corner(path):
    """Fraction of non-white pixels in the lower left corner where the orientation widget sits."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    h, w, _ = img.shape
    corner = img[int(0.8 * h) :, : int(0.15 * w)]
    return np.mean(np.any(corner < 200, axis=-1))


def test_3d_plot_shows_axes_and_orientation_widget(tmp_path, cylinder_field):
    path = tmp_path / "axes.png"
    pl = plot(cylinder_field, show_edges=True, screenshot=path)
    assert Image.open(path).size == (1024, 768)
    _assert_shows_something(path)
    cube = pl.renderer.cube_axes_actor
    assert cube is not None
    assert (cube.GetXTitle(), cube.GetYTitle(), cube.GetZTitle()) == ("x", "y", "z")
    assert pl.renderer.axes_widget is not None and pl.renderer.axes_widget.GetEnabled()
    with_widget = _widget_corner(path)
    pl.close()
    path2 = tmp_path / "no_axes.png"
    pl = plot(cylinder_field, axes=False, orientation_widget=False, screenshot=path2)
    assert pl.renderer.cube_axes_actor is None and pl.renderer.axes_widget is None
    pl.close()
    assert with_widget > 0.005 and _widget_corner(path2) == 0.0  # the triad is drawn only when asked for


def test_2d_defaults_without_axes_and_axes_on_request(annulus):
    pl = plot(annulus, show=False)
    assert pl.renderer.cube_axes_actor is None and pl.renderer.axes_widget is None
    pl.close()
    pl = plot(annulus, show=False, axes=True)
    assert pl.renderer.cube_axes_actor.GetXTitle() == "x"
    pl.close()


def test_the_drawing_is_fitted_above_the_colour_bar(cylinder_field):
    """The projected bounding box of the field lies inside the picture and above the colour bar (y > 0.15)."""
    pl = plot(cylinder_field, show=False)
    ren = pl.renderer
    w, h = ren.GetSize()
    V = cylinder_field.space
    cp = np.asarray(V.control_points).reshape(-1, 3)
    lo, hi = cp.min(axis=0), cp.max(axis=0)  # the control net's box holds the geometry
    pts = []
    for c in np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T:
        ren.SetWorldPoint(*c, 1.0)
        ren.WorldToDisplay()
        pts.append(np.asarray(ren.GetDisplayPoint()[:2]) / (w, h))
    pts = np.asarray(pts)
    assert pts[:, 0].min() > 0.05 and pts[:, 0].max() < 0.95
    assert pts[:, 1].min() > 0.15 and pts[:, 1].max() < 0.95
    assert pts[:, 0].max() - pts[:, 0].min() > 0.6  # and it fills the picture's width
    pl.close()


def test_headless_plot_prints_no_x_server_warning(tmp_path):
    """Without DISPLAY, VTK tries an X window first and warns 'bad X server connection'; plot mutes that."""
    png = tmp_path / "quiet.png"
    code = (
        "import jax; jax.config.update('jax_enable_x64', True)\n"
        "import jax.numpy as jnp\n"
        "from igax import fem\n"
        "V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=2))\n"
        "u = fem.Field(V, jnp.arange(V.ndofs, dtype=float))\n"
        f"fem.plot(u, screenshot={str(png)!r}).close()\n"
        "from vtkmodules.vtkCommonCore import vtkObject\n"
        "print('warnings', vtkObject.GetGlobalWarningDisplay())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "X server" not in out and "DISPLAY=" not in out, out
    assert r.stdout.strip() == "warnings 1"  # VTK's warnings are back on after the call
    _assert_shows_something(png)
