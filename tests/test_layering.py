"""The layering of the subpackages, read from the source: ``bases`` imports neither ``fem`` nor ``solvers``
(nor ``layers``); ``solvers`` imports neither ``fem`` nor ``inverse``; ``layers`` (the spline layers, on
``bases`` and ``solvers``) imports neither ``fem`` nor ``inverse``; no function-level import exists only to
break a cycle.

Every module's imports are parsed with ``ast`` (module level, class bodies, functions and ``TYPE_CHECKING``
blocks alike), so an import hidden in a function counts as much as one at the top. A failure names the
module, the line and the import.

A function-level import of another igax module breaks a cycle when moving it to the top of its module would
make the two modules import each other: the imported module (or a package whose ``__init__`` it runs) reaches
the importing module again through module-level imports. Lazy imports of optional packages (pyamg, pyvista)
or of heavy igax modules that do not import the caller back are fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import igax

ROOT = Path(igax.__file__).parent

# Which igax subpackages each layer must not import.
FORBIDDEN = {
    "igax.bases": ("igax.fem", "igax.solvers", "igax.inverse", "igax.layers"),
    "igax.solvers": ("igax.fem", "igax.inverse", "igax.layers"),
    "igax.layers": ("igax.fem", "igax.inverse"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


class _Import:
    def __init__(self, module: str, line: int, text: str, in_function: bool):
        self.module, self.line, self.text, self.in_function = module, line, text, in_function


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <...> import``, relative imports included."""
    if not node.level:
        return node.module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(name: str) -> list[_Import]:
    """Every import in module ``name``; ``from a import b`` gives ``a.b`` if that is a module, else ``a``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(_Import(alias.name, child.lineno, ast.unparse(child), inside))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(name, child)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    target = sub if sub in MODULES else base
                    found.append(_Import(target, child.lineno, ast.unparse(child), inside))
            visit(child, inside)

    visit(tree, False)
    return found


IMPORTS = {name: _imports(name) for name in MODULES}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _layer_violations(layer: str) -> list[tuple[str, str]]:
    return [
        (name, f"{name} line {imp.line}: `{imp.text}`{' (inside a function)' if imp.in_function else ''}")
        for name in MODULES
        if _within(name, layer)
        for imp in IMPORTS[name]
        if any(_within(imp.module, up) for up in FORBIDDEN[layer])
    ]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    bad = [text for _, text in _layer_violations(layer)]
    assert not bad, f"{layer} must not import {' or '.join(FORBIDDEN[layer])}, but:\n" + "\n".join(bad)


def _executed_by_import(module: str, importer: str) -> list[str]:
    """The modules whose code runs when ``importer`` imports ``module``: the module and those of its parent
    packages that are not already being imported (igax itself and the importer's own packages are)."""
    out = [module]
    parent = module.rpartition(".")[0]
    while parent and parent != "igax":
        if not _within(importer, parent):
            out.append(parent)
        parent = parent.rpartition(".")[0]
    return [m for m in out if m in MODULES]


def _reaches(start: str, target: str) -> list[str] | None:
    """A chain of module-level imports from ``start`` back to ``target`` (None when there is none)."""
    seen = {start}
    stack = [[start]]
    while stack:
        chain = stack.pop()
        for imp in IMPORTS[chain[-1]]:
            if imp.in_function or not imp.module.startswith("igax"):
                continue
            for m in _executed_by_import(imp.module, target):
                if m == target:
                    return chain + [m]
                if m not in seen:
                    seen.add(m)
                    stack.append(chain + [m])
    return None


def _cycle_breakers() -> list[str]:
    out = []
    for name in MODULES:
        for imp in IMPORTS[name]:
            if not imp.in_function or not imp.module.startswith("igax") or _within(name, imp.module):
                continue
            for m in _executed_by_import(imp.module, name):
                chain = _reaches(m, name)
                if chain is not None:
                    out.append(f"{name} line {imp.line}: `{imp.text}` (cycle: {' -> '.join([name, *chain])})")
                    break
    return out


def test_no_function_level_import_only_breaks_a_cycle():
    found = _cycle_breakers()
    assert not found, "function-level imports that only break a cycle:\n" + "\n".join(found)


def test_importing_a_layer_loads_nothing_above_it():
    # At run time as well as in the source: the old names of the spline layers in igax.bases are served by
    # name (igax._deprecation.moved), so importing igax.bases (alone, in a fresh interpreter) loads no module
    # of igax.layers, igax.solvers or igax.fem; importing igax.solvers loads none of igax.fem.
    import subprocess
    import sys

    code = (
        "import sys, importlib; importlib.import_module({mod!r}); "
        "print(sorted(m for m in sys.modules if m.startswith(('igax.fem', 'igax.solvers', 'igax.layers', "
        "'igax.inverse'))))"
    )
    for mod, above in (("igax.bases", ("igax.fem", "igax.solvers", "igax.layers", "igax.inverse")),
                       ("igax.solvers", ("igax.fem", "igax.layers", "igax.inverse"))):  # fmt: skip
        # igax/__init__ imports the subpackages, so load the layer's files without running it
        loader = (
            "import importlib.util, sys, types, pathlib; "
            f"root = pathlib.Path({str(ROOT)!r}); "
            "pkg = types.ModuleType('igax'); pkg.__path__ = [str(root)]; sys.modules['igax'] = pkg; "
        )
        out = subprocess.run(
            [sys.executable, "-c", loader + code.format(mod=mod)], capture_output=True, text=True, check=True
        ).stdout
        loaded = [m for m in eval(out) if m.startswith(above)]
        assert not loaded, f"importing {mod} loaded {loaded}"


def test_the_import_walk_sees_function_level_imports():
    # the parser itself: bases/_checks.py's run-time checks come from the package-level module
    assert any(i.module == "igax._errors" for i in IMPORTS["igax.bases._checks"])
    lazy = [i for i in IMPORTS["igax.solvers.backends.cholmod"] if i.in_function]
    assert {i.module for i in lazy} == {"sksparse.cholmod"}  # the optional package, imported when used
