"""The native CPU kernels of interpolate against the pure-JAX path (and SciPy): values, every derivative
that JAX can take (grad in y, x and x_new; jvp; jacfwd; second order), vmap, float32, point order."""

import os
import re
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from igax import _native
from igax.bases import interp

pytestmark = pytest.mark.skipif(not _native.available(), reason=f"native kernels: {_native.reason()}")

CASES = [
    (1, None),
    (3, "not-a-knot"),
    (3, "natural"),
    (3, "clamped"),
    (3, ("clamped", "not-a-knot")),
    (3, ("not-a-knot", "natural")),
]


def _data(n, seed, m=37, r=2, shuffle=False):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.uniform(0.2, 1.8, n))
    y = rng.standard_normal((n, r))
    xq = np.linspace(x[0] - 0.4, x[-1] + 0.4, m)  # extrapolation at both ends, points on the sites too
    xq[m // 2] = x[n // 2]
    if shuffle:
        xq = rng.permutation(xq)
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(xq)


def _both(degree, bc):
    bc = interp._validate(np.arange(5.0), np.zeros(5), np.zeros(1), degree, bc)

    def f(native):
        return lambda x, y, xq: interp._interpolate(
            x, y, xq, degree=degree, bc=bc, assume_sorted=False, native=native
        )

    # The pure path, spelled out (its tridiagonal solve is lax's gtsv, with forward- and reverse-mode rules).
    def pure_fwd(x, y, xq):
        r = interp._pure_interpolate(
            x, y.reshape(x.shape[0], -1), xq, degree=degree, bc=bc, solve=jax.lax.linalg.tridiagonal_solve
        )
        return r.reshape(xq.shape + y.shape[1:])

    return f(True), f(False), pure_fwd


def _close(a, b, tol=1e-11):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


@pytest.mark.parametrize(("degree", "bc"), CASES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_values_and_reverse_mode_match_pure_jax(degree, bc, shuffle):
    native, pure, _ = _both(degree, bc)
    for n, seed in ((4, 0), (7, 1), (30, 2)):
        x, y, xq = _data(n, seed, shuffle=shuffle)
        _close(jax.jit(native)(x, y, xq), pure(x, y, xq))
        w = jnp.asarray(np.random.default_rng(seed).standard_normal((xq.shape[0], y.shape[1])))
        loss = lambda f, w=w: jax.jit(jax.grad(lambda *a: jnp.sum(w * jnp.sin(f(*a))), argnums=(0, 1, 2)))
        for gn, gp in zip(loss(native)(x, y, xq), loss(pure)(x, y, xq), strict=True):
            _close(gn, gp, 1e-10)


def test_matches_scipy_and_sorted_equals_shuffled():
    x, y, xq = _data(50, 3, m=400)
    perm = np.random.default_rng(4).permutation(400)
    out = interp.interpolate(x, y, xq, bc_type="natural")
    np.testing.assert_allclose(np.asarray(out), CubicSpline(x, y, bc_type="natural")(xq), atol=1e-12)
    shuffled = interp.interpolate(x, y, xq[perm], bc_type="natural")  # galloping search instead of runs
    np.testing.assert_array_equal(np.asarray(shuffled), np.asarray(out)[perm])


@pytest.mark.parametrize(("degree", "bc"), [(1, None), (3, "not-a-knot"), (3, "clamped")])
def test_forward_mode_and_second_order(degree, bc):
    native, _, pure_fwd = _both(degree, bc)
    x, y, xq = _data(9, 5, m=15)
    rng = np.random.default_rng(6)
    tangents = tuple(jnp.asarray(rng.standard_normal(a.shape)) * s for a, s in ((x, 0.05), (y, 1), (xq, 1)))
    _, tn = jax.jvp(native, (x, y, xq), tangents)
    _, tp = jax.jvp(pure_fwd, (x, y, xq), tangents)
    _close(tn, tp, 1e-10)
    # jacfwd in y is the matrix of the linear map; jacrev equals it
    jf = jax.jacfwd(native, argnums=1)(x, y, xq)
    jr = jax.jacrev(native, argnums=1)(x, y, xq)
    _close(jf, jr, 1e-13)
    # second order: Hessian of a scalar loss in the sites (reverse over forward through the kernels); one
    # case, as the pure reference compiles slowly
    if bc == "clamped":
        loss = lambda f: lambda x: jnp.sum(jnp.cos(xq) * f(x, y, xq)[:, 0] ** 2)
        _close(jax.hessian(loss(native))(x), jax.hessian(loss(pure_fwd))(x), 1e-9)
    # and the gradient of a gradient in the values (linear map: the Hessian in y is 2 J^T J)
    hy = jax.hessian(lambda y: jnp.sum(native(x, y, xq) ** 2))(y)
    jm = jf.reshape(xq.shape[0] * 2, 9 * 2)
    _close(hy.reshape(18, 18), 2 * jm.T @ jm, 1e-12)


def test_gradient_matches_finite_differences_in_sites():
    native, _, _ = _both(3, "not-a-knot")
    x, y, xq = _data(8, 7, m=25)
    f = jax.jit(lambda x: jnp.sum(jnp.sin(native(x, y, xq))))
    g = np.asarray(jax.grad(f)(x))
    for i in range(8):
        e = np.zeros(8)
        e[i] = 1e-6
        fd = (float(f(x + e)) - float(f(x - e))) / 2e-6
        assert abs(fd - g[i]) < 1e-6 * (1 + abs(g[i]))


def test_vmap_nested_and_mixed_batching():
    native, pure, _ = _both(3, "natural")
    x, y, xq = _data(12, 8, m=20)
    Y = jnp.stack([y, 2 * y, -y])
    X = x[None] + 0.05 * jnp.arange(3.0)[:, None]
    for axes, xs in (((None, 0, None), x), ((0, 0, None), X)):
        _close(jax.vmap(native, in_axes=axes)(xs, Y, xq), jax.vmap(pure, in_axes=axes)(xs, Y, xq))
    # nested vmap with different batched arguments at each level, and vmap of grad
    nested = jax.vmap(jax.vmap(native, in_axes=(None, 0, None)), in_axes=(0, None, None))(X, Y, xq)
    ref = jnp.stack([jnp.stack([pure(X[i], Y[j], xq) for j in range(3)]) for i in range(3)])
    _close(nested, ref)
    g = lambda f: jax.vmap(jax.grad(lambda x, y: jnp.sum(f(x, y, xq) ** 3), argnums=(0, 1)))(X, Y)
    for a, b in zip(g(native), g(pure), strict=True):
        _close(a, b, 1e-10)


def test_float32_agrees_with_float64():
    x, y, xq = _data(40, 9, m=300)
    out64 = interp.interpolate(x, y, xq)
    out32 = interp.interpolate(*(a.astype(jnp.float32) for a in (x, y, xq)))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out32), np.asarray(out64), atol=2e-5 * float(jnp.abs(out64).max()))
    g32 = jax.grad(lambda y: jnp.sum(interp.interpolate(x.astype(jnp.float32), y, xq.astype(jnp.float32))))(
        y.astype(jnp.float32)
    )
    g64 = jax.grad(lambda y: jnp.sum(interp.interpolate(x, y, xq)))(y)
    assert g32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g32), np.asarray(g64), atol=1e-4 * float(jnp.abs(g64).max()))


def test_gradient_in_values_is_one_custom_call():
    x, y, xq = _data(64, 10, m=640, r=1)
    f = jax.jit(jax.grad(lambda y: jnp.sum(interp.interpolate(x, y, xq))))
    hlo = f.lower(y).compile().as_text()
    assert hlo.count("igax_interp_transpose") == 1 and "igax_interp_forward" not in hlo


def test_turned_off_falls_back_to_pure_jax():
    code = (
        "import jax, jax.numpy as jnp; jax.config.update('jax_enable_x64', True)\n"
        "from igax import _native; from igax.bases import interpolate\n"
        "x = jnp.linspace(0., 1., 9); out = interpolate(x, jnp.sin(x), jnp.array([0.3]))\n"
        "hlo = jax.jit(lambda y: interpolate(x, y, x)).lower(x).compile().as_text()\n"
        "print(_native.available(), _native.reason(), 'igax_interp' in hlo, float(out[0]))\n"
    )
    env = dict(os.environ, IGAX_NATIVE="0", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    avail, *reason, in_hlo, value = res.stdout.split()
    assert avail == "False" and "IGAX_NATIVE" in " ".join(reason) and in_hlo == "False"
    sites = np.linspace(0, 1, 9)
    assert abs(float(value) - float(CubicSpline(sites, np.sin(sites))(0.3))) < 1e-12


def test_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    code = (
        "import warnings, jax, jax.numpy as jnp\n"
        "from igax.bases import interpolate\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    out = interpolate(jnp.linspace(0., 1., 9), jnp.linspace(0., 1., 9) ** 2, jnp.array([0.5]))\n"
        "print(len([x for x in w if 'native CPU kernels' in str(x.message)]), float(out[0]))\n"
    )
    env = dict(os.environ, CXX="no-such-compiler-xyz", IGAX_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    env.pop("IGAX_NATIVE", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    nwarn, value = res.stdout.split()
    assert nwarn == "1" and abs(float(value) - 0.25) < 1e-6


def test_non_cpu_lowering_functions_equal_the_kernels():
    # On a GPU the primitives lower to these pure-JAX functions; check them here against the CPU kernels.
    from igax.bases import _interp_native as nat

    x, y, xq = _data(10, 11, m=23)
    g = jnp.asarray(np.random.default_rng(12).standard_normal((23, 2)))
    for degree, left, right in ((1, 0, 0), (3, 0, 0), (3, 1, 2)):
        p = dict(degree=degree, left=left, right=right)
        _close(nat._pure(x, xq, y, **p), nat.interp_apply_p.bind(x, xq, y, **p))
        _close(nat._pure_transpose(x, xq, g, **p), nat.interp_transpose_p.bind(x, xq, g, **p))
        # and the two kernels are each other's transpose: <L y, g> = <y, L^T g>
        lhs = jnp.vdot(nat.interp_apply_p.bind(x, xq, y, **p), g)
        rhs = jnp.vdot(y, nat.interp_transpose_p.bind(x, xq, g, **p))
        assert abs(float(lhs - rhs)) < 1e-12 * (1 + abs(float(lhs)))


def test_gpu_lowering_uses_no_native_target():
    # Lowering for CUDA needs no GPU: the primitives must lower to pure JAX there (cuSPARSE's gtsv), with no
    # custom call of the CPU kernels, for the forward pass, the gradient and a vmapped gradient in the sites.
    import re

    # check=False: the run-time value checks of the pure path are host callbacks, which jax.export cannot
    # serialise (see the docstring of interpolate).
    x, y, xq = _data(9, 13, m=30, r=1)
    y = y[:, 0]
    unchecked = partial(interp.interpolate, check=False)
    cases = {
        "forward": (jax.jit(lambda y: unchecked(x, y, xq)), (y,)),
        "grad": (jax.jit(jax.grad(lambda y: jnp.sum(unchecked(x, y, xq) ** 2))), (y,)),
        "vmap-grad-x": (
            jax.jit(jax.vmap(jax.grad(lambda x, y: jnp.sum(unchecked(x, y, xq) ** 2)), (None, 0))),
            (x, jnp.stack([y, 2 * y])),
        ),
    }
    for name, (f, args) in cases.items():
        module = jax.export.export(f, platforms=["cuda"])(*args).mlir_module()
        targets = set(re.findall(r"custom_call @(\w+)", module))
        assert not any(t.startswith("igax") for t in targets), (name, targets)
        assert "cusparse_gtsv2_ffi" in targets, (name, targets)


def test_disable_jit_export_and_the_native_switch():
    x, y, xq = _data(8, 14, m=9, r=1)
    y = y[:, 0]
    ref = CubicSpline(x, y)(xq)
    with jax.disable_jit():  # the primitives run the pure path instead of re-binding themselves
        np.testing.assert_allclose(np.asarray(interp.interpolate(x, y, xq)), ref, atol=1e-12)
        g = jax.grad(lambda y: jnp.sum(interp.interpolate(x, y, xq) ** 2))(y)
    _close(g, jax.grad(lambda y: jnp.sum(interp.interpolate(x, y, xq, native=False) ** 2))(y), 1e-12)
    # jax.export of a CPU program: refused with the kernel's custom call, fine with native=False (and
    # check=False: the pure path's run-time checks are host callbacks, which export cannot serialise)
    f = jax.jit(lambda y: interp.interpolate(x, y, xq, native=False, check=False))
    exported = jax.export.export(f, platforms=["cpu"])(y)
    np.testing.assert_allclose(np.asarray(exported.call(y)), ref, atol=1e-12)
    with pytest.raises(ValueError, match="custom calls"):
        jax.export.export(jax.jit(lambda y: interp.interpolate(x, y, xq)), platforms=["cpu"])(y)
    with pytest.raises(ValueError, match="native=True, but the native kernel does not apply"):
        interp.interpolate(x, y, xq, degree=2, native=True)
    with pytest.raises(ValueError, match="native must be None, True or False"):
        interp.interpolate(x, y, xq, native="yes")


@pytest.mark.parametrize("degree", [2, 3])
def test_pure_path_has_forward_mode(degree):
    x, y, xq = _data(9, 15, m=11, r=1)
    f = lambda y: interp.interpolate(x, y, xq, degree=degree, native=False)
    jf = jax.jacfwd(f)(y)
    jr = jax.jacrev(f)(y)
    _close(jf, jr, 1e-13)
    _, t = jax.jvp(
        lambda x: interp.interpolate(x, y, xq, degree=degree, native=False), (x,), (jnp.ones_like(x),)
    )
    # shifting sites and points together leaves the interpolant's values at shifted points unchanged:
    # d/ds f(x + s, xq + s) = 0, so the x-tangent equals minus the xq-tangent
    _, tq = jax.jvp(
        lambda q: interp.interpolate(x, y, q, degree=degree, native=False), (xq,), (jnp.ones_like(xq),)
    )
    _close(t, -tq, 1e-10)


def test_vmap_over_values_folds_the_batch_into_one_call():
    x, y, xq = _data(12, 16, m=20, r=1)
    Y = jnp.stack([y[:, 0] * s for s in (1.0, -2.0, 0.5)])  # (3, n)
    f = jax.jit(jax.vmap(lambda y: interp.interpolate(x, y, xq)))
    hlo = f.lower(Y).compile().as_text()
    # one forward call on (n, 3) columns, not three batched solves
    assert re.search(r"f64\[20,3\]\S* custom-call\(", hlo) and hlo.count("igax_interp_forward") == 1
    _close(f(Y), jnp.stack([interp.interpolate(x, Yb, xq, native=False) for Yb in Y]))
    g = jax.jit(jax.vmap(jax.grad(lambda y: jnp.sum(jnp.sin(interp.interpolate(x, y, xq))))))(Y)
    gp = jnp.stack(
        [jax.grad(lambda y: jnp.sum(jnp.sin(interp.interpolate(x, y, xq, native=False))))(Yb) for Yb in Y]
    )
    _close(g, gp, 1e-10)


def test_a_broken_cached_library_is_rebuilt(tmp_path):
    code = (
        "from igax import _native\n"
        "path = _native._build()\n"
        "open(path, 'wb').write(b'not a library')\n"  # truncated or foreign file in the cache
        "_native._state.clear()\n"
        "print(_native.available(), open(path, 'rb').read(4) == b'\\x7fELF')\n"
    )
    env = dict(os.environ, IGAX_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu")
    env.pop("IGAX_NATIVE", None)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True"]
