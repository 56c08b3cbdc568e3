"""The documentation builds in strict mode: a broken reference or a missing page fails."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
    reason="mkdocs is part of the docs extra; `make test` installs it",
)
def test_docs_build_strict_without_warnings(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in r.stderr, r.stderr
    assert (tmp_path / "site" / "index.html").stat().st_size > 0


def _python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    blocks, current = [], None
    for line in page.read_text(encoding="utf-8").splitlines():
        if current is None and line.strip() == "```python":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_tour_runs_as_written(capsys):
    """docs/tour.md promises that every block runs in order; its asserts check the rates and gradients."""
    blocks = _python_blocks(ROOT / "docs" / "tour.md")
    assert len(blocks) >= 6, "the tour lost its code blocks"
    namespace: dict = {"__name__": "tour"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/tour.md block {i}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "(1, 2) (2, 3)" in out and "\n100\n" in out
    rates = namespace["rates"]
    assert rates.min() > 2.8 and rates.max() < 3.6  # degree 2: L2 error ~ h^3
    assert namespace["g"].shape == (100,) and np.all(np.isfinite(np.asarray(namespace["g"])))
