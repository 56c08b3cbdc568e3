"""What a linear-solver backend is, and the registry that ``method=`` names are looked up in.

A backend is one object with a name and a written contract; everything that used to be a table of names in
the solvers (the list of methods, which ones need an SPD matrix, which run on the host, the automatic choice,
what to install) is read from the registered objects. Two kinds exist, because a solve runs in one of two
places:

* :class:`HostBackend`: factorises (or sets up) on the host in NumPy, through ``jax.pure_callback``.
  :meth:`HostBackend.factor` returns a :class:`Factor` that solves ``A X = B`` or ``A^T X = B`` for many
  right-hand sides. The solvers cache factors by the content of the matrix, so the forward, tangent and
  transposed solves of one matrix factorise once (:mod:`igax.solvers._backends`).
* :class:`JaxBackend`: runs inside the traced program (on the device). :meth:`JaxBackend.solve` returns
  ``(x, iterations, status)`` with a :class:`~igax.solvers._errors.Status` code; an optional
  :meth:`JaxBackend.setup` prepares a state once per matrix (a preconditioner, a multigrid hierarchy).

Neither kind is differentiated through: every backend is wrapped in ``jax.lax.custom_linear_solve``, so
gradients, ``jvp`` and ``vmap`` work for any registered backend without more code.

A third party adds a backend with :func:`register_backend`; see its example.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Backend",
    "Factor",
    "HostBackend",
    "JaxBackend",
    "SolverStats",
    "backend_names",
    "get_backend",
    "register_backend",
    "registered_backends",
    "stats",
    "unregister_backend",
]


@dataclasses.dataclass
class SolverStats:
    """Counters of host-side work; reset with :meth:`reset`.

    Attributes:
        factorizations: numeric factorisations (or AMG setups) computed.
        analyses: symbolic analyses (PARDISO orderings; one per pattern and matrix type while cached).
        cache_hits: factor requests answered from the cache.
        solves: host solve calls (one call may carry many right-hand sides).
        transpose_solves: host solve calls with the transposed matrix.
        rhs: right-hand sides solved in total.
    """

    factorizations: int = 0
    analyses: int = 0
    cache_hits: int = 0
    solves: int = 0
    transpose_solves: int = 0
    rhs: int = 0

    def reset(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, 0)


stats = SolverStats()


class Factor:
    """A factorised (or set-up) matrix on the host: what :meth:`HostBackend.factor` returns.

    Attributes:
        last_iterations: iterative host backends set the iteration count of each column of the last ``B``
            (``(k,)`` int); None for direct ones (reported as 0).
    """

    last_iterations: np.ndarray | None = None

    def solve(self, B: np.ndarray, transpose: bool) -> np.ndarray:
        """``A^{-1} B`` (``A^{-T} B`` when ``transpose``) for ``B`` of shape ``(n, k)`` in float64 (complex128
        for a complex factor; ``A^{-T}`` is then the transposed, not the conjugated, inverse).

        Raise ``RuntimeError``, ``ArithmeticError`` or ``numpy.linalg.LinAlgError`` when the solve fails: the
        message becomes the reason in the user's ``SolverError``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement solve(B, transpose)")

    def free(self) -> None:
        """Release the factor's memory (called when the cache evicts it)."""


def csr(pattern, values) -> sp.csr_matrix:
    """The SciPy CSR matrix of a :class:`~igax.solvers.CSRPattern` and its values (float64, or complex128 for
    complex values; no index copy)."""
    data = np.asarray(values, dtype=np.complex128 if np.iscomplexobj(values) else np.float64)
    return sp.csr_matrix((data, pattern.indices, pattern.indptr), shape=pattern.shape)


class Backend:
    """A linear-solver backend, named by ``method=``. Subclass :class:`HostBackend` or :class:`JaxBackend`.

    Class attributes:
        name: the ``method=`` string.
        label: the backend's name in messages (e.g. ``"SuperLU"``); defaults to ``name``.
        spd: needs a symmetric positive definite matrix; a matrix not flagged symmetric is refused before
            anything runs.
        options: names of options only this backend reads; any other backend refuses them (GMRES's
            ``restart``). Options every backend accepts are ``rtol``, ``atol``, ``maxiter``, ``throw``,
            ``direct_rtol``, ``superlu_options``.
        setup_options: those of :attr:`options` that are fixed when the matrix is set up (``factorize``) and
            cannot be changed per solve.
        requirement: the text of the ``ImportError`` when :meth:`available` is False (what to install, what
            to use instead).
        default_for: situations in which this backend is the automatic choice when usable: ``"cpu"`` (any
            matrix on a CPU), ``"accelerator"`` (any matrix on a GPU/TPU), ``"accelerator-spd"`` (an SPD
            matrix there), ``"accelerator-mg"`` (an SPD matrix there with a multigrid hierarchy given),
            ``"accelerator-complex-symmetric"`` (a complex matrix flagged symmetric there).
        priority: among several usable backends for one situation, the highest wins.
        complex_native: the backend takes complex values as they are (a host backend's ``factor`` gets
            complex128 values and its ``Factor.solve`` complex128 right-hand sides; a JAX backend's ``solve``
            a complex matrix and ``b``). Other backends solve a complex system through its real block form
            of twice the size (:mod:`igax.solvers._complex`).
        complex_native_default: with :attr:`complex_native`, whether complex systems take the native path
            when the solve does not say (``complex_form="native"`` / ``"block"`` chooses).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    on_host: ClassVar[bool]
    spd: ClassVar[bool] = False
    options: ClassVar[frozenset[str]] = frozenset()
    setup_options: ClassVar[frozenset[str]] = frozenset()
    requirement: ClassVar[str] = ""
    default_for: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0
    complex_native: ClassVar[bool] = False
    complex_native_default: ClassVar[bool] = True

    @property
    def display_name(self) -> str:
        return self.label or self.name

    def available(self) -> bool:
        """Whether the packages this backend needs are installed (cheap after the first call)."""
        return True

    def check_available(self, options: dict) -> None:
        """Raise ``ImportError`` (:attr:`requirement`) when the backend cannot run with ``options``."""
        if not self.available():
            raise ImportError(self.requirement or f'method="{self.name}" is not available on this machine.')

    def usable(self, options: dict) -> bool:
        """Whether :meth:`check_available` passes."""
        try:
            self.check_available(options)
        except ImportError:
            return False
        return True

    def check_options(self, options: dict) -> None:
        """Refuse option values this backend cannot use (types, ranges); names were checked already."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class HostBackend(Backend):
    """A backend that factorises on the host (NumPy/SciPy or a native library) through a callback.

    Class attributes (besides :class:`Backend`'s):
        iterative: an iterative host solver (pyamg's CG): success is judged by the true residual against
            ``rtol``; a direct solver's by ``direct_rtol`` (a larger residual means a singular matrix).
        copies_values: :meth:`factor` keeps no reference to its ``values`` array once it returns (it copies
            what its factor needs). Such a backend is given the compiled program's own buffer, read in
            place; any other is given a copy (the buffer is reused after the call).
    """

    on_host: ClassVar[bool] = True
    iterative: ClassVar[bool] = False
    copies_values: ClassVar[bool] = False

    def factor(self, pattern, values: np.ndarray, kind: str, options: dict) -> Factor:
        """Factorise ``A``, given as its CSR pattern and float64 values, on the host.

        Arguments:
            pattern: the :class:`~igax.solvers.CSRPattern` (sorted, no duplicates); :func:`csr` makes a
                SciPy matrix of it.
            values: ``(nnz,)`` float64 (complex128 for a complex system when :attr:`complex_native`).
            kind: ``"spd"`` (flagged positive definite), ``"sym"`` (flagged symmetric) or ``"gen"``.
            options: ``rtol``, ``maxiter``, ``superlu_options`` and this backend's :attr:`options` when given.

        Returns:
            A :class:`Factor`. Raise ``RuntimeError``/``ArithmeticError``/``LinAlgError`` for a singular
            matrix: the message reaches the user as the reason of the failure.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement factor(pattern, values, kind, options)"
        )

    def analyse(self, pattern, kind: str, dtype):
        """Optional: start work that needs only the pattern (a symbolic analysis), before the values exist.

        Called when a program that will factorise matrices of ``pattern`` is traced (``fem.solve``), so the
        work can overlap the compilation; it must return at once (run it in a thread) and may do nothing.

        Arguments:
            pattern: the :class:`~igax.solvers.CSRPattern`.
            kind: ``"spd"``, ``"sym"`` or ``"gen"``, as :meth:`factor` will be given.
            dtype: the values' dtype.

        Returns:
            Anything (ignored by the solvers); the default does nothing and returns None.
        """
        return None


class JaxBackend(Backend):
    """A backend that runs in JAX, inside the traced program (the device path)."""

    on_host: ClassVar[bool] = False

    def prepare(self, A, options: dict):
        """Host-side work before the compiled program, once per call (eager; default: none).

        May resolve options in place (mg-cg puts the hierarchy it will use into ``options``). Returns
        ``(arrays, after)``: ``arrays`` are passed to :meth:`setup` as arguments of the program (so large
        index maps are not baked into it as constants), ``after(result)`` (or None) runs on the eager result.
        """
        return None, None

    def setup(self, A, options: dict, arrays=None):
        """The state of the solves with ``A`` (a pytree of arrays, or None), traced once per matrix.

        Arguments:
            A: the :class:`~igax.solvers.SparseMatrix` (values already cut from the gradient).
            options: the solve's options (a dict; may be completed in place, e.g. a resolved hierarchy).
            arrays: what :meth:`prepare` returned for this call, or None (``factorize``).
        """
        return None

    def setup_ok(self, state):
        """A boolean scalar: False where the setup found the matrix unusable (status BREAKDOWN, cause
        not-SPD); None when the backend has no such test."""
        return None

    def solve(self, A, b, *, transpose: bool, options: dict, state):
        """``(x, iterations, status)`` of ``A x = b`` (``A^T x = b`` when ``transpose``), traced.

        Arguments:
            A: the :class:`~igax.solvers.SparseMatrix` (use ``A.matvec``, ``A.T``, ``A.diagonal()``).
            b: ``(n,)``.
            transpose: solve with ``A^T``.
            options: the solve's options (``rtol``, ``atol``, ``maxiter``, this backend's).
            state: what :meth:`setup` returned.

        Returns:
            ``x (n,)``, ``iterations`` (int32 scalar) and ``status`` (int32 scalar, a
            :class:`~igax.solvers._errors.Status` code: 0 success).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement solve(A, b, transpose=, options=, state=)"
        )


_registry: dict[str, Backend] = {}
_listeners: list = []  # callables run after a registration (caches of derived choices)


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Make ``backend`` available as ``method=backend.name`` in every solve of igax.

    Arguments:
        backend: an instance of a :class:`HostBackend` or :class:`JaxBackend` subclass.
        replace: allow replacing a registered backend of the same name.

    Returns:
        ``backend``.

    Raises:
        TypeError: ``backend`` is not a ``HostBackend``/``JaxBackend`` instance.
        ValueError: the name is empty, or taken and ``replace`` is False.

    Example:
        A dense backend in JAX (for small systems), then used like any other method:

        >>> import jax.numpy as jnp, scipy.sparse as sp
        >>> from igax import solvers
        >>> class Dense(solvers.JaxBackend):
        ...     name = "dense-example"
        ...     def solve(self, A, b, *, transpose, options, state):
        ...         M = A.todense().T if transpose else A.todense()
        ...         return jnp.linalg.solve(M, b), jnp.int32(0), jnp.int32(0)
        >>> _ = solvers.register_backend(Dense(), replace=True)
        >>> A = solvers.SparseMatrix.from_scipy(sp.csr_matrix([[4.0, 1.0], [2.0, 3.0]]))
        >>> x = solvers.solve(A, jnp.array([1.0, 2.0]), method="dense-example")
        >>> ", ".join(f"{v:.6f}" for v in x.tolist())
        '0.100000, 0.600000'
        >>> solvers.unregister_backend("dense-example")
    """
    if not isinstance(backend, (HostBackend, JaxBackend)):
        raise TypeError(
            f"backend must be an instance of igax.solvers.HostBackend or JaxBackend, got {backend!r}; "
            "subclass one, set its name and implement factor (host) or solve (JAX), then register an "
            "instance."
        )
    name = backend.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"{type(backend).__name__}.name must be a non-empty string, got {name!r}.")
    if name in _registry and not replace:
        raise ValueError(
            f'a backend named "{name}" is registered already ({_registry[name]!r}); choose another name or '
            "pass replace=True."
        )
    _registry[name] = backend
    for listener in _listeners:
        listener()
    return backend


def unregister_backend(name: str) -> None:
    """Remove the backend ``name`` from the registry (KeyError when there is none).

    Arguments:
        name: the ``method=`` name.
    """
    del _registry[name]
    for listener in _listeners:
        listener()


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (KeyError when there is none)."""
    return _registry[name]


def registered_backends() -> tuple[Backend, ...]:
    """Every registered backend, in the order of registration."""
    return tuple(_registry.values())


def backend_names() -> tuple[str, ...]:
    """The ``method=`` names of every registered backend, in the order of registration."""
    return tuple(_registry)
