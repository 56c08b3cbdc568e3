"""Mixed spaces: block numbering, assembly over jet tuples, lifted boundary conditions, Stokes convergence
(Taylor-Hood P2/P1, Q2/Q1 and the isogeometric Taylor-Hood pair), the pressure constraint, and gradients
through Stokes and Navier-Stokes solves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library
from igax.fem.forms.mixed_assembly import assemble_mixed_residual

PI = np.pi
AMP = 0.05  # velocity amplitude: small, so the pressure error is that of its own approximation


# Manufactured solution: u = curl psi, psi = AMP sin^2(pi x) sin^2(pi y) (divergence-free, zero on the
# boundary), p = cos(pi x) cos(pi y) (zero mean); f = -lap u + grad p. x: (dim, ...) coordinate first.
def u_exact(x):
    X, Y = x[0], x[1]
    s = np.sin
    return np.stack([AMP * PI * s(PI * X) ** 2 * s(2 * PI * Y), -AMP * PI * s(2 * PI * X) * s(PI * Y) ** 2])


def p_exact(x):
    return np.cos(PI * x[0]) * np.cos(PI * x[1])


def force(x):
    # NumPy: assembly passes the points as a NumPy array where the geometry is concrete (nothing compiles).
    X, Y = x[0], x[1]
    s, c = np.sin, np.cos
    lap1 = AMP * PI * (2 * PI**2 * c(2 * PI * X) * s(2 * PI * Y) - 4 * PI**2 * s(PI * X) ** 2 * s(2 * PI * Y))
    lap2 = (
        -AMP * PI * (-4 * PI**2 * s(2 * PI * X) * s(PI * Y) ** 2 + 2 * PI**2 * s(2 * PI * X) * c(2 * PI * Y))
    )
    return np.stack([-lap1 - PI * s(PI * X) * c(PI * Y), -lap2 - PI * c(PI * X) * s(PI * Y)])


def stokes_errors(W):
    A = fem.assemble(library.stokes, W, nu=1.0)
    b = fem.assemble(library.stokes_load, W, f=force)
    up = fem.solve(A, b, bc=fem.DirichletBC(W, None, 0.0, field=0))
    u, p = up.split()
    return float(fem.l2_error(u, u_exact)), float(fem.l2_error(p, p_exact))


def rates(errors):
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


# -- the space and its numbering ---------------------------------------------------------------------------
def test_block_numbering_split_join_and_lifted_bc():
    mesh = fem.unit_square(3, "quad")
    W = fem.taylor_hood(mesh)
    V, Q = W.spaces
    assert W.ndofs == V.ndofs + Q.ndofs and W.offsets == (0, V.ndofs, V.ndofs + Q.ndofs)
    cu, cp = jnp.arange(V.ndofs) * 1.0, -jnp.arange(Q.ndofs) * 1.0
    c = W.join(cu, cp)
    u, p = W.split(c)
    assert np.array_equal(u.coeffs, cu) and np.array_equal(p.coeffs, cp)
    bc = fem.DirichletBC(W, "top", 2.0, component=1, field=0)
    ref = fem.DirichletBC(V, "top", 2.0, component=1)
    assert np.array_equal(bc.dofs, ref.dofs) and np.allclose(bc.values, 2.0)
    bq = fem.DirichletBC(W, np.array([0, 3]), jnp.array([1.0, 2.0]), field=1)
    assert bq.dofs.tolist() == [V.ndofs, V.ndofs + 3]
    with pytest.raises(ValueError, match="field="):
        fem.DirichletBC(W, None, 0.0)
    with pytest.raises(ValueError, match="same elements"):
        fem.MixedSpace(V, fem.LagrangeSpace(fem.unit_square(4, "quad"), 1))
    with pytest.raises(ValueError, match="pressure must be"):
        fem.MixedSpace(V, Q, pressure="zero")


def test_blocks_equal_single_space_assembly():
    # A symmetric block equals the single-space assembly; non-symmetric blocks are checked on exact fields,
    # rows = test functions: A @ coeffs(u) = the load of a(u, .).
    mesh = fem.unit_square(3)
    W = fem.taylor_hood(mesh)
    V, Q = W.spaces
    a, b = W.offsets[1], W.offsets[2]
    kappa = lambda x: 1.0 + x[0] * x[1]  # noqa: E731

    @fem.bilinear_form
    def form(u, v, w):
        (uu, _), (vv, q) = u, v
        return w.k * jnp.sum(uu.grad * vv.grad) + uu.grad[0, 0] * vv.value[1] + q.value * jnp.trace(uu.grad)

    @fem.bilinear_form
    def diffusion(u, v, w):
        return w.k * jnp.sum(u.grad * v.grad)

    A = np.asarray(fem.assemble(form, W, k=kappa).todense())
    D = np.asarray(fem.assemble(diffusion, V, k=kappa).todense())
    x = np.asarray(V.dof_coordinates())
    ux = np.concatenate([x[:, 0], 0 * x[:, 0]])  # u = (x, 0): div u = 1, d u_0 / dx = 1, exact in P2
    # V-V block minus diffusion is the advection term: A_vv u = int phi_i^(1) (the second component).
    adv = A[:a, :a] - D
    np.testing.assert_allclose(adv @ ux, fem.assemble(library.source, V, f=jnp.array([0.0, 1.0])), atol=1e-12)
    # Q-row, V-column block: int q_i div(u) = int q_i.
    np.testing.assert_allclose(A[a:b, :a] @ ux, fem.assemble(library.source, Q, f=1.0), atol=1e-12)
    assert np.abs(A[:a, a:b]).max() == 0.0 and np.abs(A[a:b, a:b]).max() == 0.0
    # Declared symmetric, it is refused (the solvers trust the flag); a kernel that is not linear in v too.
    with pytest.raises(ValueError, match="not symmetric"):
        fem.assemble(fem.bilinear_form(form.kernel, symmetric=True), W, k=kappa)

    @fem.linear_form
    def not_linear(v, w):
        return v[1].value ** 2

    with pytest.raises(ValueError, match="not linear"):
        fem.assemble(not_linear, W)


def test_residual_tangent_matches_finite_differences():
    W = fem.taylor_hood(fem.unit_square(2, "quad"))
    rng = np.random.default_rng(0)
    c = jnp.asarray(rng.normal(size=W.ndofs))
    f = jnp.array([0.3, -0.2])
    R, K = assemble_mixed_residual(library.navier_stokes, W, c, tangent=True, nu=0.7, f=f)
    d = jnp.asarray(rng.normal(size=W.ndofs))
    h = 1e-6
    Rp = assemble_mixed_residual(library.navier_stokes, W, c + h * d, nu=0.7, f=f)
    Rm = assemble_mixed_residual(library.navier_stokes, W, c - h * d, nu=0.7, f=f)
    fd = (Rp - Rm) / (2 * h)
    assert float(jnp.abs(K @ d - fd).max()) <= 1e-7 * float(jnp.abs(fd).max())
    # Stokes part: the tangent at u = 0 is the Stokes matrix.
    _, K0 = assemble_mixed_residual(library.navier_stokes, W, jnp.zeros(W.ndofs), tangent=True, nu=0.7, f=f)
    A = fem.assemble(library.stokes, W, nu=0.7)
    np.testing.assert_allclose(np.asarray(K0.todense()), np.asarray(A.todense()), atol=1e-12)
    # vmap over the viscosity: the batch of matrices equals the matrices one by one (linear in nu).
    vals = jax.vmap(lambda nu: fem.assemble(library.stokes, W, nu=nu).values)(jnp.array([0.7, 1.4]))
    np.testing.assert_allclose(vals[0], A.values, atol=1e-12)
    np.testing.assert_allclose(
        vals[1] - vals[0],
        fem.assemble(library.stokes, W, nu=0.7).values - fem.assemble(library.stokes, W, nu=0.0).values,
        atol=1e-12,
    )


# -- Stokes: convergence and the pressure constraint -------------------------------------------------------
@pytest.mark.parametrize("cell", ["triangle", "quad"])
def test_taylor_hood_rates(cell):
    # P2/P1 and Q2/Q1: velocity L2 rate 3, pressure L2 rate 2 (+-0.15), from 8 -> 16 (4 -> 8 is still
    # pre-asymptotic for the pressure on triangles: 2.3).
    errs = [stokes_errors(fem.taylor_hood(fem.unit_square(n, cell), pressure="mean")) for n in (8, 16)]
    ru, rp = rates([e[0] for e in errs]), rates([e[1] for e in errs])
    assert abs(ru[-1] - 3) <= 0.15, (errs, ru)
    assert abs(rp[-1] - 2) <= 0.15, (errs, rp)


def test_spline_taylor_hood_rates():
    # Cubic C^1 velocity, quadratic C^1 pressure on the same knot spans: rates 4 and 3 (12 -> 24: 3.90 and
    # 3.02; 4 -> 8 -> 16 is pre-asymptotic for the velocity, 3.49 and 3.81).
    make = fem.spline_taylor_hood
    errs = [stokes_errors(make(fem.geometry.rectangle(), 3, n, pressure="mean")) for n in (12, 24)]
    ru, rp = rates([e[0] for e in errs]), rates([e[1] for e in errs])
    assert abs(ru[-1] - 4) <= 0.15, (errs, ru)
    assert abs(rp[-1] - 3) <= 0.15, (errs, rp)


def _th(cell):
    return lambda n: fem.taylor_hood(fem.unit_square(n, cell), pressure="mean")


def _spline(degree):
    return lambda n: fem.spline_taylor_hood(fem.geometry.rectangle(), degree, n, pressure="mean")


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, sizes, ru, rp",
    [
        (_th("triangle"), (8, 16, 32), 3, 2),
        (_th("quad"), (8, 16, 32), 3, 2),
        (_spline(2), (8, 16, 32), 3, 2),
        (_spline(3), (16, 24, 32), 4, 3),
    ],
)
def test_stokes_rates_long(make, sizes, ru, rp):
    # (degree 4, 16 -> 24 -> 32 elements: velocity 4.83, still rising to 5 (24 -> 32: 4.88); pressure 3.98.)
    errs = np.array([stokes_errors(make(n)) for n in sizes])
    h = np.log(1.0 / np.asarray(sizes, float))  # the slope of log(error) against log(h)
    assert abs(np.polyfit(h, np.log(errs[:, 0]), 1)[0] - ru) <= 0.15, errs
    assert abs(np.polyfit(h, np.log(errs[:, 1]), 1)[0] - rp) <= 0.15, errs


def test_taylor_hood_3d_reproduces_a_linear_flow():
    # P2/P1 on tetrahedra: u = (y, z, x) (divergence-free, harmonic), p = 0 is in the discrete space.
    # Two cubes a side: on one cube of six tetrahedra only the main diagonal's midpoint is an interior
    # velocity node (3 unknowns against 7 pressure modes), so the discrete problem is singular there.
    W = fem.taylor_hood(fem.unit_cube(2, "tetra"), pressure="mean")
    A = fem.assemble(library.stokes, W, nu=1.0)
    bc = fem.DirichletBC(W, None, lambda x: np.stack([x[1], x[2], x[0]]), field=0)
    u, p = fem.solve(A, jnp.zeros(W.ndofs), bc=bc).split()
    pts = np.random.default_rng(0).uniform(0.1, 0.9, (5, 3))
    np.testing.assert_allclose(u(pts), pts[:, [1, 2, 0]], atol=1e-12)
    assert float(jnp.abs(p.coeffs).max()) < 1e-9


def test_pressure_constraint_pin_mean_and_error():
    mesh = fem.unit_square(4, "quad")
    bcs = lambda W: fem.DirichletBC(W, None, 0.0, field=0)  # noqa: E731
    W0 = fem.taylor_hood(mesh)
    A = fem.assemble(library.stokes, W0, nu=1.0)
    b = fem.assemble(library.stokes_load, W0, f=force)
    with pytest.raises(ValueError, match="pressure='mean'"):
        fem.solve(A, b, bc=bcs(W0))
    out = {}
    for mode in ("pin", "mean"):
        W = fem.taylor_hood(mesh, pressure=mode)
        out[mode] = fem.solve(A, b, bc=bcs(W), space=W).split()
    pin, mean = out["pin"][1], out["mean"][1]
    assert abs(float(pin.coeffs[0])) == 0.0
    area_mean = float(fem.assemble(library.source, mean.space, f=1.0) @ mean.coeffs)
    assert abs(area_mean) < 1e-12
    # The two differ by a constant only, and the velocities agree.
    diff = np.asarray(pin.coeffs - mean.coeffs)
    assert np.ptp(diff) < 1e-10
    np.testing.assert_allclose(out["pin"][0].coeffs, out["mean"][0].coeffs, atol=1e-12)
    # An outflow boundary fixes the pressure: pinning it as well is refused.
    W = fem.taylor_hood(mesh, pressure="pin")
    with pytest.raises(ValueError, match="pressure=None"):
        fem.solve(A, b, bc=fem.DirichletBC(W, ["left", "top", "bottom"], 0.0, field=0))


def test_direct_backends_symmetric_indefinite():
    # SuperLU (LU) and PARDISO (symmetric indefinite) give the same saddle-point solution.
    from igax import solvers
    from igax.solvers.linear import _kind

    if "pardiso" not in solvers.available_methods():
        pytest.skip("pardiso is not installed")
    W = fem.taylor_hood(fem.unit_square(4), pressure="mean")
    A = fem.assemble(library.stokes, W, nu=1.0)
    assert A.symmetric and not A.positive_definite
    b = fem.assemble(library.stokes_load, W, f=force)
    bc = fem.DirichletBC(W, None, 0.0, field=0)
    ref = fem.solve(A, b, bc=bc, method="superlu").coeffs
    got = fem.solve(A, b, bc=bc, method="pardiso").coeffs
    np.testing.assert_allclose(got, ref, atol=1e-10)
    # A saddle point: eigenvalues of both signs, so the matrix goes to the symmetric indefinite factorisation
    # (PARDISO mtype -2), never to Cholesky (mtype 2).
    ev = np.linalg.eigvalsh(np.asarray(A.todense()))
    assert ev.min() < -1e-3 and ev.max() > 1e-3
    assert _kind(A) == "sym"


def test_minres_with_a_block_preconditioner_on_a_taylor_hood_space():
    # The iterative saddle-point path through fem.solve: MINRES, block-diagonal preconditioner with an exact
    # velocity block and the pressure mass as the Schur complement (viscosity 1), pressure pinned.
    from igax import solvers

    W = fem.taylor_hood(fem.unit_square(4), pressure="pin")
    A = fem.assemble(library.stokes, W, nu=1.0)
    b = fem.assemble(library.stokes_load, W, f=force)
    bc = fem.DirichletBC(W, None, 0.0, field=0)
    ref = fem.solve(A, b, bc=bc, method="superlu").coeffs
    saddle = solvers.SaddlePoint(
        W.spaces[0].ndofs, schur=fem.assemble(library.mass, W.spaces[1]), primal="superlu"
    )
    got = fem.solve(A, b, bc=bc, method="minres", saddle=saddle, rtol=1e-11).coeffs
    assert float(jnp.abs(got - ref).max() / jnp.abs(ref).max()) < 1e-8


@pytest.mark.slow  # 6 s: the optional u-p elasticity, kept out of the default run's budget
def test_mixed_elasticity_is_locking_free():
    # u-p elasticity at lmbda = 1e6 (Poisson's ratio 0.4999995), Q2/Q1: the manufactured u is divergence-free
    # and p = lmbda div u + g lmbda (a load g in the constraint row keeps p = p_exact): with mu = 1 the
    # momentum force is the Stokes one. Rates stay optimal (3 and 2) however large lmbda is.
    lmbda = 1e6

    @fem.linear_form(inputs={"f": "vector", "g": "scalar"})
    def load(v, w):
        vv, q = v
        return jnp.dot(w.f.value, vv.value) - w.g.value * q.value

    def errors(n):
        W = fem.taylor_hood(fem.unit_square(n, "quad"), pressure="free")
        A = fem.assemble(library.mixed_elasticity, W, mu=1.0, lmbda=lmbda)
        b = fem.assemble(load, W, f=force, g=lambda x: p_exact(x) / lmbda)
        u, p = fem.solve(A, b, bc=fem.DirichletBC(W, None, 0.0, field=0)).split()
        return float(fem.l2_error(u, u_exact)), float(fem.l2_error(p, p_exact))

    errs = np.array([errors(n) for n in (8, 16)])
    assert abs(rates(errs[:, 0])[0] - 3) <= 0.15 and abs(rates(errs[:, 1])[0] - 2) <= 0.15, errs


# -- gradients ---------------------------------------------------------------------------------------------
def _check_gradient(J, x0, h_taylor):
    """FD (central, step 1e-6) to 1e-6 and the Taylor remainder falling at rate 2, in every direction of
    ``x0``'s axes (one compilation of J and of its gradient)."""
    x0 = jnp.atleast_1d(jnp.asarray(x0, float))
    Jj, gj = jax.jit(J), jax.jit(jax.grad(J))
    g = np.asarray(gj(x0))
    J0 = float(Jj(x0))
    for i in range(x0.shape[0]):
        e = jnp.zeros_like(x0).at[i].set(1.0)
        fd = (float(Jj(x0 + 1e-6 * e)) - float(Jj(x0 - 1e-6 * e))) / 2e-6
        assert abs(g[i] - fd) <= 1e-6 * max(1.0, abs(fd)), (i, g[i], fd)
        rem = np.array([abs(float(Jj(x0 + h * e)) - J0 - h * g[i]) for h in h_taylor])
        assert np.all(np.abs(np.log2(rem[:-1] / rem[1:]) - 2) < 0.2), (i, rem)


def test_gradient_through_stokes_wrt_viscosity_and_lid():
    W = fem.taylor_hood(fem.unit_square(4, "quad"), pressure="mean")

    def J(params):
        nu, lid = params[0], params[1]
        A = fem.assemble(library.stokes, W, nu=nu)
        b = fem.assemble(library.stokes_load, W, f=force)
        bc = [fem.DirichletBC(W, None, 0.0, field=0), fem.DirichletBC(W, "top", lid, component=0, field=0)]
        u, p = fem.solve(A, b, bc=bc).split()
        return jnp.sum(u.coeffs**2) + jnp.sum(p.coeffs**2)

    _check_gradient(J, jnp.array([0.5, 1.0]), (1e-2, 5e-3, 2.5e-3))  # viscosity and lid speed


def test_gradient_through_navier_stokes_wrt_viscosity():
    W = fem.taylor_hood(fem.unit_square(4, "quad"), pressure="pin")
    bc = [fem.DirichletBC(W, None, 0.0, field=0), fem.DirichletBC(W, "top", 1.0, component=0, field=0)]

    def J(nu):
        nu = nu[0]
        up = fem.solve_nonlinear(library.navier_stokes, W, bc=bc, nu=nu, f=jnp.zeros(2), rtol=1e-12)
        u, _ = up.split()
        return jnp.sum(u.coeffs**2)

    _check_gradient(J, 0.05, (2e-3, 1e-3, 5e-4))


# -- the examples ------------------------------------------------------------------------------------------
def _example(name):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lid_driven_cavity_matches_ghia_at_re_100():
    # Q2/Q1 on 32 x 32 elements, Re = 100: max |u - u_Ghia| / max |u_Ghia| = 0.89 %, v 0.51 % of the lid
    # speed (2.1 % of max |v_Ghia|, which is Ghia's own grid error: 2.0 % on 64 x 64 elements).
    r = _example("lid_driven_cavity").main(n=32, re=(100,))
    assert r["u_error_100"] <= 0.01 and r["v_error_100"] <= 0.01, r
    assert r["v_error_vmax_100"] <= 0.025, r
    assert r["iterations_100"] <= 4  # quadratic: |R| 8.8e-4, 1.3e-5, 1.9e-9, 1.4e-16


def test_stokes_flow_example_reproduces_poiseuille_with_an_outflow():
    # Quadratic velocity, linear pressure: both pairs are exact; the do-nothing outflow fixes the pressure
    # (pressure=None: no pin, no error, since the velocity is not prescribed on the whole boundary).
    r = _example("stokes_flow").main(n=2)
    for k in ("P2P1", "spline"):
        assert r[f"{k}_u_error"] < 1e-9 and r[f"{k}_p_error"] < 1e-8, r
        assert abs(r[f"{k}_drop"] - 8 * 0.5 * 3.0) < 1e-8


@pytest.mark.slow
def test_lid_driven_cavity_re_1000_by_continuation():
    # Re 100 -> 400 -> 1000 on 64 x 64 elements: u 2.3 %, v 2.2 % of the lid speed from Ghia's table (1.5 %
    # on 96 x 96); Newton converges at every step (3, 4, 6 iterations).
    r = _example("lid_driven_cavity").main(n=64, re=(100, 400, 1000))
    assert r["u_error_1000"] <= 0.03 and r["v_error_1000"] <= 0.03, r
    assert max(r["iterations_100"], r["iterations_400"], r["iterations_1000"]) <= 8
