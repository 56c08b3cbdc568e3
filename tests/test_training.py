"""Training helpers: exact Dirichlet lifts, discrete physics-informed losses, gradients through batched
solves, checkpoints and resuming, reference data, relative L2 errors, the KL random field, and the training
example."""

import importlib.util
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from demo_runs import tiny

from igax import fem
from igax.fem import library
from igax.inverse.random_fields import kl_expansion
from igax.inverse.training import (
    DirichletLift,
    batched,
    discrete_energy,
    galerkin_residual,
    make_dataset,
    relative_l2_errors,
    train,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def square():
    """Degree-2 splines on a 4 x 4 unit square, u = 1 on the left, 0 on the right, insulated elsewhere."""
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=(4, 4)))
    bcs = [fem.DirichletBC(V, "left", 1.0), fem.DirichletBC(V, "right", 0.0)]
    return V, bcs


@fem.bilinear_form(symmetric=True)
def _corrected(u, v, w):
    return w.kappa * jnp.exp(w.c.value) * jnp.sum(u.grad * v.grad)


# -- KL expansion --------------------------------------------------------------------------------------------
def test_kl_basis_is_orthonormal_and_variance_is_normalised():
    kl = kl_expansion(6, correlation_length=0.3, sigma=0.7)
    g, w = np.polynomial.legendre.leggauss(24)
    g, w = 0.5 * (g + 1.0), 0.5 * w
    X = np.stack(np.meshgrid(g, g, indexing="ij"))  # (2, 24, 24)
    W = np.outer(w, w)
    phi = np.asarray(kl.basis(jnp.asarray(X)))  # (6, 24, 24)
    gram = np.einsum("kij,lij,ij->kl", phi, phi, W)
    np.testing.assert_allclose(gram, np.eye(6), atol=1e-12)
    # Leading modes of a squared-exponential spectrum on the unit square: constant, then first cosines.
    assert kl.modes[0].tolist() == [0, 0] and {tuple(m) for m in kl.modes[1:3]} == {(1, 0), (0, 1)}
    assert np.all(np.diff(np.asarray(kl.sqrt_eigs)) <= 0)
    # The untruncated expansion has mean pointwise variance sigma^2; the retained part is `energy` of it.
    full = kl_expansion(41 * 41, correlation_length=0.3, sigma=0.7)
    assert float(jnp.sum(full.sqrt_eigs**2)) == pytest.approx(0.49, rel=1e-12)
    assert float(jnp.sum(kl.sqrt_eigs**2)) == pytest.approx(0.49 * kl.energy, rel=1e-12)
    # The field is exp of the Gaussian sum, evaluated on (dim, ...) points.
    xi = jnp.arange(6.0) / 6
    x = jnp.asarray(X[:, :3, :2])
    a = kl.mean + np.einsum("k,kij->ij", np.asarray(kl.sqrt_eigs * xi), phi[:, :3, :2])
    np.testing.assert_allclose(kl.field(xi, x), np.exp(a), rtol=1e-13)


def test_kl_bad_input():
    with pytest.raises(ValueError, match="n_terms"):
        kl_expansion(0)
    with pytest.raises(ValueError, match="upper > lower"):
        kl_expansion(3, lower=(0, 1), upper=(1, 0))
    kl = kl_expansion(3)
    with pytest.raises(ValueError, match=r"xi must have shape \(n_terms,\)"):
        kl.field(jnp.zeros(4), jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="coordinate first"):
        kl.field(jnp.zeros(3), jnp.zeros((5, 2)))


# -- lift and discrete losses --------------------------------------------------------------------------------
def test_lift_is_exact_and_energy_minimiser_is_the_galerkin_solution(square):
    V, bcs = square
    lift = DirichletLift(bcs)

    @jax.jit
    def system():
        K = fem.assemble(library.diffusion, V, kappa=lambda x: 1.0 + 0.5 * x[0] * x[1])
        f = fem.assemble(library.source, V, f=lambda x: 1.0 + x[1])
        return K, f, fem.solve(K, f, bc=bcs).coeffs

    K, f, u_h = system()
    # Any free values keep the Dirichlet data exactly (also for a batch).
    vals = jax.random.normal(jax.random.key(0), (3, lift.n_free))
    U = lift(vals)
    np.testing.assert_array_equal(U[:, V.boundary("left")], 1.0)
    np.testing.assert_array_equal(U[:, V.boundary("right")], 0.0)
    assert lift.n_free == V.ndofs - 2 * 6
    # The Galerkin solution is stationary for the energy over the free dofs and has zero Galerkin residual.
    g = jax.grad(lambda v: discrete_energy(K, lift(v), f))(u_h[lift.free])
    assert float(jnp.max(jnp.abs(g))) < 1e-12 * float(jnp.max(jnp.abs(f)))
    assert float(galerkin_residual(K, u_h, f, free=lift.free)) < 1e-24
    assert float(galerkin_residual(K, u_h, f, free=lift.free, scale="none")) < 1e-24
    assert float(galerkin_residual(K, U[0], f, free=lift.free)) > 1e-3
    # and a minimum: E(u_h + d) - E(u_h) = 1/2 d^T K d for a free perturbation d.
    d = lift(0.1 * vals[0]) - lift(jnp.zeros(lift.n_free))
    dE = discrete_energy(K, u_h + d, f) - discrete_energy(K, u_h, f)
    assert float(dE) == pytest.approx(0.5 * float(d @ (K @ d)), rel=1e-10)
    assert float(dE) > 0
    with pytest.raises(ValueError, match="n_free"):
        lift(jnp.zeros(lift.n_free + 1))
    with pytest.raises(ValueError, match="scale"):
        galerkin_residual(K, u_h, scale="diag")


def test_relative_l2_errors_against_closed_form_and_fem_norms(square):
    V, _ = square
    ones = jnp.ones(V.ndofs)  # the constant 1 (partition of unity)
    assert float(relative_l2_errors(V, 1.1 * ones, ones)) == pytest.approx(0.1, rel=1e-12)
    key = jax.random.key(1)
    P, R = jax.random.normal(key, (2, 3, V.ndofs))
    err = relative_l2_errors(V, P, R)
    from igax.fem import norms

    assert err.shape == (3,)
    e = jax.jit(lambda p, r: norms.l2_norm(fem.Field(V, p - r)) / norms.l2_norm(fem.Field(V, r)))(P[2], R[2])
    assert float(err[2]) == pytest.approx(float(e), rel=1e-12)
    assert float(relative_l2_errors(V, ones, 0.0 * ones)) == np.inf
    with pytest.raises(ValueError, match="ndofs"):
        relative_l2_errors(V, ones[:-1], ones[:-1])


def test_batched_and_make_dataset_match_single_solves(square):
    V, bcs = square
    kl = kl_expansion(3)
    zero = jnp.zeros(V.ndofs)

    def solve(xi):
        return fem.solve(fem.assemble(library.diffusion, V, kappa=kl.as_callable(xi)), zero, bc=bcs).coeffs

    xi = kl.sample(jax.random.key(2), 5)
    U, seconds = make_dataset(solve, xi, batch_size=2)  # chunks of 2, the last one padded
    assert U.shape == (5, V.ndofs) and seconds >= 0.0
    one = jax.jit(solve)
    for k in (0, 4):
        np.testing.assert_allclose(U[k], one(xi[k]), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(batched(lambda z: jnp.sum(z**2), batch_size=3)(xi), jnp.sum(xi**2, 1))
    with pytest.raises(ValueError, match="no samples"):
        batched(jnp.sum)(xi[:0])


# -- gradients through a batched solve -----------------------------------------------------------------------
def test_grad_through_batched_solve_matches_finite_differences(square):
    V, bcs = square
    kl = kl_expansion(3)
    zero = jnp.zeros(V.ndofs)
    net = eqx.nn.MLP(3, V.ndofs, 5, 1, jnp.tanh, key=jax.random.key(3))
    xi = kl.sample(jax.random.key(4), 3)
    target = jax.random.uniform(jax.random.key(5), (3, V.ndofs))

    def sample_loss(net, z, t):
        A = fem.assemble(_corrected, V, kappa=kl.as_callable(z), c=fem.Field(V, net(z)))
        u = fem.solve(A, zero, bc=bcs).coeffs
        return jnp.sum((u - t) ** 2)

    params, static = eqx.partition(net, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    @jax.jit
    def loss(p):  # the three solves of the batch run as one vmapped (batched) solve
        return jnp.mean(jax.vmap(sample_loss, (None, 0, 0))(eqx.combine(unravel(p), static), xi, target))

    g = jax.jit(jax.grad(loss))(flat)
    # Central differences along three random directions and one coordinate (a first-layer weight).
    D = np.random.default_rng(0).standard_normal((4, flat.shape[0]))
    D[3] = 0.0
    D[3, 0] = 1.0
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    h = 1e-5
    for d in jnp.asarray(D):
        fd = (loss(flat + h * d) - loss(flat - h * d)) / (2 * h)
        assert float(g @ d) == pytest.approx(float(fd), rel=1e-6, abs=1e-9 * float(jnp.linalg.norm(g)))
    assert float(jnp.linalg.norm(g)) > 1e-3  # a gradient that cannot vanish by construction


# -- the training loop ---------------------------------------------------------------------------------------
def _toy():
    X = jax.random.normal(jax.random.key(6), (40, 3))
    y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3
    model = eqx.nn.Linear(3, "scalar", key=jax.random.key(7))

    def loss(m, batch):
        xb, yb = batch
        return jnp.mean((jax.vmap(m)(xb) - yb) ** 2)

    return model, loss, (X, y)


def test_fit_checkpoint_resume_reproduces_an_uninterrupted_run(tmp_path):
    model, loss, data = _toy()
    opt = optax.adam(0.2)
    key = jax.random.key(8)
    kw = dict(key=key, batch_size=8, progress=False)
    full = train(loss, model, opt, data, steps=12, **kw)
    assert full.steps == 12 and full.history["step"] == list(range(1, 13))
    assert full.history["loss"][-1] < 0.5 * full.history["loss"][0]

    ckpt = tmp_path / "toy.eqx"
    part = train(loss, model, opt, data, steps=5, checkpoint=ckpt, checkpoint_every=2, **kw)
    assert part.steps == 5 and ckpt.exists() and Path(str(ckpt) + ".json").exists()
    resumed = train(loss, model, opt, data, steps=12, checkpoint=ckpt, **kw)
    assert resumed.resumed_from == 5 and resumed.steps == 12
    assert resumed.history["step"] == list(range(1, 13))
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-12)
    np.testing.assert_allclose(resumed.model.weight, full.model.weight, rtol=1e-12)
    # resume=False starts afresh and overwrites the checkpoint.
    again = train(loss, model, opt, data, steps=3, checkpoint=ckpt, resume=False, **kw)
    assert again.resumed_from is None and again.steps == 3


def test_fit_budget_callable_data_and_errors():
    model, loss, (X, y) = _toy()
    opt = optax.sgd(0.01)

    def sample(k):  # fresh batch per step
        idx = jax.random.randint(k, (4,), 0, X.shape[0])
        return X[idx], y[idx]

    r = train(loss, model, opt, sample, key=jax.random.key(9), budget_s=0.05, progress=True, log_every=2)
    assert r.steps >= 1 and r.train_seconds >= 0.05 and r.compile_seconds > 0
    assert all(s % 2 == 0 for s in r.history["step"])
    with pytest.raises(ValueError, match="steps= .* or budget_s="):
        train(loss, model, opt, sample, key=jax.random.key(0))
    with pytest.raises(FloatingPointError, match="became nan"):
        bad = lambda m, b: jnp.sum(jnp.log(-1.0 + 0 * m.bias))  # noqa: E731
        train(bad, model, opt, sample, key=jax.random.key(0), steps=2, progress=False)


# -- the example ---------------------------------------------------------------------------------------------
def test_parametric_diffusion_example_tiny(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        "example_parametric_diffusion", EXAMPLES / "parametric_diffusion.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.DEMO["name"] == "training" and set(mod.DEMO["sizes"]) == {"tiny", "small", "default"}
    run = tiny("training", tmp_path_factory)  # main(out=..., **tiny size), also read by test_cli
    res, tmp_path = run.result, run.out
    for name in ("sil", "energy", "pinn"):
        # The loss on a fixed evaluation batch falls during training.
        assert res[f"{name}_eval_loss_final"] < res[f"{name}_eval_loss_initial"], name
        assert res[f"{name}_steps"] >= 1 and np.isfinite(res[f"{name}_rel_l2"])
    # Models (a) and (b) start from u = 1 - x (nu_c = 1, resp. the linear lift) and beat it by far.
    assert res["energy_rel_l2"] < 0.5 * res["baseline_linear_rel_l2"]
    assert res["sil_rel_l2"] < 0.5 * res["baseline_linear_rel_l2"]
    assert res["coarse_solve_rel_l2"] < 0.1 * res["baseline_linear_rel_l2"]
    assert res["direct_solve_s_per_sample"] > 0
    assert (tmp_path / "training_sample.png").stat().st_size > 10_000
    assert (tmp_path / "training_loss.png").stat().st_size > 5_000
