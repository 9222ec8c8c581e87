"""Damaged state, resumed: a finished sweep (search and confirmation) is damaged one way per case, and
``fairsearch run`` on it must refuse with exit 2, one message naming the file and the way out, and every
file of the sweep byte-for-byte as it was: the results folder, Tune's state and the Optuna database.

The sweep is real (three trials of the tiny model and one confirmation seed, run once per module by
the CLI); each case works on its own copy. ``ray.init`` raises in these cases, so a damage that slips
through every check fails its case (:class:`ReachedRay`) instead of starting a sweep; the undamaged copy
is that control.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from refusals import refused
from sweep_helpers import run_command, write_space

from fairsearch.cli import main

pytestmark = pytest.mark.slow  # the sweep behind the table takes about a minute on 2 cores

NAME = "dmg"


class ReachedRay(Exception):
    """Raised by ``ray.init`` here: the damaged folder got past every check."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep with its confirmation: ``<root>/dmg.yaml`` and ``<root>/results``."""
    root = tmp_path_factory.mktemp("finished")
    space = write_space(root, NAME, 3, fixed={"epochs": 1}, confirm={"seeds": 1, "max_trials": 2})
    env = {**os.environ, "FAIRSEARCH_CACHE": str(root / "cache"), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        run_command(space, root / "results"), env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = root / "results" / NAME
    assert {p.name for p in folder.iterdir()} >= {
        "confirm.json",
        "confirm.parquet",
        "optuna.db",
        "trials.parquet",
    }
    return root


@pytest.fixture
def sweep(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the finished sweep in ``tmp_path`` (the space file, its results and Tune's state),
    with Ray off and the caches in ``tmp_path``."""
    import ray

    import fairsearch.search.sweep  # noqa: F401  (imported outside the snapshot's time)

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise ReachedRay("the damaged folder reached ray.init")

    shutil.copy(finished / f"{NAME}.yaml", tmp_path / f"{NAME}.yaml")
    shutil.copytree(finished / "results", tmp_path / "results", symlinks=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(finished / "cache"))
    environment = dict(os.environ)
    yield tmp_path / "results" / NAME
    # a case that gets past the checks sets the sweep's own variables (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS):
    # they must not reach later tests' Tune runs in this process
    os.environ.clear()
    os.environ.update(environment)


def _argv(folder: Path, *extra: str) -> list[str]:
    root = folder.parent.parent
    return ["run", "--space", str(root / f"{NAME}.yaml"), "--results", str(folder.parent), *extra]


# ---------------------------------------------------------------------------------------- damages
def _truncate(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _delete(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return damage


def _edit_plan(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        plan = json.loads((folder / "confirm.json").read_text())
        (folder / "confirm.json").write_text(json.dumps(edit(plan)))

    return damage


def _plan_of_another_sweep(plan: dict[str, Any]) -> dict[str, Any]:
    for run in plan["runs"]:
        run["lr"] = 0.0123
    return plan


def _plan_run(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(plan: dict[str, Any]) -> dict[str, Any]:
        plan["runs"][0].update(changes)
        return plan

    return edit


def _edit_parquet(name: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """Rewrites a results file with its rows edited and its metadata kept."""

    def damage(folder: Path) -> None:
        table = pq.read_table(folder / name)
        metadata = table.schema.metadata
        df = edit(table.to_pandas())
        out = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(
            out.replace_schema_metadata({**(out.schema.metadata or {}), **(metadata or {})}), folder / name
        )

    return damage


def _sql(*statements: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        with sqlite3.connect(folder / "optuna.db") as db:
            for statement in statements:
                db.execute(statement)

    return damage


def _foreign_database(folder: Path) -> None:
    (folder / "optuna.db").unlink()
    with sqlite3.connect(folder / "optuna.db") as db:
        db.execute("CREATE TABLE studies (id INTEGER, owner TEXT)")
        db.execute("CREATE TABLE invoices (id INTEGER)")


def _database_of_another_sweep(folder: Path) -> None:
    _sql("UPDATE studies SET study_name = 'other' WHERE study_name = 'dmg'")(folder)


RESUMES: list[tuple[str, Callable[[Path], None], str]] = [
    # the confirmation plan and its runs
    ("plan-truncated", _truncate("confirm.json"), "confirm.json: not a confirmation plan"),
    ("plan-empty", _truncate("confirm.json", 0.0), "confirm.json: not a confirmation plan"),
    ("plan-a-list", _edit_plan(lambda plan: [plan]), "confirm.json: not a confirmation plan"),
    ("plan-of-another-sweep", _edit_plan(_plan_of_another_sweep), "has settings lr other than the trial's"),
    (
        "plan-names-an-unknown-trial",
        _edit_plan(lambda plan: plan | {"candidates": [*plan["candidates"], 99]}),
        "plans to confirm trial 99, which",
    ),
    ("plan-run-confirms-text", _edit_plan(_plan_run(confirms="0")), "a run confirms '0' with seed"),
    ("plan-run-seed-text", _edit_plan(_plan_run(seed="one")), "with seed 'one', not a seed of one"),
    ("plan-lost-runs-kept", _delete("confirm.json"), "confirm.parquet holds confirmation runs but"),
    (
        "runs-lost-front-kept",
        _delete("confirm.parquet"),
        "pareto.parquet has a confirmed front but",
    ),
    (
        "run-with-an-unplanned-seed",
        _edit_parquet("confirm.parquet", lambda df: df.assign(**{"param/seed": df["param/seed"] + 50})),
        "that /",
    ),
    ("runs-truncated", _truncate("confirm.parquet"), "confirm.parquet"),
    # the results files
    ("trials-truncated", _truncate("trials.parquet"), "trials.parquet"),
    ("front-truncated", _truncate("pareto.parquet"), "pareto.parquet"),
    (
        "trials-renumbered",
        _edit_parquet("trials.parquet", lambda df: df.assign(number=df["number"] + 40)),
        "that trials.parquet does not hold as completed",  # the fronts name the old numbers
    ),
    (
        "trial-setting-edited",
        _edit_parquet("trials.parquet", lambda df: df.assign(**{"param/lr": df["param/lr"] * 2})),
        "'s lr differ from those study 'dmg'",
    ),
    # the Optuna database
    ("database-deleted", _delete("optuna.db"), "optuna.db is missing or empty"),
    ("database-emptied", _truncate("optuna.db", 0.0), "optuna.db is missing or empty"),
    ("database-truncated", _truncate("optuna.db"), "is a damaged SQLite database"),
    (
        "database-not-sqlite",
        lambda f: (f / "optuna.db").write_text("not a database"),
        "is not a SQLite database",
    ),
    ("database-of-another-application", _foreign_database, "is not an Optuna database (its tables: invoices"),
    (
        "database-of-a-newer-optuna",
        _sql("UPDATE alembic_version SET version_num = 'v9.0.0.a'"),
        "(schema v9.0.0.a, not one this Optuna knows)",
    ),
    (
        "database-of-an-older-optuna",
        _sql("UPDATE alembic_version SET version_num = 'v3.0.0.a'"),
        "was written by an older Optuna (schema v3.0.0.a",
    ),
    ("database-without-a-table", _sql("DROP TABLE trial_heartbeats"), "missing tables: trial_heartbeats"),
    ("database-of-another-sweep", _database_of_another_sweep, "has no study 'dmg'"),
    (
        "database-setting-edited",
        _sql("UPDATE trial_params SET param_value = param_value * 3 WHERE param_name = 'lr'"),
        "'s lr differ from those study 'dmg'",
    ),
    # the record of the sweep's MLflow run (a sweep logged with --mlflow)
    (
        "mlflow-record-truncated",
        lambda f: (f / "mlflow.json").write_text('{"uri": "http://127.0.0.1:5000", '),
        "mlflow.json",
    ),
    (
        "mlflow-record-foreign",
        lambda f: (f / "mlflow.json").write_text(json.dumps({"uri": "ftp://elsewhere", "run": 3})),
        "mlflow.json: not the record of this sweep's MLflow run",
    ),
    # Tune's state
    (
        "tune-state-gone",
        lambda f: shutil.rmtree(f.parent / ".tune" / NAME),
        "Tune's state of the sweep is not at",
    ),
]


@pytest.mark.parametrize(("damage", "fragment"), [c[1:] for c in RESUMES], ids=[c[0] for c in RESUMES])
def test_resume_of_a_damaged_sweep_refuses_and_changes_nothing(
    sweep: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[Path], None], fragment: str
) -> None:
    damage(sweep)
    err = refused(capsys, sweep.parent.parent, _argv(sweep), fragment)
    assert any(way in err for way in ("--restart", "delete", "a new file", "a new database")), (
        err
    )  # a way out


def test_the_undamaged_copy_gets_past_every_check(sweep: Path) -> None:
    """The control: the same copy, undamaged, is resumed (here: reaches Ray, which the cases forbid)."""
    with pytest.raises(ReachedRay):
        main(_argv(sweep))


def test_a_foreign_database_named_by_optuna_storage_is_refused_untouched(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--optuna-storage`` naming another application's SQLite file that has a ``studies`` table."""
    other = sweep.parent.parent / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE studies (id INTEGER)")
        db.execute("CREATE TABLE users (name TEXT)")
    refused(
        capsys,
        sweep.parent.parent,
        _argv(sweep, "--optuna-storage", f"sqlite:///{other}"),
        "app.db is not an Optuna database",
    )
