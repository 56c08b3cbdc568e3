"""Linear elasticity: the plate with a hole against the Kirsch solution (REFERENCE.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library, norms

E, NU, T, R = 1e5, 0.3, 10.0, 1.0


def kirsch_stress(x):
    r = jnp.hypot(x[0], x[1])
    t = jnp.arctan2(x[1], x[0])
    a, b = R**2 / r**2, R**4 / r**4
    sxx = T * (1 - a * (1.5 * jnp.cos(2 * t) + jnp.cos(4 * t)) + 1.5 * b * jnp.cos(4 * t))
    syy = T * (-a * (0.5 * jnp.cos(2 * t) - jnp.cos(4 * t)) - 1.5 * b * jnp.cos(4 * t))
    sxy = T * (-a * (0.5 * jnp.sin(2 * t) + jnp.sin(4 * t)) + 1.5 * b * jnp.sin(4 * t))
    return jnp.stack([jnp.stack([sxx, sxy]), jnp.stack([sxy, syy])])


def kirsch_displacement(x):
    r = jnp.hypot(x[0], x[1])
    t = jnp.arctan2(x[1], x[0])
    mu = E / (2 * (1 + NU))
    k = 3 - 4 * NU
    c = T / (8 * mu)
    ux = c * (
        r * (k + 1) * jnp.cos(t) + 2 / r * ((1 + k) * jnp.cos(t) + jnp.cos(3 * t)) - 2 / r**3 * jnp.cos(3 * t)
    )
    uy = c * (
        r * (k - 3) * jnp.sin(t) + 2 / r * ((1 - k) * jnp.sin(t) + jnp.sin(3 * t)) - 2 / r**3 * jnp.sin(3 * t)
    )
    return jnp.stack([ux, uy])


@fem.linear_form
def exact_traction(v, w):
    return jnp.dot(w.sigma.value @ w.n, v.value)


ELASTIC = library.linear_elasticity(E, NU, "plane_strain")


@jax.jit
def _kirsch_errors(V):
    K = fem.assemble(ELASTIC, V)
    f = fem.assemble(exact_traction, V, boundary="outer", sigma=kirsch_stress)
    bcs = [fem.DirichletBC(V, "bottom", 0.0, component=1), fem.DirichletBC(V, "right", 0.0, component=0)]
    u = fem.solve(K, f, bc=bcs)
    return norms.l2_error(u, kirsch_displacement), u.coeffs


def kirsch_study(degree, levels):
    errs = []
    for n in levels:
        V = fem.SplineSpace(fem.geometry.plate_with_hole().refine(degree=degree, elements=n), shape=(2,))
        errs.append(float(_kirsch_errors(V)[0]))
    h = 1.0 / np.asarray(levels, float)
    return np.asarray(errs), np.polyfit(np.log(h), np.log(errs), 1)[0]


# Measured L2 rates (levels 4-8-16-32-64): degree 2: 2.53, 3.17, 3.36; degree 3: 3.24, 3.74, 3.84, 3.75.
# Degree 2 reaches its optimal rate 3 from 8 elements on; degree 3 settles near 3.8 (the tolerance below).
KIRSCH_TOL = {2: 0.15, 3: 0.3}


@pytest.mark.parametrize("degree", [2, 3])
def test_kirsch_displacement_converges_at_optimal_rate(degree):
    errs, rate = kirsch_study(degree, [8, 16])
    assert rate > degree + 1 - KIRSCH_TOL[degree], (errs, rate)


@pytest.mark.slow
@pytest.mark.parametrize("degree", [2, 3])
def test_kirsch_full_study(degree):
    errs, rate = kirsch_study(degree, [8, 16, 32])
    assert rate > degree + 1 - KIRSCH_TOL[degree], (errs, rate)
