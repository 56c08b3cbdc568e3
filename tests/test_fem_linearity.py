"""Assembly rejects kernels that are not (bi)linear instead of returning silently wrong matrices."""

import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem


@pytest.fixture(scope="module")
def V():
    return fem.LagrangeSpace(fem.unit_square(2), degree=1)


@fem.bilinear_form
def quadratic_in_u(u, v, w):
    return u.value * u.value * v.value


@fem.bilinear_form
def sine_of_v(u, v, w):
    return u.value * jnp.sin(v.value)


@fem.linear_form
def squared_test(v, w):
    return w.f * v.value**2


@pytest.mark.parametrize(
    "form, which",
    [(quadratic_in_u, "linear in u"), (sine_of_v, "linear in v"), (squared_test, "linear in v")],
)
def test_nonlinear_kernels_raise(V, form, which):
    with pytest.raises(ValueError, match=f"is not {which}"):
        fem.assemble(form, V, f=1.0)


@fem.bilinear_form(symmetric=True)
def weighted(u, v, w):
    reaction = jnp.where(w.x[0] > 0.5, 2.0, 1.0)
    return jnp.exp(w.kappa.value) * jnp.dot(u.grad, v.grad) + reaction * u.value * v.value


def test_linear_kernels_with_nonlinear_coefficients_pass(V):
    # exp of a coefficient and a `where` on x are fine: only u and v must enter linearly.
    A = fem.assemble(weighted, V, kappa=lambda x: x[1]).todense()
    assert np.allclose(A, A.T) and np.all(np.linalg.eigvalsh(np.asarray(A)) > 0)
