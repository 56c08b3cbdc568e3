"""Manufactured solutions converge at optimal rates: L2 ~ h^(p+1), H1 ~ h^p (slopes fitted by polyfit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library, mesh, norms

PI = np.pi


# --- quarter annulus (REFERENCE.md) -------------------------------------------------------------------------
def annulus_exact(x):
    r2 = x[0] ** 2 + x[1] ** 2
    return -(r2 - 1) * (r2 - 4) * x[0] * x[1] ** 2


def annulus_source(x):
    X, Y = x[0], x[1]
    return 2 * X * (22 * X**2 * Y**2 + 21 * Y**4 - 45 * Y**2 + X**4 - 5 * X**2 + 4)


annulus_grad = jax.vmap(jax.grad(lambda p: annulus_exact(p)), in_axes=1, out_axes=1)


def _annulus_grad(x):
    shape = x.shape[1:]
    return annulus_grad(x.reshape(2, -1)).reshape((2,) + shape)


# --- unit square / cube -------------------------------------------------------------------------------------
def sine_exact(x):
    return jnp.prod(jnp.sin(PI * x), axis=0)


def sine_grad(x):
    s, c = jnp.sin(PI * x), jnp.cos(PI * x)
    d = x.shape[0]
    return jnp.stack(
        [PI * c[k] * jnp.prod(jnp.stack([s[j] for j in range(d) if j != k]), axis=0) for k in range(d)]
    )


def sine_source(x):
    return x.shape[0] * PI**2 * sine_exact(x)


@jax.jit
def _solve_errors(V, source, exact, grad):
    A = fem.assemble(library.laplace, V)
    b = fem.assemble(library.source, V, f=source)
    u = fem.solve(A, b, bc=fem.DirichletBC(V, None, 0.0))
    return norms.l2_error(u, exact), norms.h1_error(u, grad)


def _errors(V, case):
    fns = {
        "annulus": (annulus_source, annulus_exact, _annulus_grad),
        "sine": (sine_source, sine_exact, sine_grad),
    }[case]
    src, ex, gr = fns
    return [float(e) for e in jax.jit(lambda V: _solve_errors.__wrapped__(V, src, ex, gr))(V)]


def _rates(spaces, hs, case):
    errs = np.array([_errors(V, case) for V in spaces])
    lh = np.log(np.asarray(hs, float))
    return errs, np.polyfit(lh, np.log(errs[:, 0]), 1)[0], np.polyfit(lh, np.log(errs[:, 1]), 1)[0]


def spline_case(degree, levels):
    if degree == 1:  # the annulus needs degree 2 in the angle; degree 1 runs on the unit square
        spaces = [fem.SplineSpace(fem.geometry.rectangle().refine(degree=1, elements=n)) for n in levels]
        return _rates(spaces, [1 / n for n in levels], "sine")
    spaces = [
        fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=degree, elements=n)) for n in levels
    ]
    return _rates(spaces, [1 / n for n in levels], "annulus")


def lagrange_case(cell, degree, levels):
    gen = mesh.unit_cube if cell in ("tetra", "hexahedron") else mesh.unit_square
    spaces = [fem.LagrangeSpace(gen(n, cell=cell), degree=degree) for n in levels]
    return _rates(spaces, [1 / n for n in levels], "sine")


# (degree, levels of the default run): the default run is two or three small levels; -m slow runs more.
SPLINE_FAST = [(1, [8, 16]), (2, [4, 8]), (3, [4, 8]), (4, [4, 8])]
LAGRANGE_FAST = [
    ("triangle", 1, [8, 16]),
    ("triangle", 2, [4, 8]),
    ("quad", 1, [8, 16]),
    ("quad", 2, [4, 8]),
    ("tetra", 1, [3, 6]),
    ("hexahedron", 1, [3, 6]),
]


def _check(errs, r0, r1, degree, tol=0.15, upper=0.5):
    assert r0 > degree + 1 - tol, f"L2 rate {r0:.3f} for degree {degree}; errors {errs[:, 0]}"
    assert r1 > degree - tol, f"H1 rate {r1:.3f} for degree {degree}; errors {errs[:, 1]}"
    # Not much faster than optimal either (a superconvergent slope hints at a wrong error measure); coarse
    # two-level fits of degree 4 are pre-asymptotic, hence the looser bound there.
    assert r0 < degree + 1 + upper and r1 < degree + upper, (r0, r1)


@pytest.mark.parametrize("degree,levels", SPLINE_FAST)
def test_spline_poisson_rates(degree, levels):
    errs, r0, r1 = spline_case(degree, levels)
    _check(errs, r0, r1, degree, tol=0.15, upper=0.5 if degree < 4 else 1.0)


@pytest.mark.parametrize("cell,degree,levels", LAGRANGE_FAST)
def test_lagrange_poisson_rates(cell, degree, levels):
    errs, r0, r1 = lagrange_case(cell, degree, levels)
    _check(errs, r0, r1, degree, tol=0.15 if cell in ("triangle", "quad") else 0.3)


@pytest.mark.slow
@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_spline_poisson_rates_full(degree):
    errs, r0, r1 = spline_case(degree, [8, 16, 32])
    _check(errs, r0, r1, degree)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell,degree,levels",
    [("triangle", 1, [8, 16, 32, 64]), ("triangle", 2, [8, 16, 32]), ("quad", 1, [8, 16, 32, 64]),
     ("quad", 2, [8, 16, 32]), ("tetra", 1, [4, 8, 16]), ("hexahedron", 1, [4, 8, 16])],
)  # fmt: skip
def test_lagrange_poisson_rates_full(cell, degree, levels):
    errs, r0, r1 = lagrange_case(cell, degree, levels)
    _check(errs, r0, r1, degree)
