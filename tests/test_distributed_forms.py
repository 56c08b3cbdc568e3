"""igax.fem forms assembled into the devices' row blocks (``igax.fem.distributed.SpaceRowBlocks``), and the
element matrices they are built from (``fem.element_matrices``).

The checks on 4 simulated devices run in a subprocess (``tests/distributed_checks.py 4 forms``, started with
the module; a process's device count is fixed when JAX starts) and print their numbers as JSON; the
assertions are here. The element matrices are checked in this process.
"""

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from compile_count import compilations as _compilations
from test_distributed import CHECKS, _env, _result

from igax import fem
from igax.fem import library
from igax.fem.distributed import SpaceRowBlocks


@pytest.fixture(scope="module", autouse=True)
def _four_devices():
    """The 4-device process, started before this module's first test: it compiles while the in-process
    tests run (they come first in the file)."""
    p = subprocess.Popen(
        [sys.executable, str(CHECKS), "4", "forms"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    yield p
    if p.poll() is None:
        p.kill()


@pytest.fixture(scope="module")
def rows(_four_devices):
    out, err = _four_devices.communicate(timeout=600)
    assert _four_devices.returncode == 0, err[-3000:]
    return _result(out, err)["form_rows"]


# -- in this process ---------------------------------------------------------------------------------------
def _scattered(K, dofs, n):
    """The sparse matrix of element matrices K summed into the rows and columns dofs."""
    m = dofs.shape[1]
    rows = np.repeat(dofs, m, axis=1).ravel()
    cols = np.tile(dofs, (1, m)).ravel()
    return sp.coo_matrix((np.asarray(K).ravel(), (rows, cols)), shape=(n, n)).tocsr()


@pytest.mark.parametrize("case", ["p1-field", "spline-callable", "elasticity2d", "p2-points-array"])
def test_element_matrices_sum_to_assemble(case):
    if case == "p1-field":
        V = fem.LagrangeSpace(fem.unit_square(4), degree=1)
        form, inputs = library.diffusion, {"kappa": fem.Field(V, 1.0 + jnp.arange(V.ndofs) / V.ndofs)}
    elif case == "spline-callable":
        V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=(4, 3)))
        form, inputs = library.diffusion, {"kappa": lambda x: 1.0 + x[0] * x[1]}
    elif case == "elasticity2d":
        V = fem.LagrangeSpace(fem.unit_square(3), shape=(2,))
        form, inputs = library.linear_elasticity(1.0, 0.3), {}
    else:  # two inputs: values at the quadrature points, and a Field on a space of another degree
        V = fem.LagrangeSpace(fem.unit_square(3), degree=2)
        W = fem.LagrangeSpace(fem.unit_square(3), degree=1)
        q = np.asarray(V.quadrature_points())
        kernel = lambda u, v, w: (w.a + w.b.value) * jnp.dot(u.grad, v.grad)  # noqa: E731
        form = fem.bilinear_form(kernel, symmetric=True)
        inputs = {
            "a": jnp.asarray(1.0 + q[..., 0] ** 2),
            "b": fem.Field(W, 2.0 + jnp.sin(jnp.arange(W.ndofs))),
        }
    A = fem.assemble(form, V, **inputs)
    K = fem.element_matrices(form, V, **inputs)
    dofs = fem.element_dofs(V)
    assert K.shape == (V.nel,) + (dofs.shape[1],) * 2
    x = np.random.default_rng(0).normal(size=V.ndofs)
    ref = np.asarray(A @ jnp.asarray(x))
    np.testing.assert_allclose(_scattered(K, dofs, V.ndofs) @ x, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    ids = np.array([2, 0, V.nel - 1, 2])  # any order, repeats allowed
    Ks = fem.element_matrices(form, V, ids, **inputs)
    np.testing.assert_allclose(Ks, np.asarray(K)[ids], rtol=1e-14, atol=1e-14)
    if case in ("p1-field", "p2-points-array"):  # traced element ids (as inside shard_map)
        traced = jax.jit(lambda e: fem.element_matrices(form, V, e, **inputs))(jnp.asarray(ids))
        np.testing.assert_allclose(traced, np.asarray(K)[ids], rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(fem.element_dofs(V, ids), dofs[ids])


def test_element_matrices_gradient_in_kappa_and_geometry():
    V = fem.LagrangeSpace(fem.unit_square(3), degree=1)
    ids = jnp.asarray([1, 4, 7])
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 3)))

    def f(c, pts):
        Vp = eqx.tree_at(lambda s: s.points, V, pts)  # the same space with moved nodes
        return jnp.sum(w * fem.element_matrices(library.diffusion, Vp, ids, kappa=fem.Field(Vp, c)))

    c0, p0 = 1.0 + jnp.arange(V.ndofs) / V.ndofs, V.points
    gc, gp = jax.jit(jax.grad(f, argnums=(0, 1)))(c0, p0)
    rng = np.random.default_rng(2)
    dc, dp = jnp.asarray(rng.normal(size=c0.shape)), jnp.asarray(rng.normal(size=p0.shape)) * 0.1
    # central differences along (dc, dp): a Taylor remainder of order h^2 (the kappa part is exact: linear)
    fj, slope = jax.jit(f), float(jnp.vdot(gc, dc) + jnp.vdot(gp, dp))
    errs = [
        abs((fj(c0 + h * dc, p0 + h * dp) - fj(c0 - h * dc, p0 - h * dp)) / (2 * h) - slope)
        for h in (2e-3, 1e-3)
    ]
    assert errs[1] < 1e-5 * abs(slope) and 3.0 < errs[0] / errs[1] < 5.0, (errs, slope)


def test_element_matrices_bad_input_is_named():
    V = fem.LagrangeSpace(fem.unit_square(2), degree=1)
    with pytest.raises(TypeError, match="bilinear form"):
        fem.element_matrices(library.source, V, f=1.0)
    with pytest.raises(ValueError, match=r"elements must lie in \[0, 8\)"):
        fem.element_matrices(library.laplace, V, [0, 8])
    with pytest.raises(ValueError, match="1D array of element ids"):
        fem.element_matrices(library.laplace, V, np.zeros((2, 2), int))
    with pytest.raises(TypeError, match="does not take"):
        fem.element_matrices(library.laplace, V, kappa=1.0)
    with pytest.raises(ValueError, match="boundary form"):
        fem.element_matrices(library.robin, V, alpha=1.0)
    S = SpaceRowBlocks(V)
    W = fem.LagrangeSpace(fem.unit_square(3), degree=1)
    with pytest.raises(ValueError, match="bc must be a DirichletBC on the space"):
        S.condense(None, jnp.zeros(V.ndofs), fem.DirichletBC(W, None, 0.0))
    with pytest.raises(ValueError, match="space must be the space this SpaceRowBlocks was built on"):
        S.assemble_form(library.laplace, W)


def test_row_blocks_called_eagerly_compile_once():
    # Before, each eager call built new programs: assemble 1, solve about 60, matvec about 20 compilations.
    from igax.solvers.row_blocks import RowBlockSystem

    edofs = np.stack([np.arange(8), np.arange(1, 9)], axis=1)  # 8 P1 elements on [0, 1]
    S = RowBlockSystem(edofs, 9)
    kernel = lambda k: k * 8.0 * jnp.array([[1.0, -1.0], [-1.0, 1.0]]) + jnp.eye(2) / 16  # noqa: E731
    b = jnp.full(9, 1 / 8).at[jnp.array([0, 8])].set(1 / 16)
    counts = []
    for k in (1.0, 2.0, 3.0):
        with _compilations() as n:
            vals = S.assemble(kernel, jnp.full(8, k))
            u = S.solve(vals, b, rtol=1e-12)
            Au = S.matvec(vals, u)
        counts.append(n())
        # -(k u')' + u = 1 with natural ends: u = 1, and A u = b
        np.testing.assert_allclose(u, 1.0, atol=1e-10)
        np.testing.assert_allclose(Au, b, atol=1e-12)
    assert counts[0] > 0 and counts[1:] == [0, 0], counts

    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
    R = SpaceRowBlocks(V)
    bc = fem.DirichletBC(V, None, 0.0)
    f = fem.assemble(library.source, V, f=1.0)
    kappa = lambda x: 1 + x[0]  # noqa: E731
    ref = fem.solve(fem.assemble(library.diffusion, V, kappa=kappa), f, bc=bc).coeffs
    counts = []
    for _ in range(3):
        with _compilations() as n:
            u = R.solve_bc(R.assemble_form(library.diffusion, kappa=kappa), f, bc, rtol=1e-12)
        counts.append(n())
        np.testing.assert_allclose(u, ref, atol=1e-10)
    assert counts[0] > 0 and counts[1:] == [0, 0], counts


def test_row_blocks_are_freed_on_del_without_the_garbage_collector():
    # The kept programs must not hold the system: with a reference cycle through its cache, a system and its
    # sharded arrays outlived `del` until gc.collect() (the cyclic collector is off here, so only reference
    # counts free them).
    import gc
    import weakref

    from igax.solvers.row_blocks import RowBlockSystem

    edofs = np.stack([np.arange(8), np.arange(1, 9)], axis=1)
    kernel = lambda k: k * jnp.array([[1.0, -1.0], [-1.0, 1.0]]) + jnp.eye(2)  # noqa: E731
    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=3))
    bc = fem.DirichletBC(V, None, 0.0)
    f = fem.assemble(library.source, V, f=1.0)
    kappa = lambda x: 1 + x[0]  # noqa: E731
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        S = RowBlockSystem(edofs, 9)
        vals = S.assemble(kernel, jnp.ones(8))
        x = S.solve(vals, jnp.ones(9), rtol=1e-12)
        np.testing.assert_allclose(S.matvec(vals, x), 1.0, atol=1e-10)  # every kept program was built
        R = SpaceRowBlocks(V)
        u = R.solve_bc(R.assemble_form(library.diffusion, kappa=kappa), f, bc, rtol=1e-12)
        assert len(S._programs) >= 3 and len(R._programs) >= 3  # assembly, product and solve
        refs = [weakref.ref(S), weakref.ref(S._elems), weakref.ref(R), weakref.ref(R._target)]
        del S, R
        assert [r() is None for r in refs] == [True] * 4
    finally:
        if enabled:
            gc.enable()
    ref = fem.solve(fem.assemble(library.diffusion, V, kappa=kappa), f, bc=bc).coeffs
    np.testing.assert_allclose(u, ref, atol=1e-10)


def test_row_blocks_keep_one_program_per_assembly():
    # An assembly is one cache entry (its element function and compiled program under one key): two kernels
    # fit a cache of 2 and are compiled once each. Before, each took two entries, and the least recently
    # used eviction dropped halves, so alternating kernels compiled again each time.
    from igax.solvers.row_blocks import RowBlockSystem

    edofs = np.stack([np.arange(4), np.arange(1, 5)], axis=1)
    S = RowBlockSystem(edofs, 5)
    S._MAX_PROGRAMS = 2
    K = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
    kernels = {c: (lambda k, c=c: c * k * K + jnp.eye(2)) for c in (2.0, 3.0)}
    counts = []
    for c in (2.0, 3.0, 2.0, 3.0):
        with _compilations() as n:
            vals = S.assemble(kernels[c], jnp.ones(4))
        counts.append(n())
        # an interior diagonal entry: two elements' c + 1
        assert float(vals.max()) == pytest.approx(2 * c + 2), c
    assert counts[0] > 0 and counts[2:] == [0, 0], counts
    assert len(S._programs) == 2


# -- on 4 devices ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["p1", "spline2", "elasticity2d", "elasticity3d"])
def test_row_block_assembly_of_forms_equals_assemble(rows, name):
    r = rows[name]
    assert r["err_matvec"] < 1e-12, r  # A x from the blocks against fem.assemble's matrix
    assert r["err_solve"] < 1e-8, r  # sharded CG with the Dirichlet condition against fem.solve (SuperLU)
    # the values exist only as the 4 devices' blocks, and the assembly program moves nothing between devices
    assert r["values_devices"] == 4 and r["values_shape"][0] == 4 and r["assembly_collectives"] == 0, r
    # interface elements are computed by both of their devices: more than the mesh has, never fewer
    assert r["elements"] < r["elements_computed"] <= 4 * r["elements"], r


def test_row_block_gradients_equal_single_device(rows):
    r = rows["p1"]
    assert r["grad_kappa_err"] < 1e-7 and r["grad_geometry_err"] < 1e-7, r
    assert r["grad_all_gather_bytes"] == [], r  # nothing is gathered in the gradient program


def test_row_blocks_deepcopy_without_their_kept_programs():
    # The kept programs and their lock are a cache: a deep copy leaves them out (a lock does not copy; before
    # the lock, copy.deepcopy worked and must still). (Pickling fails on the mesh's devices, as before.)
    import copy

    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=3))
    S = SpaceRowBlocks(V)
    A = np.asarray(S.assemble_form(library.laplace, V))
    T = copy.deepcopy(S)
    assert len(T._programs) == 0
    np.testing.assert_array_equal(np.asarray(T.assemble_form(library.laplace, T.space)), A)
