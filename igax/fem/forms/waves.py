"""Time-harmonic waves: the Helmholtz equation with absorbing boundaries, its sources and the scattered field.

The equation is ``-div(grad u) - k^2 u = f`` for a complex amplitude ``u`` (time factor ``exp(-i omega t)``,
so ``exp(i k x)`` travels towards +x), with a wavenumber ``k = omega / c(x)`` that may vary in space. Its
weak form is ``int grad u . grad v - k^2 u v = int f v + int_G (du/dn) v``; the forms are bilinear, not
sesquilinear (no conjugate on ``v``), so the matrices are complex symmetric and solved as such.

Absorbing boundaries:

* **Impedance** (first-order Robin / Sommerfeld): ``du/dn - i k u = g`` on a boundary, the term ``-i k u v``
  (:data:`impedance`) and the load ``g v`` (:data:`igax.fem.library.neumann` with a complex ``g``). Exact for
  a plane wave leaving at normal incidence; a wave at angle ``theta`` is reflected by
  ``(cos theta - 1) / (cos theta + 1)``.
* **Perfectly matched layer** (:func:`pml_helmholtz`): complex coordinate stretching ``d/dx_j ->
  (1 / s_j) d/dx_j`` with ``s_j(x_j) = 1 + i sigma_j(x_j) / omega`` outside a box, ``sigma_j`` quadratic in
  the depth into a layer of given width. The form becomes ``(Lambda grad u) . grad v - k^2 S u v`` with
  ``S = prod_j s_j`` and ``Lambda = diag(S / s_j^2)``; inside the box it is the plain Helmholtz form.
  The continuous layer reflects ``exp(-2 (k / omega) int sigma)``; the discrete reflection depends on how
  many elements resolve the layer.

Sources are callables of ``x`` for :data:`igax.fem.library.source`: :func:`plane_wave` and
:func:`point_source` (a narrow Gaussian). In the scattered-field formulation the incident wave ``u_inc``
solves the background equation (wavenumber ``k0``) and the scattered part ``u_s = u - u_inc`` solves
``-div(grad u_s) - k^2 u_s = (k^2 - k0^2) u_inc`` (:data:`scattered_source`) with outgoing conditions.

Example:
    A plane wave leaving through impedance boundaries at both ends of a channel (exact at normal incidence):

    >>> import jax.numpy as jnp
    >>> from igax import fem
    >>> from igax.fem import library
    >>> V = fem.SplineSpace(fem.geometry.rectangle((0, 0), (1, 0.25)).refine(degree=3, elements=(16, 2)))
    >>> k = 12.0
    >>> A = fem.assemble(library.helmholtz, V, k=k)
    >>> A = A + fem.assemble(library.impedance, V, boundary=("left", "right"), k=k)
    >>> g = lambda x: -2j * k * jnp.exp(1j * k * x[0])             # du/dn - i k u of exp(ikx) on the left
    >>> u = fem.solve(A, fem.assemble(library.neumann, V, boundary="left", g=g), space=V)
    >>> abs(complex(u(jnp.array([[0.5, 0.1]]))[0]) - complex(jnp.exp(0.5j * k))) < 1e-3
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from igax.fem.forms.form import Form, bilinear_form, linear_form

__all__ = [
    "helmholtz",
    "helmholtz_speed",
    "impedance",
    "scattered_source",
    "pml_helmholtz",
    "pml_stretch",
    "plane_wave",
    "point_source",
]


@bilinear_form(symmetric=True, inputs={"k": "scalar"})
def helmholtz(u, v, w):
    """``grad u . grad v - k^2 u v`` (input ``k``: the wavenumber, e.g. ``omega / c(x)``; real or complex)."""
    return jnp.sum(u.grad * v.grad) - w.k**2 * u.value * v.value


@bilinear_form(symmetric=True, inputs={"omega": "scalar", "c": "scalar"})
def helmholtz_speed(u, v, w):
    """``grad u . grad v - (omega / c)^2 u v``: :data:`helmholtz` with the wavenumber from the angular
    frequency ``omega`` and a sound speed ``c`` (e.g. a spline Field: the design of an acoustic lens)."""
    return jnp.sum(u.grad * v.grad) - (w.omega / w.c) ** 2 * u.value * v.value


@bilinear_form(symmetric=True, boundary=True, inputs={"k": "scalar"})
def impedance(u, v, w):
    """``-i k u v`` on a boundary: the first-order absorbing condition ``du/dn = i k u`` (+ ``g``: pair with
    ``library.neumann`` for the data ``g = du/dn - i k u``)."""
    return -1j * w.k * u.value * v.value


@linear_form(inputs={"k": "scalar", "k0": "scalar", "u_inc": "scalar"})
def scattered_source(v, w):
    """``(k^2 - k0^2) u_inc v``: the source of the scattered field ``u - u_inc`` when the incident wave
    ``u_inc`` solves the background equation with wavenumber ``k0`` (inputs ``k``, ``k0``, ``u_inc``)."""
    return (w.k**2 - w.k0**2) * w.u_inc * v.value


def _check_box(lower, upper, width, strength, omega):
    lo = np.asarray(lower, dtype=float).ravel()
    hi = np.asarray(upper, dtype=float).ravel()
    if lo.shape != hi.shape or lo.size not in (1, 2, 3) or np.any(hi <= lo):
        raise ValueError(
            f"lower and upper must be the opposite corners of the physical box (1 to 3 coordinates each, "
            f"upper > lower), got {lower!r} and {upper!r}."
        )
    w = np.broadcast_to(np.asarray(width, dtype=float), lo.shape)
    if np.any(w <= 0):
        raise ValueError(f"width must be > 0 (the layer's thickness per direction), got {width!r}.")
    if not np.isscalar(strength) and np.ndim(strength) != 0 or float(strength) <= 0:
        raise ValueError(
            f"strength must be a number > 0 (sigma at the outer edge of the layer), got {strength!r}."
        )
    if not np.isscalar(omega) and np.ndim(omega) != 0 or float(omega) <= 0:
        raise ValueError(f"omega must be a number > 0 (the angular frequency), got {omega!r}.")
    return lo, hi, w


def pml_stretch(lower, upper, width, strength: float, omega: float) -> Callable:
    """The stretch functions ``s_j(x_j) = 1 + i sigma_j(x_j) / omega`` of a PML around a box.

    Arguments:
        lower, upper: corners of the physical box (no stretching inside).
        width: thickness of the layer beyond each face (a number or one per direction).
        strength: ``sigma`` at depth ``width`` (the profile is ``strength (depth / width)^2``); the continuous
            layer reflects ``exp(-4 strength width / (3 c))`` at normal incidence (``c = omega / k``).
        omega: the angular frequency.

    Returns:
        A function of points ``x`` (coordinate axis first, ``(dim, ...)``) giving ``s``, shape ``(dim, ...)``.

    Example:
        >>> from igax.fem.forms.waves import pml_stretch
        >>> import jax.numpy as jnp
        >>> s = pml_stretch((0, 0), (1, 1), 0.5, strength=8.0, omega=4.0)
        >>> s(jnp.array([1.25, 0.5])).tolist()                                  # depth 0.25 in x: 1 + 2i/4
        [(1+0.5j), (1+0j)]
    """
    lo, hi, w = _check_box(lower, upper, width, strength, omega)
    strength, omega = float(strength), float(omega)

    def stretch(x):
        x = jnp.asarray(x)
        shape = (-1,) + (1,) * (x.ndim - 1)
        depth = jnp.maximum(lo.reshape(shape) - x, 0.0) + jnp.maximum(x - hi.reshape(shape), 0.0)
        sigma = strength * jnp.minimum(depth / w.reshape(shape), 1.0) ** 2
        return 1.0 + 1j * sigma / omega

    return stretch


def pml_helmholtz(lower, upper, width, strength: float, omega: float) -> Form:
    """The Helmholtz form with a perfectly matched layer outside the box ``[lower, upper]``.

    ``(Lambda grad u) . grad v - k^2 S u v`` with ``S = prod_j s_j``, ``Lambda = diag(S / s_j^2)`` and the
    stretches of :func:`pml_stretch`; the plain :data:`helmholtz` form inside the box. Mesh the box and the
    layer together (the layer's outer boundary may carry ``u = 0`` or an impedance condition).

    Arguments:
        lower, upper, width, strength, omega: see :func:`pml_stretch`.

    Returns:
        A complex symmetric bilinear form with the input ``k`` (the wavenumber; in the layer usually the
        background ``omega / c0``).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem.forms.waves import pml_helmholtz
        >>> a = pml_helmholtz((0.0, 0.0), (1.0, 1.0), 0.25, strength=40.0, omega=10.0)
        >>> geo = fem.geometry.rectangle((-0.25, -0.25), (1.25, 1.25))
        >>> V = fem.SplineSpace(geo.refine(degree=2, elements=6))
        >>> A = fem.assemble(a, V, k=10.0)
        >>> A.values.dtype in (jnp.complex64, jnp.complex128), A.symmetric
        (True, True)
    """
    stretch = pml_stretch(lower, upper, width, strength, omega)

    def kernel(u, v, w):
        s = stretch(w.x)
        S = jnp.prod(s)
        return jnp.sum((S / s**2) * u.grad * v.grad) - w.k**2 * S * u.value * v.value

    kernel.__name__ = "pml_helmholtz"
    return bilinear_form(kernel, symmetric=True, inputs={"k": "scalar"})


def plane_wave(k: float, direction: Sequence[float] = (1.0, 0.0), amplitude: complex = 1.0) -> Callable:
    """The plane wave ``amplitude exp(i k d . x)`` (``d``: the unit vector of ``direction``) as a callable of
    ``x`` (coordinate axis first), e.g. the incident field of :data:`scattered_source`.

    Arguments:
        k: wavenumber (a number or a traced scalar).
        direction: propagation direction (normalised here).
        amplitude: complex amplitude.

    Example:
        >>> from igax.fem.forms.waves import plane_wave
        >>> import jax.numpy as jnp
        >>> f = plane_wave(jnp.pi, (2.0, 0.0))
        >>> z = complex(f(jnp.array([0.5, 3.0])))                              # exp(i pi / 2) = i
        >>> round(z.real, 6) + 0.0, round(z.imag, 6)
        (0.0, 1.0)
    """
    d = np.asarray(direction, dtype=float).ravel()
    norm = np.linalg.norm(d)
    if norm == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"direction must be a nonzero finite vector, got {direction!r}.")
    d = d / norm

    def wave(x):
        x = jnp.asarray(x)
        dx = jnp.tensordot(d, x[: d.size], axes=1)
        return amplitude * jnp.exp(1j * k * dx)

    return wave


def point_source(center: Sequence[float], width: float, amplitude: complex = 1.0) -> Callable:
    """A point source smoothed to a Gaussian,
    ``amplitude exp(-|x - c|^2 / (2 width^2)) / (2 pi width^2)^(d/2)`` (unit integral
    times ``amplitude``), a callable of ``x`` for ``library.source``.

    Arguments:
        center: the source point.
        width: the Gaussian's standard deviation (resolve it with a few elements).
        amplitude: its total strength.

    Example:
        >>> from igax.fem.forms.waves import point_source
        >>> import jax.numpy as jnp
        >>> f = point_source((0.5, 0.5), 0.1)
        >>> round(float(f(jnp.array([0.5, 0.5]))), 6)                       # 1 / (2 pi 0.01)
        15.915494
    """
    c = np.asarray(center, dtype=float).ravel()
    if not np.isscalar(width) and np.ndim(width) != 0 or float(width) <= 0:
        raise ValueError(f"width must be a number > 0 (the Gaussian's standard deviation), got {width!r}.")
    width = float(width)
    scale = (2.0 * np.pi * width**2) ** (-c.size / 2)

    def source(x):
        x = jnp.asarray(x)
        r2 = jnp.sum((x[: c.size] - c.reshape((-1,) + (1,) * (x.ndim - 1))) ** 2, axis=0)
        return amplitude * scale * jnp.exp(-0.5 * r2 / width**2)

    return source
