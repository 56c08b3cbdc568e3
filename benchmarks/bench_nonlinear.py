"""Nonlinear solves: time per Newton iteration and the cost of a gradient through the converged solution.

Case: a 3D compressible Neo-Hookean cantilever ``[0, 4] x [0, 1] x [0, 1]`` on Q1 hexahedra (``(4n, n, n)``
cells; full ~92k DOFs, ``--quick`` ~5.6k), clamped at ``x = 0``, under a dead body load, the shear modulus a
nodal ``Field``. Timed (medians, steady state, jitted):

* ``newton iteration``: assemble residual + tangent (``fem.assemble_residual(..., tangent=True)``: one
  ``jacfwd`` per quadrature point, contracted onto the pattern), symmetric elimination of the clamp and one
  direct solve (``fem.solve``) at a deformed state;
* ``gradient``: the backward pass of ``loss(mu) = sum(u(mu)^2)`` through ``fem.solve_nonlinear`` at the
  converged state, the forward's residuals given (one tangent assembly, one transposed solve and the
  residual's VJP). Goal: ``gradient / newton iteration <= 1.5``.
* baselines in the same run: scikit-fem (when installed) assembling the same residual and tangent with the
  tangent written by hand (``dP/dF : grad du : grad v``), plus a SciPy sparse solve: its time per Newton
  iteration; and, at small size, igax's tangent against the dense ``jax.jacfwd`` of the global residual (the
  tangent one gets without pointwise differentiation).

Usage: ``python benchmarks/bench_nonlinear.py [--quick] [--reps 5]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_seconds, median_time  # noqa: E402

MU, LMBDA, LOAD = 1.0, 1.5, 0.01


def _method():
    from igax.solvers import available_methods

    return "pardiso" if "pardiso" in available_methods() else "superlu"


def problem(n):
    from igax import fem

    mesh = fem.box_mesh((0.0, 0.0, 0.0), (4.0, 1.0, 1.0), n=(4 * n, n, n), cell="hexahedron")
    V = fem.LagrangeSpace(mesh, degree=1, shape=(3,))
    S = fem.LagrangeSpace(mesh, degree=1)
    bc = fem.DirichletBC(V, "left", 0.0)
    return mesh, V, S, bc


def igax_cases(n, reps):
    from igax import fem
    from igax.fem import library

    mesh, V, S, bc = problem(n)
    method = _method()
    f = jnp.array([0.0, 0.0, -LOAD])
    mu = fem.Field(S, jnp.full(S.ndofs, MU))
    terms = [library.neo_hookean, library.dead_load]
    u_star = fem.solve_nonlinear(terms, V, bc=bc, method=method, mu=mu, lmbda=LMBDA, f=f)

    @jax.jit
    def newton_step(u):
        R, K = fem.assemble_residual(library.neo_hookean, V, u, tangent=True, mu=mu, lmbda=LMBDA)
        R = R + fem.assemble_residual(library.dead_load, V, u, f=f)
        return u + fem.solve(K, -R, bc=bc, method=method).coeffs

    u1 = 0.9 * u_star.coeffs
    t_newton = median_time(newton_step, u1, repeat=reps)

    def loss(c):
        u = fem.solve_nonlinear(terms, V, bc=bc, method=method, mu=fem.Field(S, c), lmbda=LMBDA, f=f)
        return jnp.sum(u.coeffs**2)

    fwd = jax.jit(lambda c: jax.vjp(loss, c))
    bwd = jax.jit(lambda vjp: vjp(jnp.ones(()))[0])
    c0 = jnp.full(S.ndofs, MU)
    _, vjp = fwd(c0)
    t_grad = median_time(bwd, vjp, repeat=reps)
    t_solve = median_time(jax.jit(loss), c0, repeat=max(1, reps // 2))
    t_value_grad = median_time(jax.jit(jax.value_and_grad(loss)), c0, repeat=max(1, reps // 2))
    _, info = fem.solve_nonlinear(terms, V, bc=bc, method=method, mu=mu, lmbda=LMBDA, f=f, info=True)
    return {"dofs": V.ndofs, "newton": t_newton, "grad": t_grad, "solve": t_solve, "value_grad": t_value_grad,
            "iterations": int(info.iterations[-1]), "u": np.asarray(u1), "mesh": mesh, "V": V}  # fmt: skip


def skfem_newton(mesh, u_igax, V, reps):
    """Time of one Newton iteration with scikit-fem (hand-written tangent) + scipy, or None."""
    try:
        import skfem
        from skfem.helpers import ddot, det, grad, identity, inv, mul, transpose
    except ImportError:
        return None
    import time

    import scipy.sparse.linalg as spla

    pts = np.asarray(mesh.points)
    axes = [np.unique(np.round(pts[:, i], 12)) for i in range(3)]
    m = skfem.MeshHex.init_tensor(*axes)  # the same grid, scikit-fem's own node and vertex order
    basis = skfem.Basis(m, skfem.ElementVector(skfem.ElementHex1()))
    # The same displacement: igax numbers component-blocked by node, scikit-fem interleaves the components
    # (and orders its nodes differently: matched by coordinates).
    where = {tuple(np.round(x, 9)): i for i, x in enumerate(pts)}
    order = np.array([where[tuple(np.round(x, 9))] for x in m.p.T])
    u = np.asarray(u_igax).reshape(3, -1)[:, order].T.ravel()

    # The kinematics are computed once per Newton iteration and passed to the forms as fields: the forms
    # are evaluated for every pair of local basis functions (24 x 24 here), so computing F^-T and ln J
    # inside them would repeat that work 576 times.
    def kinematics(prev):
        F = grad(prev) + identity(grad(prev))
        return F, transpose(inv(F)), np.log(det(F))

    @skfem.BilinearForm
    def tangent(du, v, w):
        FiT, lnJ = w["FiT"], w["lnJ"]
        dF = grad(du)
        dP = MU * dF + LMBDA * ddot(FiT, dF) * FiT - (LMBDA * lnJ - MU) * mul(FiT, mul(transpose(dF), FiT))
        return ddot(dP, grad(v))

    @skfem.LinearForm
    def residual(v, w):
        P = MU * w["F"] + (LMBDA * w["lnJ"] - MU) * w["FiT"]
        return ddot(P, grad(v)) - (-LOAD) * v[2]

    D = basis.get_dofs("left").all() if hasattr(m, "boundaries") and m.boundaries else None
    if D is None:
        D = basis.get_dofs(lambda x: np.isclose(x[0], 0.0)).all()

    def step():
        F, FiT, lnJ = kinematics(basis.interpolate(u))
        K = skfem.asm(tangent, basis, FiT=FiT, lnJ=lnJ)
        R = skfem.asm(residual, basis, F=F, FiT=FiT, lnJ=lnJ)
        return u + skfem.solve(*skfem.condense(K, -R, D=D), solver=lambda A, b: spla.spsolve(A, b))

    step()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def dense_baseline(reps):
    """igax's tangent against the dense jax.jacfwd of the global residual, at small size."""
    from igax import fem
    from igax.fem import library

    _, V, S, _ = problem(2)
    u = jnp.asarray(0.01 * np.random.default_rng(0).uniform(-1, 1, V.ndofs))

    ours = jax.jit(lambda u: fem.assemble_residual(library.neo_hookean, V, u, tangent=True, mu=MU,
                                                   lmbda=LMBDA)[1].values)  # fmt: skip
    dense = jax.jit(
        jax.jacfwd(lambda u: fem.assemble_residual(library.neo_hookean, V, u, mu=MU, lmbda=LMBDA))
    )
    K = fem.assemble_residual(library.neo_hookean, V, u, tangent=True, mu=MU, lmbda=LMBDA)[1]
    err = float(jnp.abs(K.todense() - dense(u)).max())
    return V.ndofs, median_time(ours, u, repeat=reps), median_time(dense, u, repeat=reps), err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    n = 7 if args.quick else 19
    print(f"# bench_nonlinear: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__} ({jax.default_backend()}), solver {_method()}")  # fmt: skip
    r = igax_cases(n, args.reps)
    print(f"Neo-Hookean Q1 cantilever, {r['dofs']} DOFs, {r['iterations']} Newton iterations to converge")
    print(f"  newton iteration (residual + tangent + solve) {fmt_seconds(r['newton'])}")
    print(f"  full solve_nonlinear                          {fmt_seconds(r['solve'])}")
    print(f"  gradient, backward pass alone                 {fmt_seconds(r['grad'])}"
          f"   ratio / newton iteration = {r['grad'] / r['newton']:.2f} (goal <= 1.5)")  # fmt: skip
    extra = r["value_grad"] - r["solve"]
    print(f"  value_and_grad - solve                        {fmt_seconds(extra)}"
          f"   ratio / newton iteration = {extra / r['newton']:.2f} (goal <= 1.5)")  # fmt: skip
    sk = skfem_newton(r["mesh"], r["u"], r["V"], max(1, args.reps // 2))
    if sk is not None:
        print(f"  scikit-fem newton iteration (hand tangent)    {fmt_seconds(sk)}"
              f"   ratio scikit-fem / igax = {sk / r['newton']:.2f}")  # fmt: skip
    nd, t_ours, t_dense, err = dense_baseline(args.reps)
    print(f"tangent at {nd} DOFs: igax {fmt_seconds(t_ours)}, dense jax.jacfwd of the global residual "
          f"{fmt_seconds(t_dense)} (ratio {t_dense / t_ours:.1f}x; max difference {err:.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
