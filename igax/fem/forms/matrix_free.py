"""Matrix-free application of bilinear forms on single-patch spline spaces, sum-factorised.

``A = fem.operator(form, V, **inputs)`` stores the kernel matrices at the quadrature points on reference jets,
``D_q = T^T M T |det J| w_q`` (see :mod:`igax.fem.forms.sumfact`), and applies the form without a matrix:

    y = A(x):   x -> reference jets of x at the points (the tensor-product basis, one direction at a time)
                  -> D_q applied pointwise -> back to the control net (the transpose, direction by direction).

Each direction costs ``p + 1`` multiply-adds per point and jet, so a product costs about
``(d + 1)^2 C^2 + 4 d (p + 1) C (d + 1)`` multiply-adds per quadrature point, against the ``nnz`` of the
assembled matrix (``C (2 p + 1)^d`` per row) for a sparse product; its memory is the stored ``D``
(``(d + 1)^2 C^2`` numbers per point at most, fewer when the kernel reads no values) instead of the matrix
and its indices.
``A.diagonal()`` (sum-factorised too) gives Jacobi and Chebyshev smoothers their diagonal, so
``igax.solvers.iterative.cg(A.matvec, b, igax.solvers.iterative.jacobi(A))`` runs without a matrix. The
product equals the assembled ``fem.assemble(form, V, **inputs) @ x`` to rounding and is differentiable in
``x``, in the inputs and in the geometry (the operator is a pytree; build it inside the differentiated
function).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.forms._sumfact_ops import ChunkDirection, evaluate, evaluate_adjoint
from igax.fem.forms._sumfact_plan import scalar_steps, sumfact_plan
from igax.fem.forms._sumfact_points import (
    _input_shapes,
    _polynomial_weight,
    _prepare_inputs,
    _reference_columns,
    kernel_structure,
)
from igax.fem.forms.form import Form
from igax.fem.forms.inputs import _check_input_names
from igax.fem.forms.sumfact import _chunk_matrices, _eager_inputs, applicable
from igax.fem.spaces.base import FunctionSpace

__all__ = ["operator", "SplineOperator"]


class SplineOperator(eqx.Module):
    """A bilinear form on a spline space as a linear operator: ``A.matvec(x)`` (also ``A(x)``, ``A @ x``).

    Made by :func:`operator`. A pytree whose leaves are the stored kernel matrices and the space's geometry.

    Attributes:
        D: ``(Ru, Rv, C, C, P)`` kernel matrices on reference jets at the ``P`` quadrature points.
        space: the :class:`~igax.fem.SplineSpace`.
        Ru, Rv: the reference jets used on the trial and the test side (0 the value, ``k + 1`` d/du_k).
        rational: whether the weights multiply the coefficients (a rational patch) or are folded into ``D``.
        symmetric: the form's ``symmetric`` flag.
    """

    D: jax.Array
    space: FunctionSpace
    Ru: tuple = eqx.field(static=True)
    Rv: tuple = eqx.field(static=True)
    rational: bool = eqx.field(static=True)
    symmetric: bool = eqx.field(static=True)

    @property
    def shape(self) -> tuple[int, int]:
        n = self.space.ndofs
        return (n, n)

    @property
    def dtype(self):
        return self.D.dtype

    def matvec(self, x: jax.Array) -> jax.Array:
        """``A x`` for ``x`` of shape ``(ndofs,)`` (batched with ``jax.vmap``)."""
        self.space.check_coeffs(x, "x")
        return _apply(self, x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.matvec(x)

    def __matmul__(self, x: jax.Array) -> jax.Array:
        return self.matvec(x)

    def diagonal(self) -> jax.Array:
        """The diagonal of the matrix, ``(ndofs,)`` (sum-factorised; for Jacobi or Chebyshev smoothing)."""
        return _diagonal(self)


def operator(form: Form, space: FunctionSpace, **inputs) -> SplineOperator:
    """The matrix-free operator of a bilinear form on a single-patch spline space.

    Arguments:
        form: a :func:`~igax.fem.bilinear_form` (a volume form).
        space: a :class:`~igax.fem.SplineSpace` of one patch without glued or collapsed sides.
        **inputs: the form's named inputs, as :func:`igax.fem.assemble` takes them (numbers, callables of
            ``x``, Fields, arrays at the quadrature points).

    Returns:
        A :class:`SplineOperator` with ``A.matvec(x) == fem.assemble(form, space, **inputs) @ x`` (to
        rounding) and ``A.diagonal()``.

    Raises:
        TypeError: ``form`` is not a bilinear form.
        ValueError: the space is not a single spline patch without glued or collapsed sides.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=3, elements=8))
        >>> kappa = fem.Field(V, jnp.ones(V.ndofs))
        >>> A = fem.operator(fem.library.diffusion, V, kappa=kappa)
        >>> x = jnp.linspace(0.0, 1.0, V.ndofs)
        >>> M = fem.assemble(fem.library.diffusion, V, kappa=kappa)
        >>> bool(np.allclose(A.matvec(x), M @ x, atol=1e-10))
        True
    """
    if not isinstance(form, Form) or form.kind != "bilinear":
        raise TypeError(
            f"fem.operator applies a bilinear form, got {form!r}; declare it with @fem.bilinear_form "
            "(linear forms and functionals are assembled with fem.assemble)."
        )
    if form.boundary:
        raise ValueError(
            f"{form!r} is a boundary form; fem.operator applies volume forms. Assemble boundary terms with "
            "fem.assemble(form, V, boundary=...) and add their product: A.matvec(x) + B @ x."
        )
    if not isinstance(space, FunctionSpace) or not applicable(space, form):
        raise ValueError(
            f"fem.operator needs a single-patch SplineSpace without glued or collapsed sides, got "
            f"{type(space).__name__}. Assemble the matrix instead: A = fem.assemble(form, V, ...), then "
            "A @ x (igax.solvers.iterative.cg accepts lambda x: A @ x)."
        )
    p = space.plan
    expected = form.input_shapes(p.value_shape, p.dim)
    if expected is not None:
        _check_input_names(form, expected, inputs)
    sf = sumfact_plan(space)
    fields = _eager_inputs(form, space, sf, inputs)
    dtype = jnp.result_type(space.control_points.dtype, space.weights.dtype)
    shapes = _input_shapes(_prepare_inputs(sf, space, fields, form, abstract=True), sf.d, p.dim, dtype)
    ks = kernel_structure(form, space, (p.dim,), shapes, dtype)
    w0 = _polynomial_weight(space.weights)
    if ks is None:  # the kernel ignores u or v: the zero operator
        D = jnp.zeros((1, 1, p.ncomp, p.ncomp, int(np.prod(sf.nq))), dtype)
        return SplineOperator(D, space, (0,), (0,), False, form.symmetric)
    Ru = tuple(_reference_columns(ks.ku, None, w0 is None, sf.d, dry=True))
    Rv = tuple(_reference_columns(ks.kv, None, w0 is None, sf.d, dry=True))
    D = _stored_matrices(form, space, fields, w0)
    return SplineOperator(
        D.reshape((len(Ru), len(Rv)) + D.shape[1:]), space, Ru, Rv, w0 is None, form.symmetric
    )


@eqx.filter_jit
def _stored_matrices(form: Form, space, fields: dict, w0):
    """``D (Ru Rv, C, C, P)`` at all points (direction 0 as one chunk)."""
    sf = sumfact_plan(space)
    p = space.plan
    dtype = jnp.result_type(space.control_points.dtype, space.weights.dtype)
    prepared = _prepare_inputs(sf, space, fields, form)
    ks = kernel_structure(form, space, (p.dim,), _input_shapes(prepared, sf.d, p.dim, dtype), dtype)
    blocks = tuple((a, b) for a in range(p.ncomp) for b in range(p.ncomp))
    d0 = sf.dirs[0]
    chunks = sf.chunks(d0.nv)  # one chunk holds every element
    chunk_D, windows = _chunk_matrices(form, space, sf, prepared, ks, chunks, blocks, w0)
    zero = jnp.zeros((), jnp.int32)
    D = chunk_D(ChunkDirection(chunks, d0, zero), zero, [w[0] for w in windows])  # (S, C C, grid)
    return D.reshape((D.shape[0], p.ncomp, p.ncomp, -1))


def _control_net(space, x):
    """``x (ndofs,)`` -> ``(n_0, ..., n_{d-1}, C)`` on the control net."""
    p = space.plan
    return jnp.moveaxis(x.reshape((p.ncomp,) + tuple(p.shape)), 0, -1)


@eqx.filter_jit
def _apply(op: SplineOperator, x):
    sf = sumfact_plan(op.space)
    p = op.space.plan
    w = op.space.weights[..., None].astype(op.D.dtype)
    c = _control_net(op.space, x.astype(op.D.dtype))
    if op.rational:
        c = c * w
    jets = evaluate(sf.dirs, c, derivs=any(r > 0 for r in op.Ru))  # [value, d/du_0, ...], (C, grid)
    P = op.D.shape[-1]
    u = {r: jets[r].reshape(p.ncomp, P) for r in op.Ru}
    # z[s, c'] = sum_{r, c} D[r, s, c, c'] u[r, c]: unrolled over (r, c), vectorised over the points
    z = {
        s: sum(op.D[i, j, c] * u[r][c] for i, r in enumerate(op.Ru) for c in range(p.ncomp))
        for j, s in enumerate(op.Rv)
    }
    parts = [None if s not in z else z[s].reshape((p.ncomp,) + sf.nq) for s in range(sf.d + 1)]
    y = evaluate_adjoint(sf.dirs, parts)  # (n..., C)
    if op.rational:
        y = y * w
    return jnp.moveaxis(y, -1, 0).reshape(-1)


@eqx.filter_jit
def _diagonal(op: SplineOperator):
    """``diag(A)``: the diagonal blocks' states contracted with squared tables, direction by direction."""
    sf = sumfact_plan(op.space)
    p = op.space.plan
    C = p.ncomp
    G = jnp.stack([op.D[:, :, c, c] for c in range(C)], axis=2)  # (Ru, Rv, C, P)
    G = G.reshape((len(op.Ru) * len(op.Rv), C) + sf.nq)  # (S, C, q_0, ..., q_{d-1})
    for st in scalar_steps(list(op.Ru), list(op.Rv), sf.d):
        dd = sf.dirs[st["k"]]
        pre = G.shape[1:-1]
        Gr = G.reshape((G.shape[0], -1, dd.nv, dd.nq))
        outs = []
        for members, flags in st["outs"]:
            H = 0
            for m, (fu, fv) in zip(members, flags, strict=True):
                T = jnp.asarray(dd.table(fu) * dd.table(fv), G.dtype)  # (nv, nq, p + 1): X_u[a] X_v[a]
                H = H + jnp.einsum("Pvt,vta->vaP", Gr[m], T)
            # element rows v + a -> the function's row
            outs.append(sum(jnp.pad(H[:, a], ((a, dd.p - a), (0, 0))) for a in range(dd.p + 1)))
        G = jnp.stack(outs).reshape((len(outs), dd.n) + pre)  # the next direction is last again
    # (1, n_0, ..., n_{d-1}, C)
    diag = G[0]
    if op.rational:
        diag = diag * (op.space.weights[..., None] ** 2)
    return jnp.moveaxis(diag, -1, 0).reshape(-1)
