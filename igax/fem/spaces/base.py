"""Function spaces: the shared machinery of :class:`~igax.fem.SplineSpace` and
:class:`~igax.fem.LagrangeSpace`.

A space is an ``equinox.Module`` whose JAX leaves are its geometry (control points and weights, or mesh node
coordinates) and whose static part is a :class:`SpacePlan`: everything integer, computed once in NumPy when
the space is built (element dof map, CSR sparsity pattern and the scatter map from element-matrix entries to
CSR slots, boundary dof sets by name, quadrature rules). Basis values and physical gradients at quadrature
points are computed in JAX from the geometry (:meth:`FunctionSpace.tables`), so assembled quantities are
differentiable in the geometry (shape derivatives).

The space protocol: :class:`FunctionSpace` declares what every space provides, as public methods with written
contracts; assembly, fields, boundary conditions, export, plotting and point location call only these (no
switch on space types). Abstract, so a subclass that lacks one cannot be instantiated: :meth:`build_rule`
(quadrature rules), :meth:`tables` (basis tables in JAX), :meth:`sampler` (sampling for pictures and files),
:meth:`locator` and :meth:`tables_at` (point location on the host, differentiable tables at located points).
With defaults: :meth:`host_tables`, :meth:`chunked_tables` (None), :meth:`eval_coeffs`, :meth:`element_dofs`,
:meth:`element_slots`, :meth:`default_resolution`, :meth:`same_geometry`, :attr:`nodal` and :meth:`scalar`.

Vector-valued spaces (``shape=(2,)`` or ``(3,)``) number their dofs component-major:
``dof = component * nscalar + i`` where ``i`` is the scalar dof; locally, element dof ``a = component * nloc
+ i``.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax._held import fetch
from igax.fem.mesh import determinant
from igax.solvers.sparse import CSRPattern

if TYPE_CHECKING:  # annotations only: both modules build on this one
    from igax.fem.spaces.locators import Locator
    from igax.fem.spaces.sampling import Sampler

__all__ = ["FunctionSpace", "SpacePlan", "Rule", "Tables", "BoundaryPiece"]


class Tables(NamedTuple):
    """Scalar basis data at the quadrature points of a :class:`Rule` (JAX arrays).

    Attributes:
        phi: (ne, nq, nloc) basis values; the element axis may have size 1 (the same values everywhere).
        dphi: (ne, nq, nloc, dim) physical gradients; the point axis may have size 1 (affine cells).
        x: (ne, nq, dim) physical points.
        dx: (ne, nq) quadrature weight times the volume (or surface) measure.
        n: (ne, nq, dim) outward unit normals on boundary rules, else None.
    """

    phi: jax.Array
    dphi: jax.Array
    x: jax.Array
    dx: jax.Array
    n: jax.Array | None

    def full(self, xp=jnp) -> Tables:
        """The tables with size-1 (broadcast) element or point axes expanded (``xp``: jnp or np)."""
        ne, nq = self.dx.shape
        phi = xp.broadcast_to(self.phi, (ne, nq) + self.phi.shape[2:])
        dphi = xp.broadcast_to(self.dphi, (ne, nq) + self.dphi.shape[2:])
        return Tables(phi, dphi, self.x, self.dx, self.n)


@dataclass(frozen=True, eq=False)
class Rule:
    """A quadrature rule over a set of elements (the volume, or the element facets on a boundary).

    Attributes:
        elements: (ne,) element ids (with repetition allowed on boundaries: one entry per facet).
        groups: space-specific descriptors, one per group of elements that share reference points; the tables
            of the groups are concatenated along the element axis in this order.
        boundary: boundary name(s) or None for the volume.
    """

    elements: np.ndarray
    groups: tuple
    boundary: tuple[str, ...] | None

    def __hash__(self):
        return id(self)


@dataclass(frozen=True, eq=False)
class BoundaryPiece:
    """A named part of the boundary made of whole boundary facets (see :meth:`FunctionSpace.tag_boundary`).

    Attributes:
        name: the name to use in ``boundary=`` and ``DirichletBC``.
        facets: the selected facets, in the space's own terms (spline spaces: ``((side, mask), ...)`` with a
            boolean mask over the side's element grid; Lagrange spaces: ``(cells, local facets)``).
        dofs: sorted scalar dofs whose basis functions do not vanish on the piece.
        nfacets: number of selected facets.
    """

    name: str
    facets: Any
    dofs: np.ndarray
    nfacets: int


class SpacePlan:
    """The static, integer part of a space (NumPy), compared and hashed by identity.

    Arguments:
        kind: "spline" or "lagrange".
        partition_key: hashable description of the element partition; spaces with equal keys (and kind) share
            quadrature rules, so a Field of one can be an input of a form assembled on the other.
        dim: physical dimension; pdim: reference dimension.
        value_shape: () scalar, (c,) vector-valued.
        cell_dofs: (nel, nloc) scalar dofs of each element.
        nscalar: number of scalar dofs.
        boundary_dofs: name -> sorted scalar dofs on that boundary.
        scalar_pattern: optional ``(CSRPattern, slot (nel, nloc, nloc))`` of the scalar space (tensor-product
            spaces build it as a Kronecker product of 1D patterns); by default it is sorted out of the element
            dof pairs.

    Boundary pieces tagged on a space (:meth:`FunctionSpace.tag_boundary`) live in ``pieces`` (name ->
    :class:`BoundaryPiece`), apart from ``boundary_dofs``: the names of ``boundary_dofs`` cover the boundary
    (``None`` means all of them), a piece is an extra name for part of it.
    """

    # No pieces unless a space tags some; tag_boundary gives a copied plan its own mapping.
    pieces: Mapping[str, BoundaryPiece] = MappingProxyType({})

    def __init__(
        self,
        *,
        kind,
        partition_key,
        dim,
        pdim,
        value_shape,
        cell_dofs,
        nscalar,
        boundary_dofs,
        scalar_pattern=None,
    ):
        self.kind = kind
        self.partition_key = partition_key
        self.dim = int(dim)
        self.pdim = int(pdim)
        self.cell_dofs = np.ascontiguousarray(cell_dofs, dtype=np.int32)
        self.nscalar = int(nscalar)
        self.nel, self.nloc_scalar = self.cell_dofs.shape
        self.boundary_dofs = {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in boundary_dofs.items()}
        if scalar_pattern is None:
            cd = self.cell_dofs
            rows = np.broadcast_to(cd[:, :, None], (self.nel,) + (self.nloc_scalar,) * 2)
            cols = np.broadcast_to(cd[:, None, :], (self.nel,) + (self.nloc_scalar,) * 2)
            pat, slot = CSRPattern.from_coo(rows, cols, (self.nscalar, self.nscalar))
            scalar_pattern = (pat, slot.reshape(self.nel, self.nloc_scalar, self.nloc_scalar))
        self._scalar_pattern = scalar_pattern
        self._set_components(value_shape)

    def _set_components(self, value_shape) -> None:
        """The parts that depend on the number of components (sizes, element dofs, pattern, slots); an empty
        rule cache, as rules may hold component data."""
        self.value_shape = tuple(int(s) for s in value_shape)
        if len(self.value_shape) > 1:
            raise ValueError(f"shape must be () or (ncomponents,), got {value_shape}.")
        self.ncomp = int(np.prod(self.value_shape)) if self.value_shape else 1
        self.ndofs = self.ncomp * self.nscalar
        self.nloc = self.ncomp * self.nloc_scalar
        # Component-major element dofs: local a = c * nloc_scalar + i  <->  global c * nscalar + cell_dofs[e,
        # i].
        offs = (np.arange(self.ncomp, dtype=np.int64) * self.nscalar)[None, :, None]
        self.element_dofs = (
            self.cell_dofs
            if self.ncomp == 1
            else (offs + self.cell_dofs[:, None, :]).reshape(self.nel, self.nloc).astype(np.int32)
        )
        self.pattern = _vector_pattern(self._scalar_pattern[0], self.ncomp)
        self._slot = None
        self._scalar = None
        self.rules: dict = {}

    def scalar(self) -> SpacePlan:
        """The plan of the scalar space with the same basis (``self`` when scalar), built once and kept.

        A shallow copy keeps everything specific to the kind of space (knots, reference element, facets,
        the scalar pattern); only the component-dependent parts are formed anew (:meth:`_set_components`).
        """
        if not self.value_shape:
            return self
        if self._scalar is None:
            out = copy.copy(self)
            out._set_components(())
            self._scalar = out
        return self._scalar

    @property
    def slot(self) -> np.ndarray:
        """CSR slots ``(nel, C nloc, C nloc)`` (int32) of the entries of every element matrix.

        A scalar pattern may give its slots as a function (tensor-product spaces, whose large ones form
        them inside the assembly program instead): they are then formed on first use (for degree 2 on
        1000 x 1000 elements: 324 MB, and 1 GB of temporaries, that such a space never needs).
        """
        if self._slot is None:
            pattern, slot = self._scalar_pattern
            slot = slot() if callable(slot) else slot
            self._slot = _vector_slots(pattern, slot, self.cell_dofs, self.ncomp)
        return self._slot

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    def __repr__(self):
        return f"SpacePlan({self.kind}, ndofs={self.ndofs}, nel={self.nel})"

    def named_dofs(self, name: str) -> np.ndarray:
        """Sorted scalar dofs of a boundary name or of a tagged piece."""
        piece = self.pieces.get(name)
        return piece.dofs if piece is not None else self.boundary_dofs[name]

    def with_piece(self, piece: BoundaryPiece) -> SpacePlan:
        """A copy of this plan with ``piece`` added (or replacing a piece of the same name).

        The copy shares every array (dof maps, pattern, quadrature data) and the volume quadrature rule, so
        it costs nothing but a fresh rule cache for the boundary names (whose meaning may have changed).
        """
        out = copy.copy(self)
        out.pieces = MappingProxyType({**self.pieces, piece.name: piece})
        out.rules = {None: self.rules[None]} if None in self.rules else {}
        return out


def kron_slots(A: CSRPattern, B: CSRPattern, ra, sa, rb, sb):
    """Slots in ``kron(A, B)`` of the entries with rows/slots ``(ra, sa)`` in A and ``(rb, sb)`` in B.

    Row ``(i, k)`` of the Kronecker pattern holds ``len_A(i) * len_B(k)`` entries ordered by A's column first,
    so an entry's slot is the row start plus ``pos_A * len_B(k) + pos_B`` (positions within the rows).
    """
    lenA, lenB = np.diff(A.indptr), np.diff(B.indptr)
    start = np.zeros(A.shape[0] * B.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.outer(lenA, lenB).ravel(), out=start[1:])
    dt = np.int32 if start[-1] < 2**31 else np.int64
    # The inputs are usually broadcast views: work on their compact forms, so that only the last addition
    # has the full (entries) size (degree 3, 250k elements: 63M entries, 2.2 s -> ~0.3 s).
    ra, sa, rb, sb = (_compact(a) for a in (ra, sa, rb, sb))
    row_start = start[ra * B.shape[0] + rb].astype(dt)
    in_a = (sa - A.indptr[ra]).astype(dt) * lenB[rb].astype(dt)
    in_b = (sb - B.indptr[rb]).astype(dt)
    return (row_start + in_a) + in_b


def _compact(a):
    """A broadcast view shrunk to length 1 along its zero-stride axes (same values under broadcasting)."""
    a = np.asarray(a)
    axes = zip(a.strides, a.shape, strict=True)
    return a[tuple(slice(0, 1) if (st == 0 and n > 1) else slice(None) for st, n in axes)]


def kron_pattern(A: CSRPattern, B: CSRPattern) -> CSRPattern:
    """The CSR pattern of ``kron(A, B)`` (rows ``i * nB + k``, columns ``j * mB + l``), columns sorted.

    Formed directly, a block of A's rows at a time: row ``(i, k)`` holds the columns ``j * mB + l`` for ``j``
    in A's row ``i`` and ``l`` in B's row ``k``, in that (already sorted) order. Through ``scipy.sparse.kron``
    (COO intermediates of every entry, then a conversion and a sort) the pattern of a degree-2 patch with
    1000 x 1000 elements (25M entries) needed 0.9 GB of temporaries; here they are a few blocks of 4M entries.
    """
    nA, nB = A.shape[0], B.shape[0]
    lenA, lenB = np.diff(A.indptr), np.diff(B.indptr)
    counts = np.outer(lenA, lenB).ravel()
    indptr = np.zeros(nA * nB + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    start = np.concatenate([[0], np.cumsum(lenA * B.nnz)])  # entries before the rows (i, 0 .. nB - 1)
    lo = 0
    while lo < nA:  # A's rows [lo, hi): about 4M entries
        hi = min(max(int(np.searchsorted(start, start[lo] + 2**22, side="right")) - 1, lo + 1), nA)
        r0, r1 = lo * nB, hi * nB  # the rows of kron(A, B) they give
        rows = np.repeat(np.arange(r0, r1), counts[r0:r1])
        i, k = rows // nB, rows % nB
        a, b = np.divmod(np.arange(indptr[r0], indptr[r1]) - indptr[rows], lenB[k])  # positions in the rows
        cols = A.indices[A.indptr[i] + a].astype(np.int64) * B.shape[1] + B.indices[B.indptr[k] + b]
        indices[indptr[r0] : indptr[r1]] = cols
        lo = hi
    return CSRPattern(indptr, indices, (nA * nB, A.shape[1] * B.shape[1]))


def _full_block(ncomp: int) -> CSRPattern:
    return CSRPattern(np.arange(ncomp + 1) * ncomp, np.tile(np.arange(ncomp), ncomp), (ncomp, ncomp))


def _vector_pattern(pattern: CSRPattern, ncomp: int) -> CSRPattern:
    """Pattern of the component-major vector space, kron(1_CxC, P) (with P's grid hint, per component)."""
    if ncomp == 1:
        return pattern
    out = kron_pattern(_full_block(ncomp), pattern)
    if pattern.grid is not None:
        out.grid = pattern.grid.with_components(ncomp)
    return out


def _vector_slots(pattern: CSRPattern, slot: np.ndarray, cell_dofs: np.ndarray, ncomp: int) -> np.ndarray:
    """Element slots (nel, C nloc, C nloc) in the component-major vector pattern, kron(1_CxC, P)."""
    if ncomp == 1:
        return slot.astype(np.int32, copy=False)  # no copy of an (nel, nloc, nloc) map
    full = _full_block(ncomp)
    nel, nl, _ = slot.shape
    c = np.arange(ncomp)
    ra = np.broadcast_to(c[None, :, None, None, None], (nel, ncomp, nl, ncomp, nl))
    sa = np.broadcast_to((c[:, None] * ncomp + c[None, :])[None, :, None, :, None], ra.shape)
    rb = np.broadcast_to(cell_dofs[:, None, :, None, None].astype(np.int64), ra.shape)
    sb = np.broadcast_to(slot[:, None, :, None, :].astype(np.int64), ra.shape)
    out = kron_slots(full, pattern, ra, sa, rb, sb).reshape(nel, ncomp * nl, ncomp * nl)
    return out.astype(np.int32)


class FunctionSpace(eqx.Module):
    """Base class of finite-element and spline spaces: the space protocol (see the module docstring, and
    ``tests/test_space_protocol.py`` for a space written against it alone).

    Example:
        >>> from igax.fem.spaces.base import FunctionSpace
        >>> class Half(FunctionSpace):          # no sampler, locator or tables_at
        ...     def build_rule(self, names): ...
        ...     def tables(self, rule): ...
        >>> Half()                              # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        TypeError: Can't instantiate abstract class Half with abstract methods locator, sampler, tables_at
    """

    plan: SpacePlan = eqx.field(static=True)

    # -- sizes -------------------------------------------------------------------------------------------
    @property
    def ndofs(self) -> int:
        """Number of degrees of freedom (all components)."""
        return self.plan.ndofs

    @property
    def nscalar(self) -> int:
        """Number of scalar dofs per component."""
        return self.plan.nscalar

    @property
    def value_shape(self) -> tuple[int, ...]:
        """``()`` for scalar spaces, ``(c,)`` for vector-valued ones."""
        return self.plan.value_shape

    @property
    def dim(self) -> int:
        """Physical dimension."""
        return self.plan.dim

    @property
    def nel(self) -> int:
        """Number of elements."""
        return self.plan.nel

    @property
    def nodal(self) -> bool:
        """Whether every dof is the value at a node (then ``dof_coordinates()`` gives the nodes, and
        :class:`~igax.fem.DirichletBC` interpolates callables there instead of projecting them); False by
        default."""
        return False

    @property
    def pattern(self) -> CSRPattern:
        """Sparsity pattern of matrices assembled on this space."""
        return self.plan.pattern

    @property
    def boundary_names(self) -> tuple[str, ...]:
        """Names of the boundaries (use them in :meth:`boundary`, DirichletBC and boundary integrals)."""
        return tuple(self.plan.boundary_dofs)

    @property
    def boundary_pieces(self) -> tuple[str, ...]:
        """Names of the boundary pieces tagged with :meth:`tag_boundary` (``()`` when none)."""
        return tuple(self.plan.pieces)

    # -- boundaries ----------------------------------------------------------------------------------------
    def check_names(self, name) -> tuple[str, ...]:
        if name is None:
            return self.boundary_names
        if callable(name):
            raise TypeError(
                "boundary=/where= takes boundary names, not a function of x; give the part of the boundary "
                "a name first, e.g. V = V.tag_boundary('left_edge', lambda x: np.isclose(x[0], -4.0)), "
                "then pass boundary='left_edge' (or where='left_edge' in DirichletBC)."
            )
        names = (name,) if isinstance(name, str) else tuple(name)
        for nm in names:
            if not isinstance(nm, str) or (nm not in self.plan.boundary_dofs and nm not in self.plan.pieces):
                pieces = f" and tagged pieces {list(self.boundary_pieces)}" if self.plan.pieces else ""
                raise ValueError(
                    f"unknown boundary {nm!r}; this space has boundaries {list(self.boundary_names)}"
                    f"{pieces}. "
                    "Pass one of these names (or a list of them, or None for the whole boundary); name a "
                    "part of a boundary with V.tag_boundary(name, ...)."
                )
        return names

    def boundary(
        self, name: str | Sequence[str] | None = None, *, component: int | None = None
    ) -> np.ndarray:
        """Dofs on a named boundary or tagged piece (sorted NumPy int array).

        Arguments:
            name: a boundary name (or a piece tagged with :meth:`tag_boundary`), a list of names, or None for
                the whole boundary.
            component: for vector-valued spaces, only this component's dofs (default: all components).

        Returns:
            Sorted global dof indices.

        Example:
            >>> from igax import fem
            >>> V2 = fem.LagrangeSpace(fem.unit_square(1, "quad"), degree=1, shape=(2,))
            >>> V2.boundary("left", component=0).tolist()    # x-displacement dofs on the left edge
            [0, 2]
            >>> V2.boundary("left").tolist()                 # both components
            [0, 2, 4, 6]
        """
        names = self.check_names(name)
        scal = np.unique(np.concatenate([self.plan.named_dofs(n) for n in names] + [np.zeros(0, np.int64)]))
        if component is None:
            comps = range(self.plan.ncomp)
        else:
            if not (isinstance(component, (int, np.integer)) and 0 <= component < self.plan.ncomp):
                raise ValueError(
                    f"component must be an int in [0, {self.plan.ncomp}) for a space of shape "
                    f"{self.value_shape}, got {component!r}."
                )
            comps = [int(component)]
        return np.concatenate([c * self.nscalar + scal for c in comps]).astype(np.int64)

    def tag_boundary(
        self,
        name: str,
        where: Callable[[np.ndarray], Any] | None = None,
        *,
        side: str | Sequence[str] | None = None,
        range: Sequence | None = None,  # noqa: A002 - the natural word for a parameter interval
    ) -> FunctionSpace:
        """The same space with a named boundary piece: the boundary facets selected by a predicate or range.

        A piece is used like a boundary name: ``assemble(form, V, boundary="left_edge")`` integrates over its
        facets only, ``DirichletBC(V, "left_edge", g)`` constrains the dofs whose basis functions do not
        vanish there, ``V.boundary("left_edge")`` lists them. Facets are whole: an element facet belongs to
        the piece or not, decided at its midpoint (like :meth:`igax.fem.Mesh.tag_boundary`), so a piece ends
        on element boundaries (on a spline patch, at knots). On a spline space a basis function is constrained
        when its support touches the piece, so a Dirichlet piece that ends at a knot of continuity >= C1 also
        fixes the one or two functions that reach past its end.

        Arguments:
            name: the piece's name; it must differ from the space's boundary names (a piece of that name is
                replaced).
            where: a function of facet midpoints ``x`` (shape ``(dim, nfacets)``, first axis = coordinate, as
                ``w.x`` in forms) returning a bool array ``(nfacets,)``; compare with a tolerance, e.g.
                ``lambda x: np.isclose(x[0], -4.0)``. Evaluated once, here, on the current geometry: the
                piece then follows its facets when the geometry moves (``with_geometry``, ``with_points``).
            side: only facets of this boundary (or of these boundaries); default all of the boundary.
            range: spline spaces: only facets whose parameter midpoint lies in ``range`` along the side
                (a single ``side`` is required): ``(a, b)`` on a 2D patch, one ``(a, b)`` or ``None`` per
                tangential direction (in increasing direction order) on a 3D patch. Parameters are the
                patch's knot values.

        Returns:
            A new space of the same kind (``V`` itself is unchanged); assemble, constrain and solve with it
            throughout: its plan differs from ``V``'s, so ``fem.solve`` refuses a DirichletBC of one with the
            other as ``space=``.

        Example:
            >>> import numpy as np
            >>> from igax import fem
            >>> V = fem.SplineSpace(fem.geometry.plate_with_hole().refine(degree=2, elements=8))
            >>> V = V.tag_boundary("outer_left", lambda x: np.isclose(x[0], -4.0), side="outer")
            >>> V = V.tag_boundary("outer_top", side="outer", range=(0.5, 1.0))
            >>> length = fem.functional(lambda w: 1.0)
            >>> round(float(fem.assemble(length, V, boundary="outer_left")), 8)   # the left side: 4.0
            4.0
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"tag_boundary: name must be a non-empty string, got {name!r}.")
        if name in self.plan.boundary_dofs:
            raise ValueError(
                f"tag_boundary: {name!r} is already a boundary of this space ({list(self.boundary_names)}); "
                "choose another name for the piece, e.g. f'{name}_part'."
            )
        if where is None and range is None:
            raise ValueError(
                "tag_boundary needs where= (a predicate on facet midpoints x, e.g. lambda x: x[0] < 0.5) "
                "and/or range= (a parameter interval along side=); with neither it would name the whole "
                "boundary, which None already means."
            )
        if where is not None and not callable(where):
            raise TypeError(
                f"tag_boundary: where must be a function of the facet midpoints x (dim, nfacets) returning "
                f"bools, e.g. lambda x: np.isclose(x[0], 0.0); got {type(where).__name__}."
            )
        if where is not None and any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(self)):
            raise ValueError(
                "tag_boundary: where= is evaluated on the geometry, which is traced here (inside jit or "
                "grad); tag the piece once outside, e.g. V = V.tag_boundary(...) before the jitted function; "
                "the piece then follows the geometry (V.with_geometry / with_points keep it)."
            )
        if side is not None:
            sides = (side,) if isinstance(side, str) else tuple(side)
            for s in sides:
                if s in self.plan.pieces:
                    raise ValueError(
                        f"tag_boundary: side={s!r} is a tagged piece; select from the boundaries "
                        f"{list(self.boundary_names)} instead (combine conditions in one where=)."
                    )
            self.check_names(sides)  # unknown names, and the space's own refusals (glued or collapsed sides)
        else:
            sides = self.boundary_names
        facets, dofs, nf, ncand = self._select_boundary_facets(sides, where, range, side is not None)
        if nf == 0:
            raise ValueError(
                f"tag_boundary: the selection for {name!r} holds none of the {ncand} boundary facets of "
                f"{list(sides)}; compare coordinates with a tolerance (np.isclose(x[0], 1.0), x[0] < 0.5 + "
                "1e-9) and check the side and range."
            )
        plan = self.plan.with_piece(BoundaryPiece(name, facets, np.unique(dofs).astype(np.int64), int(nf)))
        return self._with_plan(plan)

    def _with_plan(self, plan: SpacePlan) -> FunctionSpace:
        """This space (the same geometry leaves) with another plan of the same basis: a tagged piece, or the
        scalar companion. The plan is a static field, which ``eqx.tree_at`` cannot replace; the copy is new,
        so setting its field does not mutate any space in use."""
        out = copy.copy(self)
        object.__setattr__(out, "plan", plan)
        return out

    def _select_boundary_facets(self, sides, where, prange, side_given):
        """Space-specific: ``(facets, scalar dofs, count, candidates)`` of the boundary facets selected."""
        raise TypeError(
            f"tag_boundary is not available on {type(self).__name__}; tag the piece on a SplineSpace or "
            "LagrangeSpace (or tag the mesh: Mesh.tag_boundary)."
        )

    @staticmethod
    def _predicate_mask(where, x: np.ndarray) -> np.ndarray:
        """Apply a facet predicate to midpoints ``x`` (dim, nf), checking what it returns."""
        mask = np.asarray(where(x))
        nf = x.shape[1]
        if mask.shape == () and mask.dtype == bool:
            mask = np.full(nf, bool(mask))
        if mask.shape != (nf,) or mask.dtype != bool:
            raise ValueError(
                f"tag_boundary: where must return a bool array of shape ({nf},) for facet midpoints x of "
                f"shape {x.shape}, got dtype {mask.dtype} and shape {mask.shape}; write e.g. "
                "lambda x: np.isclose(x[0], 0.0) (x[0] is the first coordinate of every midpoint)."
            )
        return mask

    # -- the space protocol: quadrature ----------------------------------------------------------------------
    def quadrature_rule(self, boundary=None) -> Rule:
        """The quadrature rule of the volume (``boundary=None``) or of named boundaries, built once per plan.

        Arguments:
            boundary: None, a boundary name, a tagged piece, or a list of them (checked by
                :meth:`check_names`).

        Returns:
            The cached :class:`Rule` (built by :meth:`build_rule` on first use).

        Example:
            >>> import igax.fem as fem
            >>> V = fem.LagrangeSpace(fem.unit_square(2), degree=1)
            >>> len(V.quadrature_rule().elements), len(V.quadrature_rule("left").elements)
            (8, 2)
        """
        key = None if boundary is None else self.check_names(boundary)
        if key not in self.plan.rules:
            self.plan.rules[key] = self.build_rule(key)
        return self.plan.rules[key]

    @abc.abstractmethod
    def build_rule(self, names: tuple[str, ...] | None) -> Rule:
        """Build the quadrature rule of the volume (``names=None``) or of the boundaries ``names``.

        Called once per plan and boundary key by :meth:`quadrature_rule` (which caches it); ``names`` were
        checked by :meth:`check_names`. ``Rule.groups`` holds whatever the space's :meth:`tables` needs to
        evaluate each group of elements (reference points and weights, facet ids, ...).
        """

    @abc.abstractmethod
    def tables(self, rule: Rule) -> Tables:
        """Scalar basis data at the rule's points, computed in JAX from the geometry (differentiable in it).

        Returns:
            :class:`Tables`: ``phi (ne, nq, nloc)``, ``dphi (ne, nq, nloc, dim)`` physical gradients (the
            element axis of ``phi``, or the point axis of ``dphi``, may have size 1), ``x (ne, nq, dim)``,
            ``dx (ne, nq)`` weights times measure, ``n`` outward normals on boundary rules (else None).
        """

    def host_tables(self, rule: Rule) -> Tables | None:
        """:meth:`tables` computed in NumPy from the concrete geometry, or None (no host path; the default).

        Used for tables computed once per geometry (:func:`igax.fem.forms.assembly.known_tables`): NumPy costs
        nothing to compile, where the same code as a compiled program costs 0.2-0.4 s at every new mesh size.
        """
        return None

    def chunked_tables(self, rule: Rule) -> Callable | None:
        """A function ``ids -> Tables`` of the elements at positions ``ids`` (a traced int array: a chunk of
        the volume rule), or None (the default): assembly of large spaces then runs in one piece instead of a
        loop over element chunks."""
        return None

    def quadrature_points(self, boundary: str | Sequence[str] | None = None) -> jax.Array:
        """Physical quadrature points of the volume rule (or of named boundaries), shape ``(nel, nq, dim)``.

        These are the points where assembly evaluates callables and Fields (``w.x`` in a form kernel, with the
        coordinate axis first there), in the same element and point order; differentiable in the geometry and
        usable under ``jax.jit``. ``.reshape(-1, V.dim)`` gives a flat point list, e.g. collocation points.

        Arguments:
            boundary: None for the volume, or a boundary name (or a list of names) for facet points.

        Returns:
            ``(nel, nq, dim)`` array; on boundaries the first axis runs over the boundary facets.

        Example:
            >>> from igax import fem
            >>> V = fem.LagrangeSpace(fem.unit_square(2), degree=1)
            >>> V.quadrature_points().shape                     # 8 triangles, 3 points each
            (8, 3, 2)
            >>> X = V.quadrature_points().reshape(-1, V.dim)    # (npoints, dim)
        """
        return _quadrature_points(self, None if boundary is None else self.check_names(boundary))

    def compatible(self, other: FunctionSpace) -> bool:
        """Whether ``other`` has the same elements and quadrature rules (a Field of it can be a form input
        of an assembly on this space, evaluated with this space's rule)."""
        return type(other) is type(self) and other.plan.partition_key == self.plan.partition_key

    # -- index maps ----------------------------------------------------------------------------------------
    def element_dofs(self, rule: Rule, ids=None) -> jax.Array:
        """Scalar dofs ``(ne, nloc_scalar)`` of the rule's elements, or of the elements at positions ``ids``
        (an int array, traced: a chunk of the volume rule), as a JAX array.

        By default a gather from the plan's table (a constant of the program, behind :func:`pin`); spaces
        with structure compute it in the program instead (:class:`SplineSpace`).
        """
        d = pin(_of_elements(self.plan.cell_dofs, rule, self.plan.nel))
        return d if ids is None else d[ids]

    def element_slots(self, rule: Rule, ids=None) -> jax.Array:
        """CSR slots ``(ne, (C nloc)^2)`` of the entries of the (component-major) element matrices of the
        rule's elements, or of the elements at positions ``ids``; see :meth:`element_dofs`."""
        s = pin(_of_elements(self.plan.slot, rule, self.plan.nel).reshape(len(rule.elements), -1))
        return s if ids is None else s[ids]

    # -- the space protocol: coefficients --------------------------------------------------------------------
    def eval_coeffs(self, coeffs, tables: Tables, rule: Rule, ids=None):
        """Value ``(ne, nq, *vs)`` and gradient ``(ne, nq, *vs, dim)`` of coefficients at the rule's points.

        The default gathers each element's coefficients through :meth:`element_dofs` and contracts them with
        the tables; a space whose basis is not one scalar table per element overrides it.

        Arguments:
            coeffs: ``(ndofs,)`` coefficients, component-major.
            tables: :meth:`tables` of ``rule`` (or of the elements at positions ``ids``).
            rule: a rule of this space.
            ids: None, or the positions of a chunk of the rule's elements (traced ints).
        """
        p = self.plan
        c = coeffs.reshape(p.ncomp, p.nscalar)[:, self.element_dofs(rule, ids)]  # (ncomp, ne, nloc)
        t = tables.full()
        val = jnp.einsum("cea,eqa->eqc", c, t.phi)
        grad = jnp.einsum("cea,eqak->eqck", c, t.dphi)
        if not p.value_shape:
            val, grad = val[..., 0], grad[..., 0, :]
        return val, grad

    def check_coeffs(self, coeffs, name: str = "coeffs"):
        """Check a coefficient vector's length against ``ndofs`` (a clear error instead of a broadcast)."""
        shape = jnp.shape(coeffs)
        if len(shape) < 1 or shape[-1] != self.ndofs:
            raise ValueError(
                f"{name} must have shape (ndofs,) = ({self.ndofs},) for this space, got {shape}. "
                "Use one coefficient per dof, e.g. jnp.zeros(V.ndofs)."
            )

    # -- the space protocol: value shape, sampling, point location ----------------------------------------
    def scalar(self) -> FunctionSpace:
        """The scalar space with the same basis (``self`` when it is already scalar).

        A vector space of shape ``(c,)`` is ``c`` copies of a scalar space (component-major dofs); the
        companion shares the basis, the elements, the quadrature rules and the geometry (the same JAX leaves,
        so derivatives with respect to the geometry reach it), and Fields of either can be inputs of forms
        assembled on the other. Its plan is built once per plan (:meth:`SpacePlan.scalar`).

        Example:
            >>> import igax.fem as fem
            >>> V2 = fem.LagrangeSpace(fem.unit_square(2), degree=1, shape=(2,))
            >>> V2.scalar().ndofs == V2.ndofs // 2, V2.scalar().value_shape
            (True, ())
        """
        return self if not self.value_shape else self._with_plan(self.plan.scalar())

    @abc.abstractmethod
    def sampler(self, resolution: int) -> Sampler:
        """The geometry part of sampling fields of this space for pictures and files (NumPy, once).

        Arguments:
            resolution: sub-intervals per element (spline spaces: per knot span and direction); a space
                that samples at fixed points refuses other values with a ValueError.

        Returns:
            An :class:`igax.fem.spaces.sampling.Sampler`: sample ``points``, ``cells``, ``cell_type``,
            ``edges``
            (and ``parameters``, ``grid_shape`` where they exist), called on NumPy coefficients to give values
            and gradients at the points.
        """

    def default_resolution(self) -> int:
        """The ``resolution`` :func:`igax.fem.sample` uses when none is given (1 by default)."""
        return 1

    def same_geometry(self, other: FunctionSpace) -> bool:
        """Whether fields of ``other`` can be sampled together with fields of this space (the same points).

        The default compares the type, the element partition and every geometry leaf.
        """
        if type(other) is not type(self) or other.plan.partition_key != self.plan.partition_key:
            return False
        a, b = jax.tree_util.tree_leaves(self), jax.tree_util.tree_leaves(other)
        return len(a) == len(b) and all(
            np.shape(x) == np.shape(y) and np.allclose(np.asarray(x), np.asarray(y))
            for x, y in zip(a, b, strict=True)
        )

    @abc.abstractmethod
    def locator(self) -> Locator:
        """A host locator of physical points for this space's (concrete) geometry, in NumPy.

        Returns:
            An :class:`igax.fem.spaces.locators.Locator`: ``locate(pts)`` gives each point's element (or
            patch) index,
            reference coordinates and status, ``tables(location)`` the dofs and basis there. Built once per
            geometry and cached by :func:`igax.fem.locate.locate`.
        """

    @abc.abstractmethod
    def tables_at(self, index, ref, points) -> tuple[jax.Array, Tables]:
        """Scalar dofs ``(npts, nloc)`` and basis tables ``(npts, 1, ...)`` at located points, in JAX.

        Arguments:
            index: ``(npts,)`` element (or patch) of each point, from :meth:`locator`.
            ref: ``(npts, pdim)`` reference coordinates found on the host.
            points: ``(npts, dim)`` the physical points.

        The tables must be differentiable in the points and in the geometry: map ``ref`` through
        :func:`igax.fem.spaces.locators.inverse_map` (the implicit derivative of the inverse geometry map).
        """


# --- geometry helpers shared by the spaces ------------------------------------------------------------------


def _of_elements(table: np.ndarray, rule: Rule, nel: int) -> np.ndarray:
    """The rows of a per-element table for a rule's elements: the table itself (no copy) when they are all
    the elements in order (a volume rule)."""
    e = rule.elements
    if len(e) == nel and (nel == 0 or (e[0] == 0 and e[-1] == nel - 1 and np.all(np.diff(e) == 1))):
        return table
    return table[rule.elements]


def det_inv(J, xp=jnp):
    """Determinant and inverse of small square Jacobians (..., d, d), closed forms for d <= 3.

    For d <= 2 the determinant is :func:`igax.fem.mesh.determinant`; for d = 3 it is the first row dotted with
    its cofactors, which the inverse needs anyway (computing it by the expansion of ``determinant`` as well
    made XLA's CPU program of a Q1-hexahedra elasticity assembly twice as slow: 9 ms against 4.4 ms).
    """
    d = J.shape[-1]
    if d > 3:
        return xp.linalg.det(J), xp.linalg.inv(J)
    if d == 1:
        det = determinant(J)
        return det, (1.0 / det)[..., None, None]
    if d == 2:
        det = determinant(J)
        a, b, c, e = J[..., 0, 0], J[..., 0, 1], J[..., 1, 0], J[..., 1, 1]
        inv = xp.stack([xp.stack([e, -b], -1), xp.stack([-c, a], -1)], -2) / det[..., None, None]
        return det, inv
    cof0 = xp.cross(J[..., 1, :], J[..., 2, :])
    cof1 = xp.cross(J[..., 2, :], J[..., 0, :])
    cof2 = xp.cross(J[..., 0, :], J[..., 1, :])
    det = xp.sum(J[..., 0, :] * cof0, axis=-1)
    return det, xp.stack([cof0, cof1, cof2], axis=-1) / det[..., None, None]


def finish_tables(phi, dphi_ref, x, J, w, n_ref=None, xp=jnp) -> Tables:
    """Physical gradients, measures and normals from reference data.

    Arguments:
        phi: (ne, nq, nloc); dphi_ref: (ne, nq, nloc, pdim); x: (ne, nq, dim); J: (ne, nq, dim, pdim);
        w: (ne, nq) reference weights (on facets: the reference facet measure);
        n_ref: None (volume) or (ne, nq, pdim) / (pdim,) reference outward unit normals.
        xp: ``jax.numpy`` (traceable) or ``numpy`` (host tables of a concrete geometry).
    """
    det, Jinv = det_inv(J, xp)  # (ne, nq), (ne, nq, pdim, dim)
    # Unrolled over the reference axis (see assemble.py: faster than a batched einsum on CPU).
    dphi = sum(
        dphi_ref[..., k, None] * Jinv[:, :, None, k, :] for k in range(Jinv.shape[-2])
    )  # (ne, nq, nloc, dim)
    dx, n = measure_and_normals(det, Jinv, w, n_ref, x.shape, xp)
    return Tables(phi, dphi, x, dx, n)


def measure_and_normals(det, Jinv, w, n_ref, xshape, xp=jnp):
    """``(dx, n)``: weights times the volume (or, with reference normals ``n_ref``, surface) measure, and the
    outward unit normals (None on volumes); ``det`` (ne, nq) and ``Jinv`` (ne, nq, pdim, dim) of the map."""
    # |det J|: a patch may be parametrised with negative orientation (e.g. angle first, radius second); the
    # guard at space construction demands one sign everywhere, so |det J| is the volume element.
    adet = xp.abs(det)
    if n_ref is None:
        return w * adet, None
    # Nanson: n ds = |det J| J^{-T} n_ref dS; the covector J^{-T} n_ref is outward for either orientation.
    m = xp.einsum("eqki,...k->eqi", Jinv, xp.asarray(n_ref, Jinv.dtype))  # (ne, nq | 1, dim)
    norm = xp.linalg.norm(m, axis=-1)
    return w * adet * norm, xp.broadcast_to(m / norm[..., None], xshape)


def pin(tree):
    """The arrays of ``tree`` as JAX arrays behind an optimization barrier (inside a compiled program).

    Basis tables, index maps and geometry of a space closed over by a jitted function are constants of the
    compiled program, and whatever is computed from constants alone is a candidate for XLA's constant
    folding, which evaluates it at compile time: a gather of the vertices of two million triangles took 4 s
    to fold (logging "Constant folding an instruction is taking > 1s") and its result is stored in the
    executable. Behind the barrier such work runs with the program instead. The barrier is differentiable and
    vmappable.
    """
    return jax.lax.optimization_barrier(jax.tree_util.tree_map(jnp.asarray, tree))


def hoist_constants(fun, *args):
    """``fun`` traced once on ``args``, its closed-over arrays made inputs of the program around it.

    A loop body (``lax.scan``) that closes over concrete arrays has them written into the program as
    constants of the body, once per copy of the body: a differentiated loop has two (the forward loop and
    the backward one that recomputes it), and each copy is compiled with its own. The returned function
    evaluates the same operations with the concrete arrays of at least ``_HOIST_ENTRIES`` entries pinned
    (:func:`pin`) where it is called: outside the loop, once; the loop takes them as loop-invariant inputs.
    On the CPU, arrays of at least 4 MB are not constants at all but copied into the program when it runs
    (:func:`igax._held.fetch`).

    Arguments:
        fun: a function of ``args`` (pytrees of arrays).
        args: arrays (or ``jax.ShapeDtypeStruct``) of the shapes ``fun`` will be called with.

    Returns:
        A function of the same arguments and results as ``fun``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from igax.fem.spaces.base import hoist_constants
        >>> idx = np.arange(4000) % 3
        >>> body = lambda acc, x: (acc + jnp.zeros(3).at[idx].add(x), None)
        >>> f = hoist_constants(body, jnp.zeros(3), 1.0)
        >>> jax.lax.scan(f, jnp.zeros(3), jnp.ones(2))[0].tolist()
        [2668.0, 2666.0, 2666.0]
    """
    closed, shape = jax.make_jaxpr(fun, return_shape=True)(*args)
    consts = list(closed.consts)
    big = [
        i for i, c in enumerate(consts) if not isinstance(c, jax.core.Tracer) and np.size(c) >= _HOIST_ENTRIES
    ]
    if not big:
        return fun
    # Equal arrays enter once (a P1 mesh's cells are also its element dofs: two 24 MB copies at 1M DOFs).
    first: dict[int, int] = {}  # position in big -> the position of the first equal array
    for a, i in enumerate(big):
        first[a] = next((first[b] for b in range(a) if _same(consts[big[b]], consts[i])), a)
    keys = sorted(set(first.values()))
    # Large ones are read when the program runs, from memory igax holds (igax._held, on the CPU): no
    # constant at all; the others are pinned.
    pinned = {a: fetch(consts[big[a]]) for a in keys}
    rest = [a for a in keys if not isinstance(pinned[a], jax.core.Tracer)]
    pinned.update(zip(rest, pin([consts[big[a]] for a in rest]), strict=True))
    for a, i in enumerate(big):
        consts[i] = pinned[first[a]]
    tree = jax.tree_util.tree_structure(shape)

    def hoisted(*a):
        out = jax.core.eval_jaxpr(closed.jaxpr, consts, *jax.tree_util.tree_leaves(a))
        return jax.tree_util.tree_unflatten(tree, out)

    return hoisted


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


_HOIST_ENTRIES = 1024  # smaller constants stay in the loop body (cheap to copy, and XLA may fold them)


def check_jacobian(det, what: str, hint: str, *, orientation_free: bool = False):
    """Raise when a concrete Jacobian determinant vanishes or changes sign (skipped under tracing).

    Arguments:
        det: (ne, nq) signed determinants.
        orientation_free: accept a negative orientation if it holds everywhere (spline patches); otherwise
            demand det > 0 (meshes).
    """
    if isinstance(det, jax.core.Tracer):
        return
    det = np.asarray(det)
    sign = 1.0
    if orientation_free and det.size:
        sign = -1.0 if np.median(det) < 0 else 1.0
    scale = np.max(np.abs(det)) if det.size else 1.0
    bad = ~(sign * det > 1e-12 * scale)
    if bad.any():
        e, q = np.argwhere(bad)[0]
        problem = "zero or of the wrong sign" if orientation_free else "not positive"
        raise ValueError(
            f"{what}: the geometry Jacobian is {problem} "
            f"at {int(bad.sum())} quadrature point(s) (first: element {int(e)}, point {int(q)}, det J = "
            f"{float(det[e, q]):.3e}); elements are degenerate or inverted. {hint}"
        )


@eqx.filter_jit  # eager, the table computation would compile op by op for every call
def _quadrature_points(space: FunctionSpace, boundary):
    return space.tables(space.quadrature_rule(boundary)).x
