"""Nonlinear time stepping on assembled forms: fem.solve_transient and fem.adapt_steps.

The test problem is manufactured so that its exact solution lies in the space for all t: nonlinear diffusion
``u_t - div((1 + c u^2) grad u) = f`` on the unit square with ``u = a(t) q(x, y)``, q linear, on degree-2
splines. Galerkin orthogonality then makes the semi-discrete solution exact (every integrand is a polynomial
that the Gauss rule integrates exactly: with a quadratic q the source's quadrature error left a floor of
2e-5), so every error measured is the time discretisation's alone, against a closed form. The Dirichlet
values move with ``a(t)`` (``bc_values``) and the source depends on the time through ``w.t``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax._compile import fast_compile_options


def compiled(f, *args):
    """``jax.jit(f)`` compiled for ``args`` with the cheap options igax uses for small programs: the
    gradient programs of these tiny problems compile 2-3x faster and run in milliseconds anyway."""
    return jax.jit(f).lower(*args).compile(fast_compile_options())


def q(x):
    return 1.0 + x[0] + 0.5 * x[1]


def manufactured(a):
    """The residual form whose solution is ``a(t) q(x)`` at ``c = 1`` (``a`` a jnp function of t).

    The conductivity ``1 + c u^2`` takes ``c`` as an input; the source is that of ``c = 1``, so the solution
    depends on ``c`` (a parameter to differentiate) and is known at ``c = 1``.
    """
    da = jax.grad(a)

    @fem.residual_form(inputs={"t": "scalar", "c": "scalar"})
    def form(u, v, w):
        x, t, c = w.x, w.t.value, w.c.value
        qv, gq = q(x), jnp.array([1.0, 0.5])
        A = a(t)
        f = da(t) * qv - 2 * A**3 * qv * jnp.dot(gq, gq)  # div((1 + u^2) grad u), q linear
        return (1 + c * u.value**2) * jnp.dot(u.grad, v.grad) - f * v.value

    return form


def smooth(t):
    return jnp.exp(-t) * (1.0 + 0.5 * jnp.sin(3.0 * t))


def transient(t):  # a fast initial layer, then slow: what adaptive steps are for
    return 1.0 + jnp.exp(-25.0 * t)


SMOOTH, TRANSIENT = manufactured(smooth), manufactured(transient)


@pytest.fixture(scope="module")
def setup():
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2))
    cq = fem.project(lambda w: q(w.x), V).coeffs  # q exactly
    bc = fem.DirichletBC(V, None, q)
    return V, cq, bc


def run(setup, form, a, *, T, n=None, dt=None, scheme="crank_nicolson", c=1.0, u0=None, **kw):
    V, cq, bc = setup
    g = bc.values
    u0 = a(0.0) * cq if u0 is None else u0
    dt = T / n if dt is None else dt
    return fem.solve_transient(
        form, V, u0, dt=dt, nsteps=n, scheme=scheme, bc=bc, bc_values=lambda t: a(t) * g, c=c, **kw
    )


def trajectory(t, u):
    """The observation of every test that records states (one function: the programs are shared)."""
    return t, u.coeffs


# Default run: the order from two step counts in the asymptotic range (each count is one more compiled
# program); the slow study fits four.
ORDERS = [
    ("implicit_euler", 1.0, (32, 64)),
    ("crank_nicolson", 2.0, (16, 32)),
    ("bdf2", 2.0, (16, 32)),
    *[
        pytest.param(s, p, (8, 16, 32, 64), marks=pytest.mark.slow, id=f"{s}-study")
        for s, p in (("implicit_euler", 1.0), ("crank_nicolson", 2.0), ("bdf2", 2.0))
    ],
]


@pytest.mark.parametrize("scheme, order, steps", ORDERS)
def test_temporal_order_against_the_exact_solution(setup, scheme, order, steps):
    V, cq, _ = setup
    T = 0.5
    errors = [
        float(
            jnp.max(jnp.abs(run(setup, SMOOTH, smooth, T=T, n=n, scheme=scheme)[0].coeffs - smooth(T) * cq))
        )
        for n in steps
    ]
    rate = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    shown = np.array2string(np.array(errors), precision=3)
    print(f"{scheme}: steps {steps}, max errors {shown}, order {rate:.3f}")
    assert abs(rate - order) < 0.15, (scheme, errors, rate)


def test_observations_checkpointing_and_info(setup):
    V, cq, _ = setup
    obs = trajectory  # the program of the order test (bdf2, 8 steps) is reused
    plain = run(setup, SMOOTH, smooth, T=0.5, n=8, scheme="bdf2", observe=obs, info=True)
    ck = run(
        setup, SMOOTH, smooth, T=0.5, n=8, scheme="bdf2", observe=obs, checkpoint_every=3
    )  # 3 + 3 + 2 (+ 1 empty)
    (t, us), info = plain[1], plain[2]
    np.testing.assert_allclose(t, 0.5 * np.arange(1, 9) / 8, rtol=1e-14)
    np.testing.assert_allclose(info.times, t, rtol=1e-14)
    assert np.all(np.asarray(info.status) == 0) and 1 <= int(np.max(info.iterations)) <= 6
    np.testing.assert_allclose(us[-1], plain[0].coeffs, rtol=0, atol=0)
    np.testing.assert_allclose(ck[1][1], us, rtol=0, atol=1e-14)  # same trajectory, segmented
    # each state to the exact one within the scheme's error
    exact = np.asarray(jax.vmap(smooth)(t))[:, None] * np.asarray(cq)[None]
    assert np.max(np.abs(np.asarray(us) - exact)) < 2e-3


def _loss(setup, scheme):
    """A loss over the whole trajectory: the observed squared norm at every step, plus the final state."""
    V, cq, bc = setup

    def loss(c, u0):
        uT, ys = run(
            setup,
            SMOOTH,
            smooth,
            T=0.4,
            n=8,
            scheme=scheme,
            c=c,
            u0=u0,
            observe=lambda t, u: jnp.sum(u.coeffs**2),
            checkpoint_every=3,  # 8 steps: 3 segments of 3, the last padded with an empty step
            rtol=1e-13,
        )
        return jnp.sum(ys) + jnp.sum(uT.coeffs**3)

    return loss, cq


@pytest.mark.parametrize("scheme", ["bdf2", pytest.param("crank_nicolson", marks=pytest.mark.slow)])
def test_gradient_through_the_trajectory(setup, scheme):
    """d/dc and d/du0 by one adjoint per step: central differences to 1e-6, Taylor remainder of order 2."""
    loss, cq = _loss(setup, scheme)
    c0, u0 = 1.3, smooth(0.0) * cq
    c0 = jnp.asarray(c0)
    f = compiled(loss, c0, u0)
    gc, gu = compiled(jax.grad(loss, argnums=(0, 1)), c0, u0)(c0, u0)
    eps = 1e-5
    fd_c = (f(c0 + eps, u0) - f(c0 - eps, u0)) / (2 * eps)
    assert abs(float(gc) - float(fd_c)) <= 1e-6 * abs(float(fd_c)), (float(gc), float(fd_c))
    d = jnp.asarray(np.random.default_rng(0).standard_normal(u0.shape))
    fd_u = (f(c0, u0 + eps * d) - f(c0, u0 - eps * d)) / (2 * eps)
    assert abs(float(gu @ d) - float(fd_u)) <= 1e-6 * abs(float(fd_u))
    # Taylor: |J(p + h dp) - J(p) - h J'(p) dp| falls as h^2 (joint direction in (c, u0))
    J0 = f(c0, u0)
    hs = np.array([1e-1, 5e-2, 2.5e-2, 1.25e-2])
    rem = [abs(float(f(c0 + h, u0 + h * d) - J0 - h * (gc + gu @ d))) for h in hs]
    rate = np.polyfit(np.log(hs), np.log(rem), 1)[0]
    print(
        f"{scheme}: dJ/dc {float(gc):.10e} (fd {float(fd_c):.10e}); Taylor remainders {rem}, rate {rate:.2f}"
    )
    assert abs(rate - 2.0) < 0.15


@pytest.mark.slow  # two gradient programs of 256 steps: ~10 s of compiling
def test_checkpointing_bounds_the_gradient_memory(setup):
    """Temporary memory of the compiled gradient: checkpointed segments store nsteps / c + c states."""
    V, cq, bc = setup
    u0 = smooth(0.0) * cq

    def mem(ck):
        def loss(c):
            return jnp.sum(
                run(setup, SMOOTH, smooth, T=0.4, n=256, c=c, u0=u0, checkpoint_every=ck)[0].coeffs
            )

        return compiled(jax.grad(loss), 1.0).memory_analysis().temp_size_in_bytes

    # The compiled program has a fixed scratch of about 0.2 MB here; what a step adds (its state and the
    # tangent stored for its adjoint, ~0.85 kB) is what checkpointing bounds: 256 steps against 16 + 16.
    m_plain, m_ck = mem(None), mem(16)
    print(f"gradient temp memory over 256 steps: {m_plain} B plain, {m_ck} B with checkpoint_every=16")
    assert m_ck < 0.7 * m_plain


def test_adaptive_steps_meet_the_tolerance_with_fewer_steps(setup):
    """Step doubling with Crank-Nicolson through a fast initial layer: the error stays below tol at every step
    of the replayed schedule, and a uniform grid needs several times the steps for the same accuracy."""
    V, cq, bc = setup
    T, tol = 1.0, 1e-3
    g = bc.values
    sched = fem.adapt_steps(
        TRANSIENT,
        V,
        transient(0.0) * cq,
        t_span=(0.0, T),
        tol=tol,
        bc=bc,
        bc_values=lambda t: transient(t) * g,
        c=1.0,
        dt0=1e-3,
    )
    assert abs(sched.times[-1] - T) < 1e-12 and abs(np.sum(sched.dts) - T) < 1e-12
    assert np.all(sched.errors <= tol * 2 * sched.dts[::2] / T * (1 + 1e-12))
    assert sched.dts.max() > 100 * sched.dts.min()  # small steps in the layer, large ones after it

    def max_error(dt, n=None):
        """The largest error over the trajectory (every step), and the final state."""
        _, (t, u) = run(setup, TRANSIENT, transient, T=T, dt=dt, n=n, observe=trajectory)
        exact = np.asarray(jax.vmap(transient)(t))[:, None] * np.asarray(cq)
        return float(np.max(np.abs(np.asarray(u) - exact))), u[-1]

    err, final = max_error(sched.dts)  # the replay on the fixed schedule: the same states
    np.testing.assert_allclose(final, sched.final.coeffs, atol=1e-12)
    assert err <= tol, err
    # uniform Crank-Nicolson: as many steps, then the number its second order predicts for the same accuracy
    n = sched.nsteps
    uniform = {n: max_error(np.full(n, T / n))[0]}  # a schedule of the same length: the same program
    m = 2 * int(np.ceil(0.55 * n * np.sqrt(uniform[n] / err)))
    while True:
        uniform[m] = max_error(None, m)[0]
        if uniform[m] <= err:
            break
        m *= 2
    print(
        f"adaptive: {n} steps ({sched.rejected} rejected, {sched.newton_solves} Newton solves), max error "
        f"{err:.2e} <= tol {tol:.0e}; uniform: max error by steps {uniform} -> {m} steps for that accuracy"
    )
    assert uniform[n] > 2 * err  # as many uniform steps: less accurate
    assert m >= 2 * n


def _bad(setup, **kw):
    V, cq, bc = setup
    args = dict(dt=0.1, nsteps=2, c=1.0)
    args.update(kw)
    u0 = args.pop("u0", cq)
    form = args.pop("form", SMOOTH)
    return lambda: fem.solve_transient(form, V, u0, **args)


BAD = [
    (dict(scheme="euler"), ValueError, "scheme must be one of"),
    (dict(scheme=0.3), ValueError, "theta in"),
    (dict(dt=-0.1), ValueError, "dt must be positive"),
    (dict(nsteps=0), ValueError, "nsteps must be a positive int"),
    (dict(dt=[0.1, 0.2], nsteps=3), ValueError, "schedule of 2 steps"),
    (dict(dt=[0.1, -0.2], nsteps=None), ValueError, "positive steps"),
    (dict(nsteps=4, checkpoint_every=0), ValueError, "checkpoint_every must be a positive int"),
    (dict(u0=jnp.ones(3)), ValueError, "u0 must be a Field on the space or its 16 coefficients"),
    (dict(t=1.0), TypeError, "t is the time"),
    (dict(kappa=1.0), TypeError, "kappa"),
    (dict(form=fem.library.mass), TypeError, "fem.residual_form or fem.energy_form"),
    (dict(mass=np.eye(16)), TypeError, "mass must be None"),
    (dict(bc_values=lambda t: t), ValueError, "pass bc= as well"),
    (dict(observe=3), TypeError, "observe must be a function"),
    (dict(maxiter=0), ValueError, "maxiter must be a positive int"),
]


@pytest.mark.parametrize("kw, exc, match", BAD, ids=[m for *_, m in BAD])
def test_bad_inputs(setup, kw, exc, match):
    with pytest.raises(exc, match=match):
        _bad(setup, **kw)()


def test_bad_inputs_needing_a_space(setup):
    V, cq, bc = setup
    W = fem.SplineSpace(fem.geometry.rectangle().refine(degree=1, elements=2))
    with pytest.raises(ValueError, match="mass must be assembled on the space V"):
        _bad(setup, mass=fem.assemble(fem.library.mass, W))()
    with pytest.raises(ValueError, match="one value per constrained dof"):
        _bad(setup, bc=bc, bc_values=lambda t: jnp.ones(3) * t)()
    kw = dict(t_span=(0.0, 1.0), c=1.0)
    for extra, match in [
        (dict(tol=0.0), "tol must be a positive number"),
        (dict(tol=1e-3, t_span=(1.0, 0.0)), "T > t0"),
        (dict(tol=1e-3, dt_min=1.0, dt_max=0.1), "dt_min <= dt_max"),
        (dict(tol=1e-3, scheme="bdf2"), "replay its schedule"),
    ]:
        with pytest.raises(ValueError, match=match):
            fem.adapt_steps(SMOOTH, V, cq, **{**kw, **extra})
    with pytest.raises(TypeError, match="cannot run under jit"):
        jax.grad(lambda c: fem.adapt_steps(SMOOTH, V, cq, t_span=(0.0, 1.0), tol=1e-3, c=c).final.coeffs[0])(
            1.0
        )
    # a tolerance that cannot be met above dt_min (the trial program of the adaptive test, compiled)
    with pytest.raises(RuntimeError, match="below dt_min"):
        fem.adapt_steps(
            TRANSIENT,
            V,
            2 * cq,
            t_span=(0.0, 1.0),
            tol=1e-14,
            dt_min=1e-3,
            c=1.0,
            bc=bc,
            bc_values=lambda t: transient(t) * bc.values,
        )
