"""The native CPU kernels of interpolate against the pure-JAX path (and SciPy): values, every derivative
that JAX can take (grad in y, x and x_new; jvp; jacfwd; second order), vmap, float32, point order; degrees
1, 2 and 3 (the quadratic's own conventions: knots, ends, extrapolation, at the end of the file)."""

import os
import re
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import CubicSpline, make_interp_spline

from igax import _native
from igax.layers import interp

pytestmark = pytest.mark.skipif(not _native.available(), reason=f"native kernels: {_native.reason()}")

CASES = [  # degree 2: test_quadratic_kernel_equals_pure_jax_to_1e12 below
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


@pytest.mark.parametrize(("degree", "bc"), [(1, None), (2, None), (3, "not-a-knot"), (3, "clamped")])
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


@pytest.mark.parametrize(("degree", "bc"), [(2, None), (3, "natural")])
def test_vmap_nested_and_mixed_batching(degree, bc):
    native, pure, _ = _both(degree, bc)
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


@pytest.mark.parametrize("degree", [2, 3])
def test_float32_agrees_with_float64(degree):
    x, y, xq = _data(40, 9, m=300)
    out64 = interp.interpolate(x, y, xq, degree=degree)
    out32 = interp.interpolate(*(a.astype(jnp.float32) for a in (x, y, xq)), degree=degree)
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out32), np.asarray(out64), atol=2e-5 * float(jnp.abs(out64).max()))
    x32, xq32 = x.astype(jnp.float32), xq.astype(jnp.float32)
    g32 = jax.grad(lambda y: jnp.sum(interp.interpolate(x32, y, xq32, degree=degree)))(y.astype(jnp.float32))
    g64 = jax.grad(lambda y: jnp.sum(interp.interpolate(x, y, xq, degree=degree)))(y)
    assert g32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g32), np.asarray(g64), atol=1e-4 * float(jnp.abs(g64).max()))


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_gradient_in_values_is_one_custom_call(degree):
    x, y, xq = _data(64, 10, m=640, r=1)
    f = jax.jit(jax.grad(lambda y: jnp.sum(interp.interpolate(x, y, xq, degree=degree))))
    hlo = f.lower(y).compile().as_text()
    assert hlo.count("igax_interp_transpose") == 1 and "igax_interp_forward" not in hlo


def test_turned_off_falls_back_to_pure_jax():
    code = (
        "import jax, jax.numpy as jnp; jax.config.update('jax_enable_x64', True)\n"
        "from igax import _native; from igax.layers import interpolate\n"
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
        "from igax.layers import interpolate\n"
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
    from igax.layers import _interp_native as nat

    x, y, xq = _data(10, 11, m=23)
    g = jnp.asarray(np.random.default_rng(12).standard_normal((23, 2)))
    for degree, left, right in ((1, 0, 0), (2, 0, 0), (3, 0, 0), (3, 1, 2)):
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
        interp.interpolate(x[:3], y[:3], xq, degree=2, native=True)  # the kernels need 4 sites
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


@pytest.mark.parametrize("degree", [2, 3])
def test_vmap_over_values_folds_the_batch_into_one_call(degree):
    x, y, xq = _data(12, 16, m=20, r=1)
    Y = jnp.stack([y[:, 0] * s for s in (1.0, -2.0, 0.5)])  # (3, n)
    f = jax.jit(jax.vmap(lambda y: interp.interpolate(x, y, xq, degree=degree)))
    hlo = f.lower(Y).compile().as_text()
    # one forward call on (n, 3) columns, not three batched solves
    assert re.search(r"f64\[20,3\]\S* custom-call\(", hlo) and hlo.count("igax_interp_forward") == 1
    _close(f(Y), jnp.stack([interp.interpolate(x, Yb, xq, degree=degree, native=False) for Yb in Y]))
    g = jax.jit(jax.vmap(jax.grad(lambda y: jnp.sum(jnp.sin(interp.interpolate(x, y, xq, degree=degree))))))(
        Y
    )
    pure = lambda y: jnp.sum(jnp.sin(interp.interpolate(x, y, xq, degree=degree, native=False)))
    gp = jnp.stack([jax.grad(pure)(Yb) for Yb in Y])
    _close(g, gp, 1e-10)


# A cached file that is not a library ("not a library" over the bytes) is rebuilt: the "not-a-library" case of
# tests/test_native_cache.py, beside the other damaged caches (one real compiler run for all of them).


# ------------------------------------------------------------------------------------------------------------
# degree 2: the quadratic kernel against the pure-JAX path to 1e-12, and the interpolant's conventions
# ------------------------------------------------------------------------------------------------------------


def _quadratic_points(x, m, rng):
    """Points on every piece, on the sites, on the breaks (midpoints) and beyond both ends."""
    mid = 0.5 * (x[1:] + x[:-1])
    q = np.concatenate([np.linspace(x[0] - 0.7, x[-1] + 0.7, m), x, mid, mid - 1e-9, mid + 1e-9])
    return jnp.asarray(rng.permutation(q))


def test_quadratic_kernel_equals_pure_jax_to_1e12():
    # float64, values, reverse mode in all three arguments and forward mode in the values, at 1e-12 of the
    # scale: the two paths share the sites' knot arithmetic; the kernel's power form adds only rounding.
    # Each program is compiled once per size and runs on sorted points (runs of points per piece) and on
    # shuffled ones (located one by one).
    native, pure, _ = _both(2, None)

    def grads(f):
        return jax.jit(jax.grad(lambda x, y, q, w: jnp.sum(w * jnp.sin(f(x, y, q))), argnums=(0, 1, 2)))

    fwd_native, fwd_pure, grad_native, grad_pure = jax.jit(native), jax.jit(pure), grads(native), grads(pure)
    jvp_native = jax.jit(lambda x, y, q, dy: jax.jvp(lambda y: native(x, y, q), (y,), (dy,))[1])
    for n in (4, 5, 64):
        rng = np.random.default_rng(100 + n)
        x = jnp.asarray(np.cumsum(rng.uniform(0.05, 2.0, n)))  # uneven spacing, ratios up to 40
        y = jnp.asarray(rng.standard_normal((n, 3)))
        shuffled = _quadratic_points(np.asarray(x), 41, rng)
        assert (
            "igax_interp_forward" in fwd_native.lower(x, y, shuffled).compile().as_text()
        )  # not the fallback
        for xq in (shuffled, jnp.sort(shuffled)):
            _close(fwd_native(x, y, xq), fwd_pure(x, y, xq), 1e-12)
            w = jnp.asarray(rng.standard_normal((xq.shape[0], 3)))
            for gn, gp in zip(grad_native(x, y, xq, w), grad_pure(x, y, xq, w), strict=True):
                _close(gn, gp, 1e-12)
            dy = jnp.asarray(rng.standard_normal(y.shape))
            _close(jvp_native(x, y, xq, dy), fwd_pure(x, dy, xq), 1e-12)


@pytest.mark.parametrize("n", [4, 9, 30])
def test_quadratic_knots_ends_and_derivatives_match_scipy(n):
    rng = np.random.default_rng(200 + n)
    x = np.cumsum(rng.uniform(0.2, 1.8, n))
    y = rng.standard_normal(n)
    spl = make_interp_spline(x, y, k=2)
    # SciPy's convention, which interpolate documents: knots at the midpoints, the second and the
    # second-to-last left out, the ends repeated three times.
    mid = 0.5 * (x[1:] + x[:-1])
    np.testing.assert_allclose(spl.t, np.r_[[x[0]] * 3, mid[1:-1], [x[-1]] * 3], rtol=0, atol=1e-15)
    xq = np.asarray(_quadratic_points(x, 61, rng))
    f = jax.jit(lambda q: interp.interpolate(jnp.asarray(x), jnp.asarray(y), q, degree=2))
    scale = np.abs(y).max()
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(xq))), spl(xq), rtol=0, atol=1e-12 * scale)
    # interpolation at every site, the two ends included (the end coefficients are the end values)
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))), y, rtol=0, atol=1e-12 * scale)
    # first and second derivatives in the points, beyond the ends too (the end pieces extrapolate); the
    # second derivative jumps at the breaks, so those points are left out there
    ones = jnp.ones(xq.shape)
    d1 = lambda q: jax.jvp(f, (q,), (ones,))[1]
    d2 = lambda q: jax.jvp(d1, (q,), (ones,))[1]
    np.testing.assert_allclose(np.asarray(d1(jnp.asarray(xq))), spl(xq, 1), rtol=0, atol=1e-9 * scale)
    away = np.min(np.abs(xq[:, None] - spl.t[None, 3:-3]), axis=1, initial=np.inf) > 1e-6
    d2q = np.asarray(d2(jnp.asarray(xq)))
    np.testing.assert_allclose(d2q[away], spl(xq, 2)[away], rtol=0, atol=1e-8 * scale)
    # no break at the first and last midpoints: one parabola from beyond x[0] to (x[1] + x[2]) / 2, and
    # from (x[-3] + x[-2]) / 2 to beyond x[-1]
    first = (xq < mid[1]) & away
    last = (xq > mid[-2]) & away
    for piece in (first, last):
        np.testing.assert_allclose(d2q[piece], d2q[piece][0], rtol=0, atol=1e-9 * scale)


def test_quadratic_reproduces_quadratics_everywhere():
    # A quadratic lies in the spline space, so its interpolant is itself, extrapolation included.
    rng = np.random.default_rng(300)
    x = np.cumsum(rng.uniform(0.1, 1.9, 12))
    p = lambda v: 1.5 - 2.0 * v + 0.3 * v**2
    xq = np.linspace(x[0] - 3, x[-1] + 3, 301)
    out = interp.interpolate(jnp.asarray(x), jnp.asarray(p(x)), jnp.asarray(xq), degree=2, native=True)
    np.testing.assert_allclose(np.asarray(out), p(xq), rtol=0, atol=1e-12 * np.abs(p(xq)).max())


def test_quadratic_gradients_finite_differences_and_taylor_rate():
    rng = np.random.default_rng(400)
    x = jnp.asarray(np.cumsum(rng.uniform(0.3, 1.7, 10)))
    y = jnp.asarray(rng.standard_normal(10))
    xq = jnp.asarray(np.linspace(float(x[0]) - 0.3, float(x[-1]) + 0.3, 47))
    w = jnp.asarray(np.cos(np.arange(47.0)))

    @jax.jit
    def loss(x, y, xq):
        return jnp.sum(w * jnp.sin(interp.interpolate(x, y, xq, degree=2, native=True)))

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, y, xq)
    eps = 1e-6
    for k, (arg, g) in enumerate(zip((x, y, xq), grads, strict=True)):
        for i in range(0, arg.shape[0], 3):
            shifted = lambda s, k=k, i=i: loss(
                *[(a.at[i].add(s) if j == k else a) for j, a in enumerate((x, y, xq))]
            )
            fd = (float(shifted(eps)) - float(shifted(-eps))) / (2 * eps)
            assert abs(fd - float(g[i])) < 1e-6 * (1 + abs(float(g[i]))), (k, i)
    # Taylor remainder in all three arguments at once: second order
    d = [jnp.asarray(rng.standard_normal(a.shape)) * s for a, s in ((x, 0.03), (y, 1.0), (xq, 0.1))]
    slope = sum(jnp.vdot(g, di) for g, di in zip(grads, d, strict=True))
    hs = np.array([1.0, 0.5, 0.25, 0.125])
    f0 = loss(x, y, xq)
    rem = [
        abs(float(loss(*(a + h * di for a, di in zip((x, y, xq), d, strict=True))) - f0 - h * slope))
        for h in hs
    ]
    assert np.polyfit(np.log(hs), np.log(rem), 1)[0] > 1.9


def test_quadratic_kernel_rejects_bad_values_and_codes():
    x, y, xq = _data(8, 500, m=13, r=1)
    y = y[:, 0]
    f = jax.jit(lambda x, y, q: interp.interpolate(x, y, q, degree=2))
    hlo = f.lower(x, y, xq).as_text()
    assert "igax_interp" in hlo and "callback" not in hlo  # the kernel checks its operands itself
    cases = (
        ((x, y.at[3].set(jnp.nan), xq), "interpolate: y contains NaN or infinity"),
        ((x.at[2].set(x[1]), y, xq), "interpolate: x must be strictly increasing, without duplicate sites"),
        ((x, y, xq.at[4].set(jnp.inf)), "interpolate: x_new contains NaN or infinity"),
    )
    for args, match in cases:
        with pytest.raises(jax.errors.JaxRuntimeError, match=match):
            jax.block_until_ready(f(*args))
    with pytest.raises(jax.errors.JaxRuntimeError, match="interpolate: x must be strictly increasing"):
        jax.block_until_ready(jax.jit(jax.grad(lambda y, x: jnp.sum(f(x, y, xq))))(y, x[::-1]))
    # the kernel's own guard on the degree (the Python side never sends another one)
    from igax.layers import _interp_native as nat

    with pytest.raises(jax.errors.JaxRuntimeError, match="degree must be 1, 2 or 3"):
        jax.block_until_ready(nat.interp_apply_p.bind(x, xq, y[:, None], degree=4, left=0, right=0, check=0))
