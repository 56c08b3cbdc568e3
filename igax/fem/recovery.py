"""Recovered fields: L2 projection of pointwise quantities (stresses, von Mises) onto a space.

A derived quantity such as the stress ``sigma(u_h)`` is known only pointwise (from the displacement gradient)
and is discontinuous across element boundaries of C0 spaces. :func:`project` turns any pointwise expression of
the fields at the quadrature points into a field of the space: the L2 projection ``M c = b`` with the scalar
mass matrix ``M_ij = int phi_i phi_j`` and ``b_i = int g phi_i``. Tensor-valued quantities are projected
componentwise with one factorisation of ``M`` and all components as right-hand sides of one solve;
``mass="lumped"`` replaces ``M`` by its row sums (a diagonal, no solve at all).

Everything is assembly plus a differentiable solve, so ``jax.grad`` flows through a recovered field to the
displacement, the material parameters, the loads and the geometry::

    sigma = fem.recover_stress(u, E, nu, "plane_strain")   # TensorField of shape (2, 2)
    sxx = sigma[0, 0]                                      # a scalar Field on the scalar space of u
    vm = fem.recover_von_mises(u, E, nu, "plane_strain")   # a scalar Field
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.field import Field
from igax.fem.forms.assembly import assemble, known_tables
from igax.fem.forms.form import FormInputs, QuadValue
from igax.fem.forms.inputs import inputs_at, prepare_inputs
from igax.fem.forms.library import lame, stress, von_mises
from igax.fem.forms.library import mass as _mass_form
from igax.fem.locate import locate
from igax.fem.spaces.base import FunctionSpace
from igax.solvers import factorize
from igax.solvers.sparse import SparseMatrix

__all__ = [
    "TensorField",
    "scalar_space",
    "quadrature_values",
    "project",
    "recover_stress",
    "recover_von_mises",
]

MASS_KINDS = ("consistent", "lumped")


def scalar_space(space: FunctionSpace) -> FunctionSpace:
    """The scalar space with the same basis as ``space`` (itself when it is already scalar).

    The same as ``space.scalar()`` (:meth:`igax.fem.spaces.base.FunctionSpace.scalar`): the companion
    shares the
    basis, the elements, the quadrature rules and the geometry (the same JAX leaves), and Fields of either
    can be inputs of forms assembled on the other.

    Arguments:
        space: a :class:`SplineSpace`, :class:`LagrangeSpace` (any space) of any value shape.

    Returns:
        A space of the same type with value shape ``()``.

    Example:
        >>> import igax.fem as fem
        >>> V2 = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
        >>> fem.scalar_space(V2).ndofs == V2.ndofs // 2
        True
    """
    if not isinstance(space, FunctionSpace):
        raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
    return space.scalar()


class TensorField(eqx.Module):
    """A tensor-valued field: one scalar field per component, all on one scalar space.

    A pytree like :class:`Field` (children: the space and ``coeffs``). Index it to get components: a full
    index gives a scalar :class:`Field` (``sigma[0, 1]``), a partial one a smaller TensorField (``sigma[0]``).

    Arguments:
        space: a scalar :class:`SplineSpace` or :class:`LagrangeSpace`.
        coeffs: shape ``value_shape + (space.ndofs,)``.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax import fem
        >>> geo = fem.geometry.rectangle((0, 0), (2, 1)).refine(degree=2, elements=2)
        >>> V = fem.SplineSpace(geo, shape=(2,))
        >>> u = fem.Field(V, jnp.zeros(V.ndofs))
        >>> sigma = fem.recover_stress(u, 1e5, 0.3, "plane_strain")
        >>> sigma.value_shape
        (2, 2)
        >>> sigma(np.array([[0.5, 0.5]])).shape          # values at a physical point
        (1, 2, 2)
    """

    space: FunctionSpace
    coeffs: jax.Array

    def __init__(self, space: FunctionSpace, coeffs):
        if not isinstance(space, FunctionSpace):
            raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
        if space.value_shape:
            raise ValueError(
                f"a TensorField lives on a scalar space; got a space of shape {space.value_shape}. Pass "
                "fem.scalar_space(space)."
            )
        coeffs = jnp.asarray(coeffs)
        if coeffs.ndim < 2 or coeffs.shape[-1] != space.ndofs:
            raise ValueError(
                f"coeffs must have shape value_shape + ({space.ndofs},) with at least one tensor axis, got "
                f"{coeffs.shape}; for a scalar field use fem.Field(space, coeffs)."
            )
        self.space = space
        self.coeffs = coeffs

    @property
    def value_shape(self) -> tuple[int, ...]:
        return tuple(self.coeffs.shape[:-1])

    def __getitem__(self, index) -> Field | TensorField:
        c = self.coeffs[index]
        if c.ndim == 0 or c.shape[-1] != self.space.ndofs:
            raise IndexError(
                f"index {index!r} must select tensor components (value shape {self.value_shape}), e.g. "
                "sigma[0, 0]; it may not index into the coefficients."
            )
        return Field(self.space, c) if c.ndim == 1 else TensorField(self.space, c)

    def components(self, prefix: str = "", *, symmetric: bool = False) -> dict[str, Field]:
        """The components as scalar Fields named ``prefix + "xy"`` etc. (for export and plotting).

        Arguments:
            prefix: prepended to each name, e.g. ``"sigma_"``.
            symmetric: for a symmetric tensor, only the components ``i <= j``.

        Example:
            >>> import jax.numpy as jnp
            >>> from igax import fem
            >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
            >>> u = fem.Field(V, jnp.zeros(V.ndofs))
            >>> sigma = fem.recover_stress(u, 1e5, 0.3, "plane_strain")
            >>> sorted(sigma.components("sigma_", symmetric=True))
            ['sigma_xx', 'sigma_xy', 'sigma_yy']
            >>> path = fem.write_vtu("s.vtu", {"u": u, **sigma.components("sigma_", symmetric=True)})
        """
        axes = "xyz" if self.space.dim <= 3 else None
        out = {}
        for idx in np.ndindex(*self.value_shape):
            if symmetric and any(a > b for a, b in zip(idx[:-1], idx[1:], strict=True)):
                continue
            name = "".join(axes[i] if axes and i < 3 else str(i) for i in idx)
            out[prefix + name] = Field(self.space, self.coeffs[idx])
        return out

    def __call__(self, points) -> jax.Array:
        """Values at physical points ``(npts, dim)`` -> ``(npts,) + value_shape`` (points located once)."""
        points = jnp.asarray(points)
        if points.ndim != 2 or points.shape[1] != self.space.dim:
            raise ValueError(
                f"points must have shape (npts, {self.space.dim}), got {points.shape}; for one point write "
                "points[None, :]."
            )
        if points.shape[0] == 0:
            raise ValueError("points must hold at least one point, got shape (0, dim).")
        dofs, tables = locate(self.space, points)  # (npts, nloc), phi (npts, 1, nloc)
        k = int(np.prod(self.value_shape))
        c = self.coeffs.reshape(k, -1)[:, dofs]  # (k, npts, nloc)
        val = jnp.einsum("kpa,pa->pk", c, tables.phi[:, 0])
        return val.reshape((points.shape[0],) + self.value_shape)

    evaluate = __call__

    def at_quadrature(self) -> jax.Array:
        """Values at the space's volume quadrature points, ``(nel, nq) + value_shape``."""
        S = self.space
        rule = S.quadrature_rule()
        t = S.tables(rule).full()
        c = self.coeffs.reshape(-1, S.ndofs)[:, S.plan.cell_dofs[rule.elements]]  # (k, ne, nloc)
        val = jnp.einsum("kea,eqa->eqk", c, t.phi)
        return val.reshape(val.shape[:2] + self.value_shape)

    def __repr__(self):
        return f"TensorField({type(self.space).__name__}, ndofs={self.space.ndofs}, shape={self.value_shape})"


# --- pointwise values at quadrature points ------------------------------------------------------------------


def _prepare_inputs(space: FunctionSpace, inputs: dict) -> dict:
    """Callables evaluated at the quadrature points and numbers made arrays, outside jit (as in assemble)."""
    for name, f in inputs.items():
        if isinstance(f, TensorField):
            raise TypeError(
                f"input {name!r} is a TensorField; pass its components (e.g. {name}=t[0, 0]) or its "
                "quadrature values t.at_quadrature()."
            )
    known = known_tables(space, space.quadrature_rule())  # NumPy points when the geometry is concrete
    return prepare_inputs(space, inputs, x=None if known is None else known[1])


def _values(expr: Callable, space: FunctionSpace, fields: dict) -> jax.Array:
    rule = space.quadrature_rule()
    tables = space.tables(rule)
    ne, nq = tables.dx.shape
    inputs = inputs_at(fields, space, rule, tables)
    P = ne * nq
    x = tables.x.reshape(P, -1)
    flat = {
        k: (v.reshape((P,) + v.shape[2:]), None if g is None else g.reshape((P,) + g.shape[2:]))
        for k, (v, g) in inputs.items()
    }

    def point(xp, fl):
        w = FormInputs(xp, None, {k: QuadValue(v, g, k) for k, (v, g) in fl.items()})
        out = expr(w)
        return jnp.asarray(out.value if isinstance(out, QuadValue) else out)

    vals = jax.vmap(point)(x, flat)  # (P, *shape)
    return vals.reshape((ne, nq) + vals.shape[1:])


def _check_expr(expr, space):
    if not callable(expr):
        raise TypeError(
            f"expr must be a callable expr(w) of one quadrature point, got {type(expr).__name__}; write e.g. "
            "lambda w: library.stress(w.u.grad, E, nu)."
        )
    if not isinstance(space, FunctionSpace):
        raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")


def quadrature_values(expr: Callable, space: FunctionSpace, **inputs) -> jax.Array:
    """A pointwise expression of fields evaluated at the volume quadrature points of a space.

    Arguments:
        expr: ``expr(w) -> array`` for one quadrature point, written like a form kernel: ``w.x`` is the point,
            every named input acts as its value and Fields expose ``.grad`` (e.g.
            ``lambda w: library.stress(w.u.grad, 1e5, 0.3)``).
        space: the space whose quadrature points are used (Field inputs must share its elements).
        **inputs: named inputs (numbers, callables of ``x``, arrays at the quadrature points, Fields).

    Returns:
        Values of shape ``(nel, nq) + shape of expr``.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem import library
        >>> from igax.fem.recovery import quadrature_values
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
        >>> u = fem.Field(V, jnp.zeros(V.ndofs))
        >>> quadrature_values(lambda w: library.strain(w.u.grad), V, u=u).shape   # 4 elements, 9 points
        (4, 9, 2, 2)
    """
    _check_expr(expr, space)
    return _values_jit(expr, space, _prepare_inputs(space, inputs))


_values_jit = eqx.filter_jit(_values)


# --- projection ---------------------------------------------------------------------------------------------


def _project(expr, S: FunctionSpace, fields: dict, mass: str, method):
    vals = _values(expr, S, fields)  # (ne, nq, *shape)
    shape = vals.shape[2:]
    ne, nq = vals.shape[:2]
    rule = S.quadrature_rule()
    t = S.tables(rule).full()
    g = vals.reshape(ne, nq, -1)  # (ne, nq, k)
    edofs = S.plan.cell_dofs[rule.elements]  # (ne, nloc)
    _, B = l2_system(t.phi, t.dx, jnp.moveaxis(g, -1, 0), edofs, S.ndofs)  # (k, n)
    if mass == "lumped":
        # Row sums of M (= int phi_i for a partition of unity). Positive for B-splines / NURBS and for
        # P1 and Q1; P2 vertex functions on triangles integrate to zero or less, so lumping must refuse.
        d = jax.ops.segment_sum((t.phi * t.dx[..., None]).sum(1).ravel(), edofs.ravel(), num_segments=S.ndofs)
        d = eqx.error_if(
            d,
            ~(d > 0),
            'mass="lumped" needs positive row sums of the mass matrix, but some basis functions integrate '
            'to zero or less (e.g. P2 on triangles or tetrahedra); use mass="consistent".',
        )
        X = B / d
    else:
        M = assemble(_mass_form, S)
        F = factorize(M, method=method)
        X = jax.vmap(F.solve)(B)  # one factorisation, k right-hand sides
    return X.reshape(shape + (S.ndofs,))


_project_jit = eqx.filter_jit(_project)


def l2_system(phi, dx, g, positions, n: int, slot=None, pattern=None):
    """The system of L2 projections onto a set of basis functions: loads ``b_c[i] = int g_c phi_i`` and, with
    a ``pattern``, the mass matrix ``M[i, j] = int phi_i phi_j`` (traceable; the one projection kernel of
    :func:`project` and :class:`~igax.fem.DirichletBC`'s boundary projection).

    Arguments:
        phi: ``(ne, nq, nloc)`` basis values; dx: ``(ne, nq)`` weights times measure (a rule's tables).
        g: ``(k, ne, nq)`` values of k functions at the points.
        positions: ``(ne, nloc)`` row of each local function in the system; ``n`` drops it (a function
            outside the projected set, e.g. one that vanishes on the boundary).
        n: the number of rows.
        slot, pattern: ``(ne, nloc, nloc)`` CSR slots of the element entries (``pattern.nnz`` drops one) and
            the matrix's pattern; None: loads only (the caller has the mass matrix, e.g. from assemble).

    Returns:
        ``(M or None, B (k, n))``; ``M`` is flagged symmetric positive definite.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.fem.recovery import l2_system
        >>> phi, dx = jnp.full((1, 2, 2), 0.5), jnp.full((1, 2), 0.5)   # one element, two points
        >>> _, B = l2_system(phi, dx, jnp.ones((1, 1, 2)), jnp.array([[0, 1]]), 2)
        >>> B.tolist()
        [[0.5, 0.5]]
    """
    fe = jnp.einsum("eqa,ceq->cea", phi, g * dx)  # (k, ne, nloc)
    B = jax.vmap(lambda f: jax.ops.segment_sum(f.ravel(), positions.ravel(), num_segments=n + 1)[:-1])(fe)
    if pattern is None:
        return None, B
    Me = jnp.einsum("eqa,eqb,eq->eab", phi, phi, dx)
    vals = jax.ops.segment_sum(Me.ravel(), slot.ravel(), num_segments=pattern.nnz + 1)[:-1]
    return SparseMatrix(vals, pattern, symmetric=True, positive_definite=True), B


def project(
    expr: Callable, space: FunctionSpace, *, mass: str = "consistent", method: str | None = None, **inputs
) -> Field | TensorField:
    """L2 projection of a pointwise expression of fields onto a space.

    Solves ``M c = b`` with the scalar mass matrix of the space and ``b_i = int expr phi_i``, for every
    component of ``expr`` at once (one factorisation, all components as right-hand sides). Differentiable in
    every input (assembly and an adjoint solve). The projection is compiled once per ``expr`` object and
    space: define ``expr`` once (not as a new lambda in a loop) when projecting repeatedly.

    Arguments:
        expr: ``expr(w) -> array`` at one quadrature point (see :func:`quadrature_values`).
        space: the target space. Scalar: ``expr`` may return any shape (a scalar gives a :class:`Field`, a
            vector or tensor a :class:`TensorField`). Vector-valued of shape ``(c,)``: ``expr`` must return
            shape ``(c,)`` and the result is a Field on that space.
        mass: ``"consistent"`` (the true L2 projection) or ``"lumped"`` (row-sum lumped mass: a diagonal
            solve; exact for constants only; needs positive row sums, so not P2 on simplices).
        method: linear solver for the consistent mass matrix (see :func:`igax.solvers.solve`).
        **inputs: named inputs of ``expr`` (numbers, callables of ``x``, arrays at the quadrature points,
            Fields on the same elements).

    Returns:
        A :class:`Field` or :class:`TensorField` on ``space``.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
        >>> X = np.asarray(V.scalar().control_points).reshape(-1, 2)
        >>> u = fem.Field(V, jnp.asarray(X.T.ravel()))     # u(x) = x (control points reproduce it)
        >>> S = fem.scalar_space(u.space)
        >>> div_u = fem.project(lambda w: jnp.trace(w.u.grad), S, u=u)
        >>> np.round(div_u(np.array([[0.3, 0.6]])), 10).tolist()   # div x = 2
        [2.0]
    """
    _check_expr(expr, space)
    if mass not in MASS_KINDS:
        raise ValueError(f"mass must be 'consistent' or 'lumped', got {mass!r}.")
    S = scalar_space(space)
    fields = _prepare_inputs(S, inputs)
    shape = jax.eval_shape(lambda f: _values(expr, S, f), fields).shape[2:]
    if space.value_shape and shape != space.value_shape:
        raise ValueError(
            f"expr returns shape {shape}, but the space has value shape {space.value_shape}; project onto "
            "fem.scalar_space(space) for quantities of another shape (the result is then a TensorField)."
        )
    coeffs = _project_jit(expr, S, fields, mass, method)
    if space.value_shape:
        return Field(space, coeffs.reshape(-1))  # component-major, like the vector space's dofs
    if not shape:
        return Field(space, coeffs)
    return TensorField(space, coeffs)


# --- stress recovery ----------------------------------------------------------------------------------------


def _check_displacement(u, kind: str) -> FunctionSpace:
    if not isinstance(u, Field):
        raise TypeError(f"u must be a fem.Field (the displacement), got {type(u).__name__}.")
    lame(1.0, 0.3, kind)  # validates kind
    d = u.space.dim
    if u.value_shape != (d,):
        raise ValueError(
            f"u must be a displacement Field of shape ({d},) on a vector space, got value shape "
            f"{u.value_shape}; build the space with shape=({d},)."
        )
    if (d == 3) != (kind == "3d"):
        raise ValueError(f"kind={kind!r} does not fit a {d}D displacement; use 'plane_strain' or "
                         "'plane_stress' in 2D and '3d' in 3D.")  # fmt: skip
    return u.space


def _target(u_space: FunctionSpace, space):
    if space is None:
        return scalar_space(u_space)
    if not isinstance(space, FunctionSpace) or space.value_shape:
        raise ValueError("space must be a scalar SplineSpace or LagrangeSpace (or None for u's own basis).")
    if not (space.plan is u_space.plan or space.compatible(u_space)):
        raise ValueError(
            "space must share the elements of u's space (same mesh / same knot spans, any degree); leave "
            "space=None to recover on u's own basis."
        )
    return space


# One expression object per kind: the projection is compiled once per (expression, space), not per call.
@functools.cache
def _stress_expr(kind: str):
    def stress_expr(w):
        return stress(w.u.grad, w.E.value, w.nu.value, kind)

    return stress_expr


@functools.cache
def _von_mises_expr(kind: str):
    def von_mises_expr(w):
        return von_mises(stress(w.u.grad, w.E.value, w.nu.value, kind), w.nu.value, kind)

    return von_mises_expr


def recover_stress(
    u: Field,
    E,
    nu,
    kind: str = "plane_strain",
    *,
    space: FunctionSpace | None = None,
    mass: str = "consistent",
    method: str | None = None,
) -> TensorField:
    """The stress of a displacement field, recovered as a continuous tensor field by L2 projection.

    The pointwise stress ``lambda tr(eps) I + 2 mu eps`` of ``u`` (:func:`igax.fem.forms.library.stress`) is
    projected componentwise onto the scalar space of ``u`` (one mass-matrix factorisation for all
    components). Differentiable in ``u``, ``E``, ``nu`` and the geometry.

    Arguments:
        u: displacement Field on a vector space of shape ``(dim,)``.
        E: Young's modulus (number, callable of ``x``, array at quadrature points or scalar Field).
        nu: Poisson's ratio (same kinds).
        kind: "plane_strain" or "plane_stress" (2D: the in-plane stress), "3d".
        space: a scalar target space on the same elements (default: the scalar space of ``u``).
        mass: "consistent" or "lumped" (see :func:`project`).
        method: linear solver for the consistent mass matrix.

    Returns:
        A :class:`TensorField` of shape ``(dim, dim)``; ``sigma[0, 0]`` is the Field ``sigma_xx``.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
        >>> u = fem.Field(V, jnp.zeros(V.ndofs))
        >>> sigma = fem.recover_stress(u, 1e5, 0.3, "plane_strain")
        >>> sxx = sigma[0, 0]                        # a scalar Field
        >>> sxx(np.array([[0.5, 0.5]])).tolist()
        [0.0]
    """
    S = _target(_check_displacement(u, kind), space)
    return project(_stress_expr(kind), S, mass=mass, method=method, u=u, E=E, nu=nu)


def recover_von_mises(
    u: Field,
    E,
    nu,
    kind: str = "plane_strain",
    *,
    space: FunctionSpace | None = None,
    mass: str = "consistent",
    method: str | None = None,
) -> Field:
    """The von Mises stress of a displacement field, recovered as a scalar Field by L2 projection.

    The pointwise von Mises stress of ``u`` (plane strain includes ``sigma_zz = nu (s_xx + s_yy)``, plane
    stress ``sigma_zz = 0``) is projected onto the scalar space of ``u``. Its gradient is finite also where
    the stress vanishes.

    Arguments:
        u, E, nu, kind, space, mass, method: as in :func:`recover_stress`.

    Returns:
        A scalar :class:`Field`.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
        >>> vm = fem.recover_von_mises(fem.Field(V, jnp.zeros(V.ndofs)), 1e5, 0.3, "plane_strain")
        >>> vm.value_shape
        ()
    """
    S = _target(_check_displacement(u, kind), space)
    return project(_von_mises_expr(kind), S, mass=mass, method=method, u=u, E=E, nu=nu)
