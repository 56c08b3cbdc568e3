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


@fem.bilinear_form
def affine_in_u(u, v, w):
    return jnp.dot(u.grad, v.grad) + v.value


@fem.bilinear_form
def ignores_u(u, v, w):
    return 2.0 * v.value


@fem.linear_form
def affine_load(v, w):
    return w.f * v.value + 1.0


@pytest.mark.parametrize(
    "form, which",
    [
        (affine_in_u, "does not contain u"),
        (ignores_u, "does not contain u"),
        (affine_load, "does not contain v"),
    ],
)
def test_constant_terms_raise(V, form, which):
    # Structurally these transpose fine; unit-jet assembly would add the constant to every entry.
    with pytest.raises(ValueError, match=which):
        fem.assemble(form, V, f=1.0)


def test_python_sum_and_traced_closures_pass(V):
    @fem.bilinear_form(symmetric=True)
    def summed(u, v, w):
        return sum(u.grad[i] * v.grad[i] for i in range(2))  # starts from the literal 0

    A = fem.assemble(summed, V).todense()
    B = fem.assemble(fem.library.laplace, V).todense()
    np.testing.assert_allclose(A, B, atol=1e-14)

    import jax

    @jax.jit
    def scaled(c):
        @fem.bilinear_form(symmetric=True)
        def k(u, v, w):
            return c * jnp.dot(u.grad, v.grad)  # closes over a tracer: the constant-term check is skipped

        return fem.assemble(k, V).todense()

    np.testing.assert_allclose(scaled(3.0), 3.0 * B, atol=1e-13)


def test_form_input_in_jnp_function_explains_value(V):
    @fem.bilinear_form
    def k(u, v, w):
        return jnp.exp(w.kappa) * u.value * v.value

    with pytest.raises(TypeError, match=r"jnp.exp\(w.kappa.value\)"):
        fem.assemble(k, V, kappa=1.0)
