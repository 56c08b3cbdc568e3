"""Tests run in float64: the library itself never flips this switch (see igax/_config.py)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
