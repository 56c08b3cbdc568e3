"""Topology optimisation pieces: density filter, OC update, SIMP compliance against a NumPy Q1 reference."""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from demo_runs import tiny

from igax import fem, inverse
from igax.fem import library
from igax.inverse._jitcache import value_and_grad_flat
from igax.inverse.topology import DensityFilter, oc_update, simp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example():
    spec = importlib.util.spec_from_file_location("example_topology", EXAMPLES / "topology_optimization.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def grid_centroids(nx, ny):
    yy, xx = np.meshgrid(np.arange(ny) + 0.5, np.arange(nx) + 0.5, indexing="ij")
    return np.column_stack([xx.ravel(), yy.ravel()])


def test_density_filter():
    H = DensityFilter(grid_centroids(7, 5), rmin=1.5)
    # an interior element sees itself (weight 1.5), 4 edge neighbours (0.5) and 4 diagonal ones (1.5 - sqrt 2)
    e = np.zeros(35)
    e[2 * 7 + 3] = 1.0
    total = 1.5 + 4 * 0.5 + 4 * (1.5 - np.sqrt(2))
    assert float(H(jnp.asarray(e))[2 * 7 + 3]) == pytest.approx(1.5 / total, rel=1e-13)
    np.testing.assert_allclose(H(jnp.ones(35)), 1.0, rtol=1e-14)  # constants are kept
    rng = np.random.default_rng(0)
    x, y = rng.random(35), rng.random(35)
    assert float(jnp.vdot(H(x), y)) == pytest.approx(float(jnp.vdot(x, H.transpose(y))), rel=1e-13)
    with pytest.raises(ValueError, match="rmin"):
        DensityFilter(grid_centroids(2, 2), 0.0)


def test_oc_update_meets_volume_and_move_limit():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 0.8, 50)
    dc = -rng.uniform(0.1, 3.0, 50)
    xn, lam = oc_update(x, dc, np.ones(50), np.mean, 0.45, move=0.1)
    assert np.mean(xn) == pytest.approx(0.45, abs=1e-9)
    assert np.all(np.abs(xn - x) <= 0.1 + 1e-12) and np.all((xn >= 0) & (xn <= 1)) and lam > 0


def numpy_q1_compliance(rho, penal, nelx, nely, load_dof, fixed):
    """Independent reference: plane-stress Q1 on unit squares, 2 x 2 Gauss, nodal dofs (2 n, 2 n + 1)."""
    nu = 0.3
    D = np.array([[1, nu, 0], [nu, 1, 0], [0, 0, (1 - nu) / 2]]) / (1 - nu**2)
    KE = np.zeros((8, 8))
    g = (0.5 - 0.5 / np.sqrt(3), 0.5 + 0.5 / np.sqrt(3))
    for xi in g:
        for eta in g:
            # corners (0,0), (1,0), (1,1), (0,1); derivatives of the bilinear shape functions
            dx = np.array([-(1 - eta), 1 - eta, eta, -eta])
            dy = np.array([-(1 - xi), -xi, xi, 1 - xi])
            B = np.zeros((3, 8))
            B[0, 0::2], B[1, 1::2], B[2, 0::2], B[2, 1::2] = dx, dy, dy, dx
            KE += 0.25 * B.T @ D @ B
    nodes = np.arange((nelx + 1) * (nely + 1)).reshape(nely + 1, nelx + 1)
    rows, cols, vals = [], [], []
    for ey in range(nely):
        for ex in range(nelx):
            n = [nodes[ey, ex], nodes[ey, ex + 1], nodes[ey + 1, ex + 1], nodes[ey + 1, ex]]
            edof = np.ravel([[2 * k, 2 * k + 1] for k in n])
            E = 1e-9 + rho[ey, ex] ** penal * (1 - 1e-9)
            rows.append(np.repeat(edof, 8))
            cols.append(np.tile(edof, 8))
            vals.append((E * KE).ravel())
    ndof = 2 * nodes.size
    K = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (ndof, ndof))
    free = np.setdiff1d(np.arange(ndof), fixed)
    f = np.zeros(ndof)
    f[load_dof] = -1.0
    u = np.zeros(ndof)
    u[free] = sla.spsolve(K[free][:, free].tocsc(), f[free])
    return float(f @ u)


def test_simp_compliance_matches_numpy_reference_and_taylor():
    mod = load_example()
    nelx, nely = 6, 3
    V, b, bcs, cen = mod.make_problem("mbb", nelx, nely)
    rho = np.random.default_rng(2).uniform(0.2, 1.0, (nely, nelx))
    x = jnp.asarray(rho[np.floor(cen[:, 1]).astype(int), np.floor(cen[:, 0]).astype(int)])
    form = library.linear_elasticity(E=None, nu=0.3, kind="plane_stress")

    def compliance(x):
        E = simp(x, 3.0)
        A = fem.assemble(form, V, E=jnp.broadcast_to(E[:, None], (E.shape[0], 4)))
        return jnp.dot(b, fem.solve(A, b, bc=bcs, method="superlu").coeffs)

    # the MBB supports in node numbering: u_x = 0 on the left edge, u_y = 0 at the bottom-right corner
    left = np.arange(nely + 1) * (nelx + 1)
    fixed = np.concatenate([2 * left, [2 * nelx + 1]])
    ref = numpy_q1_compliance(rho, 3.0, nelx, nely, 2 * (nely * (nelx + 1)) + 1, fixed)
    c = value_and_grad_flat(compliance, x)(x)[0]  # the compiled function taylor_test reuses
    assert float(c) == pytest.approx(ref, rel=1e-10)
    res = inverse.taylor_test(compliance, x)
    assert res.rate1 == pytest.approx(2.0, abs=0.1)


def test_mbb_example(tmp_path_factory):
    run = tiny("topology", tmp_path_factory)  # main(out=..., **tiny size), also read by test_cli
    out, tmp_path = run.result, run.out
    rho = out["density"]  # (nely, nelx), row 0 at the bottom
    # compliance has settled: the last 10 iterations lie within 1 % of the final value, and fell overall
    assert out["compliance_spread_last10"] < 0.01
    assert out["compliance_final"] < 0.3 * out["compliance_initial"]
    assert 0.0 <= out["density_min"] and out["density_max"] <= 1.0
    assert out["volume_fraction"] == pytest.approx(0.5, abs=1e-3)
    assert out["taylor_rate1"] == pytest.approx(2.0, abs=0.1)
    # the familiar half-MBB layout: a solid top chord from the load point, a solid bottom chord to the
    # support, void in the top-right and bottom-left corners between them, and diagonal members (holes)
    assert np.all(rho[-1, :18] > 0.9) and np.all(rho[0, 8:12] > 0.9) and rho[0, -1] > 0.8
    assert np.all(rho[-1, -5:] < 0.1) and np.all(rho[3:6, :2] < 0.1)
    assert np.mean(rho[3:7, 8:14] < 0.1) > 0.3
    assert (tmp_path / "topology_mbb.png").exists() and (tmp_path / "topology_mbb.vtu").exists()
    assert out["time_per_iteration_s"] > 0


@pytest.mark.slow
def test_cantilever_is_symmetric(tmp_path):
    mod = load_example()
    out = mod.main(out=str(tmp_path), problem="cantilever", nelx=16, nely=8, maxiter=25)
    rho = out["density"]
    # load at mid-height, clamped left edge: the optimum is mirror-symmetric about the mid-plane
    np.testing.assert_allclose(rho, rho[::-1], atol=1e-6)
    assert out["volume_fraction"] == pytest.approx(0.5, abs=1e-3)
    assert out["compliance_final"] < 0.5 * out["compliance_initial"]


@pytest.mark.slow
def test_mbb_lbfgsb_agrees_with_oc(tmp_path):
    mod = load_example()
    oc = mod.main(out=str(tmp_path), nelx=30, nely=10, maxiter=100)
    lb = mod.main(out=str(tmp_path), nelx=30, nely=10, maxiter=100, method="lbfgsb")
    assert lb["compliance_final"] == pytest.approx(oc["compliance_final"], rel=0.01)
    assert lb["volume_fraction"] == pytest.approx(0.5, abs=1e-3)
