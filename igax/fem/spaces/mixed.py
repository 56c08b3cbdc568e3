"""Mixed (product) spaces: several fields on the same elements, e.g. velocity and pressure.

A :class:`MixedSpace` ``W = V_0 x V_1 x ...`` numbers its dofs in blocks: all dofs of field 0 (in that
space's own order, component-major for vector fields), then all of field 1, and so on, so a coefficient
vector is ``join(c_0, c_1, ...)`` and ``split`` cuts it back. The fields share the elements (the same mesh,
or the same knot spans) and one quadrature rule, that of the field with the most local basis functions
(the highest degree): every sub-space evaluates its tables at those points, which is what the space protocol
allows for compatible spaces (``FunctionSpace.compatible``). The block sparsity pattern couples every pair
of dofs that share an element and is built once, in NumPy, like a single space's.

A mixed space is not itself a :class:`~igax.fem.spaces.FunctionSpace` (it has no single basis table);
:func:`igax.fem.assemble`, :func:`igax.fem.solve`, :func:`igax.fem.solve_nonlinear` and
:class:`~igax.fem.DirichletBC` (with ``field=``) accept it, and forms assembled on it receive
tuples of jets, ``u = (u0, u1)``, ``v = (v0, v1)`` (see :mod:`igax.fem.forms.mixed_assembly`).

Saddle-point problems (Stokes) determine the pressure only up to a constant when the velocity is prescribed
on the whole boundary. ``pressure=`` says how the last field (the pressure) is fixed: ``"pin"`` prescribes
its first dof to zero, ``"mean"`` solves with that pin and then removes the mean exactly (the pressure basis
is a partition of unity, so shifting every coefficient by the mean shifts the function by it; the result is
the zero-mean solution, and stays differentiable). Without either, a solve whose boundary conditions cover
the whole velocity boundary fails with an error naming ``pressure=``.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from igax.fem.field import Field
from igax.fem.spaces.base import FunctionSpace, Rule
from igax.solvers.sparse import CSRPattern

__all__ = ["MixedSpace", "MixedField"]

_PRESSURE = (None, "pin", "mean", "free")


class MixedPlan:
    """The static part of a mixed space: offsets, the block pattern and the element maps (NumPy, by id)."""

    kind = "mixed"

    def __init__(self, plans: Sequence, primary: int):
        self.plans = tuple(plans)
        self.primary = int(primary)
        sizes = [p.ndofs for p in plans]
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(sizes)]))
        self.ndofs = self.offsets[-1]
        self.dim = plans[0].dim
        self.nel = plans[0].nel
        # Element dofs of all fields, block-numbered: (nel, Nloc), the local order field by field.
        self.element_dofs = np.concatenate(
            [p.element_dofs.astype(np.int64) + o for p, o in zip(plans, self.offsets, strict=False)], axis=1
        )
        self.nlocs = tuple(p.nloc for p in plans)
        n = self.element_dofs.shape[1]
        rows = np.broadcast_to(self.element_dofs[:, :, None], (self.nel, n, n))
        cols = np.broadcast_to(self.element_dofs[:, None, :], (self.nel, n, n))
        self.pattern, slot = CSRPattern.from_coo(rows, cols, (self.ndofs, self.ndofs))
        self.slot = slot.reshape(self.nel, n * n)
        self.rules: dict = {}  # caches of DirichletBC (masks) and of the mixed assembly

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other

    def __repr__(self):
        return f"MixedPlan(fields={len(self.plans)}, ndofs={self.ndofs}, nel={self.nel})"


class MixedSpace(eqx.Module):
    """The product of function spaces on the same elements, with block dof numbering.

    Arguments:
        *spaces: two or more :class:`~igax.fem.spaces.FunctionSpace` on the same elements (the same mesh, or
            spline spaces on the same knot spans), of any degrees and value shapes.
        pressure: how the last field (a pressure) is fixed in solves: ``"pin"`` (its first dof is prescribed
            to zero), ``"mean"`` (zero mean, exactly), or not at all: None (the default: a solve whose
            conditions prescribe the other fields on the whole boundary and leave the pressure free is an
            error that names this argument) or ``"free"`` (no check: the last field is no pressure, or its
            constant is fixed otherwise).

    Attributes:
        spaces: the sub-spaces; ``ndofs`` the total; ``offsets[i]`` the first dof of field ``i``.

    Example:
        >>> from igax import fem
        >>> mesh = fem.unit_square(2)
        >>> W = fem.MixedSpace(fem.LagrangeSpace(mesh, 2, shape=(2,)), fem.LagrangeSpace(mesh, 1))
        >>> W.ndofs, W.offsets
        (59, (0, 50, 59))
    """

    spaces: tuple
    plan: MixedPlan = eqx.field(static=True)
    pressure: str | None = eqx.field(static=True)

    def __init__(self, *spaces: FunctionSpace, pressure: str | None = None):
        if len(spaces) == 1 and isinstance(spaces[0], (list, tuple)):
            spaces = tuple(spaces[0])
        if len(spaces) < 2:
            raise ValueError(f"MixedSpace needs two or more spaces, got {len(spaces)}.")
        for i, s in enumerate(spaces):
            if not isinstance(s, FunctionSpace):
                raise TypeError(
                    f"MixedSpace: spaces[{i}] must be a SplineSpace or LagrangeSpace, got {type(s).__name__}."
                )
        if pressure not in _PRESSURE:
            raise ValueError(f"pressure must be None, 'pin', 'mean' or 'free', got {pressure!r}.")
        primary = int(np.argmax([s.plan.nloc_scalar for s in spaces]))
        for i, s in enumerate(spaces):
            if not spaces[primary].compatible(s):
                raise ValueError(
                    f"MixedSpace: spaces[{i}] is not on the same elements as spaces[{primary}]; build all "
                    "fields on one mesh (LagrangeSpace(mesh, ...)) or on patches with the same knot spans "
                    "(the same breakpoints; degrees and continuity may differ)."
                )
        key = tuple(id(s.plan) for s in spaces)
        cache = _PLANS.get(key)
        if cache is None or any(a is not b for a, b in zip(cache[0], [s.plan for s in spaces], strict=True)):
            cache = ([s.plan for s in spaces], MixedPlan([s.plan for s in spaces], primary))
            _PLANS[key] = cache
            while len(_PLANS) > 16:
                _PLANS.pop(next(iter(_PLANS)))
        self.spaces = tuple(spaces)
        self.plan = cache[1]
        self.pressure = pressure

    # -- sizes and numbering ---------------------------------------------------------------------------------
    @property
    def ndofs(self) -> int:
        return self.plan.ndofs

    @property
    def offsets(self) -> tuple[int, ...]:
        return self.plan.offsets

    @property
    def dim(self) -> int:
        return self.plan.dim

    @property
    def primary(self) -> FunctionSpace:
        """The sub-space whose quadrature rule the mixed space uses (the one of highest degree)."""
        return self.spaces[self.plan.primary]

    def __len__(self):
        return len(self.spaces)

    def __getitem__(self, i: int) -> FunctionSpace:
        return self.spaces[i]

    def quadrature_rule(self, boundary=None) -> Rule:
        return self.primary.quadrature_rule(boundary)

    def field_dofs(self, i: int) -> np.ndarray:
        """The dofs of field ``i`` in the mixed numbering."""
        return np.arange(self.offsets[i], self.offsets[i + 1])

    def split(self, u) -> tuple[Field, ...]:
        """The fields of mixed coefficients (or a :class:`MixedField`) as a tuple of Fields."""
        c = _coeffs(self, u)
        return tuple(
            Field(s, c[a:b]) for s, a, b in zip(self.spaces, self.offsets, self.offsets[1:], strict=False)
        )

    def join(self, *parts) -> jax.Array:
        """Mixed coefficients from one Field or coefficient vector per field (in order)."""
        if len(parts) == 1 and isinstance(parts[0], (list, tuple)):
            parts = tuple(parts[0])
        if len(parts) != len(self.spaces):
            raise ValueError(f"join needs one part per field ({len(self.spaces)}), got {len(parts)}.")
        out = []
        for i, (s, p) in enumerate(zip(self.spaces, parts, strict=True)):
            c = p.coeffs if isinstance(p, Field) else jnp.asarray(p)
            if jnp.shape(c) != (s.ndofs,):
                raise ValueError(f"part {i} must have shape ({s.ndofs},), got {jnp.shape(c)}.")
            out.append(c)
        return jnp.concatenate(out)

    def field(self, coeffs) -> MixedField:
        return MixedField(self, coeffs)

    # -- boundary conditions ---------------------------------------------------------------------------------
    def lift(self, bc, field: int):
        """A :class:`~igax.fem.DirichletBC` built on sub-space ``field``, moved to the mixed numbering."""
        if bc.space.plan is not self.spaces[field].plan:
            raise ValueError(f"the DirichletBC was built on a different space than field {field}.")
        out = type(bc).__new__(type(bc))  # no checks: they ran on the sub-space
        out.space, out.names, out.component = self, bc.names, bc.component
        out.dofs = bc.dofs + self.offsets[field]
        out.values = bc.values
        return out

    def check_coeffs(self, coeffs, name: str = "coeffs"):
        shape = jnp.shape(coeffs)
        if len(shape) < 1 or shape[-1] != self.ndofs:
            raise ValueError(f"{name} must have shape ({self.ndofs},) for this mixed space, got {shape}.")


_PLANS: dict = {}


def _coeffs(W: MixedSpace, u):
    c = u.coeffs if isinstance(u, (Field, MixedField)) else jnp.asarray(u)
    W.check_coeffs(c, "u")
    return c


class MixedField(eqx.Module):
    """A function on a :class:`MixedSpace`: its coefficients, with the fields as Fields (``u[0]``, ``split``).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> mesh = fem.unit_square(2)
        >>> W = fem.MixedSpace(fem.LagrangeSpace(mesh, 2, shape=(2,)), fem.LagrangeSpace(mesh, 1))
        >>> u, p = fem.MixedField(W, jnp.ones(W.ndofs)).split()
        >>> float(p([[0.3, 0.4]])[0]), u.value_shape
        (1.0, (2,))
    """

    space: MixedSpace
    coeffs: jax.Array

    def __init__(self, space: MixedSpace, coeffs):
        if not isinstance(space, MixedSpace):
            raise TypeError(f"space must be a MixedSpace, got {type(space).__name__}.")
        coeffs = jnp.asarray(coeffs)
        space.check_coeffs(coeffs)
        self.space = space
        self.coeffs = coeffs

    def split(self) -> tuple[Field, ...]:
        return self.space.split(self.coeffs)

    def __getitem__(self, i: int) -> Field:
        return self.split()[i]

    def __iter__(self):
        return iter(self.split())

    def __len__(self):
        return len(self.space.spaces)


# -- inf-sup stable velocity-pressure pairs ------------------------------------------------------------------
def taylor_hood(mesh, degree: int = 2, *, pressure: str | None = None) -> MixedSpace:
    """The Taylor-Hood pair on a mesh: vector velocity of ``degree``, continuous pressure of ``degree - 1``.

    P2/P1 on triangles (tetrahedra), Q2/Q1 on quadrilaterals (hexahedra) for ``degree=2``: inf-sup stable,
    velocity error ``O(h^(degree + 1))`` in L2 and pressure ``O(h^degree)``. The pressure space keeps a
    quadrature rule of the velocity's accuracy for its own norms (assembly uses the velocity's rule).

    Arguments:
        mesh: a :class:`~igax.fem.Mesh` (triangles, quadrilaterals, tetrahedra or hexahedra).
        degree: the velocity degree, at least 2.
        pressure: the pressure constraint of solves (see :class:`MixedSpace`).

    Returns:
        ``MixedSpace(velocity, pressure)``.

    Example:
        >>> from igax import fem
        >>> W = fem.taylor_hood(fem.unit_square(4), pressure="mean")
        >>> tuple(s.ndofs for s in W.spaces)
        (162, 25)
    """
    from igax.fem.spaces.lagrange import LagrangeSpace

    if not isinstance(degree, (int, np.integer)) or degree < 2:
        raise ValueError(
            f"degree must be an int >= 2 (the velocity degree; pressure degree - 1), got {degree!r}."
        )
    dim = np.asarray(mesh.points).shape[1]
    V = LagrangeSpace(mesh, int(degree), shape=(dim,))
    Q = LagrangeSpace(mesh, int(degree) - 1, quad_degree=2 * int(degree))
    return MixedSpace(V, Q, pressure=pressure)


def spline_taylor_hood(patch, degree: int = 3, elements=8, *, pressure: str | None = None) -> MixedSpace:
    """An isogeometric Taylor-Hood pair on one spline patch: velocity degree ``p + 1``, pressure degree ``p``.

    Both spaces live on the same knot spans (``elements`` per direction). The pressure is the patch refined
    to degree ``p = degree - 1`` with maximal continuity ``C^(p-1)``; the velocity is that space elevated by
    one degree, which raises every knot's multiplicity by one, so it keeps continuity ``C^(p-1)`` at degree
    ``p + 1``. This is the isogeometric Taylor-Hood element, inf-sup stable on any mesh of the patch (Bressan
    and Sangalli, IMA J. Numer. Anal. 33 (2013) 629-651, by the macro-element technique): the velocity has
    one more degree than the pressure at the same smoothness, the spline analogue of P2/P1, whereas equal
    continuity ``C^p`` at degree ``p + 1`` with the same knots is the unstable choice without the extra
    multiplicity. Rates: velocity ``O(h^(p + 2))`` in L2, pressure ``O(h^(p + 1))``. For ``degree=2`` on a
    rectangle it is Q2/Q1.

    Arguments:
        patch: a :class:`~igax.bases.NURBSPatch` (e.g. ``fem.geometry.rectangle()``), of degree at most
            ``degree - 1``.
        degree: the velocity degree ``p + 1`` (at least 2).
        elements: elements per direction (an int or one per direction).
        pressure: the pressure constraint of solves (see :class:`MixedSpace`).

    Returns:
        ``MixedSpace(velocity, pressure)`` of :class:`~igax.fem.SplineSpace`.

    Example:
        >>> from igax import fem
        >>> W = fem.spline_taylor_hood(fem.geometry.rectangle(), degree=3, elements=4)
        >>> [s.ndofs for s in W.spaces]             # cubic C^1 (10 x 10, two components), quadratic C^1
        [200, 36]
    """
    from igax.fem.spaces.spline import SplineSpace

    if not isinstance(degree, (int, np.integer)) or degree < 2:
        raise ValueError(
            f"degree must be an int >= 2 (the velocity degree; pressure degree - 1), got {degree!r}."
        )
    P = patch.refine(degree=int(degree) - 1, elements=elements)
    U = P
    for axis in range(len(P.degrees)):
        U = U.elevate_degree(axis, 1)
    dim = np.asarray(P.control_points).shape[-1]
    # The pressure keeps as many points as the velocity for its own norms (assembly uses the velocity's rule).
    Q = SplineSpace(P, quad_points=int(degree) + 1)
    return MixedSpace(SplineSpace(U, shape=(dim,)), Q, pressure=pressure)
