"""Nonlinear time stepping: the cost of a step against one Newton solve, and of a gradient over a trajectory.

Case: Allen-Cahn ``u_t = -m (u^3 - u - eps^2 Laplace u)`` on degree-2 splines over the unit square
(``n x n`` elements; full n = 48, ``--quick`` n = 12), 32 steps of ``dt = 0.05`` from a smooth perturbation.
Timed (steady state, jitted; the best of 3 medians, the cases interleaved):

* baseline ``one Newton solve``: one implicit-Euler step written as its own nonlinear problem,
  ``(u - u_prev) v + dt m (eps^2 grad u . grad v + (u^3 - u) v)``, solved by ``fem.solve_nonlinear`` (the
  same assembly, tangent, Newton loop and direct solver);
* ``step``: ``fem.solve_transient`` over the trajectory divided by the number of steps, for implicit Euler,
  Crank-Nicolson and BDF2 (ratio = baseline / step: about 1 means the stepper adds nothing to the Newton
  solves it is made of; Crank-Nicolson and BDF2 also assemble the residual at the step's start once);
* ``gradient``: ``jax.grad`` of the free energy at the end with respect to the mobility, through all steps
  (BDF2, with ``checkpoint_every = 8`` and without): its time against the forward trajectory, and the
  compiled program's temporary memory with and without checkpointing.

Usage: ``python benchmarks/bench_transient.py [--quick] [--reps 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_seconds, median_time  # noqa: E402

EPS, M, DT, NSTEPS = 0.05, 1.0, 0.05, 32
ROUNDS = 3


def problem(n):
    from igax import fem

    @fem.residual_form(symmetric=True, inputs={"m": "scalar", "eps": "scalar"})
    def allen_cahn(u, v, w):
        return w.m * (w.eps**2 * jnp.dot(u.grad, v.grad) + (u.value**3 - u.value) * v.value)

    @fem.residual_form(
        symmetric=True, inputs={"m": "scalar", "eps": "scalar", "prev": "scalar", "dt": "scalar"}
    )
    def euler_step(u, v, w):
        return (u.value - w.prev) * v.value + w.dt * w.m * (
            w.eps**2 * jnp.dot(u.grad, v.grad) + (u.value**3 - u.value) * v.value
        )

    @fem.energy_form(inputs={"eps": "scalar"})
    def free_energy(u, w):
        return 0.5 * w.eps**2 * jnp.dot(u.grad, u.grad) + 0.25 * (u.value**2 - 1.0) ** 2

    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=n))

    def init(x):
        return 0.3 * jnp.cos(2 * jnp.pi * x[0]) * jnp.cos(jnp.pi * x[1]) + 0.1 * jnp.sin(
            3 * jnp.pi * x[0] * x[1]
        )

    u0 = fem.project(lambda w: init(w.x), V).coeffs
    return V, u0, allen_cahn, euler_step, free_energy


def run(n, reps):
    from igax import fem

    V, u0, allen_cahn, euler_step, free_energy = problem(n)
    out = {"dofs": V.ndofs}

    @jax.jit
    def one_solve(prev):
        return fem.solve_nonlinear(
            euler_step, V, u0=prev, m=M, eps=EPS, prev=fem.Field(V, prev), dt=DT
        ).coeffs

    def trajectory(scheme):
        def final(u0):
            uT, _ = fem.solve_transient(allen_cahn, V, u0, dt=DT, nsteps=NSTEPS, scheme=scheme, m=M, eps=EPS)
            return uT.coeffs

        return jax.jit(final)

    cases = [("solve", one_solve, 1)]
    cases += [(scheme, trajectory(scheme), NSTEPS) for scheme in ("implicit_euler", "crank_nicolson", "bdf2")]
    # Rounds that alternate the baseline and the steppers, keeping each one's best median: on a machine
    # shared with other jobs a single median can be off by 2x, and the interleaving exposes every case to
    # the same load.
    for _ in range(ROUNDS):
        for name, fn, scale in cases:
            out[name] = min(out.get(name, np.inf), median_time(fn, u0, repeat=reps) / scale)

    def loss(m, ck=8):
        uT, _ = fem.solve_transient(
            allen_cahn, V, u0, dt=DT, nsteps=NSTEPS, scheme="bdf2", checkpoint_every=ck, m=m, eps=EPS
        )
        return fem.assemble_energy(free_energy, V, uT, eps=EPS)

    fwd, grad = jax.jit(loss), jax.jit(jax.grad(loss))
    out["forward"] = min(median_time(fwd, M, repeat=reps) for _ in range(ROUNDS))
    out["gradient"] = min(median_time(grad, M, repeat=reps) for _ in range(ROUNDS))
    plain = jax.jit(jax.grad(lambda m: loss(m, None)))
    out["gradient_plain"] = min(median_time(plain, M, repeat=reps) for _ in range(ROUNDS))
    mem = {}
    for ck in (None, 8):
        compiled = jax.jit(jax.grad(lambda m, ck=ck: loss(m, ck))).lower(M).compile()
        mem[ck] = compiled.memory_analysis().temp_size_in_bytes
    out["memory"] = mem
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    n = 12 if args.quick else 48
    print(
        f"# bench_transient: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} ({jax.default_backend()})"
    )
    r = run(n, args.reps)
    case = f"allen-cahn-{r['dofs']}"
    print(f"Allen-Cahn, degree-2 splines {n} x {n}, {r['dofs']} DOFs, {NSTEPS} steps of dt = {DT}")
    print(f"  one Newton solve (fem.solve_nonlinear, one implicit-Euler step) {fmt_seconds(r['solve'])}")
    for scheme in ("implicit_euler", "crank_nicolson", "bdf2"):
        ratio = r["solve"] / r[scheme]
        print(
            f"  step, {scheme:15s} (solve_transient / {NSTEPS})          {fmt_seconds(r[scheme])}"
            f"   ratio one solve / step = {ratio:.2f}"
        )
        rec = {
            "bench": "transient",
            "case": f"{case}-{scheme}",
            "igax": "solve_transient-step",
            "igax_s": r[scheme],
            "baseline": "solve_nonlinear",
            "baseline_s": r["solve"],
            "ratio": ratio,
        }
        print(json.dumps(rec))
    ratio = r["gradient"] / r["forward"]
    print(
        f"  trajectory (bdf2, checkpoint_every=8): forward {fmt_seconds(r['forward'])}, gradient "
        f"{fmt_seconds(r['gradient'])}   gradient / forward = {ratio:.2f}"
    )
    print(
        json.dumps(
            {
                "bench": "transient",
                "case": f"{case}-gradient",
                "igax": "grad",
                "igax_s": r["gradient"],
                "baseline": "forward",
                "baseline_s": r["forward"],
                "ratio": r["forward"] / r["gradient"],
            }
        )
    )
    ratio = r["gradient_plain"] / r["forward"]
    print(
        f"  the same gradient without checkpointing {fmt_seconds(r['gradient_plain'])}   gradient / forward "
        f"= {ratio:.2f} (checkpointing replays each segment's forward once more)"
    )
    m0, m8 = r["memory"][None], r["memory"][8]
    print(
        f"  gradient temporary memory: {m0 / 1e6:.2f} MB without checkpointing, {m8 / 1e6:.2f} MB with "
        f"checkpoint_every=8 ({m0 / m8:.1f}x less)"
    )


if __name__ == "__main__":
    main()
