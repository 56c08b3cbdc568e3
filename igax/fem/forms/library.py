"""Standard weak forms: diffusion, mass, reaction, advection-diffusion, sources, Neumann/Robin, linear
elasticity.

Forms that take coefficients read them from named inputs of :func:`igax.fem.assemble` (numbers, callables of
``x``, arrays at quadrature points or Fields), so coefficients stay differentiable::

    A = fem.assemble(library.diffusion, V, kappa=kappa_field)
    b = fem.assemble(library.source, V, f=lambda x: 1.0)
    A = A + fem.assemble(library.robin, V, boundary="outer", alpha=2.0)
    b = b + fem.assemble(library.neumann, V, boundary="outer", g=lambda x: x[0])

A Robin condition with an ambient value, ``kappa du/dn = -alpha (u - u_inf)`` (heat transfer to a surrounding
medium at ``u_inf``), is a matrix term and a load term; :func:`robin_ambient` assembles both in one call::

    Ar, br = library.robin_ambient(V, boundary="outer", alpha=2.0, u_inf=20.0)
    u = fem.solve(A + Ar, b + br, bc=bc)

Every form here declares its named inputs and their value shapes (``inputs=``), so assembly rejects a missing,
unknown or misshapen input (``f=jnp.array([1., 2.])`` on a scalar space) instead of broadcasting it;
``neumann``, ``robin`` and ``traction`` are boundary forms (``boundary=True``) and refuse to be assembled
without ``boundary=``. ``"value"`` inputs have the space's value shape: a vector ``f`` for ``source`` on a
vector space (``jnp.full(2, c)`` for the same value in each component).

Linear elasticity uses Lame parameters computed from Young's modulus ``E`` and Poisson's ratio ``nu`` (numbers
fixed when the form is made, or named inputs ``w.E`` / ``w.nu`` when left as None). :func:`stress` and
:func:`von_mises` are pointwise (from a displacement gradient); :func:`igax.fem.recover_stress` and
:func:`igax.fem.recover_von_mises` project them onto continuous fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp

from igax.fem.forms.assembly import assemble
from igax.fem.forms.form import Form, bilinear_form, linear_form
from igax.fem.forms.nonlinear import energy_form, residual_form

if TYPE_CHECKING:
    import jax

    from igax.fem.spaces.base import FunctionSpace
    from igax.solvers.sparse import SparseMatrix

__all__ = [
    "laplace",
    "diffusion",
    "mass",
    "reaction",
    "advection_diffusion",
    "source",
    "neumann",
    "robin",
    "robin_load",
    "robin_ambient",
    "traction",
    "body_force",
    "lame",
    "strain",
    "stress",
    "linear_elasticity",
    "von_mises",
    "neo_hookean",
    "neo_hookean_energy",
    "saint_venant_kirchhoff",
    "saint_venant_kirchhoff_energy",
    "dead_load",
    "dead_traction",
]


@bilinear_form(symmetric=True, inputs={})
def laplace(u, v, w):
    """``grad u . grad v``."""
    return jnp.sum(u.grad * v.grad)


@bilinear_form(symmetric=True, inputs={"kappa": "scalar"})
def diffusion(u, v, w):
    """``kappa grad u . grad v`` (input ``kappa``: scalar coefficient)."""
    return w.kappa * jnp.sum(u.grad * v.grad)


@bilinear_form(symmetric=True, inputs={})
def mass(u, v, w):
    """``u . v`` (scalar or vector spaces)."""
    return jnp.sum(u.value * v.value)


@bilinear_form(symmetric=True, inputs={"c": "scalar"})
def reaction(u, v, w):
    """``c u v`` (input ``c``)."""
    return w.c * jnp.sum(u.value * v.value)


@bilinear_form(inputs={"kappa": "scalar", "b": "vector"})
def advection_diffusion(u, v, w):
    """``kappa grad u . grad v + (b . grad u) v`` (inputs ``kappa`` scalar, ``b`` vector of shape (dim,))."""
    return w.kappa * jnp.dot(u.grad, v.grad) + jnp.dot(w.b.value, u.grad) * v.value


@linear_form(inputs={"f": "value"})
def source(v, w):
    """``f v`` (input ``f``; a vector ``f`` for vector spaces)."""
    return jnp.sum(w.f.value * v.value)


@linear_form(boundary=True, inputs={"g": "value"})
def neumann(v, w):
    """``g v`` on a boundary (input ``g``; assemble with ``boundary=``)."""
    return jnp.sum(w.g.value * v.value)


@bilinear_form(symmetric=True, boundary=True, inputs={"alpha": "scalar"})
def robin(u, v, w):
    """``alpha u v`` on a boundary (input ``alpha``; pair with ``neumann`` for ``alpha u + du/dn = g``)."""
    return w.alpha * jnp.sum(u.value * v.value)


@linear_form(boundary=True, inputs={"alpha": "scalar", "u_inf": "value"})
def robin_load(v, w):
    """``alpha u_inf v`` on a boundary: the load half of ``alpha (u - u_inf)`` (see :func:`robin_ambient`)."""
    return w.alpha * jnp.sum(w.u_inf.value * v.value)


def robin_ambient(space: FunctionSpace, *, boundary, alpha, u_inf) -> tuple[SparseMatrix, jax.Array]:
    """A Robin condition with an ambient value, ``kappa du/dn + alpha (u - u_inf) = 0``, assembled at once.

    For ``-div(kappa grad u) = f`` the boundary term of the weak form is ``alpha (u - u_inf) v``: the matrix
    ``alpha u v`` (:data:`robin`) goes on the left, the load ``alpha u_inf v`` (:data:`robin_load`) on the
    right. Add both to your system; with ``alpha`` large the condition tends to ``u = u_inf``, with
    ``alpha = 0`` to zero flux.

    Arguments:
        space: the space the system is assembled on.
        boundary: a boundary name, a list of names, or a piece tagged with ``space.tag_boundary``.
        alpha: heat-transfer coefficient (number, callable of ``x``, array at the boundary quadrature points,
            or Field); differentiable.
        u_inf: ambient value, of the space's value shape (same kinds of input); differentiable.

    Returns:
        ``(A_robin, b_robin)``: a SparseMatrix on the space's pattern and a load vector ``(ndofs,)``.

    Example:
        >>> from igax import fem
        >>> from igax.fem import library
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> A = fem.assemble(library.diffusion, V, kappa=1.0)
        >>> b = fem.assemble(library.source, V, f=0.0)
        >>> Ar, br = library.robin_ambient(V, boundary="right", alpha=2.0, u_inf=20.0)
        >>> u = fem.solve(A + Ar, b + br, bc=fem.DirichletBC(V, "left", 0.0))
        >>> round(float(u([[1.0, 0.5]])[0]), 6)   # u'(1) = -alpha (u(1) - u_inf), u(0) = 0: u = 40 x / 3
        13.333333
    """
    A = assemble(robin, space, boundary=boundary, alpha=alpha)
    b = assemble(robin_load, space, boundary=boundary, alpha=alpha, u_inf=u_inf)
    return A, b


@linear_form(boundary=True, inputs={"t": "value"})
def traction(v, w):
    """``t . v`` on a boundary (input ``t``: traction vector, shape (dim,)); assemble with ``boundary=``."""
    return jnp.dot(w.t.value, v.value)


@linear_form(inputs={"f": "value"})
def body_force(v, w):
    """``f . v`` (input ``f``: force density vector)."""
    return jnp.dot(w.f.value, v.value)


# --- linear elasticity --------------------------------------------------------------------------------------


def lame(E, nu, kind: str = "plane_strain"):
    """Lame parameters ``(lambda, mu)``; for plane stress the effective 2D ``lambda* = 2 lambda mu / (lambda
    + 2 mu)``.

    Arguments:
        E: Young's modulus; nu: Poisson's ratio (numbers or arrays).
        kind: "plane_strain", "plane_stress" or "3d".
    """
    if kind not in ("plane_strain", "plane_stress", "3d"):
        raise ValueError(f"kind must be 'plane_strain', 'plane_stress' or '3d', got {kind!r}.")
    mu = E / (2.0 * (1.0 + nu))
    lam = E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))
    if kind == "plane_stress":
        lam = 2.0 * lam * mu / (lam + 2.0 * mu)
    return lam, mu


def strain(grad_u):
    """Small-strain tensor ``(grad u + grad u^T) / 2`` of a displacement gradient (..., dim, dim)."""
    return 0.5 * (grad_u + jnp.swapaxes(grad_u, -1, -2))


def stress(grad_u, E, nu, kind: str = "plane_strain"):
    """Cauchy stress ``lambda tr(eps) I + 2 mu eps`` (the in-plane part for 2D kinds)."""
    lam, mu = lame(E, nu, kind)
    eps = strain(grad_u)
    d = grad_u.shape[-1]
    tr = jnp.trace(eps, axis1=-2, axis2=-1)[..., None, None]
    lam = jnp.asarray(lam)[..., None, None] if jnp.ndim(lam) else lam
    mu = jnp.asarray(mu)[..., None, None] if jnp.ndim(mu) else mu
    return lam * tr * jnp.eye(d) + 2.0 * mu * eps


def von_mises(sigma, nu=None, kind: str = "3d"):
    """Von Mises stress of (..., dim, dim) stresses (plane strain: out-of-plane ``nu (s_xx + s_yy)``)."""
    d = sigma.shape[-1]
    if d == 2:
        sxx, syy, sxy = sigma[..., 0, 0], sigma[..., 1, 1], sigma[..., 0, 1]
        szz = nu * (sxx + syy) if (kind == "plane_strain" and nu is not None) else 0.0 * sxx
        return _safe_sqrt(0.5 * ((sxx - syy) ** 2 + (syy - szz) ** 2 + (szz - sxx) ** 2) + 3.0 * sxy**2)
    dev = sigma - jnp.trace(sigma, axis1=-2, axis2=-1)[..., None, None] / 3.0 * jnp.eye(3)
    return _safe_sqrt(1.5 * jnp.sum(dev * dev, axis=(-2, -1)))


def _safe_sqrt(s):
    """sqrt with gradient 0 instead of NaN at 0 (a stress-free point): the double-where trick."""
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def linear_elasticity(E: float | None = None, nu: float | None = None, kind: str = "plane_strain") -> Form:
    """The isotropic linear-elasticity form ``sigma(u) : eps(v)`` for a vector space of shape ``(dim,)``.

    Arguments:
        E: Young's modulus, or None to read it from the named input ``E`` (number, callable, array or Field:
            differentiable, e.g. for topology optimisation).
        nu: Poisson's ratio, or None to read the named input ``nu``.
        kind: "plane_strain" or "plane_stress" (2D), "3d".

    Returns:
        A symmetric bilinear form.

    Example:
        >>> from igax import fem
        >>> from igax.fem.forms.library import linear_elasticity
        >>> a = linear_elasticity(1e5, 0.3, "plane_strain")
        >>> V2 = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=2), shape=(2,))
        >>> K = fem.assemble(a, V2)
        >>> K.shape
        (32, 32)
    """
    lame(1.0, 0.3, kind)  # validates kind

    def kernel(u, v, w):
        e_ = w.E.value if E is None else E
        n_ = w.nu.value if nu is None else nu
        lam, mu = lame(e_, n_, kind)
        eu, ev = strain(u.grad), strain(v.grad)
        return lam * jnp.trace(eu) * jnp.trace(ev) + 2.0 * mu * jnp.sum(eu * ev)

    kernel.__name__ = f"linear_elasticity_{kind}"
    inputs = {k: "scalar" for k, given in (("E", E), ("nu", nu)) if given is None}
    return bilinear_form(kernel, symmetric=True, inputs=inputs)


# -- waves: the Helmholtz equation (complex-valued; igax/fem/forms/waves.py) -------------------------------
# helmholtz (grad u . grad v - k^2 u v), impedance (-i k u v on a boundary), pml_helmholtz (a perfectly
# matched layer by complex coordinate stretching), scattered_source ((k^2 - k0^2) u_inc v), and the sources
# plane_wave / point_source. Complex matrices solve with fem.solve like real ones.
from igax.fem.forms.waves import (  # noqa: E402
    helmholtz,
    helmholtz_speed,
    impedance,
    plane_wave,
    pml_helmholtz,
    pml_stretch,
    point_source,
    scattered_source,
)

__all__ += [
    "helmholtz",
    "helmholtz_speed",
    "impedance",
    "pml_helmholtz",
    "pml_stretch",
    "plane_wave",
    "point_source",
    "scattered_source",
]
# -- hyperelasticity (nonlinear: fem.solve_nonlinear) --------------------------------------------------------
# Energy densities of the displacement u on a vector space of shape (dim,), with the deformation gradient
# F = I + grad u. In 2D they are the plane-strain densities: the out-of-plane stretch is 1, so the invariants
# of the 3 x 3 F add constants that cancel (tr C + 1 - 3 = tr C - 2; E_33 = 0). The residual (first variation)
# and the tangent come from automatic differentiation of these densities (fem.energy_form).


def _det(F):
    """det F of a 2 x 2 or 3 x 3 matrix written out: jnp.linalg.det runs an LU factorisation, which at every
    quadrature point, differentiated twice for the tangent, made the tangent assembly 10x slower."""
    if F.shape[-1] == 2:
        return F[0, 0] * F[1, 1] - F[0, 1] * F[1, 0]
    if F.shape[-1] == 3:
        return jnp.dot(F[0], jnp.cross(F[1], F[2]))
    return jnp.linalg.det(F)


def neo_hookean_energy(F, mu, lmbda):
    """Compressible Neo-Hookean strain energy ``mu/2 (tr C - d) - mu ln J + lmbda/2 (ln J)^2`` of ``F``.

    ``C = F^T F``, ``J = det F``, ``d`` the dimension (plane strain in 2D). A pointwise function (e.g. for
    the first Piola stress ``jax.grad(neo_hookean_energy)(F, mu, lmbda)``); :data:`neo_hookean` is its form.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.fem.forms.library import neo_hookean_energy
        >>> float(neo_hookean_energy(jnp.eye(3), 1.0, 2.0))      # no energy in the reference state
        0.0
    """
    d = F.shape[-1]
    J = _det(F)
    lnJ = jnp.log(J)
    return 0.5 * mu * (jnp.sum(F * F) - d) - mu * lnJ + 0.5 * lmbda * lnJ**2


def saint_venant_kirchhoff_energy(F, mu, lmbda):
    """St Venant-Kirchhoff strain energy ``lmbda/2 (tr E)^2 + mu E : E`` with ``E = (F^T F - I) / 2``.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.fem.forms.library import saint_venant_kirchhoff_energy
        >>> float(saint_venant_kirchhoff_energy(jnp.diag(jnp.array([2.0, 1.0])), 1.0, 0.0))  # E_11 = 1.5
        2.25
    """
    E = 0.5 * (F.T @ F - jnp.eye(F.shape[-1]))
    return 0.5 * lmbda * jnp.trace(E) ** 2 + mu * jnp.sum(E * E)


def _deformation_gradient(u):
    return jnp.eye(u.grad.shape[-1]) + u.grad


@energy_form(inputs={"mu": "scalar", "lmbda": "scalar"})
def neo_hookean(u, w):
    """Compressible Neo-Hookean hyperelasticity: the density :func:`neo_hookean_energy` of ``F = I + grad u``.

    Lame parameters ``mu``, ``lmbda`` are named inputs (numbers, callables, arrays or Fields: differentiable).
    Loads are further terms: ``[library.neo_hookean, library.dead_load, (library.dead_traction, "right")]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem import library
        >>> patch = fem.geometry.rectangle((0.0, 0.0), (2.0, 1.0)).refine(degree=2, elements=(4, 2))
        >>> V = fem.SplineSpace(patch, shape=(2,))
        >>> bc = [fem.DirichletBC(V, "left", 0.0), fem.DirichletBC(V, "right", 0.5, component=0)]
        >>> u = fem.solve_nonlinear(library.neo_hookean, V, bc=bc, mu=1.0, lmbda=2.0)   # stretch by 25 %
        >>> round(float(u([[2.0, 0.5]])[0, 0]), 6)
        0.5
    """
    return neo_hookean_energy(_deformation_gradient(u), w.mu.value, w.lmbda.value)


@energy_form(inputs={"mu": "scalar", "lmbda": "scalar"})
def saint_venant_kirchhoff(u, w):
    """St Venant-Kirchhoff hyperelasticity, energy density :func:`saint_venant_kirchhoff_energy` of ``F``.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem import library
        >>> V = fem.LagrangeSpace(fem.unit_square(2), degree=1, shape=(2,))
        >>> svk = library.saint_venant_kirchhoff
        >>> R = fem.assemble_residual(svk, V, jnp.zeros(V.ndofs), mu=1.0, lmbda=1.0)
        >>> float(abs(R).max())                                  # no stress in the reference state
        0.0
    """
    return saint_venant_kirchhoff_energy(_deformation_gradient(u), w.mu.value, w.lmbda.value)


@energy_form(inputs={"f": "value"})
def dead_load(u, w):
    """The potential ``-f . u`` of a dead body load ``f`` (force per reference volume) for hyperelasticity.

    Example:
        >>> from igax.fem import library
        >>> library.dead_load
        energy_form(dead_load)
    """
    return -jnp.sum(w.f.value * u.value)


@energy_form(boundary=True, inputs={"t": "value"})
def dead_traction(u, w):
    """The potential ``-t . u`` of a dead traction ``t`` (force per reference area): a boundary term.

    Example:
        >>> from igax.fem import library
        >>> library.dead_traction
        energy_form(dead_traction)
    """
    return -jnp.sum(w.t.value * u.value)


# -- mixed problems: Stokes and Navier-Stokes (on a fem.MixedSpace of velocity and pressure) -------------
# Kernels over jet tuples: u = (velocity, pressure), v = (test velocity, test pressure). The sign convention
# makes the Stokes matrix symmetric (indefinite): [[nu K, -B^T], [-B, 0]].


@bilinear_form(symmetric=True, inputs={"nu": "scalar"})
def stokes(u, v, w):
    """Stokes flow ``nu (grad u : grad v) - p div v - q div u`` on a MixedSpace (velocity, pressure).

    A symmetric indefinite (saddle-point) matrix; with :func:`stokes_load` the right-hand side of
    ``-nu lap u + grad p = f``, ``div u = 0``.

    Example:
        >>> from igax import fem
        >>> from igax.fem import library
        >>> W = fem.taylor_hood(fem.unit_square(2, "quad"), pressure="mean")
        >>> A = fem.assemble(library.stokes, W, nu=1.0)
        >>> A.shape, A.symmetric, A.positive_definite
        ((59, 59), True, False)
    """
    (uu, p), (vv, q) = u, v
    return (
        w.nu.value * jnp.sum(uu.grad * vv.grad) - p.value * jnp.trace(vv.grad) - q.value * jnp.trace(uu.grad)
    )


@linear_form(inputs={"f": "vector"})
def stokes_load(v, w):
    """The body force ``f . v`` of a Stokes or Navier-Stokes problem on a MixedSpace (velocity, pressure).

    Example:
        >>> from igax.fem import library
        >>> library.stokes_load
        linear_form(stokes_load)
    """
    vv, _ = v
    return jnp.dot(w.f.value, vv.value)


@residual_form(inputs={"nu": "scalar", "f": "vector"})
def navier_stokes(u, v, w):
    """Steady Navier-Stokes: ``nu grad u : grad v + (grad u u) . v - p div v - q div u - f . v``.

    A residual form on a MixedSpace (velocity, pressure) for :func:`igax.fem.solve_nonlinear`; the tangent
    (Oseen linearisation plus the Newton term) comes from automatic differentiation.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem import library
        >>> W = fem.taylor_hood(fem.unit_square(2, "quad"), pressure="pin")
        >>> walls = fem.DirichletBC(W, None, 0.0, field=0)
        >>> lid = [walls, fem.DirichletBC(W, "top", 1.0, component=0, field=0)]
        >>> up = fem.solve_nonlinear(library.navier_stokes, W, bc=lid, nu=0.1, f=jnp.zeros(2))
        >>> u, p = up.split()
        >>> u.value_shape, p.value_shape
        ((2,), ())
    """
    (uu, p), (vv, q) = u, v
    convection = uu.grad @ uu.value
    return (
        w.nu.value * jnp.sum(uu.grad * vv.grad)
        + jnp.dot(convection, vv.value)
        - p.value * jnp.trace(vv.grad)
        - q.value * jnp.trace(uu.grad)
        - jnp.dot(w.f.value, vv.value)
    )


@bilinear_form(symmetric=True, inputs={"mu": "scalar", "lmbda": "scalar"})
def mixed_elasticity(u, v, w):
    """Nearly incompressible linear elasticity in displacement-pressure form on a MixedSpace ``(u, p)``.

    ``2 mu eps(u) : eps(v) - p div v - q div u - p q / lmbda``, with ``p = lmbda div u`` the pressure-like
    unknown: free of volumetric locking as ``lmbda -> infinity`` on an inf-sup stable pair (Taylor-Hood or
    the spline pair), where the displacement-only form locks. ``lmbda = inf`` is the incompressible limit
    (Stokes with ``2 eps : eps``).

    Example:
        >>> from igax import fem
        >>> from igax.fem import library
        >>> W = fem.taylor_hood(fem.unit_square(2, "quad"))
        >>> A = fem.assemble(library.mixed_elasticity, W, mu=1.0, lmbda=1e6)
        >>> A.shape, A.symmetric
        ((59, 59), True)
    """
    (uu, p), (vv, q) = u, v
    eu = 0.5 * (uu.grad + uu.grad.T)
    ev = 0.5 * (vv.grad + vv.grad.T)
    return (
        2 * w.mu.value * jnp.sum(eu * ev)
        - p.value * jnp.trace(vv.grad)
        - q.value * jnp.trace(uu.grad)
        - p.value * q.value / w.lmbda.value
    )


__all__ += ["stokes", "stokes_load", "navier_stokes", "mixed_elasticity"]
