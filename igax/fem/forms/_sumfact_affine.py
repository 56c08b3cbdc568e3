"""Sum-factorised assembly on an affine patch with a uniform kernel: a sum of Kronecker products.

On a polynomial patch (equal weights) whose geometry is affine, ``x(u) = x_0 + J u``, the Jacobian is the same
at every point, and a form whose kernel reads no point data (neither ``x`` nor inputs given per point or as
Fields), so that its kernel matrix ``M`` is the same everywhere (the Laplacian, the mass, isotropic
elasticity, ``diffusion`` with a number for ``kappa``; concrete or traced) has per state ``s = (ru, rv)`` and
component block ``b``

    D[s, b](q) = Dc[s, b] w_0(q_0) ... w_{d-1}(q_{d-1}),     Dc = T^T M T |det J|  (one number each),

because the quadrature weights of a tensor rule are products. The sum over the points then factorises
completely: every band entry is

    A[b][i, i + delta - p] = sum_s Dc[s, b] prod_k K_k^s[i_k, delta_k],

with ``K_k^s`` the univariate band matrices of direction ``k`` (mass, advection or stiffness, by the state's
derivative flags along ``k``) on the same Gauss rule. The entries are computed straight into the CSR order
(one fused gather of products from univariate tables, ``n_k (2 p_k + 1)`` numbers per state and
direction), no kernel matrices at the points and no band in memory. The matrix is the same as the general
sum factorisation's to rounding (1e-15 relative).

Which patches: the control points are an affine function of the Greville abscissae (B-splines reproduce linear
functions, so then ``x(u) = x_0 + J u`` exactly), checked to ``1e-13`` of the patch's extent (100 ulps in
float32), and the weights are equal to 1e-14 (4 ulps in float32). Boxes, parallelepipeds and rectangles,
refined or degree-elevated. A concrete geometry is checked on the host when the program is built. Traced
control points or weights (a space passed to ``jax.jit``) are checked when the program runs, and a
``lax.cond`` takes this program or the general one; derivatives w.r.t. the control points or the weights
always come from the general program (a perturbation of the control points is not affine in general), through
a ``jax.custom_jvp`` (:mod:`igax.fem.forms._runtime_choice`). Derivatives w.r.t. the kernel's constants (a
modulus, a coefficient) come from this program: the matrix is linear in ``Dc``.

Measured (3D degree-2 elasticity, 31^3 elements, 107,811 DOFs, 2 cores, quiet machine): 0.27 s against
0.94 s for the general sum factorisation (``benchmarks/bench_assembly.py``, ``docs/performance.md``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from igax.fem.forms._runtime_choice import choose
from igax.fem.forms._sumfact_constant import constant_point_matrices
from igax.fem.forms._sumfact_points import Geometry, _det_inv, _point_matrix, reference_matrices

__all__ = ["AffinePlan", "affine_plan", "concrete_map", "kron_values", "values_concrete", "values_traced"]

# Relative distance (to the patch's extent) within which control points count as an affine image of the
# Greville abscissae: refinement and degree elevation leave a few ulps (8e-16 measured at 33^3 points in
# float64); in float32, 100 ulps.
_AFFINE_RTOL = 1e-13


def _rtol(dtype) -> float:
    return max(_AFFINE_RTOL, 100 * float(np.finfo(dtype).eps))


def _wtol(dtype) -> float:
    """Relative spread of equal weights: 1e-14 (as the general path's polynomial test), 4 ulps in float32
    (a refined square's weights of 1 come out 1 ulp off, and their mean another)."""
    return max(1e-14, 4 * float(np.finfo(np.result_type(dtype, np.float32)).eps))


class AffinePlan:
    """Host data of the Kronecker assembly of one space plan, rule and list of states (cached).

    Attributes:
        greville: per direction the Greville abscissae ``(n_k,)``.
        tables: per direction ``(S, n_k, L_k)``: ``K_k^s[i, delta]``, state ``s`` in the order of ``states``.
    """

    def __init__(self, plan, sf, states: tuple):
        d = sf.d
        self.d = d
        self.greville = [_greville(plan.knots[k], int(plan.degrees[k]), int(plan.shape[k])) for k in range(d)]
        self.tables = [
            np.stack([_univariate_band(dd, int(ru == k + 1), int(rv == k + 1)) for ru, rv in states])
            for k, dd in enumerate(sf.dirs)
        ]


def _greville(knots: np.ndarray, p: int, n: int) -> np.ndarray:
    """``g_i = (t_{i+1} + ... + t_{i+p}) / p``: ``sum_i g_i B_i(u) = u`` (degree ``p >= 1``)."""
    c = np.concatenate([[0.0], np.cumsum(knots)])
    i = np.arange(n)
    return (c[i + p + 1] - c[i + 1]) / p


def _univariate_band(dd, fu: int, fv: int) -> np.ndarray:
    """``K[i, delta] = sum_{v, t} wq[v, t] X_u[v, t, i - v] X_v[v, t, i + delta - p - v]``, ``(n, L)``."""
    A = dd.band_table([(fu, fv)]).reshape(dd.nv, dd.p + 1, dd.L, dd.nq)
    E = np.einsum("vadt,vt->vad", A, dd.wq)
    K = np.zeros((dd.n, dd.L))
    for a in range(dd.p + 1):
        K[a : a + dd.nv] += E[:, a]
    return K


def affine_plan(plan, sf, states: tuple) -> AffinePlan:
    """The :class:`AffinePlan` of a space plan for the states ``((ru, rv), ...)``, cached on ``sf`` (its
    :class:`~igax.fem.forms._sumfact_plan.SumFactPlan`, itself cached per space plan and rule).

    Example (the mass matrix's univariate tables on 3 elements of degree 2: each row sums to the integral
    of its function):
        >>> from igax.fem import SplineSpace, geometry
        >>> from igax.fem.forms._sumfact_plan import sumfact_plan
        >>> from igax.fem.forms._sumfact_affine import affine_plan
        >>> V = SplineSpace(geometry.rectangle().refine(degree=2, elements=3))
        >>> ap = affine_plan(V.plan, sumfact_plan(V), ((0, 0),))
        >>> [round(float(x), 6) for x in ap.tables[0][0].sum(axis=1)]
        [0.111111, 0.222222, 0.333333, 0.222222, 0.111111]
    """
    cache = sf.__dict__.setdefault("_affine", {})
    if states not in cache:
        cache[states] = AffinePlan(plan, sf, states)
    return cache[states]


def _fit(ap: AffinePlan, cp, xp):
    """The affine map through the control net's corner ``0`` and its neighbours' ends along each direction.

    Returns ``(J (dim, d), x_0 (dim,), residual, extent)``: the largest distance of a control point from
    ``x_0 + J g`` and the largest extent of the net along a coordinate (both scalars). Exact for an affine
    net up to the rounding of its points (a least-squares fit through sums over the net was off by 3e-13 at
    33^3 points).
    """
    d = ap.d
    axes = tuple(range(d))
    origin = cp[(0,) * d]
    cols = []
    for k in range(d):
        g = ap.greville[k]
        cols.append((cp[tuple(-1 if m == k else 0 for m in range(d))] - origin) / (g[-1] - g[0]))
    J = xp.stack(cols, axis=-1)  # (dim, d)
    x0 = origin - sum(J[:, k] * ap.greville[k][0] for k in range(d))
    fit = x0
    for k in range(d):
        shape = [1] * (d + 1)
        shape[k] = -1
        fit = fit + xp.asarray(ap.greville[k], dtype=cp.dtype).reshape(shape) * J[:, k]
    residual = xp.max(xp.abs(cp - fit))
    extent = xp.max(xp.max(cp, axis=axes) - xp.min(cp, axis=axes))
    return J, x0, residual, extent


def concrete_map(ap: AffinePlan, control_points, weights):
    """Whether concrete control points and weights make an affine polynomial patch.

    Arguments:
        ap: the space's :class:`AffinePlan`; control_points: ``(n_0, ..., n_{d-1}, dim)``; weights: the net's.

    Returns:
        ``(J, w0)``: the map's Jacobian ``(dim, d)`` (parametric coordinates in knot units) and the common
        weight, or None (curved, rational, degenerate or not finite: the general path decides).

    Example (a rectangle scaled by 2 along x):
        >>> from igax.fem import SplineSpace, geometry
        >>> from igax.fem.forms._sumfact_plan import sumfact_plan
        >>> from igax.fem.forms._sumfact_affine import affine_plan, concrete_map
        >>> V = SplineSpace(geometry.rectangle((0, 0), (2, 1)).refine(degree=2, elements=3))
        >>> J, w0 = concrete_map(affine_plan(V.plan, sumfact_plan(V), ((0, 0),)), V.control_points, V.weights)
        >>> J.round(12).tolist(), w0
        ([[2.0, 0.0], [0.0, 1.0]], 1.0)
    """
    w = np.asarray(weights)
    w0 = float(np.mean(w)) if w.size else 0.0
    if not w.size or not w0 > 0 or not np.max(np.abs(w - w0)) <= _wtol(w.dtype) * w0:
        return None
    cp = np.asarray(control_points)
    rtol = _rtol(np.result_type(cp.dtype, np.float32))
    cp = cp.astype(np.float64)
    if not np.all(np.isfinite(cp)):
        return None
    J, _, residual, extent = _fit(ap, cp, np)
    if not residual <= rtol * extent:
        return None
    if J.shape[0] == J.shape[1] and np.linalg.det(J) == 0:  # a degenerate map: the general path says so
        return None
    return J, w0


def point_constants(M, ks, J, w0, d: int, blocks):
    """``Dc (S, blocks)``: the kernel matrices of an affine patch with unit quadrature weight.

    ``M``: the kernel matrix ``(C, Ku, C, Kv)``, a NumPy constant (its zeros skipped) or traced.
    """
    dim = J.shape[0]
    Jl = [[jnp.reshape(J[i, k], (1,)) for k in range(d)] for i in range(dim)]
    det, Jinv = _det_inv(Jl, jnp)
    one = jnp.ones((1,), jnp.result_type(J))
    geo = Geometry(
        jnp.zeros((dim, 1), one.dtype),
        jnp.stack([jnp.stack(r) for r in Jinv]),
        one / w0,
        jnp.zeros((d, 1), one.dtype),
        jnp.abs(det),
    )
    if isinstance(M, np.ndarray):
        return constant_point_matrices(M, ks.ku, ks.kv, geo, False, d, blocks, w0 * w0)[..., 0]
    return reference_matrices(M, ks.ku, ks.kv, geo, False, d, blocks, w0 * w0)[0][..., 0]


def uniform_matrix(form, ks, C: int, dim: int, dtype, fields: dict):
    """The kernel matrix ``(C, Ku, C, Kv)`` of a kernel that reads no point data (``ks.uniform``): the
    concrete ``ks.constant``, or the kernel on unit jets with the inputs' values (traced ones too)."""
    if ks.constant is not None:
        return ks.constant
    const_in = {k: (jnp.asarray(v), None) for k, v in fields.items()}
    M = _point_matrix(form, ks.unit, jnp.zeros((dim,), dtype), const_in)
    return M.reshape(C, len(ks.ku), C, len(ks.kv))


def kron_values(Dc, tables: list, csr_idx, idx_sorted: bool):
    """CSR values ``sum_s Dc[s, b] prod_k K_k^s[i_k, delta_k]`` read through ``csr_idx`` (the band layout
    ``(i_0, blocks, i_1, ..., delta_0, ...)`` of :func:`igax.fem.forms._sumfact_plan.csr_index`).

    The last direction's factor and the sum over the states are fused into the gather (nothing of the
    band's size is stored); the products over the other directions (``n^(d-1) L^(d-1)`` per state) are.
    """
    d = len(tables)
    S, nb = Dc.shape
    # Layout axes: 0 = i_0, 1 = block, 1 + k = i_k (k >= 1), d + 1 + k = delta_k.
    ndim = 2 * d + 1

    def put(a, axes):
        shape = [1] * ndim
        for ax, n in zip(axes, a.shape, strict=True):
            shape[ax] = n
        return a.reshape(shape)

    total = None
    for s in range(S):
        head = put(tables[0][s], (0, d + 1)) * put(Dc[s], (1,))
        for k in range(1, d - 1):
            head = head * put(tables[k][s], (1 + k, d + 1 + k))
        if d > 1:
            head = jax.lax.optimization_barrier(head)  # small; the last factor stays in the fused gather
            term = head * put(tables[d - 1][s], (d, 2 * d))
        else:
            term = head
        total = term if total is None else total + term
    return (
        total.reshape(-1)
        .at[csr_idx]
        .get(mode="promise_in_bounds", unique_indices=True, indices_are_sorted=idx_sorted)
    )


@eqx.filter_jit
def _concrete_program(Dc, tables, csr_idx, idx_sorted):
    return kron_values(Dc, tables, csr_idx, idx_sorted)


def values_concrete(ap: AffinePlan, Dc, csr_idx, idx_sorted: bool, dtype):
    """The CSR values (of ``dtype``) of a concrete affine patch from its kernel matrices ``Dc (S, blocks)``
    (:func:`point_constants`; traced where the kernel's inputs are, and differentiated through)."""
    tables = [jnp.asarray(t, dtype) for t in ap.tables]
    return _concrete_program(jnp.asarray(Dc, dtype), tables, csr_idx, idx_sorted)


def values_traced(ap: AffinePlan, matrix, ks, blocks, csr_idx, idx_sorted: bool, general, space, fields):
    """CSR values for traced control points or weights: this program where the patch is affine and
    polynomial when the program runs, else ``general(space, fields)``; derivatives w.r.t. the control points
    and weights from ``general`` (see the module docstring).

    Arguments:
        ap: the plan; matrix: ``fields -> M (C, Ku, C, Kv)``, the kernel matrix (:func:`uniform_matrix`);
            ks: the kernel's structure; blocks: the component blocks.
        csr_idx, idx_sorted: the CSR index (band layout) and whether it is the plain one.
        general: ``(space, fields) -> values``, the general sum-factorised program.
        space, fields: as :func:`igax.fem.assemble` takes them (the space's arrays traced).

    Returns:
        The CSR values.
    """
    cp, wts = space.control_points, space.weights
    bare = eqx.tree_at(lambda s: (s.control_points, s.weights), space, replace=(None, None))
    none = lambda x: x is None  # noqa: E731

    def kron(c, w, rest):
        dtype = jnp.result_type(c.dtype, w.dtype)
        J, _, _, _ = _fit(ap, c.astype(dtype), jnp)
        Dc = point_constants(matrix(rest[1]), ks, J, jnp.mean(w).astype(dtype), ap.d, blocks)
        tables = [jnp.asarray(t, dtype) for t in ap.tables]
        return kron_values(Dc.astype(dtype), tables, csr_idx, idx_sorted)

    def other(c, w, rest):
        s, f = rest
        s = eqx.tree_at(lambda t: (t.control_points, t.weights), s, (c, w), is_leaf=none)
        return general(s, f)

    def affine_here(c, w, rest):
        J, _, residual, extent = _fit(ap, c, jnp)
        m = jnp.mean(w)
        ok = (m > 0) & jnp.all(jnp.abs(w - m) <= _wtol(w.dtype) * m) & (residual <= _rtol(c.dtype) * extent)
        ok = ok & jnp.all(jnp.isfinite(c))  # an inf point: residual and extent inf, and inf <= inf
        if J.shape[0] == J.shape[1]:
            ok = ok & (jnp.linalg.det(J) != 0)
        return ok

    def fixed_geometry(tangents):  # either program is exact in the inputs (a modulus, a coefficient)
        tc, tw, _ = tangents
        return isinstance(tc, SymbolicZero) and isinstance(tw, SymbolicZero)

    # A perturbed geometry is not affine in general: its derivative comes from the general program.
    return choose(affine_here, kron, other, (cp, wts, (bare, fields)), fixed_geometry)
