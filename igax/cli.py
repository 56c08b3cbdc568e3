"""The ``igax`` command: ``igax demo``, ``igax info``, ``igax bench``.

Demos are the scripts in ``examples/``: each declares a literal ``DEMO = {"name": ..., "description": ...,
"sizes": {"tiny": {...}, "small": {...}, ...}}`` and a ``main(**params)`` returning a dict of numbers. The
command reads ``DEMO`` with :mod:`ast` (so listing demos imports nothing) and runs ``main`` with the chosen
size's parameters. Benchmarks are ``benchmarks/bench_NAME.py`` with ``main(argv)``.

Demo names are lower case with ``-`` between words (``nonlinear-diffusion``); the same name with ``_``
(``nonlinear_diffusion``) and the script's file name (``plate_with_hole``) are accepted too.

The examples ship inside the wheel as ``igax/_examples`` (``setup.py`` maps that package onto ``examples/``),
so an installed igax finds its demos; a source checkout (editable install) reads ``examples/`` directly.

Example:
    $ igax demo poisson --out pictures --size small
    $ igax info
    $ igax bench basis --quick
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main", "find_demos", "resolve_demo", "examples_dir", "find_benchmarks", "run_demo", "summarise"]

FLAGSHIP_DEMOS = ("poisson", "basis")  # the first one present is what `igax demo` (and `make demo`) runs
SIZES = ("tiny", "small", "default", "large")


def project_root() -> Path:
    """The source tree holding ``examples/`` and ``benchmarks/`` (igax is installed editable from it)."""
    env = os.environ.get("IGAX_ROOT")
    return Path(env) if env else Path(__file__).resolve().parent.parent


def examples_dir() -> Path | None:
    """The folder of demo scripts, or None.

    ``$IGAX_ROOT/examples`` when ``IGAX_ROOT`` is set; else the copy inside the installed package
    (``igax/_examples``, a wheel install); else the source tree's ``examples/`` (editable install). The
    package copy is looked at first because beside an installed igax, ``site-packages/examples`` may belong to
    another distribution.
    """
    if "IGAX_ROOT" in os.environ:
        candidates = [project_root() / "examples"]
    else:
        candidates = [Path(__file__).resolve().parent / "_examples", project_root() / "examples"]
    return next((c for c in candidates if c.is_dir()), None)


def _read_demo_spec(path: Path) -> dict | None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "DEMO" for t in node.targets
        ):
            spec = ast.literal_eval(node.value)
            spec["path"] = path
            return spec
    return None


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


def find_demos() -> dict[str, dict]:
    """All demos declared in the examples folder (:func:`examples_dir`), by name."""
    folder = examples_dir()
    demos = {}
    for path in sorted(folder.glob("*.py")) if folder is not None else []:
        spec = _read_demo_spec(path)
        if spec is not None:
            demos[spec["name"]] = spec
    return demos


def resolve_demo(name: str, demos: dict[str, dict] | None = None) -> str:
    """The demo's name for ``name``, which may also be spelt with ``_`` or be the script's file name.

    Raises:
        SystemExit: no demo has that name (the message lists the demos).
    """
    demos = find_demos() if demos is None else demos
    aliases = {}
    for canonical, spec in demos.items():
        aliases.setdefault(_key(Path(spec["path"]).stem), canonical)
    for canonical in demos:
        aliases[_key(canonical)] = canonical  # a demo's own name wins over another script's file name
    if _key(name) not in aliases:
        raise _unknown("demo", name, demos)
    return aliases[_key(name)]


def find_benchmarks() -> dict[str, Path]:
    """All benchmarks ``benchmarks/bench_NAME.py``, by NAME."""
    folder = project_root() / "benchmarks"
    if not folder.is_dir():
        return {}
    return {p.stem.removeprefix("bench_"): p for p in sorted(folder.glob("bench_*.py"))}


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _unknown(kind: str, name: str, known) -> SystemExit:
    choices = ", ".join(sorted(known)) or "(none found)"
    return SystemExit(f"igax: unknown {kind} {name!r}. Available: {choices}.")


def run_demo(name: str, out: str | os.PathLike = "demo-output", size: str = "small") -> dict:
    """Run the demo ``name`` at ``size`` writing its pictures under ``out``; returns what ``main`` returned.

    Arguments:
        name: a demo name (``igax demo --list``).
        out: output folder, created if missing.
        size: one of the sizes the demo declares (``tiny`` for tests, ``small`` by default).

    Returns:
        The dict of numbers the demo's ``main`` returned.
    """
    demos = find_demos()
    name = resolve_demo(name, demos)
    spec = demos[name]
    sizes = spec.get("sizes", {})
    if size not in sizes:
        raise SystemExit(f"igax: demo {name!r} has no size {size!r}. Available sizes: {', '.join(sizes)}.")
    import jax

    jax.config.update(
        "jax_enable_x64", True
    )  # the command is an application: it may choose float64 for itself
    module = _load_module(spec["path"], f"igax_demo_{name}")
    Path(out).mkdir(parents=True, exist_ok=True)
    return module.main(out=str(out), **sizes[size])


def summarise(value, width: int = 100) -> str:
    """A one-line description of a demo's result value: arrays and long sequences by shape and range."""
    import numpy as np

    if isinstance(value, str | bool | int | float | type(None)):
        return str(value)
    try:
        array = np.asarray(value)
    except Exception:  # anything numpy cannot take: show what it says of itself, shortened
        array = None
    if array is None or array.dtype == object or array.ndim == 0 or array.size <= 6:
        text = str(value if array is None or array.dtype == object else array.tolist())
        return text if len(text) <= width else text[: width - 3] + "..."
    if np.issubdtype(array.dtype, np.number):
        with warnings.catch_warnings():  # an all-NaN array: the range is NaN, which says it
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi, mean = np.nanmin(array), np.nanmax(array), np.nanmean(array)
        return f"array of shape {array.shape}, min {lo:.4g}, max {hi:.4g}, mean {mean:.4g}"
    return f"array of shape {array.shape} ({array.dtype})"


def _flatten(result: dict, prefix: str = "") -> dict:
    """Nested dicts of a demo's result as one level, with dotted keys (``implicit_euler.order_in_dt``)."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _cmd_demo(args) -> int:
    demos = find_demos()
    if args.list or (args.name is None and not demos):
        for name, spec in demos.items():
            print(f"{name:20s} {spec.get('description', '')}")
        folder = examples_dir()
        print(f"\n(scripts in {folder})" if folder is not None else "no demos found (no examples folder)")
        return 0 if demos else 1
    name = args.name or next((d for d in FLAGSHIP_DEMOS if d in demos), None)
    if name is None:
        raise SystemExit("igax: no flagship demo found in examples/.")
    t0 = time.perf_counter()
    result = run_demo(name, args.out, args.size)
    print(f"demo {resolve_demo(name, demos)!r} ({args.size}) finished in {time.perf_counter() - t0:.1f} s")
    for key, value in _flatten(result or {}).items():
        print(f"  {key}: {summarise(value)}")
    files = sorted(p for p in Path(args.out).rglob("*") if p.is_file())
    print(f"output in {Path(args.out).resolve()}:")
    for p in files:
        print(f"  {p.relative_to(args.out)}")
    return 0


def info() -> dict:
    """Versions, float64 status, solver backends and devices, as a dict."""
    import jax
    import numpy
    import scipy

    import igax

    out = {
        "igax": igax.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "float64": bool(jax.config.jax_enable_x64),
        "devices": [str(d) for d in jax.devices()],
    }
    out["solver_backends"] = list(igax.solvers.available_methods())
    from igax import _native

    out["native_kernels"] = "yes" if _native.available() else f"no ({_native.reason()})"
    from importlib.metadata import PackageNotFoundError, version

    for dist in (
        "pyvista",
        "vtk",
        "meshio",
        "pypardiso",
        "pyamg",
        "scikit-sparse",
        "equinox",
        "optax",
        "jaxopt",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _cmd_info(args) -> int:
    data = info()
    if args.json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            print(f"{key:16s} {value}")
        if not data["float64"]:
            print(
                "\nfloat64 is off in this process; scripts enable it with "
                "jax.config.update('jax_enable_x64', True)."
            )
    return 0


def _cmd_bench(args) -> int:
    benches = find_benchmarks()
    if args.list:
        for name in benches:
            print(name)
        return 0
    names = [args.name] if args.name else list(benches)
    for name in names:
        if name not in benches:
            raise _unknown("benchmark", name, benches)
    # Benchmarks share benchmarks/_timing.py; a script run directly finds it beside itself, so must we.
    folder = str(project_root() / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    for name in names:
        print(f"== benchmark {name} ==", flush=True)
        module = _load_module(benches[name], f"igax_bench_{name}")
        module.main(["--quick"] if args.quick else [])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="igax", description="Differentiable isogeometric and finite-element analysis in JAX."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO level)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,info,bench}")

    p = sub.add_parser(
        "demo",
        help="run a demo and write its pictures",
        description="Run a named demo (default: the flagship) and write its pictures and files.",
    )
    p.add_argument("name", nargs="?", help="demo name (see --list); default: the flagship demo")
    p.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--size", default="small", choices=SIZES, help="problem size (default: small)")
    p.add_argument("--list", action="store_true", help="list the demos and exit")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("info", help="versions, float64 status, solver backends, devices")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="run benchmarks and print their tables")
    p.add_argument("name", nargs="?", help="benchmark name (see --list); default: all")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``igax`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
