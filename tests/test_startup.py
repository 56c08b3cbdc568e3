"""Start-up cost (issue 16 item 4): few compiled programs per new mesh size, compact derivative programs,
host tables equal to the traced ones, and the persistent compilation cache.

Compilations are counted with JAX's monitoring events, which do not depend on the machine's load (times do;
``benchmarks/bench_startup.py`` measures those).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_count import compilations as _compilations

import igax
from igax import fem
from igax.fem import mesh

_ASSEMBLE = sys.modules[
    "igax.fem.forms.assembly"
]  # the module (igax.fem.forms.assembly is also the function's name)


def _square(nx, ny):
    return fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=(nx, ny)))


def test_an_eager_problem_compiles_one_program_per_step_at_a_new_mesh_size():
    # Forms of this test only: no other test has compiled their programs.
    @fem.bilinear_form
    def stiffness(u, v, w):
        return w.k * jnp.dot(u.grad, v.grad)

    @fem.linear_form
    def load(v, w):
        return w.f * v.value

    def problem(V, count):
        steps = {}
        with count() as n:
            A = fem.assemble(stiffness, V, k=1.0)
        steps["assemble A"] = n()
        with count() as n:
            b = fem.assemble(load, V, f=lambda x: 1.0 + x[0] * x[1])  # x[0] * x[1]: NumPy, no program
        steps["assemble b"] = n()
        with count() as n:
            fixed = fem.DirichletBC(V, "left", 0.0)
        steps["DirichletBC number"] = n()
        with count() as n:
            projected = fem.DirichletBC(V, "right", lambda x: x[1] ** 2)  # an L2 projection and its solve
        steps["DirichletBC callable"] = n()
        with count() as n:
            u = fem.solve(A, b, bc=[fixed, projected])
        steps["solve"] = n()
        return u, steps

    problem(_square(3, 7), _compilations)  # the process's one-time compilations (scalar conversions, ...)
    u, steps = problem(_square(7, 3), _compilations)  # a new mesh size
    # Before: 3, 5, 1, ~100 and ~25 programs (each eager operation compiled for every new size).
    assert steps == {
        "assemble A": 1,
        "assemble b": 1,
        "DirichletBC number": 0,
        "DirichletBC callable": 1,
        "solve": 1,
    }
    # The result is the problem's: u = 0 on the left, and on the right the projection of y^2, which the
    # degree-2 trace space holds exactly.
    V = u.space
    assert np.all(np.asarray(u.coeffs)[V.boundary("left")] == 0.0)

    @fem.functional
    def gap(w):
        return (w.u - w.x[1] ** 2) ** 2

    assert float(fem.assemble(gap, V, boundary="right", u=u)) < 1e-24


def test_derivative_of_the_contraction_costs_no_second_unrolled_program():
    # Large enough (400 cubic elements) for the unrolled primal; its derivative must be einsums, not the
    # unrolled form differentiated and transposed (which doubled the program and its compile time).
    rng = np.random.default_rng(0)
    ne, nq, nloc = 400, 16, 16
    U = [jnp.asarray(rng.standard_normal((ne, nq, nloc))) for _ in range(2)]
    V = [jnp.asarray(rng.standard_normal((ne, nq, nloc))) for _ in range(2)]
    M = jnp.asarray(rng.standard_normal((ne, nq, 1, 2, 1, 2)))
    W = jnp.asarray(rng.standard_normal((ne, 1, nloc, 1, nloc)))

    def loss(m):
        return jnp.sum(_ASSEMBLE._contract_bilinear(U, m, V) * W)

    def count(f):  # operations of the lowered program (the contraction is one primitive in the jaxpr)
        return sum(" = stablehlo." in line for line in jax.jit(f).lower(M).as_text().splitlines())

    primal = count(loss)
    assert primal > 300  # the unrolled form is in use at this size
    assert count(jax.grad(loss)) < primal + 50  # before: about twice the primal


@pytest.mark.parametrize("broadcast", [False, True])
def test_contraction_jvp_in_all_three_arguments_matches_autodiff_of_the_einsum_form(broadcast):
    rng = np.random.default_rng(1)
    ne, nq, nloc, C = 300, 16, 16, 1  # unrolled primal (above the small-work threshold)
    shape_u = (1, nq, nloc) if broadcast else (ne, nq, nloc)  # tables may carry size-1 element axes

    def arr(*s):
        return jnp.asarray(rng.standard_normal(s))

    U, V = [arr(*shape_u), arr(ne, nq, nloc)], [arr(ne, nq, nloc), arr(*shape_u)]
    M = arr(ne, nq, C, 2, C, 2)
    dU, dV = [arr(*u.shape) for u in U], [arr(*v.shape) for v in V]
    dM = arr(*M.shape)
    got = jax.jvp(_ASSEMBLE._contract_bilinear, (U, M, V), (dU, dM, dV))
    want = jax.jvp(_ASSEMBLE._contract_bilinear_gemm, (U, M, V), (dU, dM, dV))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(w))))
    # Only M varies (a coefficient field): the other tangents are symbolic zeros, skipped.
    got = jax.jvp(lambda m: _ASSEMBLE._contract_bilinear(U, m, V), (M,), (dM,))[1]
    want = _ASSEMBLE._contract_bilinear_gemm(U, dM, V)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(want))))


_SPACES = {
    "spline-2d": lambda: fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=3, elements=(3, 4))),
    "spline-3d-vector": lambda: fem.SplineSpace(
        fem.geometry.box().refine(degree=2, elements=(2, 2, 3)), shape=(3,)
    ),
    "spline-seam": lambda: fem.SplineSpace(fem.geometry.annulus().refine(degree=2, elements=(2, 6))),
    "p1": lambda: fem.LagrangeSpace(mesh.unit_square(4), degree=1),
    "p2": lambda: fem.LagrangeSpace(mesh.unit_square(3), degree=2),
    "q2-vector": lambda: fem.LagrangeSpace(mesh.unit_square(3, cell="quad"), degree=2, shape=(2,)),
    "p1-tet": lambda: fem.LagrangeSpace(mesh.unit_cube(2), degree=1),
}


@pytest.mark.parametrize("name", sorted(_SPACES))
def test_host_tables_equal_the_traced_tables(name):
    V = _SPACES[name]()
    for boundary in [None, *[(b,) for b in V.boundary_names], V.boundary_names]:
        rule = V.quadrature_rule(boundary)
        traced, host = jax.jit(lambda W, r=rule: W.tables(r))(V), V.host_tables(rule)
        for a, b in zip(traced, host, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.shape == b.shape
                np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13 * float(np.max(np.abs(b))))


def test_known_tables_cached_for_concrete_geometry_only():
    V = _square(2, 5)
    rule = V.quadrature_rule(None)
    t1, x1 = _ASSEMBLE.known_tables(V, rule)
    t2, x2 = _ASSEMBLE.known_tables(V, rule)
    assert t1 is t2 and x1 is x2  # computed once per geometry
    assert isinstance(x1, np.ndarray) and not x1.flags.writeable  # callables get read-only NumPy points
    moved = V.with_geometry(control_points=V.control_points + 0.01)
    assert _ASSEMBLE.known_tables(moved, rule)[0] is not t1  # another geometry, other tables
    seen = []

    def area(cp):  # traced geometry: the tables must stay in the trace (shape derivatives)
        W = V.with_geometry(control_points=cp)
        seen.append(_ASSEMBLE.known_tables(W, rule))
        return fem.Field(W, jnp.ones(W.ndofs)).integrate()

    g = jax.grad(area)(V.control_points)
    assert seen == [None]
    assert float(jnp.sum(jnp.abs(g))) > 0.0


def test_enable_compilation_cache_is_opt_in_and_serves_a_second_process(tmp_path):
    code = textwrap.dedent(
        f"""
        import json, jax
        from jax import monitoring
        hits = []
        monitoring.register_event_listener(lambda name, **k: hits.append(name))
        jax.config.update("jax_enable_x64", True)
        import igax
        from igax import fem
        before = jax.config.jax_compilation_cache_dir
        path = igax.enable_compilation_cache({str(tmp_path / "cache")!r})
        V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=2, elements=(3, 2)))
        A = fem.assemble(fem.library.laplace, V)
        print(json.dumps({{"before": before, "dir": jax.config.jax_compilation_cache_dir, "path": str(path),
                          "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
                          "hits": hits.count("/jax/compilation_cache/cache_hits")}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}

    def run():
        cmd = [sys.executable, "-c", code]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["before"] is None  # importing igax turned nothing on
    assert first["dir"] == first["path"] == str(tmp_path / "cache")
    assert first["min_time"] == 0.0
    assert first["hits"] == 0 and second["hits"] >= 1  # the assembly program came from the cache
    assert any((tmp_path / "cache").iterdir())


def test_default_cache_directory_follows_igax_cache_dir(monkeypatch, tmp_path):
    from igax._compile import compilation_cache_dir

    monkeypatch.setenv("IGAX_CACHE_DIR", str(tmp_path))
    assert compilation_cache_dir() == tmp_path / "jax"
    monkeypatch.delenv("IGAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache_dir() == tmp_path / "xdg" / "igax" / "jax"
    assert igax.enable_compilation_cache is not None and "enable_compilation_cache" in igax.__all__
