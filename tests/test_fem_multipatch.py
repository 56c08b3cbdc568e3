"""Multi-patch spline spaces: C0 joins of conforming patches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import bases, fem
from igax.fem import library, norms


def exact(x):
    return jnp.sin(2 * x[0] + 0.5) * jnp.exp(0.7 * x[1])


def exact_grad(x):
    return jnp.stack([2 * jnp.cos(2 * x[0] + 0.5) * jnp.exp(0.7 * x[1]), 0.7 * exact(x)])


@jax.jit
def _ring_errors(V):
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(library.source, V, f=lambda x: 3.51 * exact(x))
    u = fem.solve(A, b, bc=fem.DirichletBC(V, ["inner", "outer"], exact))
    return jnp.stack([norms.l2_error(u, exact), norms.h1_error(u, exact_grad)])


def quarter(k, n):
    """The quarter annulus rotated by k quarter turns, refined to degree 2 and n x n elements."""
    q = fem.geometry.quarter_annulus()
    c, s = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
    cp = np.asarray(q.control_points) @ np.array([[c, -s], [s, c]]).T
    return bases.NURBSPatch(q.knots, q.degrees, cp, q.weights, q.boundaries).refine(degree=2, elements=n)


def test_four_quarters_equal_the_glued_annulus():
    # Quarter k's "left" side (its end angle) meets quarter k+1's "bottom" (its start angle).
    P = {f"q{k}": quarter(k, 2) for k in range(4)}
    V = fem.MultiPatchSpace(P, [((f"q{k}", "left"), (f"q{(k + 1) % 4}", "bottom")) for k in range(4)])
    W = fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(2, 8)))
    # The single patch is C0 at the quarter angles, so both are the same space: same size, same error.
    assert V.ndofs == W.ndofs == 4 * 12 and V.boundary_names == ("inner", "outer")
    assert V.nel == W.nel == 16 and V.patch_names == ("q0", "q1", "q2", "q3")
    e_multi, e_single = np.asarray(_ring_errors(V)), np.asarray(_ring_errors(W))
    np.testing.assert_allclose(e_multi, e_single, rtol=1e-9)
    assert V.boundary("inner").size == 12
    assert V.jacobian_determinant().shape == (16, 9)
    X = np.asarray(V.quadrature_points())  # (nel, nq, dim), patch after patch
    r = np.hypot(X[..., 0], X[..., 1])
    assert X.shape == (16, 9, 2) and r.min() > 1.0 and r.max() < 2.0
    assert np.all(X[:4, :, 0] > 0) and np.all(X[:4, :, 1] > 0)  # patch q0 is the first quadrant


def test_point_evaluation_and_export_match_the_glued_annulus(tmp_path):
    import meshio

    P = {f"q{k}": quarter(k, 2) for k in range(4)}
    V = fem.MultiPatchSpace(P, [((f"q{k}", "left"), (f"q{(k + 1) % 4}", "bottom")) for k in range(4)])
    W = fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(2, 8)))

    def solve(S):
        A = fem.assemble(library.laplace, S)
        b = fem.assemble(library.source, S, f=lambda x: 3.51 * exact(x))
        return fem.solve(A, b, bc=fem.DirichletBC(S, ["inner", "outer"], exact))

    uV, uW = solve(V), solve(W)
    rng = np.random.default_rng(0)
    r, th = rng.uniform(1.05, 1.95, 21), rng.uniform(0.05, 2 * np.pi - 0.05, 21)
    th = th[np.abs(np.sin(2 * th)) > 0.05]  # off the interfaces (the quarter angles)
    inner = np.stack([r[: th.size] * np.cos(th), r[: th.size] * np.sin(th)], axis=1)
    on_interfaces = np.array([[1.5, 0.0], [0.0, 1.5], [-1.2, 0.0], [0.0, -1.9]])
    pts = np.concatenate([inner, on_interfaces])
    # The same space, so the same solution: values agree everywhere, gradients off the interfaces (the space
    # is C0 there and each side's gradient is its own).
    np.testing.assert_allclose(np.asarray(uV(pts)), np.asarray(uW(pts)), atol=1e-12)
    np.testing.assert_allclose(np.asarray(uV.grad(inner)), np.asarray(uW.grad(inner)), atol=1e-10)
    with pytest.raises(ValueError, match=r"1 of 1 points lie outside the domain \(first: \[0.2, 0.1\]\)"):
        uV(np.array([[0.2, 0.1]]))
    # export: the patches side by side, values equal the single patch's at every sample point
    s = fem.sample(uV, resolution=3)
    assert s.points.shape == (4 * 7 * 7, 2) and s.cells.shape == (4 * 36, 4) and s.cell_type == "quad"
    np.testing.assert_allclose(s.point_data["u"], np.asarray(uW(s.points)), atol=1e-12)
    path = fem.write_vtu(tmp_path / "ring.vtu", {"u": uV}, resolution=3)
    back = meshio.read(path)
    np.testing.assert_allclose(back.point_data["u"], s.point_data["u"], atol=1e-12)
    assert back.points.shape == (4 * 49, 3)


def _rect(x0, flip=False):
    """Unit square [x0, x0 + 1] x [0, 1], degree 2 and 3 x 3 elements; flip reverses the y direction."""
    geo = fem.geometry.rectangle((x0, 0.0), (x0 + 1.0, 1.0)).refine(degree=2, elements=3)
    if not flip:
        return geo
    cp = np.asarray(geo.control_points)[:, ::-1]
    names = (("left", 0, 0), ("right", 0, 1), ("top", 1, 0), ("bottom", 1, 1))
    return bases.NURBSPatch(geo.knots, geo.degrees, cp, geo.weights, names)


@pytest.mark.parametrize("flip", [False, True])
def test_two_squares_interface_and_orientation(flip):
    V = fem.MultiPatchSpace({"L": _rect(0.0), "R": _rect(1.0, flip)}, [(("L", "right"), ("R", "left"))])
    assert V.ndofs == 2 * 25 - 5
    assert sorted(V.boundary_names) == ["bottom", "left", "right", "top"]
    assert V.boundary("bottom").size == 9  # 5 + 5 control points, one shared at x = 1
    # The isoparametric field u = y (coefficients = control-point y): energy int |grad y|^2 = area 2 only if
    # the interface dofs are paired in the right order (a reversed pairing would tie y with 1 - y).
    c = np.zeros(V.ndofs)
    for k, s in enumerate(V.spaces):
        off = sum(t.nscalar for t in V.spaces[:k])
        c[V.plan.dof_map[off + s.plan.dof_map]] = np.asarray(s.control_points)[..., 1].ravel()
    A = fem.assemble(library.laplace, V)
    np.testing.assert_allclose(float(c @ (A @ jnp.asarray(c))), 2.0, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(A @ jnp.ones(V.ndofs)), 0.0, atol=1e-12)
    # Boundary integral over a boundary that spans both patches: the length of the bottom edge.
    one = fem.Field(V, jnp.ones(V.ndofs))
    np.testing.assert_allclose(float(one.integrate("bottom")), 2.0, rtol=1e-12)


def test_interface_errors():
    L, R = _rect(0.0), _rect(1.0)
    far = fem.geometry.rectangle((1.1, 0.0), (2.1, 1.0)).refine(degree=2, elements=3)
    with pytest.raises(ValueError, match=r"side 'right' of patch 'L' and side 'left' of patch 'R' do not "):
        fem.MultiPatchSpace({"L": L, "R": far}, [(("L", "right"), ("R", "left"))])
    with pytest.raises(ValueError, match=r"differ by up to 1\.000e-01"):
        fem.MultiPatchSpace({"L": L, "R": far}, [(("L", "right"), ("R", "left"))])
    with pytest.raises(ValueError, match="unknown patch 'X'"):
        fem.MultiPatchSpace({"L": L, "R": R}, [(("L", "right"), ("X", "left"))])
    with pytest.raises(ValueError, match="patch 'R' has no side 'east'"):
        fem.MultiPatchSpace({"L": L, "R": R}, [(("L", "right"), ("R", "east"))])
    finer = fem.geometry.rectangle((1.0, 0.0), (2.0, 1.0)).refine(degree=2, elements=4)
    with pytest.raises(ValueError, match="carry different spline spaces"):
        fem.MultiPatchSpace({"L": L, "R": finer}, [(("L", "right"), ("R", "left"))])
    cubic = fem.geometry.rectangle((1.0, 0.0), (2.0, 1.0)).refine(degree=3, elements=3)
    with pytest.raises(ValueError, match="patches of one degree"):
        fem.MultiPatchSpace([L, cubic], [(("0", "right"), ("1", "left"))])
    with pytest.raises(TypeError, match="interfaces must hold pairs"):
        fem.MultiPatchSpace([L, R], [("0", "right")])
    V = fem.MultiPatchSpace([L, R], [(("0", "right"), ("1", "left"))])
    with pytest.raises(ValueError, match="unknown boundary 'nowhere'"):
        V.boundary(["left", "nowhere"])


def test_vector_space_rigid_motions_and_geometry_gradient():
    import equinox as eqx

    V = fem.MultiPatchSpace(
        {"L": _rect(0.0), "R": _rect(1.0, flip=True)}, [(("L", "right"), ("R", "left"))], shape=(2,)
    )
    assert V.ndofs == 2 * V.nscalar and V.nscalar == 45
    # Coefficients of the isoparametric rotation u = (-y, x): no strain energy only if the two patches share
    # their interface dofs in the right order.
    X = np.zeros((V.nscalar, 2))
    for k, s in enumerate(V.spaces):
        off = sum(t.nscalar for t in V.spaces[:k])
        X[V.plan.dof_map[off + s.plan.dof_map]] = np.asarray(s.control_points).reshape(-1, 2)
    rot = jnp.asarray(np.concatenate([-X[:, 1], X[:, 0]]))
    K = fem.assemble(library.linear_elasticity(1.0, 0.3), V)
    np.testing.assert_allclose(np.asarray(K @ rot), 0.0, atol=1e-11)
    # the rotation evaluated at points of both patches and of the interface x = 1 (patch R runs flipped)
    u = fem.Field(V, rot)
    pts = np.array([[0.3, 0.7], [1.0, 0.25], [1.6, 0.1], [1.9, 0.95]])
    np.testing.assert_allclose(np.asarray(u(pts)), np.stack([-pts[:, 1], pts[:, 0]], axis=1), atol=1e-12)
    np.testing.assert_allclose(
        np.asarray(u.grad(pts)), np.broadcast_to([[0, -1], [1, 0]], (4, 2, 2)), atol=1e-11
    )
    # and sampled: grad_u is the constant rotation generator at every sample point, on both patches
    s = fem.sample(u, resolution=2)
    np.testing.assert_allclose(
        s.point_data["grad_u"], np.tile([0.0, -1.0, 1.0, 0.0], (len(s.points), 1)), atol=1e-11
    )
    stretch = jnp.asarray(np.concatenate([X[:, 0], 0.0 * X[:, 1]]))  # u = (x, 0): energy (lam + 2 mu) * area
    lam, mu = (np.asarray(v) for v in library.lame(1.0, 0.3))
    np.testing.assert_allclose(float(stretch @ (K @ stretch)), 2 * (lam + 2 * mu), rtol=1e-12)

    # The patches' control points are JAX leaves: d(area)/ds of both patches stretched in y by s is 2.
    def area(s):
        W = V
        for k in range(2):
            cp = W.spaces[k].control_points
            W = eqx.tree_at(lambda w, k=k: w.spaces[k].control_points, W, cp * jnp.array([1.0, s]))
        return jnp.sum(W.tables(W.quadrature_rule()).dx)

    np.testing.assert_allclose(float(jax.grad(area)(1.0)), 2.0, rtol=1e-12)


def test_self_interface_is_a_periodic_seam():
    geo = fem.geometry.annulus().refine(degree=2, elements=(2, 8))
    V = fem.MultiPatchSpace([geo], [(("0", "seam_start"), ("0", "seam_end"))])
    W = fem.SplineSpace(geo)
    assert V.ndofs == W.ndofs and V.boundary_names == ("inner", "outer")
    np.testing.assert_array_equal(V.plan.cell_dofs, W.plan.cell_dofs)
