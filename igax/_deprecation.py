"""Old public names that still resolve, with a ``DeprecationWarning`` that names the new one.

A renamed function keeps working under its old name for a while, so that scripts written against an earlier
igax run unchanged (and compute the same thing). The old names are served by the module's ``__getattr__``
rather than bound in its namespace: they stay out of ``dir()``, ``__all__`` and the API pages, and the
warning fires where the old name is looked up (``igax.fem.rectangle``, ``from igax.fem import rectangle``),
pointing at the user's line.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def renamed(module: str, names: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving old names.

    Arguments:
        module: the module's dotted name (``__name__``), used in the messages.
        names: old name -> (what to write instead, the object).

    Returns:
        The function to bind as the module's ``__getattr__``.

    Example:
        >>> import warnings
        >>> from igax._deprecation import renamed
        >>> getattr_ = renamed("pkg", {"old": ("pkg.new", 42)})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     value = getattr_("old")
        >>> value, str(caught[0].message)
        (42, 'pkg.old is deprecated; use pkg.new instead.')
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            new, obj = names[name]
            message = f"{module}.{name} is deprecated; use {new} instead."
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            return obj
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def moved(
    module: str, names: Mapping[str, str | tuple[str, str]], fallback: Callable[[str], Any] | None = None
) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving names that moved to a module of a higher layer, looked up by name.

    The new module is imported only when an old name is used (with ``importlib``), so a lower layer keeps
    importing nothing above it: ``import igax.bases`` loads no ``igax.layers`` or ``igax.solvers`` code, while
    ``igax.bases.interpolate`` still works, with a ``DeprecationWarning`` that names
    ``igax.layers.interpolate``.

    Arguments:
        module: the module's dotted name (``__name__``), used in the messages.
        names: old name -> new location ``"package.module:attribute"`` (or ``"package.module"`` for a module),
            or ``(location, what to write instead)`` when the message should name something else.
        fallback: the ``__getattr__`` to try for other names (e.g. one made by :func:`renamed`), or None.

    Returns:
        The function to bind as the module's ``__getattr__``.

    Example:
        >>> import warnings
        >>> from igax._deprecation import moved
        >>> getattr_ = moved("pkg", {"sqrt": "math:sqrt"})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     value = getattr_("sqrt")(4.0)
        >>> value, str(caught[0].message)
        (2.0, 'pkg.sqrt is deprecated; use math.sqrt instead.')
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            spec = names[name]
            location, new = spec if isinstance(spec, tuple) else (spec, None)
            where, _, attr = location.partition(":")
            target = importlib.import_module(where)
            obj = getattr(target, attr) if attr else target
            new = new or (f"{where}.{attr}" if attr else where)
            warnings.warn(
                f"{module}.{name} is deprecated; use {new} instead.", DeprecationWarning, stacklevel=2
            )
            return obj
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
