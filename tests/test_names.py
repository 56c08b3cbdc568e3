"""Public names: one meaning per name across igax's namespaces, and old names that warn and still work.

Issue 17 renamed names that meant two things (``igax.fem.rectangle`` a mesh, ``igax.fem.geometry.rectangle`` a
spline patch; ``igax.bases.project`` and ``igax.fem.project``; ``igax.inverse.fit`` and the module
``igax.layers.fitting``; ``igax.bases.locate`` and ``igax.fem.locate.locate``) or hid what they do
(``write_vtu_series`` writes .pvd or .xdmf). The old names still give the same object, with a
DeprecationWarning naming the new one, so old scripts compute exactly what they computed before.
"""

import importlib
import pkgutil
import types

import numpy as np
import pytest

import igax
import igax.inverse

RENAMED = [
    ("igax.fem", "rectangle", "igax.fem.rectangle_mesh", "rectangle_mesh"),
    ("igax.fem", "box", "igax.fem.box_mesh", "box_mesh"),
    ("igax.fem", "write_vtu_series", "igax.fem.write_field_series", "write_field_series"),
    ("igax.fem.mesh", "rectangle", "rectangle_mesh", "rectangle_mesh"),
    ("igax.fem.mesh", "box", "box_mesh", "box_mesh"),
    ("igax.fem.output.export", "write_vtu_series", "write_field_series", "write_field_series"),
    ("igax.bases", "project", "igax.layers.spline_project", None),
    ("igax.bases", "locate", "igax.layers.find_interval", None),
    ("igax.fem", "mesh_io", "igax.fem.mesh.io", None),
    ("igax.fem", "mesh_refine", "igax.fem.mesh.refine", None),
    ("igax.inverse", "fit", "igax.inverse.train", "train"),
    ("igax.inverse.training", "fit", "train", "train"),
]


@pytest.mark.parametrize(("module", "old", "says", "new"), RENAMED)
def test_old_name_warns_naming_the_new_one_and_is_the_same_object(module, old, says, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{module}.{old} is deprecated; use {says}"):
        obj = getattr(mod, old)
    if new is not None:
        assert obj is getattr(mod, new)
    # `from module import old` goes through the same path (and warns at the user's line).
    with pytest.warns(DeprecationWarning) as caught:
        exec(f"from {module} import {old}", {})
    assert caught[0].filename == __file__ or caught[0].filename == "<string>"
    assert old not in dir(mod) and old not in getattr(mod, "__all__", [])


# The spline layers moved from igax.bases to igax.layers (issue 17, item 5): the old names give the same
# objects.
MOVED_LAYERS = [
    "find_interval",
    "fit_grid",
    "free_knot_fit",
    "interpolate",
    "piecewise_constant_2d",
    "region_projection",
    "segment",
    "segment_image",
    "segment_projection",
    "spline_fit",
    "spline_project",
]


@pytest.mark.parametrize("name", MOVED_LAYERS)
def test_spline_layers_moved_to_igax_layers_and_their_old_names_warn(name):
    import igax.layers

    with pytest.warns(DeprecationWarning, match=f"igax.bases.{name} is deprecated; use igax.layers.{name}"):
        obj = getattr(igax.bases, name)
    assert obj is getattr(igax.layers, name)
    assert name not in dir(igax.bases)
    with pytest.warns(DeprecationWarning, match="igax.bases.interp is deprecated; use igax.layers.interp"):
        assert igax.bases.interp is igax.layers.interp


def test_old_project_keeps_points_as_rows_and_the_new_one_takes_coordinates_first():
    """bases.project's f took the points as rows (m, dim); spline_project's f takes x (dim, m), like every
    function of position in igax. The old name computes what it computed, and a function written for rows
    fails loudly under the new one (it cannot silently read a point for a coordinate)."""
    from igax.bases import open_uniform
    from igax.layers import spline_project

    t = open_uniform(1, 2)
    with pytest.warns(DeprecationWarning, match="its f takes x of shape"):
        old = igax.bases.project((t, t), 1, lambda x: x[:, 0] + 2 * x[:, 1])
    new = spline_project((t, t), 1, lambda x: x[0] + 2 * x[1])
    greville = np.array([0.0, 0.5, 1.0])
    expected = greville[:, None] + 2 * greville[None, :]  # degree 1: coefficients = values at Greville points
    np.testing.assert_allclose(old, expected, atol=1e-12)
    np.testing.assert_allclose(new, expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"reads x\[0\] now"):
        spline_project((t, t), 1, lambda x: x[:, 0] + 2 * x[:, 1])


def test_unknown_names_still_raise_attribute_error():
    import igax.fem as fem

    with pytest.raises(AttributeError, match="has no attribute 'rectangel'"):
        fem.rectangel  # noqa: B018
    assert not hasattr(igax.bases, "no_such_name")


def test_old_mesh_names_compute_the_same_mesh():
    from igax import fem

    with pytest.warns(DeprecationWarning):
        old = fem.rectangle((0.0, 0.0), (2.0, 1.0), n=(4, 2), cell="quad")
    new = fem.rectangle_mesh((0.0, 0.0), (2.0, 1.0), n=(4, 2), cell="quad")
    np.testing.assert_array_equal(old.points, new.points)
    np.testing.assert_array_equal(old.cells, new.cells)
    assert new.ncells == 8 and new.points[:, 0].max() == 2.0
    # the spline patch keeps the short name in the geometry namespace
    patch = fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0))
    assert type(patch).__name__ == "NURBSPatch"
    assert fem.box_mesh(n=(2, 1, 1), cell="hexahedron").ncells == 2


def _public_namespaces() -> list[types.ModuleType]:
    mods = [igax]
    for info in pkgutil.walk_packages(igax.__path__, prefix="igax."):
        if info.name == "igax.__main__" or any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        mods.append(importlib.import_module(info.name))
    return mods


# Same name, different things, that stay (with the reason):
ALLOWED = {
    # The module igax.layers.fitting holds the function fit, exported as igax.bases.spline_fit.
    "fit",
    # The module igax.fem.quadrature holds quadrature(cell, degree), the rule of a reference cell.
    "quadrature",
    # The module igax.bases.refine (knot refinement) and igax.fem.mesh.refine.refine (mesh refinement): the
    # function lives in a module named for meshes; igax.fem does not export it.
    "refine",
    # igax.fem.solve (a problem on a space, with boundary conditions) is built on igax.solvers.solve
    # (A x = b).
    "solve",
    # igax.fem.locate is the module of point location; its function is igax.fem.locate.locate.
    "locate",
}


def test_no_name_means_two_things_in_public_namespaces():
    """A name bound in two public igax namespaces is one object (or listed above, with the reason)."""
    seen: dict[str, dict[int, str]] = {}
    for mod in _public_namespaces():
        public = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for name in public:
            obj = getattr(mod, name, None)
            home = getattr(obj, "__module__", None) or getattr(obj, "__name__", "")
            if obj is None or not home.startswith("igax"):
                continue
            seen.setdefault(name, {}).setdefault(id(obj), mod.__name__)
    clashes = {n: sorted(w.values()) for n, w in seen.items() if len(w) > 1 and n not in ALLOWED}
    assert not clashes, f"names that mean different things in different namespaces: {clashes}"
