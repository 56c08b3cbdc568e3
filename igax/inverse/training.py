"""Training neural networks with igax in the loop: solver-in-the-loop and discrete physics-informed losses.

Two ways of putting a PDE into a training loss, both differentiable end to end:

* **Solver in the loop**: the network produces PDE data (a coefficient field, a closure term, a load); the
  loss assembles and solves the system (``fem.assemble`` + ``fem.solve``) and compares the solution with
  data. Batches are ``jax.vmap``-ed: all systems of a batch share one sparsity pattern, so a direct solver
  receives the batch in one host call, and the gradient is one adjoint solve per sample.
* **Discrete physics-informed loss, no solve**: the network outputs the coefficients of ``u`` itself and the
  loss is the discrete energy ``1/2 u^T K u - f^T u`` (:func:`discrete_energy`) or the Galerkin residual
  (:func:`galerkin_residual`), with ``K`` assembled by igax; Dirichlet data are imposed exactly by
  :class:`DirichletLift` (``u = base + mask * output``).

Around them: :func:`train` (optax over minibatches under ``jit``, a wall-clock or step budget, checkpoints
written with ``equinox.tree_serialise_leaves`` and resumed from exactly, a tqdm progress bar with the loss;
Ctrl-C saves the last completed step and raises :class:`igax.inverse.Interrupted` carrying the result so far),
:func:`batched` (a chunked, jitted ``vmap`` of a per-sample map), :func:`make_dataset` (reference solutions by
igax) and :func:`relative_l2_errors` (errors in the L2 norm of a space, through its mass matrix).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from igax._deprecation import renamed
from igax.fem.bc import DirichletBC, merge_bcs
from igax.fem.forms.assembly import assemble
from igax.fem.forms.library import mass
from igax.fem.spaces.base import FunctionSpace
from igax.inverse.optimize import Interrupted, caused_by_interrupt
from igax.solvers.distributed import batch_map
from igax.solvers.sparse import SparseMatrix

__all__ = [
    "DirichletLift",
    "discrete_energy",
    "galerkin_residual",
    "batched",
    "make_dataset",
    "relative_l2_errors",
    "TrainResult",
    "train",
    "save_checkpoint",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)


# -- exact Dirichlet data for coefficient-predicting networks ------------------------------------------------
class DirichletLift(eqx.Module):
    """Coefficients that satisfy Dirichlet conditions exactly: ``u = base + mask * values`` on the free dofs.

    A network that predicts only the free (unconstrained) coefficients can never violate the boundary data.

    Arguments:
        bc: a :class:`igax.fem.DirichletBC` or a list of them (on one space).
        base: optional coefficients ``(ndofs,)`` of a function that the free values correct (e.g. the
            interpolant of a smooth guess); its constrained entries are replaced by the prescribed values.
            Default: the prescribed values on constrained dofs, zero elsewhere.

    Attributes:
        base: ``(ndofs,)`` coefficients with the boundary data built in.
        free: ``(n_free,)`` indices of the unconstrained dofs (NumPy; stored as a static tuple).

    Example:
        >>> import equinox as eqx
        >>> import jax
        >>> from igax import fem
        >>> from igax.inverse import DirichletLift
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> lift = DirichletLift([fem.DirichletBC(V, "left", 1.0), fem.DirichletBC(V, "right", 0.0)])
        >>> net = eqx.nn.MLP(6, lift.n_free, 16, 2, key=jax.random.key(0))
        >>> u = lift(net(jax.numpy.ones(6)))       # (ndofs,), exact on the Dirichlet boundary
        >>> V.ndofs, lift.n_free, float(u[0])     # dof 0 sits on the left side
        (36, 24, 1.0)
    """

    base: jax.Array
    free_: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, bc: DirichletBC | list[DirichletBC], base: jax.Array | None = None):
        bc = merge_bcs(bc)
        if not isinstance(bc, DirichletBC):
            raise TypeError("bc must be a fem.DirichletBC or a non-empty list of them.")
        n = bc.space.ndofs
        if base is None:
            base = jnp.zeros(n, jnp.result_type(bc.values))
        base = jnp.asarray(base)
        if base.shape != (n,):
            raise ValueError(f"base must have shape (ndofs,) = ({n},), got {base.shape}.")
        self.base = bc.expand(base)
        free = np.ones(n, dtype=bool)
        free[bc.dofs] = False
        self.free_ = tuple(int(i) for i in np.flatnonzero(free))

    @property
    def free(self) -> np.ndarray:
        """Indices of the unconstrained dofs, shape ``(n_free,)``."""
        return np.asarray(self.free_, dtype=np.int64)

    @property
    def n_free(self) -> int:
        """Number of free coefficients (the output size a network needs)."""
        return len(self.free_)

    def __call__(self, values: jax.Array) -> jax.Array:
        """Full coefficients ``(..., ndofs)`` from free values ``(..., n_free)`` (batches broadcast)."""
        values = jnp.asarray(values)
        if values.shape[-1:] != (self.n_free,):
            raise ValueError(
                f"values must have shape (..., n_free) = (..., {self.n_free}), got {values.shape}; size the "
                "network output with lift.n_free."
            )
        base = jnp.broadcast_to(self.base, values.shape[:-1] + self.base.shape)
        return base.at[..., self.free].add(values.astype(base.dtype))


# -- discrete physics-informed losses ------------------------------------------------------------------------
def discrete_energy(K: SparseMatrix, u: jax.Array, f: jax.Array | None = None) -> jax.Array:
    """The discrete energy ``1/2 u^T K u - f^T u`` (minimal at the Galerkin solution for SPD ``K``).

    With ``u`` restricted to the affine set of the Dirichlet data (:class:`DirichletLift`), the energy minus
    its minimum is ``1/2 |u - u_h|_K^2``, so minimising it drives ``u`` to the discrete solution ``u_h`` in
    the energy norm, without any solve.

    Arguments:
        K: the stiffness matrix assembled *without* boundary conditions.
        u: coefficients ``(ndofs,)``.
        f: load vector ``(ndofs,)`` or None for zero.

    Returns:
        A scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem import library
        >>> from igax.inverse import discrete_energy
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> K = fem.assemble(library.diffusion, V, kappa=1.0)
        >>> abs(float(discrete_energy(K, jnp.ones(V.ndofs)))) < 1e-12   # no energy in a constant
        True
    """
    u = jnp.asarray(u)
    e = 0.5 * jnp.dot(u, K @ u)
    return e if f is None else e - jnp.dot(jnp.asarray(f), u)


def galerkin_residual(
    K: SparseMatrix,
    u: jax.Array,
    f: jax.Array | None = None,
    *,
    free: np.ndarray | None = None,
    scale: str = "jacobi",
) -> jax.Array:
    """The squared norm of the Galerkin residual ``r = f - K u`` on the free dofs.

    Arguments:
        K: the stiffness matrix assembled without boundary conditions.
        u: coefficients ``(ndofs,)`` satisfying the Dirichlet data.
        f: load vector or None (zero).
        free: indices of the unconstrained dofs (e.g. ``lift.free``); default all dofs.
        scale: ``"jacobi"`` weighs each residual entry by ``1 / K_ii`` (the residual of the Jacobi-scaled
            system, much better conditioned as a loss: the plain residual squares the condition number of
            ``K``), or ``"none"``.

    Returns:
        ``sum_i (w_i r_i)^2`` over the free dofs.
    """
    if scale not in ("jacobi", "none"):
        raise ValueError(f'scale must be "jacobi" or "none", got {scale!r}.')
    r = -(K @ jnp.asarray(u))
    if f is not None:
        r = r + jnp.asarray(f)
    if scale == "jacobi":
        r = r / K.diagonal()
    if free is not None:
        r = r[np.asarray(free)]
    return jnp.sum(r**2)


# -- batching, reference data, errors ------------------------------------------------------------------------
def _rows(tree, lo: int, hi: int):
    return jax.tree_util.tree_map(lambda a: a[lo:hi], tree)


def _pad(tree, k: int):
    return jax.tree_util.tree_map(lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], k, axis=0)]), tree)


def batched(fn: Callable, batch_size: int | None = None, *, mesh=None) -> Callable:
    """A batched, jitted version of a per-sample map: ``inputs (n, ...) -> outputs (n, ...)``.

    ``fn`` maps one sample (a pytree of arrays) to a pytree of arrays. The result applies ``jax.vmap(fn)``
    under ``jax.jit`` in chunks of ``batch_size`` samples (all chunks padded to one size, so it compiles
    once).

    Arguments:
        fn: per-sample function.
        batch_size: chunk size (default: the whole input at once).
        mesh: a one-axis ``jax.sharding.Mesh``: each chunk is split over its devices
            (:func:`igax.solvers.distributed.batch_map`; host solvers run once per device on its slice), and
            the chunk size is rounded up to a multiple of the device count. The outputs of a single chunk
            stay sharded over the mesh; several chunks are concatenated.

    Returns:
        A function of the stacked inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from igax.inverse import batched
        >>> square_all = batched(lambda x: x**2, batch_size=4)   # e.g. lambda xi: forward(xi).coeffs
        >>> square_all(jnp.arange(10.0).reshape(5, 2)).tolist()  # 5 samples: chunks of 4 (the last padded)
        [[0.0, 1.0], [4.0, 9.0], [16.0, 25.0], [36.0, 49.0], [64.0, 81.0]]
    """
    vfn = jax.jit(jax.vmap(fn) if mesh is None else batch_map(fn, mesh))
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    ndev = 1 if mesh is None else int(mesh.devices.size)

    def run(inputs):
        leaves = jax.tree_util.tree_leaves(inputs)
        if not leaves:
            raise ValueError("inputs must hold at least one array with a leading batch axis.")
        n = int(np.shape(leaves[0])[0])
        if n == 0:
            raise ValueError("inputs hold no samples (the leading batch axis has length 0).")
        bs = n if batch_size is None else min(int(batch_size), n)
        bs = -(-bs // ndev) * ndev  # whole slices per device (the last chunk is padded)
        outs = []
        for start in range(0, n, bs):
            chunk = _rows(inputs, start, start + bs)
            m = int(np.shape(jax.tree_util.tree_leaves(chunk)[0])[0])
            if m < bs:  # pad the last chunk by repeating its last sample: same shape, no recompilation
                chunk = _pad(chunk, bs - m)
            out = vfn(chunk)
            outs.append(out if m == bs else _rows(out, 0, m))
        if len(outs) == 1:
            return outs[0]
        return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *outs)

    return run


def make_dataset(
    solve_fn: Callable, inputs: Any, *, batch_size: int = 64, progress: bool = False, mesh=None
) -> tuple[Any, float]:
    """Reference outputs for a set of inputs, computed by a (batched) igax solve.

    Arguments:
        solve_fn: per-sample map, e.g. ``lambda xi: fem.solve(A(xi), b, bc=bcs).coeffs``.
        inputs: stacked inputs (a pytree of arrays with a leading sample axis).
        batch_size: samples per vmapped call (one host call of a direct solver per chunk).
        progress: show a tqdm bar over the chunks.
        mesh: a one-axis ``jax.sharding.Mesh``: each chunk is split over its devices (see :func:`batched`).

    Returns:
        ``(outputs, seconds)``: the stacked outputs as JAX arrays, and the wall-clock time spent after
        compilation (per-sample cost = seconds / n).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.fem import library
        >>> from igax.inverse import make_dataset
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> A, b = fem.assemble(library.diffusion, V, kappa=1.0), fem.assemble(library.source, V, f=1.0)
        >>> bc = fem.DirichletBC(V, "left", 0.0)
        >>> reference = lambda k: fem.solve(A * k, b, bc=bc).coeffs    # one conductivity k per sample
        >>> U, seconds = make_dataset(reference, jnp.array([1.0, 2.0, 4.0]))
        >>> U.shape, round(float(U[0].max() / U[1].max()), 6)           # u scales like 1 / k
        ((3, 36), 2.0)
    """
    leaves = jax.tree_util.tree_leaves(inputs)
    n = int(np.shape(leaves[0])[0])
    bs = min(int(batch_size), n)
    run = batched(solve_fn, bs, mesh=mesh)
    # Compile on the first chunk outside the timing.
    jax.block_until_ready(run(_rows(inputs, 0, bs)))
    chunks = range(0, n, bs)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="make_dataset", leave=False)
    t0 = time.perf_counter()
    outs = [jax.block_until_ready(run(_rows(inputs, s, s + bs))) for s in chunks]
    seconds = time.perf_counter() - t0
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *outs), seconds


def relative_l2_errors(space: FunctionSpace, predicted: jax.Array, reference: jax.Array) -> jax.Array:
    """Relative L2 errors ``|u_pred - u_ref|_L2 / |u_ref|_L2`` of coefficient vectors on a space.

    The norms are exact integrals of the spline / finite-element functions (``e^T M e`` with the mass matrix
    ``M`` of the space), not nodal or point-sampled norms.

    Arguments:
        space: the space of both coefficient vectors.
        predicted, reference: ``(ndofs,)`` or a batch ``(n, ndofs)``.

    Returns:
        A scalar, or ``(n,)`` errors for batches (``inf`` where the reference is zero). For a training loss
        use the squared ratio instead (the square root has an infinite derivative at zero error).

    Example:
        >>> import jax.numpy as jnp
        >>> from igax import fem
        >>> from igax.inverse import relative_l2_errors
        >>> V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=4))
        >>> reference = jnp.ones((2, V.ndofs))
        >>> err = relative_l2_errors(V, reference * jnp.array([[1.1], [0.5]]), reference)
        >>> tuple(round(float(e), 10) for e in err)
        (0.1, 0.5)
    """
    predicted, reference = jnp.asarray(predicted), jnp.asarray(reference)
    if predicted.shape != reference.shape or predicted.shape[-1:] != (space.ndofs,):
        raise ValueError(
            f"predicted and reference must both have shape (..., ndofs) = (..., {space.ndofs}); got "
            f"{predicted.shape} and {reference.shape}."
        )
    M = assemble(mass, space)

    def one(p, r):
        e = p - r
        ee, rr = jnp.dot(e, M @ e), jnp.dot(r, M @ r)
        # A zero reference has no relative error: report inf, never a silent NaN (double where for grads).
        return jnp.where(rr > 0, jnp.sqrt(ee / jnp.where(rr > 0, rr, 1.0)), jnp.inf)

    if predicted.ndim == 1:
        return one(predicted, reference)
    flat_p = predicted.reshape(-1, space.ndofs)
    flat_r = reference.reshape(-1, space.ndofs)
    return jax.vmap(one)(flat_p, flat_r).reshape(predicted.shape[:-1])


# -- checkpoints ---------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, state: Any, history: dict | None = None) -> None:
    """Write a training state (any pytree: model, optimiser state, step) with ``eqx.tree_serialise_leaves``.

    The history (lists of numbers) goes to ``path + ".json"``. Each write is atomic (a temporary file then a
    rename), so an interrupted run never leaves a truncated checkpoint. The history is written first: if an
    interrupt falls between the two writes, the history runs ahead of the state, never behind it, and
    :func:`train` drops the entries past the saved step when it resumes.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if history is not None:
        with open(path + ".json.tmp", "w") as fh:
            json.dump(history, fh)
        os.replace(path + ".json.tmp", path + ".json")
    tmp = path + ".tmp"
    eqx.tree_serialise_leaves(tmp, state)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, like: Any) -> tuple[Any, dict | None]:
    """Read a state written by :func:`save_checkpoint` into the structure of ``like``; also its history."""
    path = os.fspath(path)
    state = eqx.tree_deserialise_leaves(path, like)
    history = None
    if os.path.exists(path + ".json"):
        with open(path + ".json") as fh:
            history = json.load(fh)
    return state, history


# -- the training loop ---------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the trained model.
        opt_state: the optimiser state (to continue training).
        steps: total optimiser steps taken (including those of a resumed checkpoint).
        history: ``{"step": [...], "loss": [...], "time": [...]}`` (minibatch losses); ``time`` is the
            training wall-clock time (after compilation) at which the loss of that step was evaluated,
            cumulated over resumed runs; with an ``eval_batch`` also ``"eval_step"`` and ``"eval_loss"``.
        train_seconds: wall-clock time of the optimiser steps of this call (compilation excluded).
        compile_seconds: time spent compiling the step function in this call.
        resumed_from: the step a checkpoint was resumed from, or None.
    """

    model: Any
    opt_state: Any
    steps: int
    history: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    resumed_from: int | None = None


def _batch_of(data, key, batch_size):
    if callable(data):
        return data(key)
    leaves = jax.tree_util.tree_leaves(data)
    n = int(np.shape(leaves[0])[0])
    if batch_size is None or batch_size >= n:
        return data
    idx = jax.random.choice(key, n, (int(batch_size),), replace=False)
    return jax.tree_util.tree_map(lambda a: a[idx], data)


def train(
    loss_fn: Callable[[Any, Any], jax.Array],
    model: Any,
    optimizer: optax.GradientTransformation,
    data: Any,
    *,
    key: jax.Array,
    batch_size: int | None = None,
    steps: int | None = None,
    budget_s: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = True,
    progress: bool = True,
    log_every: int = 1,
    eval_batch: Any = None,
    eval_every: int | None = None,
) -> TrainResult:
    """Train a model with optax: minibatches, ``jit``-compiled steps, a step and/or time budget, checkpoints.

    Named ``train`` (once ``fit``, the name of the module :mod:`igax.layers.fitting` of spline fits).

    Arguments:
        loss_fn: ``loss_fn(model, batch) -> scalar``; typically the mean over ``jax.vmap`` of a per-sample
            loss that assembles (and maybe solves) with igax.
        model: an equinox module (or any pytree); its inexact arrays are trained, the rest is held fixed.
        optimizer: an optax transformation, e.g. ``optax.adam(1e-3)``.
        data: a pytree of arrays with a leading sample axis (minibatches of ``batch_size`` drawn without
            replacement at each step), or a callable ``key -> batch`` that samples a fresh batch (collocation
            points, random parameters of a physics-informed loss).
        key: PRNG key; the batch of step ``s`` is drawn with ``jax.random.fold_in(key, s)``, so a resumed run
            sees exactly the batches an uninterrupted run would.
        batch_size: minibatch size for array data (default: full batch).
        steps: total number of steps (including resumed ones); None for no limit (then give ``budget_s``).
        budget_s: wall-clock budget of this call's optimiser steps in seconds (compilation is not counted;
            it is reported in ``compile_seconds``).
        checkpoint: file path; the state is saved every ``checkpoint_every`` steps, at the end and on Ctrl-C,
            and, when ``resume`` is true and the file exists, training continues from it. Batches depend on
            the step only, so a resumed run reaches exactly the parameters of an uninterrupted one.
        progress: show a tqdm bar with the current loss.
        log_every: record the loss every this many steps (reading it back costs a device sync).
        eval_batch: a fixed batch (e.g. held-out samples) on which the loss is also evaluated, before the
            first step, every ``eval_every`` steps and after the last one, into ``history["eval_step"]``,
            ``history["eval_loss"]`` and ``history["eval_time"]``: unlike the minibatch losses it is
            comparable from step to step.
        eval_every: steps between evaluations on ``eval_batch`` (default: only at the start and the end).

    Returns:
        A :class:`TrainResult`.

    Raises:
        Interrupted: on Ctrl-C (a ``KeyboardInterrupt``, also one raised in a host callback of the compiled
            step); its ``result`` is the :class:`TrainResult` of the last completed step, which is also
            written to ``checkpoint``: call ``train`` again with the same arguments to continue exactly.
        FloatingPointError: when the training loss becomes NaN or inf.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from igax.inverse import train
        >>> data = (jnp.linspace(0.0, 1.0, 64), 3.0 * jnp.linspace(0.0, 1.0, 64))   # y = 3 x
        >>> loss = lambda w, batch: jnp.mean((w * batch[0] - batch[1]) ** 2)
        >>> res = train(loss, jnp.array(0.0), optax.adam(0.1), data, key=jax.random.key(0),
        ...             batch_size=16, steps=300, progress=False)
        >>> round(float(res.model), 2)      # also budget_s=60 for a time budget, checkpoint= to resume
        3.0
    """
    if steps is None and budget_s is None:
        raise ValueError("give steps= (number of optimiser steps) or budget_s= (seconds), or both.")
    if steps is not None and int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    if checkpoint_every < 1 or log_every < 1:
        raise ValueError("checkpoint_every and log_every must be >= 1.")
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    step0 = 0
    history = {"step": [], "loss": [], "time": []}
    resumed_from = None
    t_offset = 0.0
    if checkpoint is not None and resume and os.path.exists(os.fspath(checkpoint)):
        like = (params, opt_state, jnp.zeros((), jnp.int32))
        (params, opt_state, s), hist = load_checkpoint(checkpoint, like)
        step0 = resumed_from = int(s)
        if hist is not None:
            # The history is written before the state: after an interrupted write it may run ahead of it.
            history = _history_upto({k: list(v) for k, v in hist.items()}, step0)
            t_offset = history["time"][-1] if history["time"] else 0.0
        logger.info("resumed from %s at step %d", checkpoint, step0)

    def step_fn(params, opt_state, batch):
        def loss_of(p):
            return loss_fn(eqx.combine(p, static), batch)

        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # The training state is one tuple, replaced by a single assignment per step: an interrupt lands before or
    # after it, never between the parameters and their step count, so what is saved on Ctrl-C resumes exactly.
    state = (params, opt_state, step0)
    synced = state  # the latest state whose loss was read back (or that was saved): certainly computed
    train_seconds = compile_seconds = 0.0
    start = None
    evaluate = None
    bar = None

    def record_eval(st):
        p, _, at = st
        if evaluate is not None and (not history["eval_step"] or history["eval_step"][-1] != at):
            history["eval_step"].append(at)
            history["eval_loss"].append(float(evaluate(p, eval_batch)))
            history["eval_time"].append(t_offset + train_seconds)

    def save(st):
        if checkpoint is not None:
            save_checkpoint(checkpoint, (st[0], st[1], jnp.asarray(st[2], jnp.int32)), history)

    def result(st):
        return TrainResult(
            model=eqx.combine(st[0], static),
            opt_state=st[1],
            steps=st[2],
            history=history,
            train_seconds=train_seconds,
            compile_seconds=compile_seconds,
            resumed_from=resumed_from,
        )

    try:
        t0 = time.perf_counter()
        batch = _batch_of(data, jax.random.fold_in(key, step0), batch_size)
        compiled = jax.jit(step_fn).lower(params, opt_state, batch).compile()
        if eval_batch is not None:
            evaluate = (
                jax.jit(lambda p, b: loss_fn(eqx.combine(p, static), b)).lower(params, eval_batch).compile()
            )
            for k in ("eval_step", "eval_loss", "eval_time"):
                history.setdefault(k, [])
        compile_seconds = time.perf_counter() - t0
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None if steps is None else int(steps), initial=step0, desc="train", leave=False)
        record_eval(state)  # outside the timed training
        start = time.perf_counter()
        while (steps is None or state[2] < int(steps)) and (budget_s is None or train_seconds < budget_s):
            if state[2] != step0:
                batch = _batch_of(data, jax.random.fold_in(key, state[2]), batch_size)
            new_params, new_opt_state, loss = compiled(state[0], state[1], batch)
            state = (new_params, new_opt_state, state[2] + 1)
            step = state[2]
            if step % log_every == 0 or step == steps:
                lv = float(loss)  # syncs
                synced = state
                train_seconds = time.perf_counter() - start
                history["step"].append(step)
                history["loss"].append(lv)
                history["time"].append(t_offset + train_seconds)
                if not np.isfinite(lv):
                    raise FloatingPointError(
                        f"the training loss became {lv} at step {step}; lower the learning rate or check the "
                        "loss for divisions by zero / log of non-positive numbers."
                    )
                if bar is not None:
                    bar.set_postfix(loss=f"{lv:.4e}", refresh=False)
            else:
                train_seconds = time.perf_counter() - start
            if bar is not None:
                bar.update(1)
            if eval_every is not None and step % eval_every == 0:
                paused = time.perf_counter()
                record_eval(state)
                start += time.perf_counter() - paused  # evaluations are not training time
            if checkpoint is not None and step % checkpoint_every == 0:
                save(state)
                synced = state
        jax.block_until_ready(state[0])
        train_seconds = time.perf_counter() - start
        record_eval(state)
        save(state)
    except BaseException as err:
        if not caused_by_interrupt(err):
            raise
        if start is not None:
            train_seconds = time.perf_counter() - start
        state = _completed(state, synced)
        kept = _history_upto(history, state[2])
        history.clear()
        history.update(kept)
        save(state)
        where = "" if checkpoint is None else f", saved to {os.fspath(checkpoint)} (train resumes from it)"
        logger.info("train interrupted at step %d%s", state[2], where)
        # from None: an interrupt in a host callback arrives as a JAX error whose text is a long traceback.
        raise Interrupted(
            f"train interrupted by the user (KeyboardInterrupt) at step {state[2]}{where}. The model, "
            "optimiser state and history of that step are in this exception's .result "
            "(except KeyboardInterrupt as err: res = err.result).",
            result(state),
        ) from None
    finally:
        if bar is not None:
            bar.close()
    return result(state)


def _completed(state, synced):
    """``state`` if its computation finished, else ``synced``.

    Steps are dispatched asynchronously: when an interrupt inside the compiled step (a host callback) failed
    it, its outputs hold the error, and the last state known to be computed is kept instead (the steps in
    between are redone on resume, with the same batches).
    """
    try:
        jax.block_until_ready((state[0], state[1]))
        return state
    except Exception:
        return synced


def _history_upto(history: dict, step: int) -> dict:
    """The history entries of steps ``<= step`` (training losses and evaluations)."""
    out = dict(history)
    for key, values in (("step", ("loss", "time")), ("eval_step", ("eval_loss", "eval_time"))):
        if key in out:
            n = sum(1 for s in out[key] if s <= step)  # steps increase
            for k in (key, *values):
                if k in out:
                    out[k] = list(out[k][:n])
    return out


# The name before issue 17, when igax.inverse.fit (this loop) and igax.layers.fitting (spline fits) were both
# "fit".
__getattr__ = renamed(__name__, {"fit": ("train", train)})
