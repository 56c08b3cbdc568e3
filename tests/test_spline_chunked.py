"""SplineSpace assembly paths agree: chunked (lax.scan over element blocks) vs one piece, GEMM vs unrolled."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from igax import fem
from igax.fem import library

asm = sys.modules["igax.fem.forms.assembly"]  # the module (igax.fem.forms.assembly is the function)

CASES = {
    # degree 3, polynomial map; glued seam (annulus); rational vector space (plate); 3D
    "p3-square-laplace": (lambda: fem.geometry.rectangle().refine(degree=3, elements=4), (), library.laplace),
    "annulus-laplace": (
        lambda: fem.geometry.annulus().refine(degree=2, elements=(3, 5)),
        (),
        library.laplace,
    ),
    "plate-elasticity": (
        lambda: fem.geometry.plate_with_hole().refine(degree=2, elements=3),
        (2,),
        library.linear_elasticity(1e5, 0.3),
    ),
    "box-mass": (lambda: fem.geometry.box().refine(degree=2, elements=2), (), library.mass),
}


@pytest.mark.parametrize("case", list(CASES))
def test_chunked_spline_assembly_matches_one_piece(case, monkeypatch):
    make, shape, form = CASES[case]
    with_grad = case == "p3-square-laplace"  # one reverse-mode check through the scan (compiles are slow)

    def run(chunk):
        monkeypatch.setattr(asm, "_CHUNK_ENTRIES", chunk)
        jax.clear_caches()  # spline plans are shared: force a fresh trace under the new chunk size
        V = fem.SplineSpace(make(), shape=shape)
        f = jax.jit(lambda P: fem.assemble(form, V.with_geometry(control_points=P)).values)
        scanned = "scan" in str(jax.make_jaxpr(f)(V.control_points))
        g = jax.grad(lambda P: jnp.sum(jnp.sin(f(P))))(V.control_points) if with_grad else None
        return f(V.control_points), g, scanned

    A, gA, scanned_a = run(10**12)
    B, gB, scanned_b = run(37)  # small chunks that do not divide the element count
    assert not scanned_a and scanned_b
    np.testing.assert_allclose(B, A, rtol=0, atol=1e-13 * float(jnp.abs(A).max()))
    if with_grad:
        np.testing.assert_allclose(gB, gA, rtol=0, atol=1e-12 * float(jnp.abs(gA).max()))


@pytest.mark.parametrize("case", ["box-mass", "plate-elasticity"])
def test_gemm_and_unrolled_element_matrices_agree(case, monkeypatch):
    # Large element matrices are contracted by a batched GEMM, small ones by unrolled multiply-adds.
    make, shape, form = CASES[case]
    out = []
    for work in (1, 10**15):  # always GEMM, never GEMM
        monkeypatch.setattr(asm, "_GEMM_WORK", work)
        jax.clear_caches()
        V = fem.SplineSpace(make(), shape=shape)
        out.append(np.asarray(fem.assemble(form, V).values))
    np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-13 * np.abs(out[1]).max())
