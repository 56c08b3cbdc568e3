"""minimize's default method (igax's L-BFGS) on the first-hour inverse problem of issue 16; its safeguards.

The problem: -Laplace(u) = 10 on [0, 1] x [0, 2], u = 0 on the left side, du/dn + h u = 0 on the right side
with a Robin coefficient h(x) = z0 + z1 y / 2 (truth (2, 1.5)), recovered from 20 noisy point values of u. Its
objective is of size 1e4 with |grad| ~ 4e4 at the start: jaxopt's L-BFGS, the default before, took a unit step
along -grad onto a flat region (h ~ 1e4, where u hardly depends on h) and ended there after 100 iterations
and 3435 evaluations; jaxopt's L-BFGS-B with bounds (0.01, 100) stalled at the upper bound.
"""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem, inverse
from igax.fem import library
from igax.inverse import minimize
from igax.inverse._linesearch import Trial, line_search
from igax.solvers import SolverError

TRUTH = np.array([2.0, 1.5])

_V = fem.SplineSpace(fem.geometry.rectangle((0.0, 0.0), (1.0, 2.0)).refine(degree=2, elements=(3, 6)))
_BC = fem.DirichletBC(_V, "left", 0.0)
_K = fem.assemble(library.laplace, _V)
_B = fem.assemble(library.source, _V, f=10.0)
_RNG = np.random.default_rng(0)
_OBS = inverse.PointObservation(
    _V, np.column_stack([_RNG.uniform(0.05, 0.95, 20), _RNG.uniform(0.05, 1.95, 20)])
)


def _forward(h):
    A = _K + fem.assemble(library.robin, _V, boundary="right", alpha=h)
    return fem.solve(A, _B, bc=_BC)


# The data and the estimate below are made on first use, not at import: every pytest worker imports every
# test module when it collects, and a solve and a minimisation there cost each worker seconds.
@functools.cache
def _data():
    """The noisy point values of the true solution, and their sigma."""
    clean = _OBS(_forward(lambda x: TRUTH[0] + TRUTH[1] * x[1] / 2))
    return inverse.add_noise(clean, 0.01, seed=1)


@pytest.fixture(scope="module", autouse=True)
def _data_made_outside_a_trace():
    """The objectives read ``_data()`` while ``minimize`` traces them: make it concrete before."""
    _data()


def robin_misfit(z):
    """The newcomer's objective: h = z0 + z1 y / 2."""
    u = _forward(lambda x: z[0] + z[1] * x[1] / 2)
    data, sigma = _data()
    return inverse.least_squares(_OBS(u), data, sigma=sigma)


def robin_misfit_exp(z):
    """The same with h = exp(z0) + exp(z1) y / 2: a huge trial z overflows h and the solve fails."""
    u = _forward(lambda x: jnp.exp(z[0]) + jnp.exp(z[1]) * x[1] / 2)
    data, sigma = _data()
    return inverse.least_squares(_OBS(u), data, sigma=sigma)


# The least-squares estimate of the noisy data, to which every method must converge (close to TRUTH).
@functools.cache
def _estimate():
    return np.asarray(
        minimize(robin_misfit, jnp.array([1.0, 1.0]), method="scipy:L-BFGS-B", tol=1e-8, progress=False).x
    )


def test_the_estimate_is_near_the_truth():
    np.testing.assert_allclose(_estimate(), TRUTH, atol=0.05)


def test_default_method_recovers_the_robin_coefficient():
    res = minimize(robin_misfit, jnp.array([0.5, 0.5]), progress=False)
    assert res.method == "lbfgs"
    assert res.success, res.message
    np.testing.assert_allclose(res.x, _estimate(), atol=1e-5)
    # scipy's L-BFGS-B needs ~15 iterations here; jaxopt's L-BFGS used all 100 and 3435 evaluations.
    assert res.nit <= 25 and res.nfev <= 30
    assert res.history.fun[-1] < 1e-3 * res.history.fun[0]


def test_default_method_with_bounds_recovers_the_robin_coefficient():
    # jaxopt's L-BFGS-B stalled at z ~ 98.7 with these bounds.
    res = minimize(robin_misfit, jnp.array([0.5, 0.5]), bounds=(0.01, 100.0), progress=False)
    assert res.method == "lbfgsb"
    assert res.success, res.message
    np.testing.assert_allclose(res.x, _estimate(), atol=1e-5)
    assert res.nit <= 25 and res.nfev <= 30


def test_failed_solves_at_trial_steps_shorten_the_step(caplog):
    # A first trial step of length 2000 puts exp(~1800) into the matrix: the solve fails there (inf entries)
    # and at a tenth of it (exp(~180), singular to working precision); the line search comes 10 times closer
    # each time and the run goes on to the estimate.
    z0 = jnp.zeros(2)
    caplog.set_level(logging.INFO, logger="igax")
    xs = []
    res = minimize(
        robin_misfit_exp,
        z0,
        options={"initial_step": 2000.0},
        callback=lambda it: xs.append(np.asarray(it.x)),
        progress=False,
    )
    assert res.success, res.message
    np.testing.assert_allclose(np.exp(res.x), _estimate(), atol=1e-4)
    failed = [r for r in caplog.records if "failed at a trial step" in r.getMessage()]
    assert len(failed) == 2
    assert "step length 2e+03" in failed[0].getMessage() and "SolverError" in failed[0].getMessage()
    assert "step length 200" in failed[1].getMessage()
    assert "A Dirichlet condition is given" in failed[1].getMessage()  # not "add a Dirichlet condition"
    # the failed solves were recovered from: not logged as errors by the solvers
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # every evaluation is counted: two failed trials on top of one evaluation per accepted iterate at least
    assert res.nfev >= res.nit + 1 + 2
    # the first accepted step is at most a hundredth of the first trial, and it lowered the objective
    assert 0.0 < np.linalg.norm(xs[0] - np.asarray(z0)) <= 20.0
    assert res.history.fun[1] < res.history.fun[0]


def test_failed_trial_steps_in_an_eager_objective_are_shortened_too():
    # jit=False: the solver raises SolverError directly (no JAX wrapper); the line search treats it the same.
    res = minimize(
        robin_misfit_exp, jnp.zeros(2), options={"initial_step": 2000.0}, jit=False, maxiter=1, progress=False
    )
    assert res.nit == 1 and res.nfev >= 4  # x0, two failed trials, the accepted one
    assert res.history.fun[1] < res.history.fun[0]


@pytest.mark.parametrize(
    "z0, match",
    [
        (
            [2000.0, 0.0],
            r"solve\(method=.*\) failed: the matrix values or the right-hand side contain NaN or inf",
        ),
        ([200.0, 0.0], r"A Dirichlet condition is given, so check"),
    ],
    ids=["inf", "overflowing"],
)
@pytest.mark.parametrize("method", ["lbfgs", "scipy:L-BFGS-B"])
def test_a_failed_solve_at_x0_raises_the_solvers_message(z0, match, method, caplog):
    with pytest.raises(SolverError, match=match) as info:
        minimize(robin_misfit_exp, jnp.array(z0), method=method, progress=False)
    text = str(info.value)
    for noise in ("equinox", "filter_jit", "CpuCallback", "Traceback"):
        assert noise not in text
    assert "raised by the objective at the starting point x0" in "\n".join(info.value.__notes__)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # said once, by the exception


def test_line_search_backtracks_from_failed_evaluations():
    calls = []

    def evaluate(a):  # phi(a) = (a - 1)^2 - 1 along a direction with phi'(0) = -2; fails beyond a = 5
        calls.append(a)
        if a > 5.0:
            return Trial(a, False, np.inf, np.nan, -2.0 * a, error=SolverError("too far"))
        return Trial(a, True, (a - 1.0) ** 2 - 1.0, 2.0 * (a - 1.0), -2.0 * a)

    ls = line_search(evaluate, 0.0, -2.0, 1000.0)
    assert calls[:3] == [1000.0, pytest.approx(100.0), pytest.approx(10.0)]
    assert ls.failures == 3 and ls.trial is not None and ls.trial.ok
    assert abs(ls.trial.dg) <= 0.9 * 2.0 and ls.trial.f < 0.0  # strong Wolfe at the accepted step
    assert ls.evaluations == len(calls) <= 6


def test_a_wrong_gradient_ends_with_a_message_not_a_loop():
    @jax.custom_jvp
    def f(x):
        return jnp.sum((x - 1.0) ** 2)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), jnp.sum(-2.0 * (x - 1.0) * t)  # the sign is wrong

    res = minimize(f, jnp.zeros(3), progress=False)
    assert not res.success and res.nit == 0
    assert "line search failed" in res.message and "taylor_test" in res.message
    assert res.nfev <= 2 * 25 + 1


def test_pytree_aux_args_jitted_objective_callback():
    x0 = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}

    @jax.jit
    def f(p, shift):
        misfit = jnp.sum((p["a"] - shift) ** 2)
        reg = jnp.sum((p["b"] + 2.0) ** 2)
        return misfit + reg, {"misfit": misfit}

    seen = []
    res = minimize(
        f, x0, has_aux=True, args=(jnp.asarray(1.0),), callback=lambda it: seen.append(it.fun), progress=False
    )
    assert res.success, res.message
    np.testing.assert_allclose(res.x["a"], 1.0, atol=1e-7)
    np.testing.assert_allclose(res.x["b"], -2.0, atol=1e-7)
    assert res.history.aux["misfit"].shape == (res.nit + 1,)
    # the callback sees each accepted iterate (not the last, where the tolerance stops the run first)
    assert len(seen) == res.nit - 1 and seen == list(res.history.fun[1 : res.nit])
    # pytree bounds with the default method (lbfgsb)
    res = minimize(lambda p: f(p, 1.0)[0], x0, bounds=({"a": 0.0, "b": -1.0}, None), progress=False)
    assert res.method == "lbfgsb" and res.success, res.message
    np.testing.assert_allclose(res.x["b"], -1.0, atol=1e-12)


def test_options_are_checked_and_jaxopt_stays_available():
    quad = lambda x: jnp.sum((x - jnp.arange(3.0)) ** 2)  # noqa: E731
    with pytest.raises(TypeError, match=r"\['linesearch'\] are not options of method='lbfgs'.*history_size"):
        minimize(quad, jnp.zeros(3), options={"linesearch": "zoom"}, progress=False)
    with pytest.raises(ValueError, match="0 < c1 < c2 < 1"):
        minimize(quad, jnp.zeros(3), options={"c1": 0.95}, progress=False)
    res = minimize(quad, jnp.zeros(3), method="jaxopt:lbfgsb", bounds=(-1.0, 1.5), progress=False)
    assert res.success and res.method == "jaxopt:lbfgsb"
    np.testing.assert_allclose(res.x, [0.0, 1.0, 1.5], atol=1e-6)


def test_optimize_result_prints_a_summary():
    n = 500
    target = jnp.linspace(0.0, 1.0, n)
    res = minimize(
        lambda x: (jnp.sum((x - target) ** 4), {"m": jnp.sum(x)}), jnp.zeros(n), has_aux=True, progress=False
    )
    assert res.nit >= 10
    text = repr(res)
    lines = text.splitlines()
    assert len(lines) == 12, text
    assert lines[0] == "OptimizeResult(" and lines[-1] == ")"
    assert f"history: {res.nit + 1} iterates (fun, grad_norm, time; aux: m)" in text
    assert "(shape (500,))" in text and text.count("e+00") + text.count("e-0") <= 12
    assert str(res) == text
    pytree = minimize(lambda p: jnp.sum((p["a"] - 1.0) ** 2), {"a": jnp.zeros((2, 3))}, progress=False)
    assert "x: {'a': float64(2, 3)}" in repr(pytree)
    con = inverse.augmented_lagrangian(lambda x: jnp.sum(x**2), jnp.zeros(2), eq=lambda x: jnp.sum(x) - 1.0)
    assert len(repr(con).splitlines()) == 10 and "inner solves" in repr(con)
