"""Quadrature rules: exact integration of every monomial up to the rule's degree, against closed forms."""

import itertools
from math import factorial

import numpy as np
import pytest

from igax.fem.quadrature import (
    facet_quadrature,
    gauss_legendre,
    quadrature,
    reference_facet_maps,
    simplex_quadrature,
    tensor_gauss,
)


def simplex_monomial(exps):
    """Integral of prod x_i^a_i over the unit simplex: prod a_i! / (sum a_i + dim)!."""
    return np.prod([factorial(a) for a in exps]) / factorial(sum(exps) + len(exps))


def monomials(x, exps):
    return np.prod(x ** np.asarray(exps), axis=-1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_gauss_legendre_exact_to_2n_minus_1(n):
    x, w = gauss_legendre(n)
    assert x.shape == w.shape == (n,)
    assert np.all((x > 0) & (x < 1)) and np.all(w > 0)
    for k in range(2 * n):
        assert w @ x**k == pytest.approx(1.0 / (k + 1), abs=1e-14)
    # one degree beyond: no longer exact (the rule is not over-integrating by accident)
    assert abs(w @ x ** (2 * n) - 1.0 / (2 * n + 1)) > 1e-12


@pytest.mark.parametrize("dim", [2, 3])
def test_tensor_gauss_exact_for_q_polynomials(dim):
    n = 3
    x, w = tensor_gauss(n, dim)
    assert x.shape == (n**dim, dim) and w.sum() == pytest.approx(1.0, abs=1e-15)
    for e in itertools.product(range(2 * n), repeat=dim):
        exact = np.prod([1.0 / (a + 1) for a in e])
        assert w @ monomials(x, e) == pytest.approx(exact, abs=1e-14)


def test_tensor_gauss_anisotropic_and_errors():
    x, w = tensor_gauss((2, 4))
    assert x.shape == (8, 2)
    assert w @ (x[:, 0] ** 3 * x[:, 1] ** 7) == pytest.approx(1 / 32, abs=1e-15)
    with pytest.raises(TypeError, match="dim is required"):
        tensor_gauss(3)
    with pytest.raises(ValueError, match="does not match"):
        tensor_gauss((2, 3), 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        gauss_legendre(0)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("degree", list(range(0, 11)))
def test_simplex_rule_exact_to_degree(dim, degree):
    x, w = simplex_quadrature(dim, degree)
    assert np.all(w > 0), "weights must be positive"
    assert np.all(x > 0) and np.all(x.sum(axis=1) < 1), "points must be interior"
    assert w.sum() == pytest.approx(1.0 / factorial(dim), abs=1e-15)
    for e in itertools.product(range(degree + 1), repeat=dim):
        if sum(e) <= degree:
            assert w @ monomials(x, e) == pytest.approx(simplex_monomial(e), rel=1e-13, abs=1e-16), e


@pytest.mark.parametrize(
    "dim, degree, rule",
    [(2, 2, "auto"), (2, 5, "auto"), (3, 2, "auto"), (2, 3, "collapsed"), (3, 5, "collapsed")],
)
def test_simplex_rules_are_not_exact_beyond_degree(dim, degree, rule):
    """Some monomial of degree + 1 is missed: the exactness test above would catch a too-weak rule."""
    x, w = simplex_quadrature(dim, degree, rule=rule)
    errs = [
        abs(w @ monomials(x, e) - simplex_monomial(e))
        for e in itertools.product(range(degree + 2), repeat=dim)
        if sum(e) == degree + 1
    ]
    assert max(errs) > 1e-8


def test_symmetric_rules_are_smaller_than_collapsed():
    assert len(simplex_quadrature(2, 2)[1]) == 3 and len(simplex_quadrature(2, 5)[1]) == 7
    assert len(simplex_quadrature(3, 2)[1]) == 4
    assert len(simplex_quadrature(2, 5, rule="collapsed")[1]) == 9


@pytest.mark.parametrize(
    "cell, dim, volume",
    [("line", 1, 1.0), ("triangle", 2, 0.5), ("quad", 2, 1.0), ("tetra", 3, 1 / 6), ("hexahedron", 3, 1.0)],
)
def test_quadrature_dispatch(cell, dim, volume):
    for degree in range(5):
        x, w = quadrature(cell, degree)
        assert x.shape[1] == dim and w.sum() == pytest.approx(volume, abs=1e-15)
        # the highest monomial of each kind is integrated exactly
        e = (degree,) + (0,) * (dim - 1)
        exact = simplex_monomial(e) if cell in ("triangle", "tetra") else 1.0 / (degree + 1)
        assert w @ monomials(x, e) == pytest.approx(exact, abs=1e-15)


def test_quadrature_bad_input():
    with pytest.raises(ValueError, match="not a known reference cell"):
        quadrature("prism", 2)
    with pytest.raises(ValueError, match="degree must be >= 0"):
        quadrature("triangle", -1)
    with pytest.raises(TypeError, match="degree must be an int"):
        quadrature("triangle", 2.0)
    with pytest.raises(ValueError, match="dim must be 2"):
        simplex_quadrature(4, 2)
    with pytest.raises(ValueError, match="rule must be"):
        simplex_quadrature(2, 2, rule="best")


def test_rules_are_read_only():
    x, w = quadrature("triangle", 3)
    with pytest.raises(ValueError):
        w[0] = 1.0


@pytest.mark.parametrize("cell", ["line", "triangle", "quad", "tetra", "hexahedron"])
def test_facet_quadrature_integrates_divergence_theorem(cell):
    """sum_facets int_F f n_i dS = int_K df/dx_i for f = x^a y^b (z^c): checks points, weights and normals."""
    fq = facet_quadrature(cell, 4)
    x, w = quadrature(cell, 4)
    dim = x.shape[1]
    exps = np.array([2, 1, 1][:dim])
    f = monomials(fq.points, exps)  # (nfacets, nq)
    lhs = np.einsum("fq,fq,fd->d", fq.weights, f, fq.normals)
    rhs = []
    for d in range(dim):
        e = exps.copy()
        e[d] -= 1
        rhs.append(exps[d] * (w @ monomials(x, e)))
    np.testing.assert_allclose(lhs, rhs, atol=1e-14)


@pytest.mark.parametrize("cell", ["triangle", "quad", "tetra", "hexahedron"])
def test_facet_points_lie_on_facets(cell):
    from igax.bases.lagrange import reference_cell

    ref = reference_cell(cell)
    fq = facet_quadrature(cell, 3)
    origins, axes = reference_facet_maps(cell)
    for f, verts in enumerate(ref.facets):
        v = ref.vertices[list(verts)]
        # every point is an affine combination of the facet's vertices lying in the facet's plane
        n = fq.normals[f]
        np.testing.assert_allclose((fq.points[f] - v[0]) @ n, 0.0, atol=1e-15)
        # and the normal points away from the cell centroid
        assert (v[0] - ref.vertices.mean(axis=0)) @ n > 0
        np.testing.assert_allclose(origins[f], v[0])
    measures = fq.weights.sum(axis=1)
    expected = {"triangle": [1, np.sqrt(2), 1], "quad": [1] * 4, "tetra": [0.5, 0.5, np.sqrt(3) / 2, 0.5]}
    np.testing.assert_allclose(measures, expected.get(cell, [1] * 6), atol=1e-15)
