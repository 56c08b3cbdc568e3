"""The layering of the subpackages, read from the source: ``bases`` imports neither ``fem`` nor ``solvers``;
``solvers`` imports neither ``fem`` nor ``inverse``; no function-level import exists only to break a cycle.

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
    "igax.bases": ("igax.fem", "igax.solvers", "igax.inverse"),
    "igax.solvers": ("igax.fem", "igax.inverse"),
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


# Imports that break the rule in modules of other engineers' current work, found when this test was written:
# the tensor-product fit of igax.bases.fit solves its normal equations with igax.solvers' sparse matrix (to be
# replaced by a solve that lives in bases). They are reported by the xfail test below until they are gone.
KNOWN_LAYER_VIOLATIONS = {"igax.bases.fit"}


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
    bad = [text for name, text in _layer_violations(layer) if name not in KNOWN_LAYER_VIOLATIONS]
    assert not bad, f"{layer} must not import {' or '.join(FORBIDDEN[layer])}, but:\n" + "\n".join(bad)


@pytest.mark.xfail(reason="igax.bases.fit still imports igax.solvers (KNOWN_LAYER_VIOLATIONS)")
def test_no_known_layer_violation_is_left():
    bad = [text for layer in FORBIDDEN for _, text in _layer_violations(layer)]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


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


# Function-level imports that break a cycle, found when this test was written, in modules of igax.fem that
# other engineers work on (they go with the layout of igax.fem, issue 17 item 5): Mesh.refine / read / write
# import mesh_refine and mesh_io, which import mesh. Reported by the xfail test below until they are gone.
KNOWN_CYCLE_BREAKERS = {"igax.fem.mesh"}


def test_no_function_level_import_only_breaks_a_cycle():
    found = [f for f in _cycle_breakers() if f.split(" ")[0] not in KNOWN_CYCLE_BREAKERS]
    assert not found, "function-level imports that only break a cycle:\n" + "\n".join(found)


@pytest.mark.xfail(reason="igax.fem.mesh imports mesh_refine / mesh_io in functions (KNOWN_CYCLE_BREAKERS)")
def test_no_known_cycle_breaker_is_left():
    found = _cycle_breakers()
    assert not found, "function-level imports that only break a cycle:\n" + "\n".join(found)


def test_the_import_walk_sees_function_level_imports():
    # the parser itself: bases/_checks.py's run-time checks come from the package-level module
    assert any(i.module == "igax._errors" for i in IMPORTS["igax.bases._checks"])
    lazy = [i for i in IMPORTS["igax.solvers.backends.cholmod"] if i.in_function]
    assert {i.module for i in lazy} == {"sksparse.cholmod"}  # the optional package, imported when used
