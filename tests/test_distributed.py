"""Beyond one device: sharded batches (``batch_map``) and the sharded solve (``method="dist-cg"``).

The checks on several devices run in subprocesses (``tests/distributed_checks.py``), because a process's
device count is fixed when JAX starts: one process with 4 simulated CPU devices for the solves, gradients,
HLO and batches, and two processes of 4 devices each joined by ``jax.distributed`` (8 devices on localhost)
for the multi-host solve. A third process (``-m slow``) checks the row-block assembly, ``minimize`` and
``make_dataset`` over the devices, and plain ``jit`` over a sharded batch. Each prints its numbers as JSON;
the assertions are here. The partition's index work and the one-device paths are tested in this process.
"""

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from igax import fem, solvers
from igax.fem import library
from igax.solvers.distributed import batch_map, device_mesh, loop_communication, partition

CHECKS = Path(__file__).with_name("distributed_checks.py")
ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _result(stdout: str, stderr: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT line; stderr tail:\n{stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def _launch():
    """Start the three processes at once (their compilations overlap): 4 devices; 2 x 4 joined."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    run = functools.partial(
        subprocess.Popen, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    main = run([sys.executable, str(CHECKS), "4", "main"])
    hosts = [run([sys.executable, str(CHECKS), "4", "multihost", str(i), port]) for i in range(2)]
    return main, hosts


def _collect(p) -> dict:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    return _result(out, err)


@pytest.fixture(scope="module")
def processes():
    procs = _launch()
    yield procs
    for p in (procs[0], *procs[1]):
        if p.poll() is None:
            p.kill()


@pytest.fixture(scope="module")
def more():
    """The longer checks (optimisation and datasets over the devices, row-block assembly), 4 devices."""
    p = subprocess.Popen(
        [sys.executable, str(CHECKS), "4", "more"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    return _collect(p)


@pytest.fixture(scope="module")
def four(processes):
    """The checks of one process with 4 simulated devices."""
    return _collect(processes[0])


@pytest.fixture(scope="module")
def multihost(processes):
    """Two processes of 4 devices each, joined by jax.distributed on localhost: 8 devices."""
    return [_collect(p) for p in processes[1]]


# -- the sharded solve ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["p1", "spline2", "elasticity3d"])
def test_sharded_solve_equals_single_device(four, name):
    r = four[name]
    assert four["devices"] == 4 and r["status"] == 0
    assert r["err_vs_cg"] < 1e-8 and r["err_vs_direct"] < 1e-8, r
    # same loop, same pointwise Jacobi preconditioner: the iteration counts agree (10% allowed for rounding)
    assert abs(r["iterations"] - r["iterations_cg"]) <= 0.1 * r["iterations_cg"], r
    assert r["sharding_devices"] == 4  # the solution is left where the row blocks are


def test_partitions_of_2d_problems_talk_to_neighbours_only(four):
    # a 2D mesh in RCM order and a spline patch in its lexicographic order: blocks couple to d - 1, d + 1
    assert four["p1"]["ordering"] == "rcm" and four["p1"]["offsets"] == [-1, 1]
    assert four["spline2"]["ordering"] == "natural" and four["spline2"]["offsets"] == [-1, 1]


def test_sharded_solve_gradient(four):
    g = four["gradient"]
    assert g["err_vs_direct"] < 1e-7, g
    assert g["err_vs_fd"] < 1e-7, g


def test_sharded_solve_loop_communicates_halos_and_scalars_only(four):
    h = four["hlo"]
    assert h["cg_loops"] == 1, h
    # two offsets, one product per iteration plus the residual recomputed in a branch: 4 permutes whose
    # bytes are twice the counted halo of one product
    assert h["permutes"] == [4] and h["permute_bytes"] == [2 * h["halo_bytes_counted"]], h
    assert h["all_reduces"] == [2], h  # the inner products: p.Ap, then r.z with r.r (one psum each)
    assert h["all_gathers_in_loops"] == 0, h


def test_sharded_solve_across_two_processes(multihost):
    for r in multihost:
        assert r["devices"] == 8
        for name in ("p1", "elasticity3d"):
            s = r[name]
            assert s["processes"] == 2 and s["err_vs_cg"] < 1e-8, s
            assert abs(s["iterations"] - s["iterations_cg"]) <= 0.1 * s["iterations_cg"], s


@pytest.mark.slow
def test_row_block_assembly_and_solve(more):
    r = more["row_blocks"]
    assert r["status"] == 0 and r["err_vs_direct"] < 1e-8, r
    assert r["grad_err_vs_direct"] < 1e-7 and r["grad_err_vs_fd"] < 1e-7, r
    # the values exist only as the devices' blocks, and no collective gathers anything in the gradient
    assert r["values_devices"] == 4 and r["values_shape"][0] == 4 and r["all_gathers"] == 0, r
    # interface elements are computed by both devices: a few more than the mesh has, never fewer
    assert r["elements"] <= r["elements_computed"] < 1.3 * r["elements"], r


# -- sharded batches -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["superlu", "cg"])
def test_batch_map_equals_vmap_and_stays_sharded(four, method):
    r = four["batch"][method]
    assert r["err_value"] < 1e-12 and r["err_grad"] < 1e-12, r
    assert r["spec"] == "P('devices',)" and r["devices"] == 4 and r["shards"] == [2, 2, 2, 2], r
    assert r["all_gathers"] == 0, r  # each device solved its own slice (host callbacks included)


@pytest.mark.slow
def test_plain_jit_over_a_sharded_batch_gives_the_same_numbers(more):
    assert more["plain_jit"]["err"] < 1e-12


@pytest.mark.slow
def test_minimize_over_a_sharded_ensemble(more):
    m = more["minimize"]
    assert m["err_x"] < 1e-12 and abs(m["fun"] - m["fun_plain"]) <= 1e-12 * abs(m["fun_plain"]), m


@pytest.mark.slow
def test_make_dataset_over_the_devices(more):
    d = more["dataset"]
    assert d["err"] < 1e-12 and d["shape"] == [11, 12], d


# -- in this process -----------------------------------------------------------------------------------------
def _halo_product(part, A, x):
    """The product of every block, computed from the partition's arrays as the devices do (NumPy)."""
    vals = np.concatenate([A.data, [0.0, 1.0]])
    xp = np.concatenate([x, [0.0]])[part.perm].reshape(part.ndev, part.nloc)
    y = np.zeros_like(xp)
    for d in range(part.ndev):
        ext = [xp[d]]
        for i, o in enumerate(part.offsets):  # device d + o sends part.send[i][d + o] to d
            w = part.widths[i]
            ext.append(xp[d + o][part.send[i][d + o]] if 0 <= d + o < part.ndev else np.zeros(w))
        xe = np.concatenate(ext)
        y[d] = (vals[part.slots[d]] * xe[part.cols[d]]).sum(axis=1)
    return y.reshape(-1)[part.iperm]


@pytest.mark.parametrize("ordering", ["natural", "rcm", "auto"])
@pytest.mark.parametrize("ndev", [1, 3, 4])
def test_partition_reproduces_the_product(ordering, ndev):
    V = fem.LagrangeSpace(fem.unit_square(7), degree=2)
    A = fem.assemble(library.laplace, V)
    K = sp.csr_matrix((np.asarray(A.values), A.pattern.indices, A.pattern.indptr), shape=A.shape)
    part = partition(A.pattern, ndev, ordering)
    x = np.random.default_rng(ndev).normal(size=A.shape[0])
    np.testing.assert_allclose(_halo_product(part, K, x), K @ x, rtol=1e-13, atol=1e-13)
    assert part.nloc * ndev >= A.shape[0] > part.nloc * (ndev - 1)
    assert sorted(part.perm[part.perm < A.shape[0]]) == list(range(A.shape[0]))
    assert (part.ghosts == 0).all() if ndev == 1 else part.ghosts.max() > 0


def test_rcm_reduces_the_halo_of_a_shuffled_mesh():
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (60, 60)).tocsr()
    p = np.random.default_rng(0).permutation(60)
    A = solvers.SparseMatrix.from_scipy(K[p][:, p].tocsr())
    natural, rcm = partition(A.pattern, 4, "natural"), partition(A.pattern, 4, "rcm")
    assert rcm.halo_entries() == 6  # a chain in 4 blocks: 3 cuts, one ghost each way
    assert natural.halo_entries() > 6 * 3 and partition(A.pattern, 4, "auto") is not natural


def test_dist_cg_on_one_device_is_cg():
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=8))
    A, b = fem.DirichletBC(V, None, 0.0).condense(
        fem.assemble(library.laplace, V), fem.assemble(library.source, V, f=1.0)
    )
    r = solvers.linear_solve(A, b, method="dist-cg", rtol=1e-12)
    ref = solvers.linear_solve(A, b, method="cg", rtol=1e-12)
    np.testing.assert_allclose(r.value, ref.value, rtol=1e-12, atol=1e-14)
    assert int(r.iterations) == int(ref.iterations)
    f = jax.jit(lambda v: solvers.solve(A.with_values(v), b, method="dist-cg"))
    loops = loop_communication(f.lower(A.values).compile().as_text())
    assert loops and all(lp["all-gather"]["count"] == 0 for lp in loops)


def test_dist_cg_under_vmap():
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (30, 30)).tocsr()
    A = solvers.SparseMatrix.from_scipy(K, symmetric=True, positive_definite=True)
    B = jnp.asarray(np.random.default_rng(0).normal(size=(3, 30)))
    X = jax.vmap(lambda b: solvers.solve(A, b, method="dist-cg", rtol=1e-12))(B)  # right-hand sides
    np.testing.assert_allclose(X, np.linalg.solve(K.toarray(), np.asarray(B).T).T, rtol=1e-10, atol=1e-12)
    V = jnp.stack([A.values, 2 * A.values])  # matrices of one pattern
    Y = jax.vmap(lambda v: solvers.solve(A.with_values(v), B[0], method="dist-cg", rtol=1e-12))(V)
    np.testing.assert_allclose(2 * Y[1], Y[0], rtol=1e-10, atol=1e-12)


def test_dist_cg_reports_failure_like_cg():
    K = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], (40, 40)).tocsr()
    A = solvers.SparseMatrix.from_scipy(K, symmetric=True, positive_definite=True)
    r = solvers.linear_solve(A, jnp.ones(40), method="dist-cg", maxiter=3, throw=False)
    assert int(r.status) == 2 and int(r.iterations) == 3 and bool(jnp.isnan(r.value).all())
    with pytest.raises(solvers.SolverError, match=r'method="dist-cg".*did not converge.*iterations 3'):
        solvers.solve(A, jnp.ones(40), method="dist-cg", maxiter=3)


def test_bad_options_are_named():
    A = solvers.SparseMatrix.from_scipy(sp.eye(4, format="csr"), symmetric=True, positive_definite=True)
    b = jnp.ones(4)
    with pytest.raises(ValueError, match="ordering must be one of"):
        solvers.solve(A, b, method="dist-cg", ordering="metis")
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        solvers.solve(A, b, method="dist-cg", mesh="gpu")
    two_axes = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="mesh must have one axis"):
        solvers.solve(A, b, method="dist-cg", mesh=two_axes)
    with pytest.raises(ValueError, match="applies only to"):
        solvers.solve(A, b, method="cg", mesh=device_mesh())
    with pytest.raises(ValueError, match="devices=99"):
        device_mesh(99)
    with pytest.raises(ValueError, match="in_axes entries must be 0 or None"):
        batch_map(lambda x: x, in_axes=(1,))(jnp.ones((2, 2)))
