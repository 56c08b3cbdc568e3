"""Control-point shape parameterisation: geometry, shape derivatives, the mesh-quality guard."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from demo_runs import tiny

from igax import fem, inverse
from igax.inverse._jitcache import value_and_grad_flat
from igax.inverse.shape import ControlPointShape, InvertedGeometryError, jacobian_barrier


@fem.functional
def one(w):
    return 1.0 + 0.0 * w.x[0]


@pytest.fixture(scope="module")
def shape():
    design = fem.geometry.rectangle((0.0, 0.0), (1.0, 1.0))  # bilinear, 2 x 2 control points
    # only the upper-right corner moves
    movable = np.zeros((2, 2), bool)
    movable[1, 1] = True
    return ControlPointShape(design, movable, refine={"degree": 2, "elements": 3})


def test_area_and_its_shape_derivative(shape):
    assert shape.size == 2

    def area_sq(d):
        return fem.assemble(one, shape.space(d)) ** 2

    # moving the corner (1, 1) to (1 + a, 1 + b) gives the quadrilateral of area A = 1 + (a + b) / 2,
    # so d(A^2)/dd = 2 A (1/2, 1/2); one compiled value_and_grad serves this check and the Taylor test
    d = jnp.array([0.3, -0.1])
    val, grad = value_and_grad_flat(area_sq, d)(d)
    assert float(val) == pytest.approx(1.1**2, rel=1e-12)
    np.testing.assert_allclose(grad, [1.1, 1.1], rtol=1e-12)
    res = inverse.taylor_test(area_sq, d)
    assert res.rate1 == pytest.approx(2.0, abs=0.1)


def test_guard_and_barrier(shape):
    assert shape.check(jnp.zeros(2)) == pytest.approx(1.0)
    # pulling the corner across the opposite diagonal folds the quadrilateral
    with pytest.raises(InvertedGeometryError, match="inverted or degenerated"):
        shape.check(jnp.array([-1.6, -1.6]))
    cb = shape.callback()
    with pytest.raises(InvertedGeometryError):
        cb(inverse.Iterate(1, jnp.array([-1.6, -1.6]), 0.0, 0.0, {}))
    g = jax.jit(lambda d: shape.guard(jnp.asarray(1.0), shape.space(d), threshold=0.01))
    assert float(g(jnp.zeros(2))) == 1.0 and float(g(jnp.array([-1.6, -1.6]))) == np.inf
    b = jax.jit(lambda d: jacobian_barrier(shape.space(d)))
    assert float(b(jnp.zeros(2))) < 1e-10 < float(b(jnp.array([-0.95, -0.95])))
    with pytest.raises(ValueError, match="design must have shape"):
        shape.control_points(jnp.zeros(3))
    with pytest.raises(ValueError, match="movable"):
        ControlPointShape(shape.design_patch, np.ones((3, 3), bool))


def test_shape_example_reaches_the_disc(tmp_path_factory):
    path = Path(__file__).resolve().parent.parent / "examples" / "shape_optimization.py"
    spec = importlib.util.spec_from_file_location("example_shape", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.DEMO["name"] == "shape"
    # main(out=..., **tiny size), the run tests/test_cli.py makes anyway (tests/demo_runs.py): no extra cost
    run = tiny("shape", tmp_path_factory)
    out, tmp_path = run.result, run.out
    # the square's torsional stiffness 0.1406 A^2 rises to the disc's 1/(2 pi) A^2 (Polya), never above it
    assert out["stiffness_ratio_initial"] == pytest.approx(0.1406, abs=5e-4)
    assert 0.158 < out["stiffness_ratio_final"] <= out["disc_bound"] * (1 + 1e-6)
    assert out["area_relative_error"] < 1e-4
    assert out["min_relative_jacobian"] > 0.05
    assert out["taylor_rate1"] == pytest.approx(2.0, abs=0.1)
    assert (tmp_path / "shape_optimization.png").exists() and (tmp_path / "shape_optimization.vtu").exists()
