"""The band layout of sum-factorised assembly (igax/fem/forms/_sumfact_plan.py, _sumfact_band.py).

The CSR index is checked against the closed form of the layout ``(i_0, block, i_1, delta_0, delta_1)`` on a
patch with more than 8192 functions (a rewrite of the index once went wrong there only: NumPy 2.4's
``unravel_index`` of a 2D input returns wrong indices past its 8192nd entry); the contraction is checked
against the element-wise assembly where the directions differ in degree (each direction has its own band
width) and where the last chunk does not divide the elements.
"""

import sys

import jax.numpy as jnp
import numpy as np
import pytest
from test_sumfact import _close  # the same relative comparison

from igax import fem
from igax.fem import library
from igax.fem.forms import sumfact  # noqa: F401 - registers the module under its name

_SF = sys.modules["igax.fem.forms.sumfact"]


def test_csr_index_is_the_closed_form_of_the_layout():
    """Entry ``A[i, j]`` of a scalar 2D patch sits at ``((i_0 n_1 + i_1) L_0 + d_0) L_1 + d_1`` with
    ``d_k = j_k - i_k + p_k``, for all entries of 18,960 functions (degree (3, 2))."""
    from igax.fem.forms._sumfact_plan import csr_index, sumfact_plan

    V = fem.SplineSpace(fem.geometry.rectangle().refine(degree=(3, 2), elements=(117, 158)))
    sf = sumfact_plan(V)
    idx = csr_index(V.plan, sf.dirs, [(0, 0)])
    (n0, n1), (p0, p1) = V.plan.shape, V.plan.degrees
    assert n0 * n1 > 8192
    rows, cols = np.asarray(V.pattern.rows), np.asarray(V.pattern.indices)
    i0, i1, j0, j1 = rows // n1, rows % n1, cols // n1, cols % n1
    want = ((i0 * n1 + i1) * (2 * p0 + 1) + j0 - i0 + p0) * (2 * p1 + 1) + j1 - i1 + p1
    np.testing.assert_array_equal(idx, want)


CASES = {
    # (space, form, chunk size): degrees differ by direction; 3D with a rational patch's value jets.
    "2d-degrees-4-2-rational": (
        lambda: fem.SplineSpace(fem.geometry.quarter_annulus().refine(degree=(4, 2), elements=(7, 5))),
        library.laplace,
        3,
    ),
    "2d-vector-degrees-2-3": (
        lambda: fem.SplineSpace(fem.geometry.rectangle().refine(degree=(2, 3), elements=(6, 4)), shape=(2,)),
        library.linear_elasticity(1.0, 0.3),
        4,
    ),
    "3d-degrees-2-3-2-mass": (
        lambda: fem.SplineSpace(fem.geometry.box().refine(degree=(2, 3, 2), elements=(5, 2, 3))),
        library.mass,
        2,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mixed_degrees_and_non_dividing_chunks_equal_the_elementwise_matrix(case, monkeypatch):
    make, form, blk = CASES[case]
    V = make()
    with monkeypatch.context() as m:
        m.setattr(_SF, "_MIN_ENTRIES", 10**18)
        ref = fem.assemble(form, V).values
    monkeypatch.setattr(_SF, "_MIN_ENTRIES", 0)
    monkeypatch.setattr(_SF, "_AFFINE", False)  # the general path (boxes are affine)
    monkeypatch.setattr(_SF, "_MIN_DEGREE", 1)
    monkeypatch.setattr(_SF, "_chunk_size", lambda *a: blk)
    assert _SF.sumfact_plan(V).dirs[0].nv % blk  # the last chunk ends past the patch
    A = fem.assemble(form, V).values
    assert A.dtype == jnp.float64
    _close(A, ref)
