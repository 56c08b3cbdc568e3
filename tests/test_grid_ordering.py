"""The grid nested-dissection ordering that PARDISO's Cholesky plans use for structured patterns
(``igax.solvers._grid_ordering``): a permutation, a true dissection of the real patterns, exact solves, fill
not above METIS's, wrong hints rejected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from igax import fem, solvers
from igax.fem import library, mesh
from igax.solvers import CSRPattern, _grid_ordering, _pardiso
from igax.solvers._grid_ordering import GridHint, check_hint, grid_permutation, nested_dissection

needs_pardiso = pytest.mark.skipif(
    "pardiso" not in solvers.available_methods(), reason="pypardiso is not installed"
)


def _spline(n, degree=2, shape=(), elements=None):
    geo = fem.geometry.quarter_annulus().refine(degree=degree, elements=elements or (n, n))
    return fem.SplineSpace(geo, shape=shape)


SPACES = {
    "spline2": lambda: _spline(30),
    "spline3": lambda: _spline(24, degree=3),
    "spline2-aniso": lambda: _spline(0, elements=(40, 12)),
    "spline2-vector": lambda: _spline(20, shape=(2,)),
    "p1-right": lambda: fem.LagrangeSpace(mesh.unit_square(50), degree=1),
    "p1-left": lambda: fem.LagrangeSpace(mesh.unit_square((50, 30), diagonal="left"), degree=1),
    "q1": lambda: fem.LagrangeSpace(mesh.unit_square(50, cell="quad"), degree=1),
    "q1-vector": lambda: fem.LagrangeSpace(mesh.unit_square(30, cell="quad"), degree=1, shape=(2,)),
    "p1-tet": lambda: fem.LagrangeSpace(mesh.unit_cube(14), degree=1),
    "q1-hex-vector": lambda: fem.LagrangeSpace(mesh.unit_cube(10, cell="hexahedron"), degree=1, shape=(3,)),
    "spline2-3d": lambda: fem.SplineSpace(fem.geometry.box().refine(degree=2, elements=(8, 8, 8))),
}


def _spd(pattern, seed=0):
    """A random symmetric, strictly diagonally dominant matrix of ``pattern`` (SPD), values in CSR order."""
    rng = np.random.default_rng(seed)
    M = sp.csr_matrix((rng.uniform(-1.0, 0.0, pattern.nnz), pattern.indices, pattern.indptr), pattern.shape)
    S = (M + M.T).tocsr()
    S = (S + sp.diags(np.asarray(abs(S).sum(axis=1)).ravel() + 1.0)).tocsr()
    S.sort_indices()
    assert np.array_equal(S.indptr, pattern.indptr) and np.array_equal(S.indices, pattern.indices)
    return S


@pytest.mark.parametrize(
    "shape, reach",
    [((7,), (1,)), ((1, 9), (1, 1)), ((13, 5), (2, 2)), ((40, 41), (1, 1)), ((9, 6, 11), (1, 2, 1))],
)
def test_nested_dissection_is_a_permutation(shape, reach):
    for leaf in (1, 4, 64):
        order = nested_dissection(shape, reach, leaf=leaf)
        assert order.dtype == np.int64
        np.testing.assert_array_equal(np.sort(order), np.arange(int(np.prod(shape))))


@pytest.mark.parametrize("name", ["spline2", "spline3", "spline2-aniso", "p1-left", "q1", "p1-tet"])
def test_the_first_split_is_a_separator_of_the_real_pattern(name):
    """The order lists the first half, the second half, then the separator; no stored entry of the space's
    pattern couples the two halves."""
    pattern = SPACES[name]().plan.pattern
    hint = pattern.grid
    assert hint is not None and hint.ncomp == 1
    shape, reach = np.array(hint.shape), np.array(hint.reach)
    k = int(np.argmax(shape / reach))
    m = (shape[k] - reach[k]) // 2
    coord = np.unravel_index(np.arange(pattern.shape[0]), hint.shape)[k]
    part = np.where(coord < m, 0, np.where(coord >= m + reach[k], 1, 2))  # left, right, separator
    order = nested_dissection(hint.shape, hint.reach)
    np.testing.assert_array_equal(part[order], np.sort(part))  # left, then right, then the separator
    rows, cols = pattern.rows, pattern.indices
    assert not np.any((part[rows] == 0) & (part[cols] == 1))
    assert np.sum(part == 2) == reach[k] * np.prod(shape) // shape[k]


@pytest.mark.parametrize("name", sorted(SPACES))
def test_hints_of_the_spaces_are_right(name):
    """Spline and structured degree-1 Lagrange spaces carry a hint that their entries satisfy (the reach is
    the degree), and a reach one smaller in any direction is rejected."""
    pattern = SPACES[name]().plan.pattern
    hint = pattern.grid
    assert hint is not None and hint.size == pattern.shape[0]
    assert check_hint(pattern.indptr, pattern.indices, hint)
    for k in range(len(hint.shape)):
        short = tuple(r - (j == k) for j, r in enumerate(hint.reach))
        assert not check_hint(pattern.indptr, pattern.indices, hint._replace(reach=short))


def test_the_hint_is_not_part_of_the_pattern_identity():
    V = _spline(9)
    p = V.plan.pattern
    plain = CSRPattern(p.indptr.copy(), p.indices.copy(), p.shape)
    assert plain.grid is None and p.grid is not None
    assert plain == p and hash(plain) == hash(p) and plain._digest == p._digest


def test_patterns_without_a_known_grid_carry_no_hint():
    """An unstructured mesh, degree-2 Lagrange (edge dofs), a refined structured mesh, a glued (periodic)
    spline space and a mixed space: no hint."""
    m = mesh.unit_square(6)
    assert fem.LagrangeSpace(m, degree=2).plan.pattern.grid is None
    assert fem.LagrangeSpace(mesh.refine.refine(m), degree=1).plan.pattern.grid is None
    pts = m.points + 0.01 * np.sin(7.0 * m.points[:, ::-1])  # a mesh built from arrays: not known for sure
    assert fem.LagrangeSpace(mesh.Mesh(pts, m.cells, m.cell_type), degree=1).plan.pattern.grid is None
    periodic = fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(3, 12)))  # seam glued
    assert periodic.plan.pattern.grid is None
    V = fem.LagrangeSpace(m, degree=2, shape=(2,))
    Q = fem.LagrangeSpace(m, degree=1)
    assert fem.MixedSpace(V, Q).plan.pattern.grid is None


def _cholesky(pattern, grid: bool):
    previous = _pardiso.GRID_ORDERING
    _pardiso.GRID_ORDERING = grid
    try:
        return _pardiso.PardisoPlan(pattern, "spd", None)
    finally:
        _pardiso.GRID_ORDERING = previous


@needs_pardiso
@pytest.mark.parametrize("name", sorted(SPACES))
def test_grid_ordering_solves_exactly_and_fills_no_more_than_metis(name):
    """The Cholesky plan of each space's pattern orders by the grid (fails before it existed: METIS), its
    solves equal SciPy's, and its factor has at most 2 % more entries than METIS's (iparm[17])."""
    pattern = SPACES[name]().plan.pattern
    S = _spd(pattern)
    b = np.random.default_rng(1).standard_normal(pattern.shape[0])
    ref = spl.spsolve(S.tocsc(), b)
    grid, metis = _cholesky(pattern, True), _cholesky(pattern, False)
    assert (grid.ordering, metis.ordering) == ("grid", "metis")
    x = grid.factor(S.data).solve(b[:, None], False)[:, 0]
    assert np.linalg.norm(x - ref) <= 1e-10 * np.linalg.norm(ref)
    assert grid.iparm[17] <= 1.02 * metis.iparm[17], (int(grid.iparm[17]), int(metis.iparm[17]))


@needs_pardiso
def test_a_wrong_hint_falls_back_to_metis_and_stays_exact():
    """A hint whose reach the entries exceed, or whose grid is transposed or of the wrong size, is rejected:
    METIS orders, and the solve is exact."""
    pattern = _spline(0, elements=(14, 9)).plan.pattern  # a 16 x 11 grid of control points, reach 2
    S = _spd(pattern, seed=2)
    b = np.random.default_rng(3).standard_normal(pattern.shape[0])
    ref = spl.spsolve(S.tocsc(), b)
    right = pattern.grid
    wrong = [right._replace(reach=(1, 2)), right._replace(shape=right.shape[::-1]), right._replace(ncomp=2)]
    for hint in wrong:
        p = CSRPattern(pattern.indptr, pattern.indices, pattern.shape)
        p.grid = hint
        assert grid_permutation(p.indptr, p.indices, hint) is None
        plan = _cholesky(p, True)
        assert plan.ordering == "metis" and plan.perm is None
        x = plan.factor(S.data).solve(b[:, None], False)[:, 0]
        assert np.linalg.norm(x - ref) <= 1e-10 * np.linalg.norm(ref)


@needs_pardiso
def test_the_switch_turns_the_grid_ordering_off(monkeypatch):
    pattern = _spline(11).plan.pattern
    monkeypatch.setattr(_pardiso, "GRID_ORDERING", False)
    plan = _pardiso.PardisoPlan(pattern, "spd", None)
    assert plan.ordering == "metis" and plan.perm is None and plan.iparm[4] == 0


@needs_pardiso
def test_fem_solve_with_dirichlet_conditions_uses_the_grid_ordering():
    """``fem.solve`` with a DirichletBC gives PARDISO the full-size condensed matrix, of the space's pattern:
    its background Cholesky plan orders by the grid, and the jitted solve and its gradient are exact."""
    from igax.solvers.backends import pardiso

    V = _spline(13)
    b = fem.assemble(library.source, V, f=1.0)
    bc = fem.DirichletBC(V, None, 0.0)

    def forward(c):
        A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
        return fem.solve(A, b, bc=bc, method="pardiso").coeffs

    c = jnp.asarray(np.random.default_rng(5).uniform(1.0, 2.0, V.ndofs))
    u = jax.jit(forward)(c)
    plan = pardiso._plans[(V.plan.pattern._digest, "spd", False)]
    assert plan.ordering == "grid"
    A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
    Ac, bcv = bc.condense(A, b)
    ref = spl.spsolve(Ac.to_scipy().tocsc(), np.asarray(bcv))
    assert np.linalg.norm(np.asarray(u) - ref) <= 1e-10 * np.linalg.norm(ref)
    # the gradient of a scalar loss against central differences
    w = jnp.asarray(np.random.default_rng(6).standard_normal(V.ndofs))
    loss = jax.jit(lambda c: jnp.dot(w, forward(c)))
    g = jax.grad(loss)(c)
    d = jnp.asarray(np.random.default_rng(7).standard_normal(V.ndofs))
    h = 1e-6
    fd = (loss(c + h * d) - loss(c - h * d)) / (2 * h)
    assert abs(float(jnp.dot(g, d)) - float(fd)) <= 1e-6 * abs(float(fd))


def test_leaf_default_is_the_module_setting(monkeypatch):
    monkeypatch.setattr(_grid_ordering, "LEAF_NODES", 1)
    np.testing.assert_array_equal(nested_dissection((1, 7), (1, 1)), [0, 2, 1, 4, 6, 5, 3])
    assert isinstance(GridHint((2, 2), (1, 1)).with_components(3), GridHint)
