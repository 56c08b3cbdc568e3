"""Geometric multigrid on function spaces: exact transfer operators, and mg-cg through fem.solve.

The transfers are checked by what defines them: a random function of the coarse space, evaluated at physical
points, equals the fine-space function with coefficients ``P @ c`` (to 1e-12), on NURBS weights, a glued
annulus, a polar disk with a pole, multi-patch interfaces, 3D and vector spaces, and nested P1/P2/Q1/Q2
meshes.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import bases, fem, solvers
from igax.fem.mesh.refine import parent, refine
from igax.fem.spaces._transfer_lagrange import lagrange_levels, near_nullspace
from igax.fem.spaces._transfer_spline import coarsen_knots, spline_levels

RNG = np.random.default_rng(14)


def polar_disk(radius=1.0):
    """Disk as a polar patch: side 'center' collapsed to the origin, the angular seam glued."""
    ring = fem.geometry.annulus(1.0, 2.0)
    arc = np.asarray(ring.control_points)[0]
    cp = np.stack([0.0 * arc, radius * arc])
    names = (("center", 0, 0), ("circle", 0, 1), ("seam_start", 1, 0), ("seam_end", 1, 1))
    return bases.NURBSPatch(ring.knots, ring.degrees, cp, ring.weights, boundaries=names)


def _points(patch, n=40, lo=0.03, hi=0.97):
    """Physical points of random parameters of a patch (away from the poles and the seam)."""
    u = RNG.uniform(lo, hi, size=(n, patch.pdim))
    return jnp.asarray(np.asarray(patch.evaluate(u)))


def _check_exact(Vf, Vc, P, points, tol=1e-12):
    """A random coarse function equals the fine function with coefficients P @ c at the points."""
    assert P.shape == (Vf.ndofs, Vc.ndofs)
    c = RNG.standard_normal(Vc.ndofs)
    coarse = np.asarray(fem.Field(Vc, jnp.asarray(c))(points))
    fine = np.asarray(fem.Field(Vf, jnp.asarray(P @ c))(points))
    scale = np.max(np.abs(coarse))
    np.testing.assert_allclose(fine, coarse, rtol=0, atol=tol * scale)


def _one_level(Vf, coarse_size=1):
    levels = spline_levels(Vf, coarse_size=coarse_size, max_levels=1)
    assert len(levels) == 1
    return levels[0]


# -- knot coarsening ---------------------------------------------------------------------------------------
def test_coarsen_knots_halves_and_keeps_multiple_knots():
    t = np.r_[[0.0] * 3, np.linspace(0, 1, 17)[1:-1], [1.0] * 3]
    np.testing.assert_array_equal(
        coarsen_knots(t, 2), np.r_[[0.0] * 3, np.linspace(0, 1, 9)[1:-1], [1.0] * 3]
    )
    # the quarter-circle joints of the annulus (multiplicity 2) stay; knots between them go
    ring = np.r_[[0.0] * 3, np.repeat([0.25, 0.5, 0.75], 2), [1.0] * 3]
    refined = np.sort(np.r_[ring, [0.125, 0.375, 0.625, 0.875]])
    np.testing.assert_array_equal(coarsen_knots(refined, 2), ring)
    np.testing.assert_array_equal(coarsen_knots(ring, 2), ring)  # nothing left to drop
    # odd element counts: symmetric under reversal, so flipped multi-patch interfaces stay conforming
    for n, coarse in [(3, 1), (5, 3), (7, 3), (9, 5)]:
        t = np.r_[0.0, 0.0, np.linspace(0, 1, n + 1)[1:-1] ** 1.5, 1.0, 1.0]
        flipped = np.sort(1.0 - t)
        np.testing.assert_allclose(np.sort(1.0 - coarsen_knots(t, 1)), coarsen_knots(flipped, 1), atol=1e-15)
        assert np.unique(coarsen_knots(t, 1)).size - 1 == coarse


# -- exact spline transfers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_bspline_square_transfer_is_exact(degree):
    coarse = fem.geometry.rectangle((0, 0), (2, 1)).refine(degree=degree, elements=(3, 4))
    fine = coarse.refine(elements=(6, 8))
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    level = _one_level(Vf)
    for a, b in zip(level.knots[0], coarse.knots, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-15)
    _check_exact(Vf, Vc, level.prolongation, _points(fine))


@pytest.mark.parametrize("geometry", ["quarter_annulus", "plate_with_hole"])
def test_nurbs_transfer_is_exact(geometry):
    coarse = getattr(fem.geometry, geometry)().refine(degree=3, elements=4)
    fine = coarse.refine(elements=8)
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    level = _one_level(Vf)
    assert level.exact
    np.testing.assert_allclose(level.weights[0], np.asarray(coarse.weights), rtol=1e-13)
    _check_exact(Vf, Vc, level.prolongation, _points(fine))
    # the whole hierarchy: rows of every P sum to one (constants are coarse functions on every level)
    for lv in spline_levels(Vf, coarse_size=1):
        np.testing.assert_allclose(lv.prolongation.sum(axis=1).A1, 1.0, atol=1e-13)


def test_glued_annulus_transfer_is_exact():
    coarse = fem.geometry.annulus().refine(degree=2, elements=(2, 8))
    fine = coarse.refine(elements=(4, 16))
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    assert Vf.glued == (("seam_start", "seam_end"),)
    level = _one_level(Vf)
    assert level.exact and level.ndofs == Vc.ndofs
    _check_exact(Vf, Vc, level.prolongation, _points(fine, lo=0.0, hi=1.0))  # the seam included


def test_polar_disk_transfer_is_exact():
    coarse = polar_disk().refine(degree=2, elements=(2, 8))
    fine = coarse.refine(elements=(4, 16))
    Vf, Vc = fem.SplineSpace(fine), fem.SplineSpace(coarse)
    assert Vf.collapsed == ("center",) and Vc.collapsed == ("center",)
    level = _one_level(Vf)
    _check_exact(Vf, Vc, level.prolongation, _points(fine, lo=0.05, hi=1.0))
    # the pole is one dof on both levels, and P maps it to itself
    pole_f = Vf.plan.dof_map[Vf.plan.side_points("center")[0]]
    pole_c = Vc.plan.dof_map[Vc.plan.side_points("center")[0]]
    row = level.prolongation.getrow(pole_f)
    assert row.indices.tolist() == [pole_c] and row.data.tolist() == pytest.approx([1.0])


def test_3d_and_vector_transfers_are_exact():
    coarse = fem.geometry.thick_quarter_cylinder().refine(degree=2, elements=(2, 2, 2))
    fine = coarse.refine(elements=(4, 4, 4))
    Vf, Vc = fem.SplineSpace(fine, shape=(3,)), fem.SplineSpace(coarse, shape=(3,))
    level = _one_level(Vf)
    assert level.exact
    _check_exact(Vf, Vc, level.prolongation, _points(fine, n=20))


def test_multipatch_transfer_is_exact():
    # two quarter annuli joined along a radial side; the second runs from the outer arc inwards (reversed)
    a = fem.geometry.quarter_annulus().refine(degree=2, elements=(3, 4))
    qb = fem.geometry.quarter_annulus()
    rot = np.asarray(qb.control_points) @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # rotate by +90 degrees
    b = bases.NURBSPatch(qb.knots, qb.degrees, rot[::-1], np.asarray(qb.weights)[::-1], qb.boundaries)
    b = b.refine(degree=2, elements=(3, 4))
    interfaces = [(("A", "left"), ("B", "bottom"))]
    Vc = fem.MultiPatchSpace({"A": a, "B": b}, interfaces)
    fine = {"A": a.refine(elements=(6, 8)), "B": b.refine(elements=(6, 8))}
    Vf = fem.MultiPatchSpace(fine, interfaces)
    assert Vf.ndofs < 2 * fine["A"].shape[0] * fine["A"].shape[1]  # the interface is shared
    level = _one_level(Vf)
    assert level.ndofs == Vc.ndofs
    pts = jnp.concatenate([_points(fine["A"], 20), _points(fine["B"], 20)])
    _check_exact(Vf, Vc, level.prolongation, pts)


def test_hierarchy_depth_and_sizes():
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=64))
    levels = spline_levels(V, coarse_size=100)
    sizes = [V.ndofs] + [lv.ndofs for lv in levels]
    assert sizes == [66**2, 34**2, 18**2, 10**2]
    for lv, n in zip(levels, sizes, strict=False):
        assert lv.prolongation.shape[0] == n


def test_weights_not_representable_and_traced():
    geo = fem.geometry.rectangle().refine(degree=2, elements=8)
    w = RNG.uniform(0.5, 1.5, size=geo.shape)
    V = fem.SplineSpace(bases.NURBSPatch(geo.knots, geo.degrees, geo.control_points, w))
    level = _one_level(V)
    assert not level.exact
    np.testing.assert_allclose(level.prolongation.sum(axis=1).A1, 1.0, atol=1e-13)
    # traced weights: the B-spline knot-insertion transfer (rows sum to one as well)
    out = []

    def build(weights):
        out.append(_one_level(V.with_geometry(weights=weights)))
        return weights.sum()

    jax.jit(build)(jnp.asarray(w))
    T = _one_level(fem.SplineSpace(geo)).prolongation
    assert not out[0].exact
    assert abs(out[0].prolongation - T).max() == 0.0


# -- nested Lagrange meshes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cell, degree", [("triangle", 2), ("quad", 1), ("tetra", 2), ("hexahedron", 1)])
def test_lagrange_transfer_is_exact(cell, degree):
    m0 = fem.mesh.unit_square(2, cell) if cell in ("triangle", "quad") else fem.mesh.unit_cube(1, cell)
    # a curved-ish coarse mesh: nesting must hold for any vertex positions
    pts = np.asarray(m0.points) + 0.05 * np.sin(3.0 * np.asarray(m0.points)[:, ::-1])
    m0 = fem.Mesh(pts, m0.cells, m0.cell_type, m0.boundaries)
    mid = refine(m0)
    fine = refine(mid)  # two steps: the second sees tetrahedra of several template variants
    assert parent(fine).mesh is mid and parent(mid).mesh is m0 and parent(m0) is None
    for shape in [(), (m0.dim,)]:
        Vf, Vc = fem.LagrangeSpace(fine, degree, shape=shape), fem.LagrangeSpace(mid, degree, shape=shape)
        levels = lagrange_levels(Vf, coarse_size=1)
        assert [n for n, _ in levels] == [Vc.ndofs, fem.LagrangeSpace(m0, degree, shape=shape).ndofs]
        x = np.asarray(Vf.dof_coordinates())
        _check_exact(Vf, Vc, levels[0][1], jnp.asarray(x[:: max(1, len(x) // 60)]))


def test_near_nullspace_of_vector_spaces():
    V = fem.LagrangeSpace(fem.mesh.unit_square(4), 1, shape=(2,))
    B = near_nullspace(V)
    assert B.shape == (V.ndofs, 3)
    K = fem.assemble(fem.library.linear_elasticity(1.0, 0.3), V)
    np.testing.assert_allclose(np.asarray(K.to_scipy() @ B), 0.0, atol=1e-11)


# -- mg-cg through fem.solve ---------------------------------------------------------------------------------
def _poisson(V, where=None):
    A = fem.assemble(fem.library.laplace, V)
    b = fem.assemble(fem.library.source, V, f=lambda x: 1.0 + x[0] * x[1])
    return A, b, fem.DirichletBC(V, where, 0.0)


def _elasticity(V, where, kind):
    A = fem.assemble(fem.library.linear_elasticity(1.0, 0.3, kind), V)
    force = np.zeros(V.dim)
    force[-1] = -1.0
    b = fem.assemble(fem.library.body_force, V, f=jnp.asarray(force))
    return A, b, fem.DirichletBC(V, where, 0.0)


def _agrees_with_direct(A, b, bc, hierarchy=None, **kw):
    """mg-cg via fem.solve equals the direct solve to 1e-8 (relative); returns the hierarchy used.

    ``kw`` (e.g. ``max_coarse``) go to :func:`fem.mg_hierarchy`; without any, fem.solve builds the hierarchy
    itself (the path a user takes).
    """
    direct = np.asarray(fem.solve(A, b, bc=bc, method="superlu").coeffs)
    H = fem.mg_hierarchy(bc.space, bc=bc, A=A, **kw) if kw else hierarchy
    opts = {} if H is None else {"hierarchy": H}
    mg = np.asarray(fem.solve(A, b, bc=bc, method="mg-cg", rtol=1e-11, **opts).coeffs)
    err = np.linalg.norm(mg - direct) / np.linalg.norm(direct)
    assert err < 1e-8, err
    return H or fem.mg_hierarchy(bc.space, bc=bc, A=A)


def _iterations(A, b, bc, H, rtol=1e-8):
    Ac, bcv = bc.condense(A, b)
    r = solvers.linear_solve(Ac, bcv, method="mg-cg", hierarchy=H, rtol=rtol)
    return int(r.iterations)


def _spline(patch, degree, elements, shape=()):
    return fem.SplineSpace(patch.refine(degree=degree, elements=elements), shape=shape)


def _multipatch():
    left = fem.geometry.rectangle((0, 0), (1, 1)).refine(degree=3, elements=12)
    right = fem.geometry.rectangle((1, 0), (2, 1)).refine(degree=3, elements=12)
    return fem.MultiPatchSpace({"L": left, "R": right}, [(("L", "right"), ("R", "left"))])


G = fem.geometry
# (problem, space builder, Dirichlet boundary, max_coarse or None: fem.solve builds the hierarchy itself,
# levels expected); the slow ones run with -m slow (each case compiles its own mg-cg program, ~5 s here).
CASES = {
    "spline2d-p4": ("poisson", lambda: _spline(G.quarter_annulus(), 4, 16), None, 100, 3),
    "annulus-glued-p2": ("poisson", lambda: _spline(G.annulus(), 2, (8, 32)), ["inner", "outer"], 100, 3),
    "spline3d-p2": ("poisson", lambda: _spline(G.thick_quarter_cylinder(), 2, 4), ["inner"], 50, 3),
    "elasticity2d-p2": ("plane_strain", lambda: _spline(G.quarter_annulus(), 2, 16, (2,)), "inner", 100, 3),
    "P1-nested": ("poisson", lambda: fem.LagrangeSpace(refine(fem.mesh.unit_square(2), 4)), None, 50, 4),
    "P1-algebraic": ("poisson", lambda: fem.LagrangeSpace(fem.mesh.unit_square(32)), None, None, 2),
    "spline2d-p1": ("poisson", lambda: _spline(G.l_shape(), 1, 32), None, None, 3),
    "spline2d-p2": ("poisson", lambda: _spline(G.quarter_annulus(), 2, 32), None, None, 3),
    "spline2d-p3": ("poisson", lambda: _spline(G.quarter_annulus(), 3, 32), None, None, 3),
    "multipatch-p3": ("poisson", _multipatch, None, 100, 3),
    "elasticity3d-p2": ("3d", lambda: _spline(G.thick_quarter_cylinder(), 2, 6, (3,)), "front", None, 3),
    "P2-nested": ("poisson", lambda: fem.LagrangeSpace(refine(fem.mesh.unit_square(2), 3), 2), None, 50, 4),
    "Q1-nested": (
        "poisson",
        lambda: fem.LagrangeSpace(refine(fem.mesh.unit_square(2, "quad"), 4)),
        None,
        50,
        4,
    ),
    "Q1-hexahedra-elasticity": (
        "3d",
        lambda: fem.LagrangeSpace(refine(fem.mesh.unit_cube(2, "hexahedron"), 2), 1, shape=(3,)),
        "left",
        None,
        3,
    ),
    "P2-algebraic-elasticity": (
        "plane_strain",
        lambda: fem.LagrangeSpace(fem.mesh.unit_square(16), 2, shape=(2,)),
        "left",
        None,
        2,
    ),
}
FAST = ("spline2d-p4", "elasticity2d-p2", "P1-nested")


@pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
def test_mg_cg_agrees_with_direct(case):
    problem, build, where, max_coarse, levels = CASES[case]
    V = build()
    A, b, bc = _poisson(V, where) if problem == "poisson" else _elasticity(V, where, problem)
    # small problems: every level kept (stop_size=0), to exercise several levels at a low cost
    kw = {} if max_coarse is None else {"max_coarse": max_coarse, "stop_size": 0}
    H = _agrees_with_direct(A, b, bc, **kw)
    assert H.levels == levels, H


def _degree_counts(degree, sizes):
    counts = []
    for n in sizes:
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=degree, elements=n))
        A, b, bc = _poisson(V)
        counts.append(_iterations(A, b, bc, fem.mg_hierarchy(V, bc=bc)))
    return counts


# CG + V-cycle to rtol 1e-8, quarter annulus, homogeneous Dirichlet, default options. Measured on CPU
# (docs/api/fem.md has the table): degree 2 and 3 need the same count on every mesh.
def test_mg_cg_iterations_do_not_grow_with_h():
    # 2, 3, 4 levels (7, 8, 8 iterations); 128 and up run with -m slow (test_mg_cg_iterations_large)
    counts = _degree_counts(2, (16, 32, 64))
    assert max(counts) <= 1.5 * min(counts) and max(counts) <= 30, counts


@pytest.mark.slow
@pytest.mark.parametrize("degree, sizes", [(2, (128, 256, 512)), (3, (32, 64, 128, 256, 512))])
def test_mg_cg_iterations_large(degree, sizes):
    counts = _degree_counts(degree, (32,) + sizes if sizes[0] != 32 else sizes)
    assert max(counts) <= 1.5 * min(counts), counts
    assert max(counts) <= (30 if degree == 2 else 40), counts


# -- gradients through mg-cg ---------------------------------------------------------------------------------
def test_mg_cg_gradient_matches_direct():
    geo = fem.geometry.quarter_annulus().refine(degree=2, elements=12)
    V = fem.SplineSpace(geo)
    bc = fem.DirichletBC(V, None, 0.0)
    kappa0 = jnp.asarray(1.0 + 0.5 * RNG.uniform(size=V.ndofs))
    cp0 = V.control_points

    def loss(kappa, cp, method):
        W = V.with_geometry(control_points=cp)
        A = fem.assemble(fem.library.diffusion, W, kappa=fem.Field(W, kappa))
        b = fem.assemble(fem.library.source, W, f=1.0)
        H = fem.mg_hierarchy(V, bc=bc, max_coarse=100, stop_size=0)
        opts = {"hierarchy": H} if method == "mg-cg" else {}
        u = fem.solve(A, b, bc=fem.DirichletBC(W, None, 0.0), method=method, rtol=1e-13, **opts)
        return jnp.sum(u.coeffs**2)

    g_mg = jax.grad(loss, argnums=(0, 1))(kappa0, cp0, "mg-cg")
    g_direct = jax.grad(loss, argnums=(0, 1))(kappa0, cp0, "superlu")
    for a, d in zip(g_mg, g_direct, strict=True):
        err = float(jnp.linalg.norm(a - d) / jnp.linalg.norm(d))
        assert err < 1e-7, err
    assert fem.mg_hierarchy(V, bc=bc, max_coarse=100, stop_size=0).levels == 2


# -- choosing and caching hierarchies ------------------------------------------------------------------------
def test_mg_hierarchy_is_cached_and_chosen_on_gpu(monkeypatch):
    solve_module = importlib.import_module("igax.fem.solving")
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=32))
    A, _, bc = _poisson(V)
    H = fem.mg_hierarchy(V, bc=bc)
    assert fem.mg_hierarchy(V, bc=bc) is H  # cached per plan, weights and Dirichlet dofs
    assert fem.mg_hierarchy(V) != H  # no fixed dofs: another hierarchy
    spd = A.with_values(A.values, positive_definite=True)
    opts = {}
    assert solve_module._multigrid(None, spd, V, bc, opts) is None and not opts  # CPU: the direct default
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    general = A.with_values(A.values, symmetric=False)
    assert solve_module._multigrid(None, general, V, bc, opts) is None and not opts  # not symmetric
    # an assembled symmetric form (flagged symmetric, not positive definite) gets mg-cg on a GPU
    assert A.symmetric and not A.positive_definite
    assert solve_module._multigrid(None, A, V, bc, opts) == "mg-cg" and opts["hierarchy"] == H
    other = fem.mg_hierarchy(V, bc=bc, max_coarse=100)
    opts = {"hierarchy": other}
    assert solve_module._multigrid("mg-cg", spd, V, bc, opts) == "mg-cg" and opts["hierarchy"] is other


def test_mg_hierarchy_errors():
    V = fem.LagrangeSpace(fem.mesh.unit_square(8))
    W = fem.LagrangeSpace(refine(fem.mesh.unit_square(4)))
    with pytest.raises(ValueError, match=r"bc was built on a different space.*fem.DirichletBC\(V"):
        fem.mg_hierarchy(V, bc=fem.DirichletBC(W, None, 0.0))
    with pytest.raises(ValueError, match=r"no geometric hierarchy.*fem.mesh.refine.refine"):
        fem.mg_hierarchy(V, algebraic=False)
    assert fem.mg_hierarchy(W, algebraic=False).levels == 1  # 81 dofs: already small enough


def test_algebraic_levels_below_a_large_coarsest_mesh():
    # the coarsest recorded mesh has 2401 dofs, more than the Hierarchy factorises densely (2000): smoothed
    # aggregation continues below it
    V = fem.LagrangeSpace(refine(fem.mesh.unit_square(48)))
    A, b, bc = _poisson(V)
    H = fem.mg_hierarchy(V, bc=bc, A=A)
    assert H.levels >= 3 and H.sizes[:2] == (V.ndofs, 2399) and H.sizes[-1] <= 256  # 2 corner dofs dropped
    P = lagrange_levels(V, coarse_size=256, max_levels=1)[0][1].tolil()
    P[bc.dofs] = 0.0
    P = P.tocsc()
    P = P[:, np.flatnonzero(np.diff(P.indptr))]  # coarse dofs with fine support left
    assert abs(H.prolongations[0] - P).max() == 0.0


def test_algebraic_hierarchy_inside_jit_aggregates_the_laplacian():
    # Inside a trace A's values are unknown; the space's Laplacian (NumPy, from the concrete geometry) stands
    # in, which for this Poisson matrix is A itself: the same aggregates as pyamg on the concrete matrix.
    V = fem.LagrangeSpace(fem.mesh.unit_square(24))
    A, _, bc = _poisson(V)
    seen = []

    def build(values):
        seen.append(fem.mg_hierarchy(V, bc=bc, A=A.with_values(values)))
        return values.sum()

    jax.jit(build)(A.values)
    direct = solvers.amg_hierarchy(A, near_nullspace=np.ones((V.ndofs, 1)), max_coarse=256, fixed=bc.dofs)
    assert seen[0].sizes == direct.sizes and seen[0].levels >= 2
    for a, d in zip(seen[0].prolongations, direct.prolongations, strict=True):
        # the same aggregates (structure); the smoothed values agree up to pyamg's randomised estimate of the
        # spectral radius in the prolongation smoother (5e-5 here)
        assert (abs(a) > 0).astype(int).sum() == (abs(d) > 0).astype(int).sum() == abs(abs(a) + abs(d)).nnz
        assert abs(a - d).max() < 1e-3 * abs(d).max()
