"""Bad inputs and interruptions of the inverse drivers and of Fields (issue 13, items 15 and 16).

The bad-input cases are one table: (description, the bad call, exception type, ``match=`` naming the
argument).
The interruption tests raise ``KeyboardInterrupt`` from inside the objective (from a host callback of a jitted
objective, or from a Python-level objective) instead of sending signals: the drivers see the same exception a
Ctrl-C gives, at a deterministic point.
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from igax import fem, inverse
from igax.inverse import Interrupted, minimize
from igax.inverse.training import train

_V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=(3, 3)))  # 25 dofs
_VV = fem.SplineSpace(fem.geometry.rectangle().refine(degree=1, elements=(2, 2)), shape=(2,))  # 2 x 9 dofs
_ONE = fem.Field(_V, jnp.ones(_V.ndofs))


def _target4(x):
    return jnp.sum((x - jnp.arange(4.0)) ** 2)


def _field_objective(c):
    return fem.Field(_V, c).integrate() ** 2


# (description, bad call, exception type, match= naming the argument and the expected shape)
BAD = [
    (
        "Field with (3, ndofs) coefficients",
        lambda: fem.Field(_V, jnp.zeros((3, _V.ndofs))),
        ValueError,
        r"coeffs must have shape \(ndofs,\) = \(25,\).*got \(3, 25\).*one Field per row",
    ),
    (
        "Field with a scalar coefficient",
        lambda: fem.Field(_V, 1.0),
        ValueError,
        r"coeffs must have shape \(ndofs,\) = \(25,\).*got \(\)",
    ),
    (
        "Field with too few coefficients",
        lambda: fem.Field(_V, jnp.zeros(24)),
        ValueError,
        r"coeffs must have shape \(ndofs,\) = \(25,\).*got \(24,\)",
    ),
    (
        "vector Field with (ncomp, nscalar) coefficients",
        lambda: fem.Field(_VV, jnp.zeros((2, 9))),
        ValueError,
        r"coeffs must have shape \(ndofs,\) = \(18,\).*got \(2, 9\).*reshape\(-1\)",
    ),
    (
        "vector Field with (nscalar, ncomp) coefficients",
        lambda: fem.Field(_VV, jnp.zeros((9, 2))),
        ValueError,
        r"coeffs must have shape \(ndofs,\) = \(18,\).*got \(9, 2\).*\.T\.reshape\(-1\)",
    ),
    (
        "Field at a NaN point",
        lambda: _ONE(np.array([[0.5, 0.5], [np.nan, 0.5]])),
        ValueError,
        r"points must be finite: 1 of 2 points .*NaN or inf.*index 1.*\[nan, 0\.5\]",
    ),
    (
        "Field gradient at an infinite point",
        lambda: _ONE.grad(np.array([[np.inf, 0.5]])),
        ValueError,
        r"points must be finite: 1 of 1 points .*index 0.*\[inf, 0\.5\]",
    ),
    (
        "point observation at a NaN point",
        lambda: inverse.PointObservation(_V, np.array([[0.2, np.nan]])),
        ValueError,
        r"points must be finite",
    ),
    (
        "minimize: x0 of the wrong shape (lbfgs)",
        lambda: minimize(_target4, jnp.zeros(3), progress=False),
        ValueError,
        r"x0 has shape \(3,\).*shape error.*mentions the shape\(s\) \(4,\).*jnp\.zeros\(\(4,\)\)",
    ),
    (
        "minimize: x0 of the wrong shape (adam)",
        lambda: minimize(
            _target4, jnp.zeros(3), method="adam", options={"learning_rate": 0.1}, progress=False
        ),
        ValueError,
        r"x0 has shape \(3,\).*\(4,\)",
    ),
    (
        "minimize: x0 of the wrong shape (scipy)",
        lambda: minimize(_target4, jnp.zeros(3), method="scipy:L-BFGS-B", progress=False),
        ValueError,
        r"x0 has shape \(3,\).*\(4,\)",
    ),
    (
        "minimize: x0 of the wrong length for a Field objective",
        lambda: minimize(_field_objective, jnp.zeros(24), progress=False),
        ValueError,
        r"x0 has shape \(24,\).*mentions the shape\(s\) \(25,\).*coeffs must have shape",
    ),
    (
        "minimize: a pytree x0 with a wrong leaf",
        lambda: minimize(
            lambda p: _target4(p["a"]) + p["b"] ** 2, {"a": jnp.zeros(2), "b": 0.0}, progress=False
        ),
        ValueError,
        r"x0 has leaf shapes \{'a': \(2,\), 'b': \(\)\}.*\(4,\)",
    ),
]


@pytest.mark.parametrize("what, call, exc, match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(what, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_non_scalar_objective_keeps_its_own_message():
    # The x0 hint is for shape errors only; an objective that returns a vector has its own teaching error.
    with pytest.raises(TypeError, match="objective must return a scalar, got shape \\(2,\\)"):
        minimize(lambda x: x**2, jnp.zeros(2), progress=False)


def test_field_still_works_under_jit_vmap_and_tree_maps():
    C = jnp.stack([jnp.ones(_V.ndofs), 2.0 * jnp.ones(_V.ndofs)])
    areas = jax.vmap(lambda c: fem.Field(_V, c).integrate())(C)
    np.testing.assert_allclose(areas, [1.0, 2.0], rtol=1e-12)
    batched = jax.vmap(lambda c: fem.Field(_V, c))(C)  # rebuilt by tree_unflatten with batched leaves
    assert batched.coeffs.shape == (2, _V.ndofs)
    placeholders = jax.tree_util.tree_map(lambda a: object(), _ONE)  # placeholder leaves, no __init__
    assert jax.tree_util.tree_structure(placeholders) == jax.tree_util.tree_structure(_ONE)


# -- Ctrl-C during minimize ----------------------------------------------------------------------------------
def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _interrupting(after: int):
    """Rosenbrock, with a host callback that raises KeyboardInterrupt at evaluation number ``after``."""
    count = [0]

    def tick(_):
        count[0] += 1
        if count[0] == after:
            raise KeyboardInterrupt

    def f(x):
        jax.debug.callback(tick, x)
        return _rosen(x)

    return f


METHODS = [("lbfgs", {}), ("adam", {"learning_rate": 0.05}), ("scipy:L-BFGS-B", {})]


@pytest.mark.parametrize("method, options", METHODS, ids=[m for m, _ in METHODS])
def test_interrupt_in_a_jitted_objective_keeps_the_iterates(method, options):
    with pytest.raises(KeyboardInterrupt) as info:
        minimize(_interrupting(8), jnp.zeros(3), method=method, options=options, maxiter=50, progress=False)
    err = info.value
    assert isinstance(err, Interrupted) and "interrupted by the user" in str(err)
    res = err.result
    assert not res.success and "interrupted" in res.message
    assert res.nit >= 1 and res.history.fun.shape == (res.nit + 1,)
    # x is the best recorded iterate, and fun is its objective value.
    assert res.fun == pytest.approx(float(np.min(res.history.fun)), rel=0, abs=0)
    assert float(_rosen(res.x)) == pytest.approx(res.fun, rel=1e-12)
    assert res.fun < float(_rosen(jnp.zeros(3)))


@pytest.mark.parametrize("method, options", [("scipy:BFGS", {}), ("sgd", {"learning_rate": 1e-3})])
def test_interrupt_in_a_python_objective_keeps_the_iterates(method, options):
    count = [0]

    def f(x):
        count[0] += 1
        if count[0] == 6:
            raise KeyboardInterrupt
        return _rosen(x)

    with pytest.raises(Interrupted) as info:
        minimize(f, jnp.zeros(3), method=method, options=options, jit=False, maxiter=50, progress=False)
    res = info.value.result
    assert res.nit >= 1 and len(res.history.fun) == res.nit + 1 and not res.success
    assert float(_rosen(res.x)) == pytest.approx(res.fun, rel=1e-12)


def test_interrupt_before_the_first_value_returns_x0():
    def f(x):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        minimize(f, {"a": jnp.ones(2)}, progress=False)
    res = info.value.result
    assert res.nit == 0 and res.history.fun.shape == (0,) and np.isnan(res.fun)
    np.testing.assert_array_equal(res.x["a"], [1.0, 1.0])


# -- Ctrl-C during fit ---------------------------------------------------------------------------------------
def _toy():
    X = jax.random.normal(jax.random.key(6), (40, 3))
    y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.3
    model = eqx.nn.Linear(3, "scalar", key=jax.random.key(7))

    def loss(m, batch):
        xb, yb = batch
        return jnp.mean((jax.vmap(m)(xb) - yb) ** 2)

    def sample(key):  # a fresh batch per step, drawn from the step's key only
        idx = jax.random.randint(key, (8,), 0, X.shape[0])
        return X[idx], y[idx]

    return model, loss, sample


def test_fit_interrupt_saves_a_checkpoint_and_resume_is_exact(tmp_path):
    model, loss, sample = _toy()
    opt, key = optax.adam(0.1), jax.random.key(3)
    full = train(loss, model, opt, sample, key=key, steps=12, progress=False)

    calls = [0]

    def sample_then_interrupt(k):  # call 1 is the compile batch of step 0, call s + 1 draws step s
        calls[0] += 1
        if calls[0] == 8:
            raise KeyboardInterrupt
        return sample(k)

    ckpt = tmp_path / "toy.eqx"
    with pytest.raises(KeyboardInterrupt) as info:
        train(
            loss,
            model,
            opt,
            sample_then_interrupt,
            key=key,
            steps=12,
            checkpoint=ckpt,
            checkpoint_every=100,
            progress=False,
        )
    assert isinstance(info.value, Interrupted) and "step 7" in str(info.value)
    part = info.value.result
    assert part.steps == 7 and part.history["step"] == list(range(1, 8))
    assert Path(str(ckpt) + ".json").exists()  # saved at the interrupt, though checkpoint_every=100
    resumed = train(loss, model, opt, sample, key=key, steps=12, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 7 and resumed.history["step"] == list(range(1, 13))
    np.testing.assert_array_equal(resumed.model.weight, full.model.weight)
    np.testing.assert_array_equal(resumed.model.bias, full.model.bias)
    np.testing.assert_array_equal(resumed.history["loss"], full.history["loss"])


@pytest.mark.parametrize("log_every", [1, 3])
def test_fit_interrupt_inside_the_jitted_loss(tmp_path, log_every):
    model, loss, sample = _toy()
    opt, key = optax.adam(0.1), jax.random.key(3)
    full = train(loss, model, opt, sample, key=key, steps=10, progress=False)
    count = [0]

    def tick(_):
        count[0] += 1
        if count[0] == 6:  # the 6th loss evaluation, i.e. during step 6
            raise KeyboardInterrupt

    def loss_with_callback(m, batch):
        val = loss(m, batch)
        jax.debug.callback(tick, val)
        return val

    ckpt = tmp_path / "toy.eqx"
    with pytest.raises(Interrupted) as info:
        train(
            loss_with_callback,
            model,
            opt,
            sample,
            key=key,
            steps=10,
            checkpoint=ckpt,
            progress=False,
            log_every=log_every,
        )
    part = info.value.result
    # The failed step is not kept; what is kept is a state whose steps all completed.
    assert 1 <= part.steps <= 5 and all(s <= part.steps for s in part.history["step"])
    resumed = train(loss, model, opt, sample, key=key, steps=10, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == part.steps
    np.testing.assert_array_equal(resumed.model.weight, full.model.weight)


def test_fit_falls_back_to_the_last_computed_state_when_the_interrupted_step_failed():
    # On an accelerator steps run asynchronously: a step failed by an interrupt in a host callback shows the
    # failure only on its outputs (on the CPU the call itself raises, which the tests above cover). fit then
    # keeps the last state known to be computed, so the checkpoint never holds a failed step.
    from igax.inverse.training import _completed

    class FailedOutput:
        def block_until_ready(self):
            raise RuntimeError("INTERNAL: CpuCallback error calling callback: ...\nKeyboardInterrupt: ")

    synced = (jnp.ones(2), (), 3)
    assert _completed((FailedOutput(), (), 4), synced) is synced
    done = (jnp.ones(2), (), 4)
    assert _completed(done, synced) is done
