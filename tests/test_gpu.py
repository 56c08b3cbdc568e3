"""Solves that stay on the device: mg-cg end to end.

The first test runs everywhere: the compiled forward and gradient of ``assemble -> DirichletBC -> mg-cg``
contain no host callback (so on a GPU nothing leaves the device). The tests marked ``gpu`` run only where JAX
sees a GPU (see ``conftest.py``): they check the device results against a host reference computed with SciPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg as spla

from igax import fem, solvers
from igax.fem import library

# JAX's host callbacks and igax's in-place host call (igax/solvers/_host_call.py)
_CALLBACKS = ("pure_callback", "io_callback", "callback", "igax_host_call")


def _primitives(jaxpr, out=None, *, in_cond=False):
    """``{(primitive name, inside a cond branch)}`` of a jaxpr, recursing into sub-jaxprs (loops, conds,
    custom rules). A callback inside a cond runs only when its branch is taken (igax's error reporting)."""
    out = set() if out is None else out
    for eqn in jaxpr.eqns:
        out.add((eqn.primitive.name, in_cond))
        inner = in_cond or eqn.primitive.name == "cond"
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    _primitives(sub.jaxpr, out, in_cond=inner)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    _primitives(sub, out, in_cond=inner)
    return out


def _callbacks(prims, *, in_cond):
    return {name for name, c in prims if c == in_cond and name in _CALLBACKS}


def _spline_problem(n=8, degree=2):
    V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=degree, elements=n))
    bc = fem.DirichletBC(V, None, 0.0)
    load = fem.assemble(library.source, V, f=1.0)
    return V, bc, load


def _loss(V, bc, load, method, **options):
    def loss(c):
        A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
        u = fem.solve(A, load, bc=bc, method=method, rtol=1e-10, **options)
        return jnp.sum(u.coeffs**2)

    return loss


def test_mg_cg_program_has_no_host_callback():
    V, bc, load = _spline_problem()
    c = jnp.ones(V.ndofs)
    trace = lambda method, **kw: _primitives(
        jax.make_jaxpr(jax.value_and_grad(_loss(V, bc, load, method, **kw)))(c).jaxpr
    )
    mg = trace("mg-cg")
    assert ("while", False) in mg  # the Krylov loop is in the program
    assert not _callbacks(mg, in_cond=False)  # nothing on the path that runs
    assert _callbacks(mg, in_cond=True) == {"pure_callback"}  # error reports, taken only on failure
    # The check can fail: the direct path calls back to the host on every run.
    assert _callbacks(trace("superlu"), in_cond=False)


@pytest.mark.gpu
def test_gpu_mg_cg_matches_host_reference_and_stays_on_device():
    V, bc, load = _spline_problem(n=32)
    rng = np.random.default_rng(0)
    c = jnp.asarray(1.0 + 0.5 * rng.random(V.ndofs))
    A = fem.assemble(library.diffusion, V, kappa=fem.Field(V, c))
    u = jax.jit(lambda A, b: fem.solve(A, b, bc=bc, method="mg-cg", rtol=1e-12).coeffs)(A, load)
    assert {d.platform for d in u.devices()} == {"gpu"}
    Ac, bc_vec = bc.condense(A, load)
    ref = spla.spsolve(Ac.to_scipy().tocsc(), np.asarray(bc_vec))
    assert np.linalg.norm(np.asarray(u) - ref) <= 1e-8 * np.linalg.norm(ref)


@pytest.mark.gpu
def test_gpu_mg_cg_gradient_matches_finite_differences():
    V, bc, load = _spline_problem(n=16)
    loss = jax.jit(_loss(V, bc, load, "mg-cg"))
    rng = np.random.default_rng(1)
    c = jnp.asarray(1.0 + 0.5 * rng.random(V.ndofs))
    d = jnp.asarray(rng.standard_normal(V.ndofs))
    g = jax.jit(jax.grad(_loss(V, bc, load, "mg-cg")))(c)
    eps = 1e-5
    fd = (loss(c + eps * d) - loss(c - eps * d)) / (2 * eps)
    assert abs(float(g @ d) - float(fd)) <= 1e-6 * abs(float(fd))


@pytest.mark.gpu
def test_gpu_default_method_for_spline_spd_is_mg_cg():
    V, bc, load = _spline_problem(n=8)
    A = fem.assemble(library.laplace, V)
    assert solvers.default_method(A) in ("cg", "mg-cg")  # the solver layer alone has no hierarchy
    u = fem.solve(A, load, bc=bc)  # the fem layer knows the space: mg-cg
    Ac, bc_vec = bc.condense(A, load)
    ref = spla.spsolve(Ac.to_scipy().tocsc(), np.asarray(bc_vec))
    assert np.linalg.norm(np.asarray(u.coeffs) - ref) <= 1e-8 * np.linalg.norm(ref)
