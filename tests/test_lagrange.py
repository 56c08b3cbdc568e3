"""Lagrange reference elements: nodal property, polynomial reproduction, gradients, JAX transformations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax.bases.lagrange import SUPPORTED_ELEMENTS, reference_cell, reference_element

ELEMENTS = list(SUPPORTED_ELEMENTS)
NBASIS = {
    ("triangle", 1): 3,
    ("triangle", 2): 6,
    ("quad", 1): 4,
    ("quad", 2): 9,
    ("tetra", 1): 4,
    ("tetra", 2): 10,
    ("hexahedron", 1): 8,
    ("hexahedron", 2): 27,
}


def random_points(cell, n, seed=0):
    """Random points inside the reference cell."""
    rng = np.random.default_rng(seed)
    dim = reference_cell(cell).dim
    x = rng.random((n, dim))
    if cell in ("triangle", "tetra"):
        x = x[x.sum(axis=1) < 1]
    return x


def polynomial_space(cell, degree):
    """Exponents of the space the element must reproduce: P_k (simplices) or Q_k (tensor cells)."""
    dim = reference_cell(cell).dim
    return [
        e
        for e in itertools.product(range(degree + 1), repeat=dim)
        if cell not in ("triangle", "tetra") or sum(e) <= degree
    ]


@pytest.mark.parametrize("cell, degree", ELEMENTS)
def test_kronecker_and_counts(cell, degree):
    el = reference_element(cell, degree)
    assert el.nbasis == NBASIS[(cell, degree)] == el.nodes.shape[0]
    assert el.dofs_per_entity[0] == 1
    ref = el.reference
    count = (
        ref.nverts * el.dofs_per_entity[0]
        + len(ref.edges) * el.dofs_per_entity[1]
        + len(ref.faces) * el.dofs_per_entity[2]
        + el.dofs_per_entity[3]
    )
    assert count == el.nbasis
    np.testing.assert_allclose(el.values(el.nodes), np.eye(el.nbasis), atol=1e-14)


@pytest.mark.parametrize("cell, degree", ELEMENTS)
def test_partition_of_unity_and_gradient_sum(cell, degree):
    el = reference_element(cell, degree)
    x = random_points(cell, 40)
    np.testing.assert_allclose(el.values(x).sum(axis=1), 1.0, atol=1e-13)
    np.testing.assert_allclose(el.gradients(x).sum(axis=1), 0.0, atol=1e-12)


@pytest.mark.parametrize("cell, degree", ELEMENTS)
def test_reproduces_polynomials_of_its_degree(cell, degree):
    """Interpolating a monomial of the element's space at the nodes reproduces it and its gradient exactly."""
    el = reference_element(cell, degree)
    x = random_points(cell, 30, seed=1)
    phi, dphi = el.values(x), el.gradients(x)
    for e in polynomial_space(cell, degree):
        e = np.array(e)
        u_nodes = np.prod(el.nodes**e, axis=1)
        exact = np.prod(x**e, axis=1)
        np.testing.assert_allclose(phi @ u_nodes, exact, atol=1e-13)
        grad = np.stack(
            [
                e[d] * np.prod(x ** np.maximum(e - np.eye(len(e), dtype=int)[d], 0), axis=1)
                for d in range(len(e))
            ],
            axis=-1,
        )
        np.testing.assert_allclose(np.einsum("qbd,b->qd", dphi, u_nodes), grad, atol=1e-12)


@pytest.mark.parametrize("cell, degree", ELEMENTS)
def test_gradients_match_central_differences(cell, degree):
    el = reference_element(cell, degree)
    x = random_points(cell, 10, seed=2) * 0.8 + 0.05
    h = 1e-6
    dim = x.shape[1]
    fd = np.stack(
        [
            (el.values(x + h * np.eye(dim)[d]) - el.values(x - h * np.eye(dim)[d])) / (2 * h)
            for d in range(dim)
        ],
        -1,
    )
    np.testing.assert_allclose(el.gradients(x), fd, atol=1e-8)


@pytest.mark.parametrize("cell, degree", [("triangle", 2), ("hexahedron", 2)])
def test_jax_input_jit_and_autodiff(cell, degree):
    el = reference_element(cell, degree)
    x = random_points(cell, 8, seed=3)
    xj = jnp.asarray(x)
    vals = jax.jit(el.values)(xj)
    assert isinstance(vals, jax.Array)
    np.testing.assert_allclose(vals, el.values(x), atol=1e-14)
    np.testing.assert_allclose(jax.jit(el.gradients)(xj), el.gradients(x), atol=1e-13)
    # autodiff of values agrees with the analytic gradients, also at a vertex (no 0 ** -1 NaN)
    # (transformations under jit: op-by-op dispatch of eager transforms costs seconds)
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda p: el.values(p[None])[0])))(xj)  # (npts, nbasis, dim)
    np.testing.assert_allclose(jac, el.gradients(x), atol=1e-13)
    at_vertex = jax.jit(jax.jacrev(lambda p: el.gradients(p[None])[0].sum()))(jnp.zeros(el.dim))
    assert np.all(np.isfinite(at_vertex))
    # vmap over batches of points and arbitrary leading axes
    batched = jax.jit(jax.vmap(el.values))(jnp.stack([xj, xj]))
    np.testing.assert_allclose(batched[1], vals, atol=0)


def test_float32_input_stays_float32():
    el = reference_element("quad", 2)
    out = jax.jit(el.values)(jnp.full((3, 2), 0.25, dtype=jnp.float32))
    assert out.dtype == jnp.float32
    assert el.values(np.full((3, 2), 0.25)).dtype == np.float64


@pytest.mark.parametrize("cell, degree", [c for c in ELEMENTS if c[1] == 2])
def test_node_layout(cell, degree):
    """Vertices, then edge midpoints in .edges order, then face centres, then the cell centre."""
    el = reference_element(cell, degree)
    v = el.reference.vertices
    nv, ne = len(v), len(el.edges)
    np.testing.assert_array_equal(el.nodes[:nv], v)
    np.testing.assert_allclose(el.nodes[nv : nv + ne], [(v[a] + v[b]) / 2 for a, b in el.edges])
    if cell == "hexahedron":
        np.testing.assert_allclose(el.nodes[20:26], [v[list(f)].mean(0) for f in el.faces])
    if cell in ("quad", "hexahedron"):
        np.testing.assert_allclose(el.nodes[-1], v.mean(0))


@pytest.mark.parametrize("cell, degree", [c for c in ELEMENTS if c[1] == 2])
def test_node_layout_matches_vtk(cell, degree):
    """Degree-2 nodes are in VTK's order, so fields export as triangle6 / tetra10 / quad9 / hexahedron27."""
    vtk = pytest.importorskip("vtk")
    el = reference_element(cell, degree)
    make = {
        "triangle": vtk.vtkQuadraticTriangle,
        "quad": vtk.vtkBiQuadraticQuad,
        "tetra": vtk.vtkQuadraticTetra,
        "hexahedron": vtk.vtkTriQuadraticHexahedron,
    }[cell]()
    pc = make.GetParametricCoords()
    coords = np.array([pc[i] for i in range(3 * make.GetNumberOfPoints())]).reshape(-1, 3)[:, : el.dim]
    np.testing.assert_allclose(el.nodes, coords)


@pytest.mark.parametrize("cell", ["triangle", "quad", "tetra", "hexahedron"])
def test_facets_are_outward_oriented(cell):
    ref = reference_cell(cell)
    centre = ref.vertices.mean(axis=0)
    for f in ref.facets:
        v = ref.vertices[list(f)]
        if ref.dim == 2:
            t = v[1] - v[0]
            n = np.array([t[1], -t[0]])
        else:
            n = np.cross(v[1] - v[0], v[-1] - v[0])
        assert (v[0] - centre) @ n > 0, f


def test_equality_hash_and_cache():
    a, b = reference_element("triangle", 2), reference_element("tetrahedron", 2)
    assert a is reference_element("triangle", 2)
    assert a != b and hash(a) == hash(reference_element("triangle", 2))
    assert {a: 1}[reference_element("triangle", 2)] == 1
    assert reference_element("hex", 1).cell == "hexahedron"
    with pytest.raises(ValueError):
        a.nodes[0, 0] = 1.0  # read-only tables


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"no Lagrange element for cell='triangle' with degree=3"):
        reference_element("triangle", 3)
    with pytest.raises(ValueError, match="not a known reference cell"):
        reference_element("pyramid", 1)
    with pytest.raises(TypeError, match="degree must be an int"):
        reference_element("quad", 1.0)
    with pytest.raises(ValueError, match=r"xi must have shape \(npts, 3\)"):
        reference_element("tetra", 1).values(np.zeros((4, 2)))


@pytest.mark.parametrize("cell, degree", ELEMENTS)
def test_facet_nodes_carry_the_trace(cell, degree):
    """Basis functions of nodes off a facet vanish on it; the facet's nodes form the facet's own element."""
    from igax.fem.quadrature import facet_quadrature

    el = reference_element(cell, degree)
    fq = facet_quadrature(cell, 4)
    facet_cell = el.reference.facet_cell
    for f, ids in enumerate(el.facet_nodes):
        assert (
            len(ids) == reference_element(facet_cell, degree).nbasis if facet_cell != "line" else degree + 1
        )
        off = np.setdiff1d(np.arange(el.nbasis), ids)
        vals = el.values(fq.points[f])  # (nq, nbasis)
        np.testing.assert_allclose(vals[:, off], 0.0, atol=1e-14)
        np.testing.assert_allclose(vals[:, ids].sum(axis=1), 1.0, atol=1e-14)


def test_integer_jax_points_are_promoted_to_float():
    out = jax.jit(reference_element("quad", 2).values)(jnp.array([[0, 1]]))
    assert jnp.issubdtype(out.dtype, jnp.floating)
    np.testing.assert_allclose(out[0], np.eye(9)[3])
