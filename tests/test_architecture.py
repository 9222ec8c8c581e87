"""The layers of ``fairsearch`` (pyproject.toml's ``[tool.importlinter]``) hold, and their check catches
an import that goes up or round in a circle.

``scripts/test`` runs ``lint-imports`` on the tree itself; these tests run it on copies of the package
with one import added, to show that the contracts are live: each one must break.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts, on the ``fairsearch`` under ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package with ``line`` appended to ``module`` (a path under ``fairsearch/``)."""
    shutil.copytree(
        ROOT / "fairsearch", tmp_path / "fairsearch", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "fairsearch" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return tmp_path


def test_the_package_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the vocabulary reaching up to the report: spec is below output
        ("spec/config.py", "import fairsearch.output.report", "layers: cli > search"),
        # a trial reading the results files: train is below output
        ("train/trial.py", "from fairsearch.output import results", "layers: cli > search"),
        # the circle this layout removed: results importing the thresholded fronts that import it
        ("output/results.py", "import fairsearch.output.threshold_fronts", "output: the report over"),
        # Ray below search
        ("output/tables.py", "import ray.tune", "Only search imports Ray"),
        # a model library where results are only read
        ("judge/metrics.py", "import transformers", "spec, methods, judge and output load no model library"),
        # an export's load.py reaching for fairsearch, which the exports' users do not have
        (
            "export/standalone.py",
            "import fairsearch.errors",
            "An export's load.py needs nothing of fairsearch",
        ),
        # a new module nobody placed in a layer
        ("judge/calibration.py", "", "judge: thresholds over metrics"),
    ],
)
def test_an_upward_import_or_a_circle_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    result = _lint(_copy_with(tmp_path, module, line) if line else _new_module(tmp_path, module))
    assert result.returncode == 1, result.stdout + result.stderr
    broken_lines = [ln for ln in result.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(ln.startswith(broken) for ln in broken_lines), result.stdout


def _new_module(tmp_path: Path, module: str) -> Path:
    shutil.copytree(
        ROOT / "fairsearch", tmp_path / "fairsearch", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "fairsearch" / module).write_text('"""A module with no place in the layers."""\n')
    return tmp_path
