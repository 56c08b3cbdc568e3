"""Exact refinement: knot insertion, degree elevation and k-refinement leave the geometry unchanged;
refinement stays differentiable; Bezier extraction reproduces the B-spline basis."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax.bases import (
    NURBSPatch,
    bernstein,
    bezier_extraction,
    degree_elevation_matrix,
    design_matrix,
    knot_insertion_matrix,
    open_uniform,
    uniform_refinement_knots,
)
from igax.bases.knots import elements


def random_patch(pdim, seed=0):
    rng = np.random.default_rng(seed)
    knots = [[0, 0, 0, 0.3, 0.3, 1, 1, 1], [0, 0, 0.6, 1, 1], open_uniform(3, 2)][:pdim]
    degrees = (2, 1, 3)[:pdim]
    shape = tuple(len(k) - p - 1 for k, p in zip(knots, degrees, strict=False))
    return NURBSPatch(knots, degrees, rng.normal(size=(*shape, 3)), rng.uniform(0.5, 2.0, shape))


@pytest.mark.parametrize("pdim", [2, 3])
def test_insertion_and_elevation_leave_the_map_unchanged(pdim):
    patch = random_patch(pdim)
    u = np.random.default_rng(1).uniform(size=(200, pdim))
    x0 = np.asarray(patch.evaluate(u))
    scale = np.abs(x0).max()
    refined = [
        patch.insert_knots(0, [0.1, 0.5, 0.5, 0.8]),
        patch.insert_knots(pdim - 1, [0.25, 0.7]),
        patch.elevate_degree(0, 2),
        patch.elevate_degree(1, 1),
        patch.refine(degree=4, elements=6),
    ]
    for r in refined:
        np.testing.assert_allclose(np.asarray(r.evaluate(u)), x0, rtol=0, atol=1e-13 * scale)
    r = refined[-1]
    assert r.degrees == (4,) * pdim and r.n_elements == (6,) * pdim
    # derivatives of the map are unchanged too (the parametrisation is the same)
    np.testing.assert_allclose(r.jacobian(u[:20]), patch.jacobian(u[:20]), atol=1e-11 * scale)


def test_refinement_matrices_reproduce_the_old_basis():
    t = np.array([0, 0, 0, 0, 0.2, 0.5, 0.5, 0.9, 1, 1, 1, 1], float)
    p = 3
    x = np.linspace(0, 1, 101)
    B = design_matrix(t, p, x)[0]
    T, tn = knot_insertion_matrix(t, p, [0.1, 0.5, 0.7, 0.7])
    np.testing.assert_allclose(design_matrix(tn, p, x)[0] @ T, B, atol=1e-14)
    np.testing.assert_allclose(T.sum(1), 1.0, atol=1e-15)  # rows are convex combinations
    assert np.all(T >= -1e-15)
    E, te = degree_elevation_matrix(t, p, 2)
    np.testing.assert_array_equal(np.unique(te, return_counts=True)[1], [6, 3, 4, 3, 6])
    np.testing.assert_allclose(design_matrix(te, p + 2, x)[0] @ E, B, atol=1e-13)
    assert np.all(E >= -1e-13)  # degree elevation coefficients are non-negative


def test_uniform_refinement_knots():
    np.testing.assert_allclose(
        uniform_refinement_knots(open_uniform(2, 2), 8), [1 / 8, 2 / 8, 3 / 8, 5 / 8, 6 / 8, 7 / 8]
    )
    t = [0, 0, 0.5, 0.5, 1, 1]
    new = uniform_refinement_knots(t, 5)  # 2 elements of equal length -> 3 + 2 parts
    assert new.size == 3 and np.all((new > 0) & (new < 1)) and 0.5 not in new
    assert uniform_refinement_knots(t, 2).size == 0
    with pytest.raises(
        ValueError, match="elements must be an integer >= the current number of elements \\(2\\)"
    ):
        uniform_refinement_knots(t, 1)


def test_refinement_is_differentiable_in_coarse_control_points_and_weights():
    patch = random_patch(2)
    u = jnp.asarray(np.random.default_rng(2).uniform(size=(5, 2)))

    def fine_loss(cp, w):
        coarse = NURBSPatch(patch.knots, patch.degrees, cp, w)
        return jnp.sum(coarse.refine(degree=3, elements=4).evaluate(u) ** 2)

    def coarse_loss(cp, w):
        return jnp.sum(NURBSPatch(patch.knots, patch.degrees, cp, w).evaluate(u) ** 2)

    g_fine = jax.jit(jax.grad(fine_loss, argnums=(0, 1)))(patch.control_points, patch.weights)
    g_coarse = jax.jit(jax.grad(coarse_loss, argnums=(0, 1)))(patch.control_points, patch.weights)
    for a, b in zip(g_fine, g_coarse, strict=False):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=1e-11 * np.abs(b).max())


@pytest.mark.parametrize("p", [0, 1, 2, 4])
def test_bezier_extraction_reproduces_bsplines(p):
    t = np.r_[[0.0] * (p + 1), 0.25, 0.6, 0.6 if p >= 2 else 0.8, [1.0] * (p + 1)]
    C = bezier_extraction(t, p)
    el = elements(t)
    assert C.shape == (el.shape[0], p + 1, p + 1)
    s = np.linspace(0, 1, 9)[1:-1]
    B = bernstein(p, s)[0]  # (ns, p+1)
    for e, (a, b) in enumerate(el):
        x = a + s * (b - a)
        D = design_matrix(t, p, x)[0]
        first = int(np.argmax(np.abs(D).sum(0) > 0))
        np.testing.assert_allclose(D[:, first : first + p + 1], B @ C[e].T, atol=1e-14)
    # Bernstein polynomials: closed form and partition of unity
    from math import comb

    ref = np.stack([comb(p, b) * s**b * (1 - s) ** (p - b) for b in range(p + 1)], axis=1)
    np.testing.assert_allclose(B, ref, atol=1e-15)


def test_degree_zero_with_interior_knots_cannot_be_elevated():
    with pytest.raises(ValueError, match="degree 0 splines with interior knots"):
        degree_elevation_matrix([0, 0.5, 1], 0)
    with pytest.raises(ValueError, match="knots with new_knots inserted"):
        knot_insertion_matrix([0, 0, 0, 0.5, 0.5, 1, 1, 1], 2, [0.5])
