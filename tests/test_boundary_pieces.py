"""Named boundary pieces smaller than a side (V.tag_boundary) and the Robin form with an ambient value.

Issue 16, item 8: the plate with a hole has its two outer edges (x = -4 and y = 4) on ONE patch side;
they must be addressable separately in boundary integrals and Dirichlet conditions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library


@fem.functional
def one(w):
    return 1.0


@fem.linear_form
def normal_flux(v, w):
    """grad(1 + 3y) . n  times v: the Neumann data of the linear solution below."""
    return 3.0 * w.n[1] * v.value


def _plate(shape=(), elements=4, quad_points=None):
    geo = fem.geometry.plate_with_hole().refine(degree=2, elements=elements)
    return fem.SplineSpace(geo, shape=shape, quad_points=quad_points)


def _tag_edges(V):
    V = V.tag_boundary("outer_left", lambda x: np.isclose(x[0], -4.0), side="outer")
    return V.tag_boundary("outer_top", side="outer", range=(0.5, 1.0))


# --- spline spaces ------------------------------------------------------------------------------------------


def test_plate_outer_edges_have_length_four_each():
    V0 = _plate()
    V = _tag_edges(V0)
    assert V.boundary_names == V0.boundary_names == ("hole", "outer", "bottom", "right")
    assert V.boundary_pieces == ("outer_left", "outer_top") and V0.boundary_pieces == ()
    for name in ("outer_left", "outer_top"):
        assert float(fem.assemble(one, V, boundary=name)) == pytest.approx(4.0, abs=1e-10)
    both = float(fem.assemble(one, V, boundary=["outer_left", "outer_top"]))
    assert both == pytest.approx(float(fem.assemble(one, V, boundary="outer")), abs=1e-12)
    # The same edge by a predicate or by a parameter range: the same facets.
    Vr = V0.tag_boundary("outer_left", side="outer", range=(0.0, 0.5))
    np.testing.assert_array_equal(Vr.boundary("outer_left"), V.boundary("outer_left"))
    # Dofs: the two edges share only the corner control point (C0 there), together they make the side.
    left, top, outer = V.boundary("outer_left"), V.boundary("outer_top"), V.boundary("outer")
    np.testing.assert_array_equal(np.union1d(left, top), outer)
    corner = np.intersect1d(left, top)
    assert corner.shape == (1,)
    cp = np.asarray(V.control_points).reshape(-1, 2)
    np.testing.assert_allclose(cp[corner[0]], [-4.0, 4.0])
    np.testing.assert_allclose(cp[left, 0], -4.0)
    np.testing.assert_allclose(cp[top, 1], 4.0)


def test_the_whole_boundary_is_unchanged_by_pieces():
    V0 = _plate()
    V = _tag_edges(V0)
    per0 = float(fem.assemble(one, V0, boundary=V0.boundary_names))
    assert float(fem.assemble(one, V, boundary=V.boundary_names)) == pytest.approx(per0, abs=1e-12)
    np.testing.assert_array_equal(fem.DirichletBC(V, None, 0.0).dofs, fem.DirichletBC(V0, None, 0.0).dofs)


def test_traction_on_one_edge_only():
    V = _tag_edges(_plate(shape=(2,)))
    b = fem.assemble(library.traction, V, boundary="outer_left", t=jnp.array([-10.0, 0.0]))
    bx, by = np.asarray(b[: V.nscalar]), np.asarray(b[V.nscalar :])
    assert bx.sum() == pytest.approx(-40.0, abs=1e-9)  # partition of unity: the total force -10 * 4
    assert np.abs(by).max() == 0.0
    # Loaded dofs are those of the left edge only.
    loaded = np.flatnonzero(np.abs(bx) > 1e-9)  # (faces are evaluated 1e-13 inside their element)
    assert set(loaded) <= set(V.boundary("outer_left", component=0))
    # The same load as the coordinate trick on the whole side (quadrature points of the left edge only).
    pull = lambda x: jnp.stack([jnp.where(x[0] < -3.999, -10.0, 0.0), 0.0 * x[0]])  # noqa: E731
    b_trick = fem.assemble(library.traction, V, boundary="outer", t=pull)
    np.testing.assert_allclose(np.asarray(b), np.asarray(b_trick), atol=1e-12)
    bt = fem.assemble(library.traction, V, boundary="outer_top", t=jnp.array([0.0, 2.0]))
    assert float(bt[V.nscalar :].sum()) == pytest.approx(8.0, abs=1e-9)


def test_dirichlet_on_pieces_reproduces_a_linear_solution():
    """u = 1 + 3y lies in the isoparametric NURBS space: Dirichlet on the two outer edges as two pieces (on
    x = -4 the L2 projection of u on the piece's trace, on y = 4 the constant 13), its flux on the other
    sides; the solution is exact up to the quadrature of the rational functions (6 Gauss points: ~1e-10)."""
    V = _tag_edges(_plate(elements=3, quad_points=6))
    exact = lambda x: 1.0 + 3.0 * x[1]  # noqa: E731
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(normal_flux, V, boundary=["hole", "bottom", "right"])
    bcs = [fem.DirichletBC(V, "outer_left", exact), fem.DirichletBC(V, "outer_top", 13.0)]
    u = fem.solve(A, b, bc=bcs)
    pts = np.array([[-2.0, 1.5], [-3.9, 3.9], [-1.2, 0.2], [-0.3, 2.5]])
    np.testing.assert_allclose(np.asarray(u(pts)), exact(pts.T), atol=1e-8)
    # One piece alone constrains only its own dofs.
    np.testing.assert_array_equal(bcs[0].dofs, V.boundary("outer_left"))
    assert len(bcs[0].dofs) < len(V.boundary("outer"))


def test_component_dirichlet_on_a_piece():
    V = _tag_edges(_plate(shape=(2,)))
    bc = fem.DirichletBC(V, "outer_top", 0.0, component=1)
    np.testing.assert_array_equal(bc.dofs, V.nscalar + V.boundary("outer_top", component=0))


def test_pieces_follow_the_geometry_under_jit():
    V = _tag_edges(_plate())
    cp = V.control_points

    @jax.jit
    def edge_length(scale):
        return fem.assemble(one, V.with_geometry(cp * scale), boundary="outer_left")

    assert float(edge_length(2.0)) == pytest.approx(8.0, abs=1e-9)
    assert float(jax.grad(edge_length)(1.0)) == pytest.approx(4.0, abs=1e-9)


def test_3d_pieces_by_range_and_by_predicate():
    V = fem.SplineSpace(fem.geometry.box().refine(degree=2, elements=4))
    half = V.tag_boundary("half", side="back", range=((0.0, 0.5), None))  # back: z = 1; x in [0, 0.5]
    assert float(fem.assemble(one, half, boundary="half")) == pytest.approx(0.5, abs=1e-12)
    # An L-shaped part of a face is not a tensor product of element lists: it takes two blocks.
    ell = V.tag_boundary("ell", lambda x: np.isclose(x[2], 1.0) & ((x[0] < 0.5) | (x[1] < 0.5)))
    assert float(fem.assemble(one, ell, boundary="ell")) == pytest.approx(0.75, abs=1e-12)
    assert ell.plan.pieces["ell"].nfacets == 12
    # A predicate without side= looks at every side: the plane x + y + z = ... picks facets on three faces.
    corner = V.tag_boundary("corner", lambda x: (x[0] < 0.25) & (x[1] < 0.25) & (x[2] < 0.25))
    assert float(fem.assemble(one, corner, boundary="corner")) == pytest.approx(3 * 0.0625, abs=1e-12)


# --- Lagrange spaces ----------------------------------------------------------------------------------------


def test_lagrange_piece_matches_a_tagged_mesh():
    mesh = fem.unit_square(4, cell="triangle")
    where = lambda x: np.isclose(x[0], 0.0) & (x[1] < 0.5)  # noqa: E731
    for degree in (1, 2):
        V = fem.LagrangeSpace(mesh, degree).tag_boundary("inlet", where)
        W = fem.LagrangeSpace(mesh.tag_boundary("inlet", where), degree)
        assert float(fem.assemble(one, V, boundary="inlet")) == pytest.approx(0.5, abs=1e-12)
        np.testing.assert_array_equal(V.boundary("inlet"), W.boundary("inlet"))
        X = np.asarray(V.dof_coordinates())[V.boundary("inlet")]
        np.testing.assert_allclose(X[:, 0], 0.0)
        assert X[:, 1].max() == pytest.approx(0.5) and len(X) == 2 * degree + 1
        b = fem.assemble(library.neumann, V, boundary="inlet", g=3.0)
        assert float(b.sum()) == pytest.approx(1.5, abs=1e-12)
    # side= restricts the candidates to one named boundary.
    V = fem.LagrangeSpace(mesh, 1)
    assert "left" in V.boundary_names
    Vl = V.tag_boundary("low", lambda x: x[1] < 0.5, side="left")
    assert float(fem.assemble(one, Vl, boundary="low")) == pytest.approx(0.5, abs=1e-12)


# --- errors that teach --------------------------------------------------------------------------------------


def test_tag_boundary_errors():
    V = _plate()
    with pytest.raises(TypeError, match=r"not a function of x.*tag_boundary\('left_edge'"):
        fem.assemble(one, V, boundary=lambda x: x[0] < -3.99)
    with pytest.raises(TypeError, match="not a function of x"):
        fem.DirichletBC(V, lambda x: x[0] < -3.99, 0.0)
    Vt = _tag_edges(V)
    with pytest.raises(
        ValueError, match=r"unknown boundary 'left'.*tagged pieces \['outer_left', 'outer_top'\]"
    ):
        fem.assemble(one, Vt, boundary="left")
    with pytest.raises(ValueError, match="'outer' is already a boundary"):
        V.tag_boundary("outer", lambda x: x[0] < 0)
    with pytest.raises(ValueError, match="holds none of the"):
        V.tag_boundary("nothing", lambda x: x[0] == -4.0000001)
    with pytest.raises(ValueError, match="range= is a parameter interval along one patch side"):
        V.tag_boundary("r", range=(0, 0.5))
    with pytest.raises(ValueError, match=r"needs intervals \(a, b\) with a <= b"):
        V.tag_boundary("r", side="outer", range=(0.6, 0.2))
    with pytest.raises(ValueError, match="needs where="):
        V.tag_boundary("r", side="outer")
    with pytest.raises(ValueError, match=r"must return a bool array of shape \(\d+,\)"):
        V.tag_boundary("r", lambda x: x[0] + 1.0, side="outer")
    with pytest.raises(ValueError, match="is a tagged piece"):
        Vt.tag_boundary("r", lambda x: x[1] > 2, side="outer_left")
    with pytest.raises(ValueError, match="unknown boundary 'nowhere'"):
        V.tag_boundary("r", lambda x: x[1] > 2, side="nowhere")
    with pytest.raises(TypeError, match="where must be a function"):
        V.tag_boundary("r", 3.0)
    V3 = fem.SplineSpace(fem.geometry.box().refine(degree=1, elements=2))
    with pytest.raises(ValueError, match="does not fit a side with 2 direction"):
        V3.tag_boundary("r", side="back", range=(0.0, 0.5))
    with pytest.raises(ValueError, match="range= is a spline parameter interval"):
        fem.LagrangeSpace(fem.unit_square(2), 1).tag_boundary("r", range=(0, 1))
    left = fem.geometry.rectangle((0, 0), (1, 1)).refine(degree=1, elements=2)
    right = fem.geometry.rectangle((1, 0), (2, 1)).refine(degree=1, elements=2)
    M = fem.MultiPatchSpace({"L": left, "R": right}, [(("L", "right"), ("R", "left"))])
    with pytest.raises(TypeError, match="tag_boundary is not available on MultiPatchSpace"):
        M.tag_boundary("r", lambda x: x[0] < 0.5)


def test_retagging_replaces_the_piece():
    V = _plate().tag_boundary("edge", lambda x: np.isclose(x[0], -4.0), side="outer")
    assert float(fem.assemble(one, V, boundary="edge")) == pytest.approx(4.0, abs=1e-10)
    V = V.tag_boundary("edge", lambda x: np.isclose(x[1], 4.0) & (x[0] > -2.0), side="outer")
    assert float(fem.assemble(one, V, boundary="edge")) == pytest.approx(2.0, abs=1e-10)


# --- Robin with an ambient value ----------------------------------------------------------------------------

L, U0, UINF = 2.0, 1.0, 20.0


def _robin_bar(alpha):
    """-u'' = 1 on [0, L] x [0, 1], u = U0 at x = 0, u' = -alpha (u - UINF) at x = L, zero flux elsewhere."""
    V = fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (L, 1.0)).refine(degree=2, elements=(4, 2)))
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(library.source, V, f=1.0)
    Ar, br = library.robin_ambient(V, boundary="right", alpha=alpha, u_inf=UINF)
    return V, A, b, Ar, br, fem.solve(A + Ar, b + br, bc=fem.DirichletBC(V, "left", U0))


def _slope(alpha):
    return (L - alpha * (U0 - UINF - L**2 / 2)) / (1.0 + alpha * L)


def test_robin_ambient_matches_the_closed_form():
    alpha = 3.0
    V, A, b, Ar, br, u = _robin_bar(alpha)
    x = np.array([[0.3, 0.2], [1.1, 0.7], [2.0, 0.5]])
    exact = U0 + _slope(alpha) * x[:, 0] - x[:, 0] ** 2 / 2  # quadratic: exact in degree 2
    np.testing.assert_allclose(np.asarray(u(x)), exact, atol=1e-10)
    # The same two terms assembled by hand: robin (matrix) and neumann with g = alpha * u_inf (load).
    Am = fem.assemble(library.robin, V, boundary="right", alpha=alpha)
    bm = fem.assemble(library.neumann, V, boundary="right", g=alpha * UINF)
    np.testing.assert_allclose(np.asarray(Ar.values), np.asarray(Am.values), atol=1e-13)
    np.testing.assert_allclose(np.asarray(br), np.asarray(bm), atol=1e-12)


def test_robin_ambient_is_differentiable_in_alpha():
    x = np.array([[1.5, 0.4]])

    def u_at(alpha):
        return _robin_bar(alpha)[-1](x)[0]

    alpha = 0.7
    ds = (-(U0 - UINF - L**2 / 2) * (1 + alpha * L) - L * (L - alpha * (U0 - UINF - L**2 / 2))) / (
        1 + alpha * L
    ) ** 2
    assert float(jax.grad(u_at)(alpha)) == pytest.approx(1.5 * ds, rel=1e-9)


def test_robin_ambient_on_a_piece_and_with_fields():
    """alpha and u_inf may be callables; the boundary may be a tagged piece (here the whole right side)."""
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=3))
    P = V.tag_boundary("r", lambda x: np.isclose(x[0], 1.0))
    A1, b1 = library.robin_ambient(V, boundary="right", alpha=lambda x: 1 + x[1], u_inf=lambda x: x[1] ** 2)
    A2, b2 = library.robin_ambient(P, boundary="r", alpha=lambda x: 1 + x[1], u_inf=lambda x: x[1] ** 2)
    np.testing.assert_allclose(np.asarray(A1.values), np.asarray(A2.values), atol=1e-14)
    np.testing.assert_allclose(np.asarray(b1), np.asarray(b2), atol=1e-14)
    # sum(b) = integral over the side of alpha * u_inf = int_0^1 (1 + y) y^2 dy = 1/3 + 1/4
    assert float(b1.sum()) == pytest.approx(7.0 / 12.0, abs=1e-12)
    with pytest.raises(ValueError, match="boundary form"):
        fem.assemble(library.robin_load, V, alpha=1.0, u_inf=2.0)
