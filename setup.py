"""Package layout that pyproject.toml cannot state: the demo scripts ship inside the wheel.

Everything else (metadata, dependencies, package data) is in pyproject.toml. The scripts stay in ``examples/``
at the repository root, where readers look for them; in the wheel they become ``igax/_examples/*.py`` so that
``igax demo`` finds them after ``pip install igax`` (``igax.cli.examples_dir``). pyproject's
``[tool.setuptools.packages.find]`` only finds packages below their own folder, so it cannot add a package
mapped from another folder, and this file lists the packages instead.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["igax", "igax.*"]), "igax._examples"],
    package_dir={"igax._examples": "examples"},
)
