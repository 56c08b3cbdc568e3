"""Every ``>>>`` example in igax runs as a doctest (or says why not with ``# doctest: +SKIP``).

One test per module, so a failure names its file. Each docstring runs in a fresh namespace, not in the
module's globals: an example that works here works when a reader pastes it, because it carries its own
imports. The tests' conftest enables float64, as a reader's script is told to.
"""

import doctest
import importlib
import pkgutil

import pytest

import igax
from igax.fem.forms.form import Form

# `igax.__main__` runs the command line when imported; `igax._examples` exists only in the installed wheel.
_NOT_IMPORTED = {"igax.__main__"}


def _modules() -> list[str]:
    names = ["igax"]
    for info in pkgutil.walk_packages(igax.__path__, prefix="igax."):
        if info.name not in _NOT_IMPORTED and not info.name.startswith("igax._examples"):
            names.append(info.name)
    return sorted(names)


MODULES = _modules()
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def test_the_walk_finds_the_package():
    assert {
        "igax.bases.knots",
        "igax.fem.forms.assembly",
        "igax.solvers.linear",
        "igax.inverse.optimize",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    try:
        mod = importlib.import_module(name)
    except ImportError as e:  # an optional dependency (e.g. pypardiso off x86); igax's own must import
        if (e.name or "igax").startswith("igax"):
            raise
        pytest.skip(f"{name} needs the optional package {e.name!r}")
    # Examples that write files (meshes, VTU) write them into a temporary folder.
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    tests = finder.find(mod, name, globs={"__name__": name})
    # The finder looks at functions and classes only: the examples of forms (the instances that
    # ``@bilinear_form``, ``@energy_form``, ... make, as in ``igax.fem.forms.library``) are collected here.
    parser = doctest.DocTestParser()
    for attr, obj in sorted(vars(mod).items()):
        doc = getattr(obj, "__doc__", None) if isinstance(obj, Form) else None
        if doc and ">>>" in doc and getattr(obj.kernel, "__module__", None) == name:
            tests.append(parser.get_doctest(doc, {"__name__": name}, f"{name}.{attr}", None, 0))
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    failed = f"{result.failed} of {result.attempted} doctest examples in {name} failed (printed above)"
    assert result.failed == 0, failed
