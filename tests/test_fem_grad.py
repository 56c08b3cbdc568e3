"""Gradients through assembly, boundary conditions and solves match central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library, mesh


def _fd(f, x, d, h):
    return (f(x + h * d) - f(x - h * d)) / (2 * h)


def _compiled(loss, argnums=0):
    """One compiled value_and_grad; finite differences reuse its value (one compilation per test)."""
    vg = jax.jit(jax.value_and_grad(loss, argnums=argnums))
    return (lambda *a: vg(*a)[0]), (lambda *a: vg(*a)[1])


@fem.functional
def misfit(w):
    return (w.u - w.target) ** 2


def test_grad_wrt_coefficient_field_matches_fd_and_taylor():
    V = fem.LagrangeSpace(mesh.unit_square(6), degree=1)
    bc = fem.DirichletBC(V, None, 0.0)

    def loss(c):
        kappa = fem.Field(V, jnp.exp(c))
        A = fem.assemble(library.diffusion, V, kappa=kappa)
        b = fem.assemble(library.source, V, f=lambda x: 1.0 + x[0])
        u = fem.solve(A, b, bc=bc)
        return fem.assemble(misfit, V, u=u, target=lambda x: 0.05 * x[0] * x[1])

    loss, grad = _compiled(loss)
    c0 = 0.3 * jnp.sin(jnp.arange(V.ndofs, dtype=float))
    g = grad(c0)
    d = jnp.cos(3.0 * jnp.arange(V.ndofs, dtype=float))
    fd = _fd(loss, c0, d, 1e-5)
    assert abs(float(g @ d) - float(fd)) <= 1e-6 * abs(float(fd)) + 1e-14
    # Taylor remainder falls as h^2.
    f0 = loss(c0)
    rem = [abs(float(loss(c0 + h * d) - f0 - h * (g @ d))) for h in (1e-2, 5e-3)]
    assert 3.5 < rem[0] / rem[1] < 4.5


def test_grad_wrt_control_points_matches_fd():
    geo = fem.geometry.quarter_annulus().refine(degree=2, elements=3)
    V0 = fem.SplineSpace(geo)

    def loss(P):
        V = V0.with_geometry(control_points=P)
        A = fem.assemble(library.laplace, V)
        b = fem.assemble(library.source, V, f=lambda x: x[0] * x[1])
        u = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
        return fem.assemble(misfit, V, u=u, target=0.0)

    loss, grad = _compiled(loss)
    P0 = V0.control_points
    g = grad(P0)
    rng = np.random.default_rng(0)
    d = jnp.asarray(rng.standard_normal(P0.shape))
    fd = _fd(loss, P0, d, 1e-6)
    assert abs(float(jnp.sum(g * d)) - float(fd)) <= 1e-6 * abs(float(fd))


def test_grad_wrt_weights_and_boundary_values():
    geo = fem.geometry.quarter_annulus().refine(degree=2, elements=3)
    V0 = fem.SplineSpace(geo)

    def loss(W, g):
        V = V0.with_geometry(weights=W)
        A = fem.assemble(library.laplace, V)
        b = fem.assemble(library.source, V, f=1.0)
        bcs = [fem.DirichletBC(V, "inner", 0.0), fem.DirichletBC(V, "outer", lambda x: g * x[0])]
        u = fem.solve(A, b, bc=bcs)
        return fem.assemble(misfit, V, u=u, target=0.1)

    loss, grad = _compiled(loss, argnums=(0, 1))
    W0, g0 = V0.weights, 0.7
    gW, gg = grad(W0, g0)
    d = jnp.asarray(np.random.default_rng(1).standard_normal(W0.shape))
    fdW = _fd(lambda W: loss(W, g0), W0, d, 1e-6)
    fdg = _fd(lambda g: loss(W0, g), jnp.asarray(g0), 1.0, 1e-6)
    assert abs(float(jnp.sum(gW * d)) - float(fdW)) <= 1e-6 * abs(float(fdW))
    assert abs(float(gg) - float(fdg)) <= 1e-6 * abs(float(fdg))


def test_grad_wrt_mesh_nodes_matches_fd():
    m = mesh.unit_square(3, cell="quad")
    V0 = fem.LagrangeSpace(m, degree=2)

    def loss(X):
        V = V0.with_points(X)
        A = fem.assemble(library.laplace, V)
        b = fem.assemble(library.source, V, f=lambda x: 1.0 + x[1])
        u = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
        return fem.assemble(misfit, V, u=u, target=0.0)

    loss, grad = _compiled(loss)
    X0 = V0.points
    g = grad(X0)
    d = jnp.asarray(np.random.default_rng(2).standard_normal(X0.shape)) * 0.1
    fd = _fd(loss, X0, d, 1e-6)
    assert abs(float(jnp.sum(g * d)) - float(fd)) <= 1e-6 * abs(float(fd))


def test_assembly_jit_once_and_vmap_over_fields():
    V = fem.LagrangeSpace(mesh.unit_square(5), degree=1)
    traces = []

    @jax.jit
    def stiffness(c):
        traces.append(1)
        return fem.assemble(library.diffusion, V, kappa=fem.Field(V, c)).values

    c1, c2 = jnp.ones(V.ndofs), 2.0 + jnp.arange(V.ndofs) / V.ndofs
    v1, v2 = stiffness(c1), stiffness(c2)
    assert len(traces) == 1
    batched = jax.vmap(stiffness)(jnp.stack([c1, c2]))
    np.testing.assert_allclose(batched[0], v1, rtol=1e-13)
    np.testing.assert_allclose(batched[1], v2, rtol=1e-13)
    # kappa = 1 reproduces the Laplacian exactly.
    np.testing.assert_allclose(v1, fem.assemble(library.laplace, V).values, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", ["linear", "functional"])
def test_grad_of_assembled_quantities_wrt_nodes_fd(kind):
    V0 = fem.LagrangeSpace(mesh.unit_square(3), degree=1)

    def area_or_load(X):
        V = V0.with_points(X)
        if kind == "functional":
            return fem.Field(V, jnp.ones(V.ndofs)).integrate()
        return jnp.sum(fem.assemble(library.source, V, f=lambda x: x[0] ** 2) ** 2)

    area_or_load, grad = _compiled(area_or_load)
    X0 = V0.points
    g = grad(X0)
    d = jnp.asarray(np.random.default_rng(3).standard_normal(X0.shape))
    fd = _fd(area_or_load, X0, d, 1e-6)
    assert abs(float(jnp.sum(g * d)) - float(fd)) <= 1e-7 * max(1.0, abs(float(fd)))
