"""Strong (Dirichlet) boundary conditions by symmetric elimination.

``condense`` keeps the sparsity pattern and the size of the system: constrained rows and columns are zeroed,
the diagonal entry of a constrained dof keeps its original value ``A_dd`` (so the scale of the matrix, and of
its eigenvalues, is unchanged) and the right-hand side becomes ``b - A g`` with ``b_d = A_dd g_d`` on
constrained dofs. A symmetric positive definite (semi-definite with enough constraints) matrix stays
symmetric positive definite, and everything is a JAX function of ``A.values``, ``b`` and the prescribed
values, so gradients flow to all three.

Prescribed values are numbers, arrays, or callables ``g(x)``. Lagrange dofs are nodal, so ``g`` is
interpolated at the nodes. Spline dofs are not interpolatory: ``g`` is L2-projected onto the spline trace on
the named boundaries (a small sparse SPD solve with the boundary mass matrix).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._compile import lazy_jit
from igax.fem.field import Field
from igax.fem.forms.assembly import known_tables
from igax.fem.forms.inputs import as_jax
from igax.fem.recovery import l2_system
from igax.fem.spaces.base import FunctionSpace
from igax.fem.spaces.mixed import MixedSpace
from igax.solvers.sparse import CSRPattern, SparseMatrix

__all__ = ["DirichletBC", "merge_bcs"]


class _Dofs:
    """Constrained dofs as static pytree data: hashable (by content, hashed once) and compared by value, so
    that equal conditions rebuilt on every call reuse one compiled program."""

    __slots__ = ("array", "_hash")

    def __init__(self, array: np.ndarray):
        self.array = array
        self._hash = hash((array.shape, array.tobytes()))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return (
            isinstance(other, _Dofs) and self._hash == other._hash and np.array_equal(self.array, other.array)
        )


def _mixed_bc(W, where, value, component, field):
    """A DirichletBC on field ``field`` of a mixed space, in its block numbering."""
    if not isinstance(W, MixedSpace):
        raise TypeError(f"field= applies to a MixedSpace; got a {type(W).__name__} (drop field=).")
    if not (isinstance(field, (int, np.integer)) and 0 <= field < len(W.spaces)):
        raise ValueError(
            f"a DirichletBC on a MixedSpace needs field= (an int in [0, {len(W.spaces)})), got {field!r}."
        )
    if callable(value) and not isinstance(value, Field):
        value = _stacked(value)
    return W.lift(DirichletBC(W.spaces[field], where, value, component=component), field)


def _stacked(g):
    """A boundary-value callable that may return a list of components, as one returning an array."""

    def h(x):
        out = g(x)
        if isinstance(out, (list, tuple)):
            out = jnp.stack([jnp.broadcast_to(jnp.asarray(a), x.shape[1:]) for a in out])
        return out

    return h


def _number_dtype(value):
    """The dtype of a prescribed Python number: float, or complex for a complex one (complex problems)."""
    return jnp.result_type(complex) if isinstance(value, complex) else jnp.result_type(float)


@jax.tree_util.register_pytree_node_class
class DirichletBC:
    """Prescribe dof values strongly.

    A pytree: its children are the space (whose leaves are its geometry) and ``values``; the dofs, boundary
    names and component are static. A DirichletBC can therefore be an argument of ``jax.jit``, ``jax.vmap``
    (a batch of values: stacked ``values``) and ``jax.grad`` (derivatives with respect to the values).

    Arguments:
        space: the space the system is assembled on.
        where: a boundary name, a list of names, None (whole boundary), or an int array of dof indices (in
            any order; each dof once when ``value`` is an array).
        value: a number; an array with one value per constrained dof, paired in order with the dofs of
            ``where`` when it is an array (``value[i]`` goes to ``where[i]``) and otherwise with the sorted
            ``bc.dofs``; a :class:`~igax.fem.Field` (its values on the constrained dofs: the coefficients
            themselves on the same space, interpolated or projected from another space); or a callable
            ``g(x)`` with ``x`` of shape ``(dim, npts)`` returning ``(npts,)`` (scalar spaces or one
            component) or ``(ncomp, npts)`` (all components of a vector space). Differentiable (JAX arrays,
            Fields, or closures over them).
        component: for vector spaces, constrain only this component (with boundary names).
        field: on a :class:`~igax.fem.MixedSpace`, the field constrained: ``where``, ``value`` and
            ``component`` refer to that sub-space, and the condition is lifted to the block numbering
            (a callable may then return a list of components).

    Attributes:
        dofs: the constrained dofs, sorted and unique; ``values`` holds their prescribed values in that order.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from igax import fem
        >>> V = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=4))
        >>> bc = fem.DirichletBC(V, "inner", 0.0)                       # u = 0 on the inner arc
        >>> bc = fem.DirichletBC(V, ["inner", "outer"], lambda x: x[0] * x[1])
        >>> V2 = fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=2, elements=4), shape=(2,))
        >>> fix_x = fem.DirichletBC(V2, "inner", 0.0, component=0)      # u_x = 0 on the inner arc
        >>> bc = fem.DirichletBC(V, np.array([5, 3, 1]), jnp.array([50.0, 30.0, 10.0]))  # dof 5 gets 50
        >>> bc.dofs.tolist(), bc.values.tolist()
        ([1, 3, 5], [10.0, 30.0, 50.0])
    """

    def __init__(
        self,
        space: FunctionSpace,
        where: str | Sequence[str] | np.ndarray | None = None,
        value: float | jax.Array | Callable = 0.0,
        *,
        component: int | None = None,
        field: int | None = None,
    ):
        if isinstance(space, MixedSpace) or field is not None:
            lifted = _mixed_bc(space, where, value, component, field)
            self.__dict__.update(lifted.__dict__)
            return
        if not isinstance(space, FunctionSpace):
            raise TypeError(f"space must be a SplineSpace or LagrangeSpace, got {type(space).__name__}.")
        self.space = space
        names = None
        if (
            where is None
            or isinstance(where, str)
            or callable(where)  # refused by check_names, which points to tag_boundary
            or (isinstance(where, (list, tuple)) and all(isinstance(w, str) for w in where))
        ):
            names = space.check_names(where)
            dofs = space.boundary(names, component=component)
        else:
            dofs = np.asarray(where)
            if dofs.dtype.kind not in "iu" or dofs.ndim != 1:
                raise TypeError(
                    "where must be a boundary name, a list of names, None, or a 1D integer array of dofs; "
                    f"got an array of dtype {dofs.dtype} and shape {dofs.shape}."
                )
            if dofs.size and (dofs.min() < 0 or dofs.max() >= space.ndofs):
                raise ValueError(f"dof indices must lie in [0, {space.ndofs}).")
            if component is not None:
                raise ValueError(
                    "component= applies to boundary names; with explicit dofs, select them yourself."
                )
            dofs = dofs.astype(np.int64)
        # Store the dofs sorted and unique (the elimination and its caches key on them) and keep, for an
        # array of values given beside explicit dofs, the permutation that carries each value with its dof.
        order = np.argsort(dofs, kind="stable")
        self.dofs = dofs[order]
        self.names = names
        self.component = component
        repeated = self.dofs[1:] == self.dofs[:-1]
        values = self._per_dof_array(value, len(dofs))
        if values is not None and repeated.any():
            dup = np.unique(self.dofs[1:][repeated])
            raise ValueError(
                f"DirichletBC: where contains duplicate dofs {dup[:8].tolist()}; give each dof once "
                "(value is paired with where in order), e.g. where, first = np.unique(where, "
                "return_index=True); value = value[first]."
            )
        if repeated.any():  # a number or a callable gives one value per dof whatever the repeats
            self.dofs = np.unique(self.dofs)
        self.values = values[order] if values is not None else self._values(value)

    # -- pytree ----------------------------------------------------------------------------------------------
    def tree_flatten(self):
        return (self.space, self.values), (_Dofs(self.dofs), self.names, self.component)

    @classmethod
    def tree_unflatten(cls, aux, children):
        out = cls.__new__(cls)  # no checks: transformations rebuild it with tracers or placeholders
        out.space, out.values = children
        out.dofs, out.names, out.component = aux[0].array, aux[1], aux[2]
        return out

    # -- prescribed values -----------------------------------------------------------------------------------
    @staticmethod
    def _per_dof_array(value, n: int):
        """``value`` as an array of shape (n,) when it is one (n = number of given dofs), else None."""
        if callable(value) or isinstance(value, Field):
            return None
        v = jnp.asarray(value, dtype=None if hasattr(value, "dtype") else _number_dtype(value))
        if v.ndim == 0:
            return None
        if v.shape != (n,):
            raise ValueError(
                f"value must be a number, a Field, a callable g(x), or an array of shape ({n},) (one per "
                f"constrained dof), got shape {v.shape}."
            )
        return v

    def _values(self, value):
        n = self.dofs.shape[0]
        if isinstance(value, Field):
            return self._field_values(value)
        if not callable(value):  # a number (arrays are paired with their dofs by _per_dof_array)
            if isinstance(
                value, (int, float, complex, np.number, np.ndarray)
            ):  # concrete: no compiled broadcast
                dtype = value.dtype if hasattr(value, "dtype") else _number_dtype(value)
                return jax.device_put(np.full(n, value, dtype=dtype))  # a transfer, not a program
            v = jnp.asarray(value, dtype=None if hasattr(value, "dtype") else _number_dtype(value))
            return jnp.broadcast_to(v, (n,))
        V = self.space
        if V.nodal:  # dofs are point values: interpolate, else L2-project on the boundary
            return self._interpolate(value)
        if self.names is None:
            raise ValueError(
                "a callable value on a spline space needs boundary names (it is L2-projected on those "
                "boundaries); pass where='name' or a list of names, or give an array of dof values."
            )
        return self._project(value)

    def _field_values(self, field):
        """Values of a Field on the constrained dofs."""
        V = self.space
        if field.value_shape not in ((), V.value_shape):
            raise ValueError(
                f"value is a Field of shape {field.value_shape} but the space has value shape "
                f"{V.value_shape}; give a Field with the space's shape (or a scalar one)."
            )
        if field.space.plan is V.plan:  # the same dofs: their coefficients, exactly
            return field.coeffs[self.dofs]
        dim = V.plan.dim
        # Field(points) takes (npts, dim) and returns (npts,) + value_shape; g(x) takes (dim, npts) and
        # returns (npts,) or (ncomp, npts).
        return self._values(lambda x: jnp.moveaxis(field(x.reshape(dim, -1).T), 0, -1))

    def _components_of(self, g, x):
        """Evaluate g at points x (dim, npts) -> (ncomp_used, npts)."""
        out = jnp.asarray(g(x))
        comps, layout = self._layout(out.shape, x.shape)
        return comps, _arrange(out, layout, x.shape[1])

    def _layout(self, shape, xshape):
        """The components a callable's output of ``shape`` gives, and how to arrange it (static)."""
        V = self.space
        npts = xshape[1]
        if not V.value_shape:
            comps = [0]
        elif self.component is not None:
            comps = [self.component]
        else:
            comps = list(range(V.plan.ncomp))
        if shape in ((), (npts,)) and len(comps) == 1:
            return comps, ("row", None)
        if shape == (V.plan.ncomp, npts) and self.component is None:
            return comps, ("all", None)
        if shape == (V.plan.ncomp, npts):
            return comps, ("pick", self.component)
        shown = (npts,) if shape == () else shape  # a number counts as one value per point
        raise ValueError(
            f"the boundary value callable returned shape {shown} for x of shape {xshape}; expected "
            f"({npts},)" + (f" or ({V.plan.ncomp}, {npts})" if V.value_shape else "") + "."
        )

    def _interpolate(self, g):
        V = self.space
        ns = V.nscalar
        comp, scal = self.dofs // ns, self.dofs % ns
        xs = _dof_points(V, scal)  # (dim, n)
        out = jnp.asarray(g(xs))
        comps, layout = self._layout(out.shape, xs.shape)
        row = np.searchsorted(np.asarray(comps), comp)
        if not np.all(np.asarray(comps)[row] == comp):
            raise ValueError("internal: dofs of an unexpected component.")
        return _pick_values(out, row, layout=layout)

    def _project(self, g):
        """L2 projection of g onto the trace space of the named boundaries, per component."""
        from igax.solvers.linear import _check_method, _raise_on_failure

        V = self.space
        p = V.plan
        rule = V.quadrature_rule(self.names)
        key = ("trace-mass", self.names)
        if key not in p.rules:
            bsc = np.unique(np.concatenate([p.named_dofs(n) for n in self.names]))
            pos = -np.ones(p.nscalar, dtype=np.int64)
            pos[bsc] = np.arange(bsc.shape[0])
            loc = pos[p.cell_dofs[rule.elements]]  # (ne, nloc): position in the boundary set or -1
            ne, nl = loc.shape
            r = np.broadcast_to(loc[:, :, None], (ne, nl, nl))
            c = np.broadcast_to(loc[:, None, :], (ne, nl, nl))
            ok = (r >= 0) & (c >= 0)
            pat, slot = CSRPattern.from_coo(r[ok], c[ok], (bsc.shape[0],) * 2)
            full = np.full(ok.shape, pat.nnz, dtype=np.int64)
            full[ok] = slot
            locs = np.where(loc >= 0, loc, bsc.shape[0])
            p.rules[key] = (pat, full, pos, locs)
        pat, slot, pos, locs = p.rules[key]
        # The tables: computed once per geometry when it is concrete (else in the caller's trace).
        known = known_tables(V, rule)
        t, xq = known if known is not None else (V.tables(rule), None)
        ne, nq = t.dx.shape
        if xq is None:
            xs = jnp.moveaxis(t.x, -1, 0).reshape(p.dim, ne * nq)
        else:  # concrete: g gets a read-only NumPy array (no compiled reshape or indexing per mesh size)
            xs = xq.reshape(p.dim, ne * nq)
        out = as_jax(g(xs))
        comps, layout = self._layout(out.shape, xs.shape)
        flags = SparseMatrix(np.zeros(pat.nnz, t.dx.dtype), pat, symmetric=True, positive_definite=True)
        method = _check_method(None, flags)  # the solver the projection's matrix gets
        comp, scal = self.dofs // p.nscalar, self.dofs % p.nscalar
        row = np.searchsorted(np.asarray(comps), comp)
        result = _projected(
            out, t.phi, t.dx, slot, locs, row, pos[scal], pattern=pat, layout=layout, method=method
        )
        return _raise_on_failure(result, method).value

    # -- elimination -----------------------------------------------------------------------------------------
    def _masks(self, pattern: CSRPattern):
        key = ("bc-masks", pattern, self.dofs.tobytes())
        cache = self.space.plan.rules
        if key not in cache:
            isd = np.zeros(pattern.shape[0], dtype=bool)
            isd[self.dofs] = True
            # (each slot's row flag by a repeat over the rows: no nnz-sized row table kept on the pattern)
            constrained = np.repeat(isd, np.diff(pattern.indptr)) | isd[pattern.indices]
            diag = pattern.diagonal_slots[self.dofs]
            if np.any(diag < 0):
                raise ValueError("the matrix pattern lacks diagonal entries for constrained dofs.")
            cache[key] = (_slots_or_mask(constrained, diag), diag)
        return cache[key]

    def _check_system(self, A: SparseMatrix, b) -> None:
        if A.shape[0] != self.space.ndofs:
            raise ValueError(
                f"A has shape {A.shape} but the space of this DirichletBC has {self.space.ndofs} dofs; "
                "assemble A on the same space."
            )
        if jnp.shape(b) != (self.space.ndofs,):
            raise ValueError(f"b must have shape ({self.space.ndofs},), got {jnp.shape(b)}.")

    def condense(self, A: SparseMatrix, b: jax.Array) -> tuple[SparseMatrix, jax.Array]:
        """Symmetric elimination: ``(A_c, b_c)`` of the same size and pattern with ``x_d = g_d`` built in."""
        self._check_system(A, b)
        constrained, diag = self._masks(A.pattern)
        return condense(A, jnp.asarray(b), self.dofs, self.values, constrained, diag)

    def expand(self, x: jax.Array) -> jax.Array:
        """Set the constrained entries of a solution exactly to their prescribed values."""
        return jnp.asarray(x).at[self.dofs].set(self.values)

    def __repr__(self):
        where = self.names if self.names is not None else f"{self.dofs.shape[0]} dofs"
        return f"DirichletBC({where}, ndofs={self.dofs.shape[0]})"


# -- prescribed values, compiled -----------------------------------------------------------------------------
# Each helper is one compiled program per mesh size; eagerly, the same steps compiled one small program per
# operation (about a hundred for a projected boundary value, 3 s on 2 cores), again for every new size.
def _arrange(out, layout, npts: int):
    """A callable's output as (ncomp_used, npts), following :meth:`DirichletBC._layout`."""
    mode, c = layout
    if mode == "row":
        return jnp.broadcast_to(out, (npts,))[None]
    return out if mode == "all" else out[c][None]


def _dof_points(V: FunctionSpace, scal):
    """Coordinates of scalar dofs ``scal`` (Lagrange nodes), shape (dim, n)."""
    return V.dof_coordinates()[scal].T


def _pick_values(out, row, *, layout):
    """Value of dof ``i`` from the row (component) ``row[i]`` of the arranged output at point ``i``."""
    vals = _arrange(out, layout, row.shape[0])
    return vals[row, jnp.arange(row.shape[0])]


def _projected(out, phi, dx, slot, locs, row, sel, *, pattern, layout, method):
    """L2 projections of the components of ``out`` onto the boundary trace space, as one SolveResult.

    ``value`` holds the projected value of each constrained dof (component ``row[i]``, boundary position
    ``sel[i]``); the diagnostics are the worst over the components (one multi-right-hand-side solve).
    """
    from igax.solvers.linear import _solve_result

    ne, nq = dx.shape
    gv = _arrange(out, layout, ne * nq).reshape(-1, ne, nq)  # (ncomp_used, ne, nq)
    M, rhs = l2_system(phi, dx, gv, locs, pattern.shape[0], slot, pattern)
    r = jax.vmap(lambda b: _solve_result(M, b, method=method, options=()))(rhs)
    worst = jnp.argmax(r.status)
    return type(r)(r.value[row, sel], r.status[worst], r.iterations.max(), r.residual.max(), r.cause[worst])


def _slots_or_mask(constrained: np.ndarray, diag: np.ndarray) -> np.ndarray:
    """What :func:`condense` zeroes: the slots of the constrained rows and columns as int32 indices, less
    the constrained dofs' own diagonal slots (which keep their values), where they take less room than the
    boolean mask over all slots (the usual case: the boundary is a small part of the matrix); else the mask.

    With indices, the values are zeroed by a scatter that XLA runs in place on the buffer of the matrix
    values, and nothing else reads that buffer (the kept diagonal is read from the result). The select of
    a mask writes a second nnz-sized buffer (200 MB more in the program's temporaries for 1M degree-2
    spline dofs, resident while the factorisation runs), and the mask is a constant of the program (25 MB
    there, against under 1 MB of indices)."""
    if 4 * np.count_nonzero(constrained) >= constrained.shape[0] or constrained.shape[0] >= 2**31:
        return constrained
    keep = constrained.copy()
    keep[diag] = False
    return np.flatnonzero(keep).astype(np.int32)


def condense(
    A: SparseMatrix, b, dofs, values, constrained, diag, homogeneous: bool | None = None
) -> tuple[SparseMatrix, jax.Array]:
    """:meth:`DirichletBC.condense` on plain arrays (traceable; ``dofs``, ``constrained``, ``diag`` as from
    :meth:`DirichletBC._masks`), so it can run inside one compiled program with the solve.

    ``constrained``: the slots of the constrained rows and columns as a boolean mask over the slots, or the
    int indices of those slots less the diagonal slots ``diag`` (zeroed in place, see
    :func:`_slots_or_mask`). ``homogeneous``: whether the prescribed values are known to be zero (None: when
    they are concrete and zero); a caller that passes them into a compiled program of its own tells it
    beforehand."""
    if jnp.result_type(constrained) == jnp.bool_:
        add = A.values[diag]
        vals = jnp.where(jnp.asarray(constrained), 0.0, A.values).at[diag].set(add)
    else:  # indices: a scatter into the values' own buffer; the diagonal slots are not among them
        vals = A.values.at[constrained].set(0.0, unique_indices=True, indices_are_sorted=True)
        add = vals[diag]
    if homogeneous if homogeneous is not None else known_zero(values):
        # Homogeneous conditions (the usual u = 0), known when the program is traced: A g = 0, and the
        # product is left out, with the copy of the CSR pattern that it would write into the program (a
        # 108 MB constant for 1M degree-2 spline dofs, twice that in the program's text while compiling).
        bc = jnp.asarray(b, jnp.result_type(b, A.values, values)).at[dofs].set(0.0)
    else:
        g_full = jnp.zeros(A.shape[0], jnp.result_type(A.values, values)).at[dofs].set(values)
        bc = (b - A @ g_full).at[dofs].set(add * values)
    return A.with_values(vals), bc


def known_zero(values) -> bool:
    """Whether the prescribed values are concrete (not traced) and all zero."""
    if isinstance(values, jax.core.Tracer):
        return False
    return not np.any(np.asarray(values))


# One-off programs (run once per boundary condition): cheap compiler options.
_dof_points = lazy_jit(eqx.filter_jit, _dof_points)
_pick_values = lazy_jit(jax.jit, _pick_values, static_argnames="layout")
_projected = lazy_jit(jax.jit, _projected, static_argnames=("pattern", "layout", "method"))


def merge_bcs(bcs) -> DirichletBC | None:
    """One DirichletBC from several on the same space (later ones win where dofs coincide)."""
    if bcs is None:
        return None
    if isinstance(bcs, DirichletBC):
        return bcs
    bcs = list(bcs)
    if not bcs:
        return None
    if len(bcs) == 1:
        return bcs[0]
    space = bcs[0].space
    for b in bcs:
        if not isinstance(b, DirichletBC):
            raise TypeError(f"bc must be a DirichletBC or a list of them, got {type(b).__name__}.")
        if b.space.plan is not space.plan:
            raise ValueError("all DirichletBC objects passed together must be on the same space.")
    dofs = np.concatenate([b.dofs for b in bcs])
    # Keep the last occurrence of each dof: unique over the reversed list.
    _, idx = np.unique(dofs[::-1], return_index=True)
    keep = dofs.shape[0] - 1 - idx
    out = DirichletBC.__new__(DirichletBC)
    out.space, out.names, out.component = space, None, None
    out.dofs = dofs[keep]
    if any(isinstance(b.values, jax.core.Tracer) for b in bcs):
        out.values = jnp.concatenate([jnp.asarray(b.values) for b in bcs])[keep]
    else:  # concrete: merged on the host (no concatenate and gather programs per mesh size)
        vals = np.concatenate([np.asarray(b.values) for b in bcs])[keep]
        out.values = jax.device_put(vals)
    return out
