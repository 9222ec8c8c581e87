"""The multi-node Optuna storage on a real PostgreSQL server (tests/postgres_server.py): an unreachable
server refused in time, one driver per study, and a sweep killed and resumed with ``--optuna-storage``."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from claim_race import race_for_claim
from postgres_server import PostgresServer
from sweep_helpers import kill_after_first_completion, run_command, start_sweep, write_space

from fairsearch.search.study import StudyClaim, StudyClaimedError, claim_holder, claim_study
from fairsearch.spec.config import objective_keys

EPOCHS = 2


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_the_server_is_on_loopback_and_holds_an_optuna_study(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://fairsearch@127.0.0.1:")
    study = optuna.create_study(study_name="s", storage=postgres_url, directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.5, 0.1]))
    assert [t.values for t in optuna.load_study(study_name="s", storage=postgres_url).trials] == [[0.5, 0.1]]


def test_an_unreachable_server_is_refused_within_30_s_and_nothing_written(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://fairsearch@127.0.0.1:{port}/optuna"
    space = write_space(tmp_path, "pg", 2)
    before = _tree(tmp_path)
    started = time.monotonic()
    proc = subprocess.run(
        run_command(space, tmp_path / "results", "--optuna-storage", url),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --optuna-storage {url}: cannot reach it ("), (
        errors
    )
    assert "Connection refused" in errors[0] or "connection failed" in errors[0], errors[0]
    assert _tree(tmp_path) == before
    assert elapsed < 30 + 20  # the check's own limit, plus the CLI's start-up on a loaded machine


def _schema(url: str) -> dict[str, object]:
    """The database's tables and its Optuna schema version, as read by SQLAlchemy."""
    import sqlalchemy

    with sqlalchemy.create_engine(url).connect() as connection:
        tables = sorted(sqlalchemy.inspect(connection).get_table_names())
        version = None
        if "alembic_version" in tables:
            version = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
    return {"tables": tables, "version": version}


@pytest.mark.parametrize(
    ("statements", "fragment"),
    [
        (
            ["UPDATE alembic_version SET version_num = 'v9.0.0.a'"],
            "(schema v9.0.0.a, not one this Optuna knows)",
        ),
        (
            ["UPDATE alembic_version SET version_num = 'v3.0.0.a'"],
            "was written by an older Optuna (schema v3.0.0.a",
        ),
        (["DROP TABLE trial_heartbeats"], "missing tables: trial_heartbeats"),
        (None, "is not an Optuna database (its tables: studies, users)"),
    ],
    ids=["newer-optuna", "older-optuna", "incomplete", "another-application"],
)
def test_a_postgres_schema_optuna_would_change_is_refused_untouched(
    tmp_path: Path, postgres_url: str, statements: list[str] | None, fragment: str
) -> None:
    """A database whose schema another Optuna version wrote, or another application's with a ``studies``
    table: refused before the sweep writes anything, and the database as it was."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url)
    if statements is None:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE studies (id INTEGER)"))
            connection.execute(sqlalchemy.text("CREATE TABLE users (name TEXT)"))
    else:
        optuna.create_study(study_name="other", storage=postgres_url)
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sqlalchemy.text(statement))
    engine.dispose()
    schema = _schema(postgres_url)
    space = write_space(tmp_path, "pg", 2)
    before = _tree(tmp_path)
    proc = subprocess.run(
        run_command(space, tmp_path / "results", "--optuna-storage", postgres_url),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[
        -3000:
    ]
    assert f"--optuna-storage {postgres_url}: the database" in proc.stderr
    assert _schema(postgres_url) == schema and _tree(tmp_path) == before


def test_one_driver_per_study_on_postgres(postgres_url: str) -> None:
    first = claim_study(postgres_url, "pg")
    try:
        with pytest.raises(StudyClaimedError, match=f"^study 'pg' in {postgres_url} is being run by another"):
            StudyClaim(postgres_url, "pg").acquire()  # as another driver (claim_study releases this one's)
    finally:
        first.release()
    with claim_study(postgres_url, "pg") as again:  # at once after a release
        assert again.generation == first.generation + 1
    holder = claim_holder(optuna.storages.RDBStorage(postgres_url), "pg")
    assert holder is not None and holder.released and holder.token == again.holder.token  # type: ignore[union-attr]


def test_drivers_starting_at_the_same_moment_do_not_both_win_on_postgres(postgres_url: str) -> None:
    answers = race_for_claim(postgres_url, "pg", 4)  # in a new database: they make its tables at once too
    assert answers[:3] == ["refused"] * 3 and answers[3].startswith("won "), answers


def _wait_for_claim(url: str, study_name: str, pid: int, proc: subprocess.Popen[str]) -> None:
    storage = optuna.storages.RDBStorage(url)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        with contextlib.suppress(KeyError):  # the schema is being made
            holder = claim_holder(storage, study_name)
            if holder is not None and holder.pid == pid:
                return
        time.sleep(0.5)
    raise AssertionError(f"driver {pid} did not claim study {study_name!r} within 300 s")


@pytest.mark.slow
def test_sweep_on_postgres_refuses_a_second_driver_and_resumes_after_a_kill(
    tmp_path: Path, postgres_url: str
) -> None:
    """Driver 1 claims the study; driver 2 (another results folder, the same study) starts then and is
    refused while driver 1 runs, which is SIGKILLed once a trial has completed and driver 2 has ended.
    Driver 2's claim comes well before driver 1 can end: its start-up is one CLI start, while driver 1
    still has to start Ray and train two rounds of trials."""
    n_trials = 3
    space = write_space(tmp_path, "pg", n_trials, fixed={"epochs": EPOCHS, "n_boot": 50})
    results = tmp_path / "results"
    command = run_command(space, results, "--optuna-storage", postgres_url)
    proc = start_sweep(command, _env(tmp_path))
    try:
        _wait_for_claim(postgres_url, "pg", proc.pid, proc)
        other = start_sweep(
            run_command(space, tmp_path / "other", "--optuna-storage", postgres_url), _env(tmp_path)
        )
        _, other_err = other.communicate(timeout=300)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.communicate(timeout=120)
        raise
    kill_after_first_completion(proc, results / "pg" / "trials.parquet", within=400)
    assert other.returncode == 2, other_err[-3000:]
    assert "Traceback" not in other_err
    assert (
        f"error: study 'pg' in {postgres_url} is being run by another driver (pid {proc.pid} on " in other_err
    )
    assert not (tmp_path / "other").exists()
    before = pd.read_parquet(results / "pg" / "trials.parquet")
    assert len(before) < n_trials or (before["status"] != "completed").any()
    holder = claim_holder(optuna.storages.RDBStorage(postgres_url), "pg")
    assert holder is not None and holder.pid == proc.pid and not holder.released  # killed: never released

    # the same command resumes at once: the killed driver's claim, on this machine, is taken over
    resumed = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pd.read_parquet(results / "pg" / "trials.parquet")
    assert len(after) == n_trials and after["trial_id"].is_unique and after["number"].is_unique
    assert (after["status"] == "completed").all() and (after["epochs_done"] == EPOCHS).all(), after[
        ["trial_id", "status", "epochs_done", "error"]
    ].to_string()
    assert set(before.loc[before["status"] == "completed", "trial_id"]) <= set(after["trial_id"])

    # the study in PostgreSQL is the one the Parquet file describes: same numbers, parameters, values
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    complete = {t.number: t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert sorted(complete) == sorted(int(n) for n in after["number"])
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    for _, row in after.iterrows():
        trial = complete[int(row["number"])]
        assert row["param/method"] == trial.params["method"]
        assert row["param/lora_rank"] == trial.params["lora_rank"]
        assert row["param/lr"] == pytest.approx(trial.params["lr"])
        assert [row[k] for k in objective_keys("val/")] == pytest.approx(trial.values)
    holder = claim_holder(optuna.storages.RDBStorage(postgres_url), "pg")
    assert holder is not None and holder.released  # given up at the end of the sweep


def test_server_helper_names_the_missing_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    import postgres_server

    monkeypatch.setattr(postgres_server.shutil, "which", lambda _: None)
    monkeypatch.setattr(postgres_server.glob, "glob", lambda _: [])
    with pytest.raises(RuntimeError, match="install Debian's postgresql package"):
        PostgresServer()
