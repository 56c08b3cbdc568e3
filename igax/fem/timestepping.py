"""``fem.solve_transient``: nonlinear time stepping ``M du/dt + R(u; t) = 0`` on assembled forms.

``R`` is a :func:`~igax.fem.residual_form` or :func:`~igax.fem.energy_form` (or a list of terms, as for
:func:`~igax.fem.solve_nonlinear`); ``M`` the assembled mass matrix of the space (``library.mass`` by
default).
Every step is one Newton solve on the assembled residual and its autodiff tangent
(:func:`igax.solvers.newton_solve`, with the linear solver backends of :func:`igax.fem.solve`):

- theta-method (``"implicit_euler"``: theta = 1, ``"crank_nicolson"``: theta = 1/2, or a number in [1/2, 1])::

      M (u1 - u0) + dt (theta R(u1, t1) + (1 - theta) R(u0, t0)) = 0

- ``"bdf2"`` with variable steps (ratio ``w = dt_n / dt_{n-1}``; ``w = 1`` gives ``3/2, -2, 1/2``)::

      M ((1 + 2w)/(1 + w) u1 - (1 + w) u0 + w^2/(1 + w) u_{-1}) + dt R(u1, t1) = 0

  started by ONE Crank-Nicolson step (second order, so the start does not lower the global order; its
  undamped high modes are damped by the BDF2 steps that follow).

Dirichlet conditions are built in as in :func:`~igax.fem.solve_nonlinear` (constrained rows ``u_d = g_d(t)``,
constrained columns eliminated from the tangent); ``bc_values(t)`` gives time-dependent values. The form sees
the time as the input ``w.t`` when it declares an input named ``t`` (or declares no inputs).

Gradients. Each step's solution enters :func:`~igax.solvers.newton_solve`'s implicit-function rule, so the
reverse pass of a step is ONE transposed solve with the tangent at the step's solution plus the VJP of the
step residual with respect to the previous states and the inputs: Newton iterations are never unrolled. The
steps run in a ``lax.scan``; ``checkpoint_every=c`` makes it an outer scan over ``nsteps / c`` checkpointed
segments (``jax.checkpoint``), so a gradient stores ``nsteps / c`` segment starts plus the ``c`` steps of the
segment being replayed, instead of every step. The step sizes are data (``dt`` may be an array, e.g. the
schedule chosen by :func:`~igax.fem.adapt_steps`) and are treated as constants in the gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._compile import lazy_jit
from igax.fem.bc import DirichletBC, merge_bcs
from igax.fem.field import Field
from igax.fem.forms import library
from igax.fem.forms.assembly import assemble
from igax.fem.forms.form import Form
from igax.fem.forms.nonlinear import _prepare, _state
from igax.fem.solving_nonlinear import (
    _dirichlet_slots,
    _dtype,
    _inputs_of,
    _merge_terms,
    _Static,
    _system,
    _terms,
)
from igax.fem.spaces.base import FunctionSpace
from igax.solvers._errors import Status, raise_on_failure
from igax.solvers.linear import SMALL_NNZ
from igax.solvers.newton import _MESSAGES, NewtonError, newton_solve
from igax.solvers.sparse import SparseMatrix

__all__ = ["solve_transient", "TransientInfo"]

_SCHEMES = {"implicit_euler": 1.0, "crank_nicolson": 0.5, "bdf2": None}


class TransientInfo(eqx.Module):
    """Diagnostics of :func:`solve_transient`, one entry per step.

    Attributes:
        times: the time at the end of each step, ``(nsteps,)``.
        iterations: Newton iterations of each step.
        status: the :class:`~igax.solvers.Status` code of each step's Newton solve (0 converged).
    """

    times: jax.Array
    iterations: jax.Array
    status: jax.Array


def _scheme(scheme) -> tuple[float, bool]:
    """``(theta, bdf2)`` of a scheme name or a theta value."""
    if isinstance(scheme, str):
        if scheme not in _SCHEMES:
            raise ValueError(
                f"scheme must be one of {sorted(_SCHEMES)} or a theta in [0.5, 1], got {scheme!r}."
            )
        theta = _SCHEMES[scheme]
        return (0.5, True) if theta is None else (theta, False)
    if isinstance(scheme, (int, float)) and not isinstance(scheme, bool) and 0.5 <= float(scheme) <= 1.0:
        return float(scheme), False
    raise ValueError(
        "scheme must be 'implicit_euler', 'crank_nicolson', 'bdf2' or a theta in [0.5, 1] (smaller theta "
        f"is not A-stable), got {scheme!r}."
    )


def _steps(dt, nsteps) -> jax.Array:
    """The step sizes as an array ``(nsteps,)``: a uniform ``dt`` repeated, or a given schedule."""
    if isinstance(dt, (list, tuple)) or np.ndim(dt) == 1:
        if isinstance(dt, jax.core.Tracer):
            raise TypeError("a schedule dt= must be concrete (the steps are chosen on the host).")
        dts = np.asarray(dt, float)
        if nsteps is not None and nsteps != len(dts):
            raise ValueError(f"nsteps={nsteps} but dt is a schedule of {len(dts)} steps; omit nsteps.")
        if len(dts) == 0 or not np.all(dts > 0):
            raise ValueError("dt must be a positive step or a non-empty schedule of positive steps.")
        return jnp.asarray(dts, float)
    if np.ndim(dt) != 0:
        raise ValueError(f"dt must be a number or a 1D schedule, got shape {np.shape(dt)}.")
    if not isinstance(nsteps, int) or isinstance(nsteps, bool) or nsteps < 1:
        raise ValueError(f"nsteps must be a positive int with a uniform dt, got {nsteps!r}.")
    if not isinstance(dt, jax.core.Tracer) and not float(dt) > 0:
        raise ValueError(f"dt must be positive, got {dt}.")
    return jnp.full(nsteps, jax.lax.stop_gradient(jnp.asarray(dt, float)))


def _mass(mass, V):
    if mass is None:
        mass = library.mass
    if isinstance(mass, Form):
        mass = assemble(mass, V)
    if not isinstance(mass, SparseMatrix):
        raise TypeError(
            "mass must be None (library.mass), a bilinear form or a SparseMatrix assembled on V, got "
            f"{type(mass).__name__}."
        )
    if mass.pattern != V.plan.pattern:
        raise ValueError(
            "mass must be assembled on the space V (its sparsity pattern differs); e.g. "
            "mass=fem.assemble(library.mass, V)."
        )
    return mass


def _setup(form, V, u0, *, mass, bc, bc_values, t0, inputs):
    """The checked, prepared arguments shared by :func:`solve_transient` and :func:`adapt_steps`."""
    terms = _terms(form)
    if not isinstance(V, FunctionSpace):
        raise TypeError(f"V must be a SplineSpace or LagrangeSpace, got {type(V).__name__}.")
    if "t" in inputs:
        raise TypeError("t is the time, which the stepper passes to the form itself; remove the input t=.")
    M = _mass(mass, V)
    bc = merge_bcs(bc)
    if bc is not None and bc.space.plan is not V.plan:
        raise ValueError("the DirichletBC was built on a different space than V.")
    if bc_values is not None:
        if bc is None:
            raise ValueError("bc_values= gives the values of a DirichletBC over time; pass bc= as well.")
        if not callable(bc_values):
            raise TypeError("bc_values must be a function of the time, bc_values(t) -> (len(bc.dofs),).")
        shape = jax.eval_shape(bc_values, jnp.zeros(()))
        if getattr(shape, "shape", None) != bc.dofs.shape:
            raise ValueError(
                f"bc_values(t) must return one value per constrained dof, shape {bc.dofs.shape}; got "
                f"{getattr(shape, 'shape', shape)}."
            )
    taken, fields = set(), []
    for f, b in terms:
        own = _inputs_of(f, {**inputs, "t": 0.0}, V)  # a placeholder: each step sets its own time
        taken |= set(own)
        b, prepared = _prepare(f, V, b, own)
        fields.append(prepared)
    extra = sorted(set(inputs) - taken)
    if extra:
        raise TypeError(f"solve_transient got the input(s) {extra}, which no term of the form takes.")
    terms = tuple((f, None if b is None else V.check_names(b)) for f, b in terms)
    terms, fields = _merge_terms(terms, fields)
    u0 = _state(V, u0, "u0").astype(_dtype(V))
    dofs = np.zeros(0, np.int64) if bc is None else bc.dofs
    g = None if bc is None else jnp.asarray(bc.values, u0.dtype)
    return terms, tuple(fields), M, u0, _Static(dofs), g


def _newton_config(theta, bdf2, method, linear_options, rtol, atol, maxiter, line_search) -> tuple:
    """The static configuration of a step (hashable: it keys the compiled programs)."""
    return (
        theta,
        bdf2,
        method,
        tuple(sorted((linear_options or {}).items())),
        float(rtol),
        float(atol),
        maxiter,
        bool(line_search),
    )


def _make_step(terms, space, static, config):
    """``step(args, u, u_prev, t, dt, dt_prev, first, g1) -> (u1, NewtonResult)``: one step of the scheme.

    ``args = (fields, M)``; ``g1`` the Dirichlet values at the step's end. Kept a plain (traceable)
    function so that the scan of :func:`solve_transient` and the host loop of :func:`adapt_steps` share it.
    """
    theta, bdf2, method, lin_opts, rtol, atol, maxiter, line_search = config
    dofs = static.array
    constrained, diag = _dirichlet_slots(space, dofs)
    opts = dict(lin_opts)

    def at_time(fields, t):
        return tuple({k: (t if k == "t" else v) for k, v in f.items()} for f in fields)

    def residual(u, space, fields, M, hist, e, g1, a, bdt):
        ub = u.at[dofs].set(g1)
        R = _system(terms, space, fields, ub, False)
        N = a * (M @ ub) - hist + bdt * R + e
        return N.at[dofs].set(u[dofs] - g1)

    def tangent(u, space, fields, M, hist, e, g1, a, bdt):
        _, K = _system(terms, space, fields, u.at[dofs].set(g1), True)
        vals = a * M.values + bdt * K.values
        # constrained rows and columns eliminated, 1 on their diagonal (as in solve_nonlinear)
        return K.with_values(
            jnp.where(constrained, 0.0, vals).at[diag].set(1.0), symmetric=K.symmetric and M.symmetric
        )

    def step(args, u, u_prev, t, dt, dt_prev, first, g1):
        fields, M = args
        t1 = t + dt
        if bdf2:
            w = dt / jnp.where(dt_prev > 0, dt_prev, 1.0)  # dt_prev = 0 after a padding step (dt = 0)
            a = jnp.where(first, 1.0, (1.0 + 2.0 * w) / (1.0 + w))
            hist = M @ jnp.where(first, u, (1.0 + w) * u - w**2 / (1.0 + w) * u_prev)
            bdt = jnp.where(first, 0.5, 1.0) * dt
            e = jax.lax.cond(
                first,
                lambda: 0.5 * dt * _system(terms, space, at_time(fields, t), u, False),
                lambda: jnp.zeros_like(u),
            )
        else:
            a, hist, bdt = 1.0, M @ u, theta * dt
            e = 0.0
            if theta < 1.0:  # the explicit part of the theta-method: R at the start of the step
                e = (1.0 - theta) * dt * _system(terms, space, at_time(fields, t), u, False)
        # The Newton tolerance refers to the size of the state (|M u|): a step that barely changes u starts
        # with a residual near round-off, and relative to that alone rtol could not be reached.
        scale = jnp.linalg.norm(hist)
        res = newton_solve(
            residual,
            u.at[dofs].set(g1),
            space,
            at_time(fields, t1),
            M,
            hist,
            e,
            g1,
            a,
            bdt,
            tangent=tangent,
            method=method,
            rtol=rtol,
            atol=jnp.maximum(atol, rtol * scale),
            maxiter=maxiter,
            line_search=line_search,
            throw=False,
            linear_options=opts,
        )
        return res.value.at[dofs].set(g1), res

    return step


def solve_transient(
    form,
    V: FunctionSpace,
    u0,
    *,
    dt,
    nsteps: int | None = None,
    t0: float = 0.0,
    scheme: str | float = "crank_nicolson",
    mass=None,
    bc: DirichletBC | list[DirichletBC] | None = None,
    bc_values: Callable | None = None,
    observe: Callable | None = None,
    checkpoint_every: int | None = None,
    method: str | None = None,
    rtol: float = 1e-10,
    atol: float = 0.0,
    maxiter: int = 25,
    line_search: bool = True,
    linear_options: dict | None = None,
    info: bool = False,
    **inputs,
):
    """Integrate ``M du/dt + R(u; t) = 0`` from ``u(t0) = u0``, one Newton solve per step; differentiable.

    Arguments:
        form: a residual or energy form, or a list of terms (as for :func:`~igax.fem.solve_nonlinear`). It
            receives the time as ``w.t`` if it declares an input ``t`` (or declares none).
        V: the space of the solution.
        u0: initial state, a Field on ``V`` or its coefficients (constrained entries set to ``g(t0)``).
        dt: a uniform step (with ``nsteps``) or a schedule: a 1D array of step sizes (e.g.
            ``adapt_steps(...).dts``). Step sizes are constants for the gradient.
        nsteps: number of uniform steps (static int).
        t0: initial time.
        scheme: ``"implicit_euler"`` (order 1), ``"crank_nicolson"`` (order 2), ``"bdf2"`` (order 2,
            variable-step, started by one Crank-Nicolson step) or a theta in ``[0.5, 1]``.
        mass: None (``library.mass`` assembled on ``V``), a bilinear form, or a SparseMatrix on ``V``'s
            pattern (differentiable, e.g. a density times the mass).
        bc: Dirichlet condition(s); their values hold at every time unless ``bc_values`` is given.
        bc_values: ``bc_values(t) -> (len(bc.dofs),)``, the prescribed values at time ``t``.
        observe: ``observe(t, u) -> pytree`` with ``u`` the Field after each step; recorded per step.
        checkpoint_every: segment length ``c`` for ``jax.checkpoint``: a gradient stores the state at the
            start of each segment and replays one segment at a time (``nsteps / c + c`` states). When ``c``
            does not divide ``nsteps``, the last segment is filled up with empty steps (``dt = 0``).
        method, linear_options: linear solver of the tangent systems (see :func:`igax.fem.solve`).
        rtol, atol, maxiter, line_search: Newton's options per step (see :func:`~igax.solvers.newton_solve`).
        info: also return a :class:`TransientInfo`.
        **inputs: the named inputs of the form (numbers, callables of ``x``, arrays, Fields; differentiable).

    Returns:
        ``(u_final, observations)`` (a Field, and the observations stacked over the steps or None), plus a
        :class:`TransientInfo` with ``info=True``.

    Raises:
        NewtonError: a step's Newton solve failed (the message names the step and its time).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from igax import fem
        >>> @fem.residual_form(inputs={"k": "scalar"})
        ... def decay(u, v, w):                     # du/dt = -k u^2: u(t) = 1 / (1 + k t)
        ...     return w.k * u.value**2 * v.value
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=1, elements=1))
        >>> u0 = jnp.ones(V.ndofs)
        >>> uT, _ = fem.solve_transient(decay, V, u0, dt=0.025, nsteps=40, scheme="bdf2", k=1.0)
        >>> round(float(uT.coeffs[0]), 3)           # 1 / (1 + 1) = 0.5, to dt^2
        0.5
        >>> g = jax.grad(lambda k: fem.solve_transient(decay, V, u0, dt=0.05, nsteps=20, k=k)[0].coeffs[0])
        >>> round(float(g(1.0)), 3)                 # d/dk 1 / (1 + k) = -1/4
        -0.25
    """
    theta, bdf2 = _scheme(scheme)
    dts = _steps(dt, nsteps)
    if checkpoint_every is not None and (
        not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 1
    ):
        raise ValueError(
            f"checkpoint_every must be a positive int (steps per segment), got {checkpoint_every!r}."
        )
    if not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter must be a positive int, got {maxiter!r}.")
    if observe is not None and not callable(observe):
        raise TypeError("observe must be a function observe(t, u) of the time and the Field u.")
    terms, fields, M, u0, static, g = _setup(
        form, V, u0, mass=mass, bc=bc, bc_values=bc_values, t0=t0, inputs=inputs
    )
    config = _newton_config(theta, bdf2, method, linear_options, rtol, atol, maxiter, line_search)
    program = _program_small if V.plan.pattern.nnz <= SMALL_NNZ else _program
    dts = dts.astype(u0.dtype)
    t0 = jnp.asarray(t0, u0.dtype)
    # The Dirichlet values of every step are evaluated here, outside the compiled program: they are data
    # (differentiable when bc_values closes over parameters), and a new bc_values function does not
    # recompile the stepper.
    G = _boundary_values(g, bc_values, t0, t0 + jnp.cumsum(dts))
    if G is not None:
        u0 = u0.at[static.array].set(G[0])
    uT, ys, out = program(terms, V, fields, M, G, u0, dts, t0, static, config, observe, checkpoint_every)
    result = raise_on_failure(_Result(uT, out), _failure, out.times, out.iterations, out.status)
    uT = Field(V, result.value)
    return (uT, ys, out) if info else (uT, ys)


class _Result(eqx.Module):
    value: jax.Array
    info: TransientInfo

    @property
    def status(self):
        return jnp.max(self.info.status)


def _failure(status, times, iterations, codes) -> NewtonError:
    codes, times, iterations = np.atleast_1d(codes), np.atleast_1d(times), np.atleast_1d(iterations)
    k = int(np.argmax(codes != 0))
    return NewtonError(
        f"solve_transient: the Newton solve of step {k + 1} (t = {times[k]:.6g}) failed: "
        f"{_MESSAGES[Status(int(codes[k]))]} ({iterations[k]} iterations). Smaller steps (dt, or "
        "adapt_steps) usually help; a NaN often means a step too large for the nonlinearity."
    )


def _boundary_values(g, bc_values, t0, times):
    """The Dirichlet values at ``t0`` and at ``times``, ``(1 + len(times), nbc)``, or None without a bc."""
    if g is None:
        return None
    if bc_values is None:
        return jnp.broadcast_to(g, (times.shape[0] + 1,) + g.shape)
    ts = jnp.concatenate([t0[None], times])
    return jax.vmap(lambda t: jnp.asarray(bc_values(t), g.dtype))(ts)


def _program(terms, space, fields, M, G, u0, dts, t0, static, config, observe, ck):
    step = _make_step(terms, space, static, config)
    args = (fields, M)
    n = dts.shape[0]
    G1 = jnp.zeros((n, 0), u0.dtype) if G is None else G[1:]

    def body(carry, x):
        u, u_prev, t, dt_prev = carry
        dt, k, g1 = x
        u1, res = step(args, u, u_prev, t, dt, dt_prev, k == 0, g1)
        t1 = t + dt
        y = observe(t1, Field(space, u1)) if observe is not None else None
        return (u1, u, t1, dt), (y, t1, res.iterations, res.status)

    xs = (dts, jnp.arange(n), G1)
    carry0 = (u0, u0, t0, dts[0])
    if ck is None:
        (uT, *_), (ys, ts, its, st) = jax.lax.scan(body, carry0, xs)
    else:

        @jax.checkpoint
        def segment(carry, xs):
            return jax.lax.scan(body, carry, xs)

        # A schedule from adapt_steps has whatever length it has: pad it to whole segments with steps of
        # length 0, which leave the state as it is (the step equation is then M (u1 - u0) = 0, solved by the
        # start value in no Newton iteration) and are cut from the outputs. One segment body is compiled,
        # rather than a second one for a shorter last segment (which doubled the gradient's compile time).
        c = min(ck, n)
        pad = -n % c
        if pad:
            xs = (
                jnp.concatenate([dts, jnp.zeros(pad, dts.dtype)]),
                jnp.arange(n + pad),
                jnp.concatenate([G1, jnp.broadcast_to(G1[-1:], (pad,) + G1.shape[1:])]),
            )
        xs = jax.tree_util.tree_map(lambda a: a.reshape(((n + pad) // c, c) + a.shape[1:]), xs)
        carry, outs = jax.lax.scan(segment, carry0, xs)
        outs = jax.tree_util.tree_map(lambda a: a.reshape((n + pad,) + a.shape[2:])[:n], outs)
        uT = carry[0]
        ys, ts, its, st = outs
    return uT, ys, TransientInfo(ts, its, st)


_program_small = lazy_jit(eqx.filter_jit, _program)  # small problems: compiling dominates, cheap options
_program = eqx.filter_jit(_program)
