"""LagrangeSpace plans (dof pattern, scatter map, boundary facets) and chunked assembly."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library, mesh
from igax.solvers import CSRPattern

asm = sys.modules["igax.fem.forms.assembly"]  # the module (igax.fem.forms.assembly is the function)

MESHES = {
    "triangle": lambda: mesh.unit_square(5),
    "quad": lambda: mesh.unit_square(4, cell="quad"),
    "tetra": lambda: mesh.unit_cube(2),
    "hexahedron": lambda: mesh.unit_cube(2, cell="hexahedron"),
}


def _facet_vertex_sets(plan, cells, facets):
    c, f = facets
    lf = np.array(plan.ref.facets)
    return [frozenset(cells[ci, lf[fi]].tolist()) for ci, fi in zip(c, f, strict=True)]


@pytest.mark.parametrize("cell", list(MESHES))
@pytest.mark.parametrize("degree", [1, 2])
def test_pattern_and_scatter_map_cover_all_cell_pairs(cell, degree):
    V = fem.LagrangeSpace(MESHES[cell](), degree=degree)
    p = V.plan
    cd = p.cell_dofs.astype(np.int64)
    nel, nloc = cd.shape
    rows = np.broadcast_to(cd[:, :, None], (nel, nloc, nloc))
    cols = np.broadcast_to(cd[:, None, :], (nel, nloc, nloc))
    ref, ref_slot = CSRPattern.from_coo(rows, cols, (p.nscalar, p.nscalar))
    assert p.pattern == ref
    np.testing.assert_array_equal(p.slot.ravel(), ref_slot)


@pytest.mark.parametrize("cell", list(MESHES))
def test_boundary_and_named_facets(cell):
    m = MESHES[cell]()
    p = fem.LagrangeSpace(m, degree=1).plan
    cells = np.asarray(m.cells)
    got = _facet_vertex_sets(p, cells, p.facets["boundary"])
    assert len(got) == len(set(got))
    assert set(got) == {frozenset(f.tolist()) for f in m.boundary_facets()}
    for name, rows in m.boundaries.items():  # same facets, in the order the mesh lists them
        assert _facet_vertex_sets(p, cells, p.facets[name]) == [frozenset(r.tolist()) for r in rows]


@pytest.mark.parametrize("cell", ["triangle", "tetra"])
def test_named_facet_that_is_not_on_the_boundary_is_rejected(cell):
    m = MESHES[cell]()
    interior = next(f for f in m.facets()[0] if frozenset(f.tolist()) not in
                    {frozenset(b.tolist()) for b in m.boundary_facets()})  # fmt: skip
    bad = m._replace(boundaries={**m.boundaries, "inner": interior[None]})
    with pytest.raises(ValueError, match="not boundary facets"):
        fem.LagrangeSpace(bad)


def test_jacobian_determinant_of_triangles_is_twice_the_area():
    m = mesh.unit_square(3)
    V = fem.LagrangeSpace(m, degree=2)
    det = np.asarray(V.jacobian_determinant())
    assert det.shape == (m.ncells, V.plan.quad[0].shape[0])
    np.testing.assert_allclose(det, np.broadcast_to(2 * m.cell_volumes()[:, None], det.shape), rtol=1e-13)


CHUNK_CASES = {
    "p1-laplace": (lambda: mesh.unit_square(6), 1, (), library.laplace, {}),
    "q2-diffusion-callable": (
        lambda: mesh.unit_square(4, cell="quad"), 2, (), library.diffusion,
        {"kappa": lambda x: 1 + x[0] * x[1]},
    ),
    "hex-elasticity": (
        lambda: mesh.unit_cube(2, cell="hexahedron"), 1, (3,), library.linear_elasticity(1.0, 0.3, "3d"), {}
    ),
    "p2-tet-mass": (lambda: mesh.unit_cube(2), 2, (), library.mass, {}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CHUNK_CASES))
def test_chunked_assembly_matches_one_piece(case, monkeypatch):
    make, degree, shape, form, kw = CHUNK_CASES[case]
    with_grad = case == "p1-laplace"  # one reverse-mode check through the scan (compiles are slow)

    def run(chunk):
        monkeypatch.setattr(asm, "_CHUNK_ENTRIES", chunk)
        V = fem.LagrangeSpace(make(), degree=degree, shape=shape)  # a new plan: a new compilation
        f = jax.jit(lambda P: fem.assemble(form, V.with_points(P), **kw).values)
        scanned = "scan" in str(jax.make_jaxpr(f)(V.points))
        g = jax.grad(lambda P: jnp.sum(jnp.sin(f(P))))(V.points) if with_grad else None
        return f(V.points), g, scanned

    A, gA, scanned_a = run(10**12)
    B, gB, scanned_b = run(7)  # small chunks, and an element count that does not divide evenly
    assert not scanned_a and scanned_b
    np.testing.assert_allclose(B, A, rtol=0, atol=1e-13 * float(jnp.abs(A).max()))
    if with_grad:
        np.testing.assert_allclose(gB, gA, rtol=0, atol=1e-12 * float(jnp.abs(gA).max()))


def test_chunked_assembly_with_values_at_quadrature_points(monkeypatch):
    V = fem.LagrangeSpace(mesh.unit_square(5), degree=1)
    kappa = 1.0 + np.random.default_rng(0).random((V.nel, V.plan.quad[0].shape[0]))
    monkeypatch.setattr(asm, "_CHUNK_ENTRIES", 10**12)
    A = fem.assemble(library.diffusion, V, kappa=jnp.asarray(kappa)).to_scipy().toarray()
    monkeypatch.setattr(asm, "_CHUNK_ENTRIES", 5)
    V2 = fem.LagrangeSpace(mesh.unit_square(5), degree=1)
    B = fem.assemble(library.diffusion, V2, kappa=jnp.asarray(kappa)).to_scipy().toarray()
    np.testing.assert_allclose(B, A, rtol=0, atol=1e-14 * np.abs(A).max())
    assert np.abs(A).max() > 0
    # A number is broadcast inside the chunk loop.
    C = fem.assemble(library.diffusion, V2, kappa=2.5).to_scipy().toarray()
    L = fem.assemble(library.laplace, V2).to_scipy().toarray()
    np.testing.assert_allclose(C, 2.5 * L, rtol=0, atol=1e-14 * np.abs(C).max())
