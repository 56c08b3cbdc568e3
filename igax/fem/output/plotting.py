"""Pictures of fields, patches and meshes (pyvista); line plots of convergence and optimisation (matplotlib).

:func:`plot` draws a field sampled finely on its patch or mesh (:mod:`igax.fem.output.export`), with
optional element
edges, the NURBS control net, a deformed shape, arrows of a vector field and, in 3D, a clipping plane. It
returns the ``pyvista.Plotter`` for further use and saves a PNG with ``screenshot=``.

Rendering is headless where there is no display: inside :func:`plot` only (never on import), and only when
neither ``DISPLAY`` nor ``WAYLAND_DISPLAY`` is set on Linux, ``pyvista.OFF_SCREEN`` and ``PYVISTA_OFF_SCREEN``
are switched on; both are restored when the call returns. VTK (9.4 and later) then picks its render window
itself: it tries an X window first, warns ``bad X server connection. DISPLAY=`` and falls back to EGL or
OSMesa. That warning says nothing to a user without a display, so VTK's warnings are muted while a headless
plotter is created (and only then: errors still show, and warnings of the rendering itself are untouched).
The matplotlib helpers build a ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend needed).

Pictures are 1024 x 768 pixels by default (fit for a paper figure; ``window_size=`` to change), with text
sizes scaled to the picture; 3D pictures show labelled x, y, z axes along the bounds and an orientation widget
(``axes=`` and ``orientation_widget=`` switch them, also on in 2D).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from igax.fem.field import Field
from igax.fem.output.export import Sampled, _pad3, sample, to_pyvista

__all__ = ["plot", "plot_convergence", "plot_history", "has_display"]


def has_display() -> bool:
    """Whether windows can open: Windows and macOS always; Linux when DISPLAY or WAYLAND_DISPLAY is set."""
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@contextlib.contextmanager
def _headless_if_needed():
    """Switch pyvista to off-screen rendering for the duration of a call when there is no display."""
    import pyvista as pv

    if has_display():
        yield False
        return
    old_flag, old_env = pv.OFF_SCREEN, os.environ.get("PYVISTA_OFF_SCREEN")
    pv.OFF_SCREEN = True
    os.environ["PYVISTA_OFF_SCREEN"] = "true"
    try:
        yield True
    finally:
        pv.OFF_SCREEN = old_flag
        if old_env is None:
            os.environ.pop("PYVISTA_OFF_SCREEN", None)
        else:
            os.environ["PYVISTA_OFF_SCREEN"] = old_env


def _new_plotter(pv, *, off_screen: bool, window_size, headless: bool):
    """A ``pyvista.Plotter``; headless, without VTK's warning about the X display it first tries."""
    if not headless:
        return pv.Plotter(off_screen=off_screen, window_size=list(window_size))
    from vtkmodules.vtkCommonCore import vtkObject

    # Without a display VTK reports the failed X connection as a warning before it falls back to EGL or
    # OSMesa by itself; the window is chosen while the plotter is built, so muting warnings for that step
    # only hides this message and nothing of the rendering.
    old = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()
    try:
        return pv.Plotter(off_screen=off_screen, window_size=list(window_size))
    finally:
        vtkObject.SetGlobalWarningDisplay(old)


def _window_size(window_size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in window_size)
    except (TypeError, ValueError):
        w = h = 0
    if w <= 0 or h <= 0 or tuple(window_size) != (w, h):
        raise ValueError(
            f"window_size must be (width, height) in pixels, two positive integers, got {window_size!r}; "
            "e.g. window_size=(1024, 768) (the default) or (800, 600)."
        )
    return w, h


# --- what to draw ----------------------------------------------------------------------------------------


def _to_sampled(obj, resolution) -> tuple[Sampled, Any]:
    """A Sampled of fields, of a patch or space (its geometry), or of a mesh; and the spline space if any."""
    from igax.bases.patch import NURBSPatch
    from igax.fem.mesh import Mesh
    from igax.fem.spaces.base import FunctionSpace
    from igax.fem.spaces.lagrange import LagrangeSpace
    from igax.fem.spaces.spline import SplineSpace

    if isinstance(obj, Sampled):
        return obj, None
    if isinstance(obj, NURBSPatch):
        obj = SplineSpace(obj)
    if isinstance(obj, Mesh):
        obj = LagrangeSpace(obj, 1)
    if isinstance(obj, FunctionSpace):
        import jax.numpy as jnp

        s = sample(Field(obj, jnp.zeros(obj.ndofs)), resolution)
        s.point_data = {}
        return s, _with_net(obj)
    if isinstance(obj, Field):
        space = obj.space
    elif isinstance(obj, Mapping) and obj:
        space = next(iter(obj.values())).space
    elif isinstance(obj, Sequence) and obj and isinstance(obj[0], Field):
        space = obj[0].space
    else:
        raise TypeError(
            "plot needs a Field, a list or dict of Fields, a NURBSPatch, a SplineSpace, a LagrangeSpace or a "
            "Mesh; "
            f"got {type(obj).__name__}."
        )
    return sample(obj, resolution), _with_net(space)


def _with_net(space):
    """The space when it has a control net to draw (a single patch's control points), else None."""
    cp = getattr(space, "control_points", None)
    return space if cp is not None else None


def _vector_names(s: Sampled) -> list[str]:
    return [k for k, v in s.point_data.items() if not k.startswith("grad_") and v.ndim == 2]


def _pick_vector(s: Sampled, name: str | None, what: str) -> np.ndarray:
    names = _vector_names(s)
    if name is None:
        if not names:
            raise ValueError(
                f"{what} needs a vector field (e.g. a displacement); the plotted fields are scalar."
            )
        name = names[0]
    if name not in names:
        raise ValueError(f"{what}: {name!r} is not a vector field here; choose one of {names}.")
    return _pad3(s.point_data[name])


def _scalars(s: Sampled, scalars: str | None, component: int | None):
    """(title, values) of the scalar shown in colour, or (None, None) for plain geometry."""
    names = [k for k in s.point_data if not k.startswith("grad_")]
    if scalars is None:
        if not names:
            return None, None
        scalars = names[0]
    if scalars not in s.point_data:
        raise ValueError(f"scalars={scalars!r} is not a sampled array; choose one of {list(s.point_data)}.")
    v = s.point_data[scalars]
    if v.ndim == 1:
        return scalars, v
    if component is None:
        return f"{scalars} (magnitude)", np.linalg.norm(v, axis=1)
    if not (0 <= component < v.shape[1]):
        raise ValueError(f"component must be in [0, {v.shape[1]}) for {scalars!r}, got {component!r}.")
    return f"{scalars}[{component}]", v[:, component]


def _clip_args(clip, dim: int, center) -> dict | None:
    if clip is None or clip is False:
        return None
    if dim != 3:
        raise ValueError("clip= cuts 3D fields with a plane; a 2D field is shown whole (leave clip=None).")
    if clip is True:
        return {"normal": "x", "origin": center}
    if isinstance(clip, str):
        return {"normal": clip, "origin": center}
    if isinstance(clip, Mapping):
        out = {"normal": "x", "origin": center}
        out.update(clip)
        return out
    normal = np.asarray(clip, dtype=float).reshape(-1)
    if normal.shape != (3,):
        raise ValueError(
            f"clip must be True, an axis name like 'x' or '-y', a normal (nx, ny, nz) or a dict(normal=..., "
            f"origin=...), got {clip!r}."
        )
    return {"normal": normal, "origin": center}


def _control_net(space):
    """PolyData of the control points and the lines of the control grid (Cartesian control points)."""
    import pyvista as pv

    cp = np.asarray(space.control_points, dtype=float)  # (n_1, ..., n_d, dim)
    shape = cp.shape[:-1]
    pts = _pad3(cp.reshape(-1, cp.shape[-1]))
    idx = np.arange(pts.shape[0]).reshape(shape)
    lines = []
    for d in range(len(shape)):
        rows = np.moveaxis(idx, d, -1).reshape(-1, shape[d])
        lines += [np.concatenate([[len(r)], r]) for r in rows]
    net = pv.PolyData(pts, lines=np.concatenate(lines))
    return net, pv.PolyData(pts)


def plot(
    obj,
    *,
    scalars: str | None = None,
    component: int | None = None,
    resolution: int | None = None,
    screenshot: str | os.PathLike | None = None,
    show: bool | None = None,
    show_edges: bool = False,
    control_net: bool = False,
    warp: float | None = None,
    warp_by: str | None = None,
    glyphs: bool | float = False,
    clip=None,
    cmap: str = "viridis",
    clim: Sequence[float] | None = None,
    window_size: tuple[int, int] = (1024, 768),
    title: str | None = None,
    axes: bool | None = None,
    orientation_widget: bool | None = None,
    plotter=None,
):
    """Draw fields on their patch or mesh (or a bare patch, space or mesh) with pyvista.

    Arguments:
        obj: a :class:`~igax.fem.Field`, a dict name -> Field (or list) on one geometry, a NURBSPatch,
            SplineSpace, LagrangeSpace or Mesh (geometry only), or an
            :class:`~igax.fem.output.export.Sampled`.
        scalars: the field coloured (default: the first one); vector fields show their magnitude.
        component: colour this component of a vector field instead of its magnitude.
        resolution: sampling of spline fields: sub-intervals per knot span
            (:func:`igax.fem.output.export.sample`).
        screenshot: save a PNG there.
        show: open a window (default: only when there is a display and no screenshot is asked for).
        show_edges: draw element edges (knot lines of a patch, cell edges of a mesh).
        control_net: draw the NURBS control points and control polygon lines (spline fields and patches).
        warp: draw the deformed shape ``x + warp * v`` of the vector field ``warp_by`` (default: the first
            vector field), e.g. ``warp=100.0`` for small elastic displacements.
        glyphs: draw arrows of that vector field; ``True`` scales the longest arrow to 1/10 of the domain
            size, a number multiplies that length.
        clip: 3D only: cut away half the domain by a plane through its centre, ``True`` (normal x), an axis
            name (``"y"``, ``"-z"``), a normal ``(nx, ny, nz)``, or ``dict(normal=..., origin=...)``.
        cmap, clim: colour map and colour range.
        window_size: picture size in pixels, ``(width, height)``; the default ``(1024, 768)`` suits a
            figure in a paper (about 8.7 cm wide at 300 dpi). Text scales with the height.
        title: text in the upper left corner (before the name of the coloured quantity).
        axes: labelled axes with ticks along the bounds of the picture (x, y, z in 3D); default on in 3D,
            off in 2D.
        orientation_widget: the small x-y-z triad in the lower left corner that turns with the view; default
            on in 3D, off in 2D.
        plotter: draw into this ``pyvista.Plotter`` instead of a new one.

    Returns:
        The ``pyvista.Plotter`` (call ``.show()`` or ``.screenshot(path)`` on it, or add more to it).

    Example:
        >>> # skipped (draws with pyvista / matplotlib, writes a file)
        >>> pl = plot(u, show_edges=True, control_net=True, screenshot="u.png")       # doctest: +SKIP
        >>> pl = plot({"u": disp}, warp=50.0, glyphs=True, screenshot="disp.png")   # doctest: +SKIP
    """
    import pyvista as pv

    with _headless_if_needed() as headless:
        s, spline_space = _to_sampled(obj, resolution)
        dim = s.dim
        if show is None:
            show = not headless and screenshot is None
        grid = to_pyvista(s, gradients=True)
        points3 = _pad3(s.points)
        if warp is not None:
            if not isinstance(warp, (int, float)) or isinstance(warp, bool):
                raise TypeError(f"warp must be a number (the displacement scale), got {warp!r}.")
            points3 = points3 + float(warp) * _pick_vector(s, warp_by, "warp")
            grid.points = points3
        title_s, values = _scalars(s, scalars, component)
        if values is not None:
            grid.point_data["_shown"] = values
        lo, hi = points3.min(axis=0), points3.max(axis=0)
        center, size = (lo + hi) / 2, float(np.linalg.norm(hi - lo)) or 1.0
        cut = _clip_args(clip, dim, center)

        size_px = _window_size(window_size)
        if plotter is not None:
            pl = plotter
        else:
            pl = _new_plotter(pv, off_screen=not show, window_size=size_px, headless=headless)
        # Text sizes were chosen for 400 x 300 pictures; keep their share of the picture at other sizes.
        fs = max(1.0, min(size_px[0] / 400, size_px[1] / 300))
        shown = grid.clip(**cut) if cut else grid
        if values is not None:
            pl.add_mesh(
                shown,
                scalars="_shown",
                cmap=cmap,
                clim=clim,
                scalar_bar_args={
                    "title": "",
                    "vertical": False,
                    "position_x": 0.2,
                    "position_y": 0.03,
                    "width": 0.6,
                    "n_labels": 3,
                    "height": 0.07,
                    "fmt": "%.3g",
                    "label_font_size": round(11 * fs),
                    "title_font_size": round(11 * fs),
                    "color": "black",
                },
            )
        else:
            pl.add_mesh(shown, color="lightsteelblue")
        if show_edges and s.edges is not None and len(s.edges):
            lines = np.concatenate([np.full((len(s.edges), 1), 2), s.edges], axis=1).ravel()
            edges = pv.PolyData(points3, lines=lines)
            if cut:
                edges = edges.clip(**cut)
            pl.add_mesh(edges, color="black", line_width=max(1.0, 0.8 * fs))
        if control_net:
            if spline_space is None:
                raise ValueError("control_net=True needs a spline field or patch; this one lives on a mesh.")
            net, cps = _control_net(spline_space)
            pl.add_mesh(net, color="red", line_width=1.5 * max(1.0, 0.8 * fs))
            pl.add_mesh(cps, color="red", point_size=7 * max(1.0, 0.8 * fs), render_points_as_spheres=True)
        if glyphs:
            vec = _pick_vector(s, warp_by, "glyphs")
            keep = _arrow_points(s)
            cloud = pv.PolyData(points3[keep])
            vmax = float(np.max(np.linalg.norm(vec, axis=1))) or 1.0
            scale = (0.1 if glyphs is True else 0.1 * float(glyphs)) * size / vmax
            cloud.point_data["v"] = vec[keep]
            arrows = cloud.glyph(orient="v", scale="v", factor=scale)
            if cut:
                arrows = arrows.clip(**cut)
            pl.add_mesh(arrows, color="black")
        # The colour bar's name goes in the upper left corner with the title (a bar title covers its labels).
        text = title_s if not title else (f"{title}: {title_s}" if title_s else title)
        if text:
            pl.add_text(text, font_size=round(8 * fs), position="upper_left", color="black")
        pl.set_background("white")
        if dim == 2:
            pl.view_xy()
        else:
            pl.view_isometric()
        show_axes = axes if axes is not None else dim == 3
        bounds = np.asarray(pl.renderer.ComputeVisiblePropBounds(), dtype=float)  # what was drawn
        if show_axes:
            pl.show_bounds(
                xtitle="x",
                ytitle="y",
                ztitle="z",
                n_xlabels=3,
                n_ylabels=3,
                n_zlabels=3,
                fmt="%.3g",
                font_size=round(8 * fs),
                color="black",
                location="outer",
                use_2d=dim == 2,
                show_zaxis=dim == 3,
                show_zlabels=dim == 3,
            )
        if orientation_widget if orientation_widget is not None else dim == 3:
            pl.add_axes(color="black", line_width=2, viewport=(0.0, 0.0, 0.16, 0.22))
        pl.reset_camera()
        # Fit the drawing into the picture above the colour bar, leaving room for the title, the axis labels
        # and the orientation widget.
        margin = 0.1 if show_axes else 0.04
        bottom = (0.15 if values is not None else 0.04) + (0.06 if show_axes else 0.0)
        _fit_view(pl, bounds, (margin, bottom, 1.0 - margin, 0.9))
        if screenshot is not None:
            pl.screenshot(os.fspath(screenshot))
        if show:
            pl.show(auto_close=False)
        return pl


def _fit_view(pl, bounds: np.ndarray, box: tuple[float, float, float, float], passes: int = 3) -> None:
    """Zoom and pan so that the projected bounding box of ``bounds`` fills ``box`` (normalised viewport
    coordinates x0, y0, x1, y1) as far as its aspect ratio allows, keeping the viewing direction.

    A few passes, because under a perspective projection zoom and pan change the projected extent slightly.
    """
    ren, cam = pl.renderer, pl.camera
    lo, hi = bounds[0::2], bounds[1::2]
    if not (np.all(np.isfinite(bounds)) and np.all(hi >= lo)):
        return
    corners = np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T
    w, h = (float(v) for v in ren.GetSize())
    if w <= 0 or h <= 0:
        return
    bx0, by0, bx1, by1 = box
    for _ in range(passes):
        pts = []
        for c in corners:
            ren.SetWorldPoint(*c, 1.0)
            ren.WorldToDisplay()
            x, y, _z = ren.GetDisplayPoint()
            pts.append((x / w, y / h))
        pts = np.asarray(pts)
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            return
        cam.zoom(min((bx1 - bx0) / (x1 - x0), (by1 - by0) / (y1 - y0)))
        # Pan: move camera and focal point together in the view plane by the offset of the centres.
        scale = min((bx1 - bx0) / (x1 - x0), (by1 - by0) / (y1 - y0))
        dx = (bx0 + bx1) / 2 - 0.5 - ((x0 + x1) / 2 - 0.5) * scale
        dy = (by0 + by1) / 2 - 0.5 - ((y0 + y1) / 2 - 0.5) * scale
        pos, focal = np.asarray(cam.position), np.asarray(cam.focal_point)
        view = focal - pos
        dist = float(np.linalg.norm(view))
        up = np.asarray(cam.up, dtype=float)
        up = up - np.dot(up, view) / dist**2 * view
        up /= np.linalg.norm(up)
        right = np.cross(view / dist, up)
        height = (
            cam.parallel_scale * 2
            if cam.parallel_projection
            else 2 * dist * np.tan(np.radians(cam.view_angle) / 2)
        )
        shift = -(dx * height * (w / h) * right + dy * height * up)
        cam.position = tuple(pos + shift)
        cam.focal_point = tuple(focal + shift)


def _arrow_points(s: Sampled, target: int = 300) -> np.ndarray:
    """About ``target`` sample point indices for arrows: a regular sub-grid on patches, a stride on meshes."""
    n = len(s.points)
    if s.grid_shape is None:
        return np.arange(0, n, max(1, n // target))
    shape = s.grid_shape
    per = max(2, int(round(target ** (1.0 / len(shape)))))
    axes = [np.unique(np.linspace(0, m - 1, min(m, per)).round().astype(int)) for m in shape]
    grids = np.meshgrid(*axes, indexing="ij")
    return np.ravel_multi_index(tuple(g.ravel() for g in grids), shape)


# --- line plots (matplotlib) -----------------------------------------------------------------------------


def _figure(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def plot_convergence(
    h,
    errors,
    rates=None,
    *,
    path: str | os.PathLike | None = None,
    xlabel: str = "h",
    ylabel: str = "error",
    title: str | None = None,
    ax=None,
):
    """Log-log plot of errors against mesh size, with fitted and expected rates.

    Arguments:
        h: mesh sizes, shape (n,).
        errors: shape (n,), or a dict label -> (n,) (e.g. ``{"L2": e0, "H1": e1}``).
        rates: expected rates drawn as dashed reference lines through the finest point: a number, or a dict
            label -> rate matching ``errors``.
        path: save the figure there (PNG, PDF, SVG by extension).
        xlabel, ylabel, title: labels.
        ax: draw into this matplotlib Axes instead of a new figure.

    Returns:
        The ``matplotlib.figure.Figure``; the legend shows each fitted slope (``np.polyfit``, log e on log h).

    Example:
        >>> import numpy as np
        >>> from igax import fem
        >>> h = np.array([0.5, 0.25, 0.125])
        >>> errors = {"L2": h**4, "H1": h**3}
        >>> fig = fem.plot_convergence(h, errors, rates={"L2": 4, "H1": 3}, path="rates.png")
    """
    h = np.asarray(h, dtype=float).reshape(-1)
    series = dict(errors) if isinstance(errors, Mapping) else {"error": errors}
    if isinstance(rates, Mapping):
        expected = dict(rates)
    elif rates is None:
        expected = {}
    else:
        expected = dict.fromkeys(series, float(rates))
    fig, ax = _figure(ax, (4.5, 3.4))
    for k, (label, e) in enumerate(series.items()):
        e = np.asarray(e, dtype=float).reshape(-1)
        if e.shape != h.shape:
            raise ValueError(
                f"errors[{label!r}] has {e.shape[0]} values but h has {h.shape[0]}; give one per h."
            )
        if np.any(h <= 0) or np.any(e <= 0):
            raise ValueError("h and errors must be positive for a log-log plot.")
        slope = np.polyfit(np.log(h), np.log(e), 1)[0] if len(h) > 1 else float("nan")
        color = f"C{k}"
        ax.loglog(h, e, "o-", color=color, label=f"{label} (rate {slope:.2f})")
        if label in expected:
            r = float(expected[label])
            i = int(np.argmin(h))
            ax.loglog(h, e[i] * (h / h[i]) ** r, "--", color=color, alpha=0.6, label=f"$h^{{{r:g}}}$")
    # Ticks at the given mesh sizes: log-axis minor labels collide when h spans about one decade.
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(h, labels=[f"{v:.3g}" for v in h])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig


def plot_history(history, *, path: str | os.PathLike | None = None, title: str | None = None):
    """Objective and gradient norm per iteration of an optimisation run.

    Arguments:
        history: an ``igax.inverse`` result (anything with ``.history``), its ``History`` (``fun``,
            ``grad_norm``), a dict of arrays, or one array of objective values.
        path: save the figure there.
        title: figure title.

    Returns:
        The ``matplotlib.figure.Figure``: one panel per recorded series (log scale where all values are
        positive), the iteration on the x axis.

    Example:
        >>> # skipped (draws with pyvista / matplotlib, writes a file)
        >>> res = inverse.minimize(loss, x0)                         # doctest: +SKIP
        >>> fig = plot_history(res, path="history.png")              # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    h = getattr(history, "history", history)
    if isinstance(h, Mapping):
        series = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in h.items()}
    elif hasattr(h, "fun"):
        series = {"objective": np.asarray(h.fun, dtype=float).reshape(-1)}
        if getattr(h, "grad_norm", None) is not None:
            series["gradient norm"] = np.asarray(h.grad_norm, dtype=float).reshape(-1)
        for k, v in (getattr(h, "aux", None) or {}).items():
            series[k] = np.asarray(v, dtype=float).reshape(-1)
    elif hasattr(h, "fun_history"):
        series = {"objective": np.asarray(h.fun_history, dtype=float).reshape(-1)}
    else:
        arr = np.asarray(h, dtype=float)
        if arr.ndim != 1:
            raise TypeError(
                "history must be an optimisation result, a History, a dict of arrays or a 1D array, got "
                f"{h!r}."
            )
        series = {"objective": arr}
    series = {k: v for k, v in series.items() if v.size}
    if not series:
        raise ValueError("history holds no recorded values.")
    fig = Figure(figsize=(4.5, 2.6 * len(series)), layout="constrained")
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, v) in zip(axes, series.items(), strict=True):
        it = np.arange(len(v))
        finite = np.isfinite(v)
        if np.all(v[finite] > 0):
            ax.semilogy(it, v, ".-")
        else:
            ax.plot(it, v, ".-")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[-1].set_xlabel("iteration")
    if title:
        axes[0].set_title(title)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig
