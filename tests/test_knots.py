"""Knot vectors: constructors, derived quantities, and teaching errors for invalid input."""

import numpy as np
import pytest

from igax.bases import knots as K


def test_open_uniform_and_counts():
    t = K.open_uniform(3, 4, -1.0, 3.0)
    np.testing.assert_array_equal(t, [-1, -1, -1, -1, 0, 1, 2, 3, 3, 3, 3])
    assert K.num_basis(t, 3) == 7
    assert K.n_elements(t) == 4
    np.testing.assert_array_equal(K.elements(t), [[-1, 0], [0, 1], [1, 2], [2, 3]])
    np.testing.assert_array_equal(K.validate_knots(t, 3), t)


def test_multiplicities_continuity_greville():
    t = [0, 0, 0, 0.25, 0.5, 0.5, 1, 1, 1]
    np.testing.assert_array_equal(K.unique_knots(t), [0, 0.25, 0.5, 1])
    np.testing.assert_array_equal(K.multiplicities(t), [3, 1, 2, 3])
    np.testing.assert_array_equal(K.continuity(t, 2), [1, 0])
    # Greville abscissae (their linear precision, sum_i g_i N_i(x) = x, is checked in test_bspline)
    np.testing.assert_allclose(K.greville(t, 2), [0, 0.125, 0.375, 0.5, 0.75, 1])
    np.testing.assert_array_equal(K.open_knots([0, 0.5, 1], 3, multiplicity=2), [0] * 4 + [0.5] * 2 + [1] * 4)


def test_degree_zero_allows_simple_interior_knots():
    t = K.validate_knots([0, 0.5, 1], 0)
    assert K.num_basis(t, 0) == 2
    np.testing.assert_array_equal(K.continuity(t, 0), [-1])


INVALID = [
    # (knots, degree, exception, regex)
    ([0, 0, 1, 0.5, 1, 1], 1, ValueError, "non-decreasing"),
    ([0, 0, 1, 1], 2, ValueError, "at least 2 \\* \\(degree \\+ 1\\) = 6"),
    ([0, 0, 0.5, 1, 1, 1], 2, ValueError, "first knot must be repeated exactly degree \\+ 1 = 3"),
    ([0, 0, 0, 0.5, 1, 1], 2, ValueError, "last knot must be repeated exactly degree \\+ 1 = 3"),
    ([0, 0, 0, 0, 1, 1, 1], 2, ValueError, "first knot must be repeated exactly"),
    ([0, 0, 0, 0.5, 0.5, 0.5, 1, 1, 1], 2, ValueError, "interior knot 0.5 of knots is repeated 3 times"),
    ([0, 0.5, 0.5, 1], 0, ValueError, "repeated 2 times"),
    ([1, 1, 1, 1], 1, ValueError, "empty domain"),
    ([0, 0, np.nan, 1, 1], 1, ValueError, "knots must be finite"),
    ([[0, 0], [1, 1]], 1, ValueError, "knots must be one-dimensional"),
    (["a", "b"], 0, TypeError, "knots must be a one-dimensional sequence of numbers"),
    ([0, 0, 1, 1], 1.0, TypeError, "degree must be a non-negative integer"),
    ([0, 0, 1, 1], -1, ValueError, "degree must be a non-negative integer"),
    ([0, 0, 1, 1], True, TypeError, "degree must be a non-negative integer"),
]


@pytest.mark.parametrize("knots, degree, exc, match", INVALID)
def test_invalid_knots_raise_teaching_errors(knots, degree, exc, match):
    with pytest.raises(exc, match=match):
        K.validate_knots(knots, degree)


def test_error_names_the_argument():
    with pytest.raises(ValueError, match="my_knots must be non-decreasing"):
        K.validate_knots([0, 0, 1, 0.5, 1, 1], 1, name="my_knots")
    with pytest.raises(ValueError, match="n_elements must be a positive integer"):
        K.open_uniform(2, 0)
    with pytest.raises(ValueError, match="lower < upper"):
        K.open_uniform(2, 3, 1.0, 0.0)
    with pytest.raises(ValueError, match="breakpoints must be a strictly increasing"):
        K.open_knots([0, 0, 1], 2)


# The docstring examples of every module run in tests/test_doctests.py.
