"""The inverse-problem examples run at a tiny size and check the numbers they print."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from demo_runs import tiny

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_brachistochrone(tmp_path_factory):
    run = tiny("brachistochrone", tmp_path_factory)  # main(out=..., **tiny size), also read by test_cli
    out, tmp_path = run.result, run.out
    # the fitted end point gives the target descent time
    assert out["descent_time"] == pytest.approx(out["target_time"], rel=1e-8)
    # custom_root's implicit derivative equals the hand-written implicit function theorem
    assert out["dT_dpx_autodiff"] == pytest.approx(out["dT_dpx_closed_form"], rel=1e-10)
    assert out["taylor_rate1"] == pytest.approx(2.0, abs=0.1)
    assert out["ode_residual"] < 1e-10
    # the cycloid beats the straight ramp
    assert out["descent_time"] < out["straight_ramp_time"]
    assert np.isfinite(out["time_per_iteration_s"])
    assert (tmp_path / "brachistochrone.png").stat().st_size > 1000


def test_conductivity_identification(tmp_path_factory):
    mod = load("conductivity_identification")
    run = tiny("conductivity", tmp_path_factory)  # main(out=..., **tiny size), also read by test_cli
    out, tmp_path = run.result, run.out
    assert out["noise"] == 0.01
    # Threshold from the noise level: Tikhonov regularisation with alpha matched to the noise recovers the
    # parameter to O(sqrt(delta)) (the classical rate under a source condition), sqrt(0.01) = 0.1; the
    # discretisation floor (the L2 projection of the truth) lies far below it.
    assert out["kappa_rel_l2_error"] < np.sqrt(out["noise"])
    assert out["kappa_rel_l2_error_projection"] < 0.02
    # the misfit falls by two orders of magnitude, to about its expected value at the truth (1/2 per datum)
    assert out["misfit_reduction"] > 100
    assert 0.2 < out["misfit_final"] < 0.7
    assert out["taylor_rate1"] == pytest.approx(2.0, abs=0.1)
    # minimize's default method converges by its gradient tolerance, within the iteration budget
    assert (
        out["message"].startswith("gradient norm")
        and out["iterations"] < mod.DEMO["sizes"]["tiny"]["maxiter"]
    )
    assert out["time_per_iteration_s"] > 0
    for name in ("conductivity_fields.png", "conductivity_history.png", "conductivity.vtu"):
        assert (tmp_path / name).stat().st_size > 1000
