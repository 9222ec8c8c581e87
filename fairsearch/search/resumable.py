"""A resume checks, then acts: before a resumed sweep writes, rewrites or deletes anything (the Parquet
files, Tune's state, the Optuna study, the confirmation plan), every file and record it will rely on is
read and checked against the others. Anything that does not fit is one :class:`FairsearchError` naming
the file, why, and the way out, with every file as it was.

What is checked, reading only:

- ``trials.parquet`` and ``pareto.parquet``: readable, of this schema, the front's members among the
  trials (:func:`fairsearch.output.results.read_results`);
- Tune's experiment state is there when the folder holds trials (a sweep resumed without it would start
  a new experiment and write its trials over the old ones);
- the confirmation's files against each other and the trials
  (:func:`fairsearch.output.confirm.check_confirmation`);
- the Optuna study: it exists, and every trial of ``trials.parquet`` is a trial of it with the same
  sampled settings (a results folder or a database of another sweep is told apart).

Not checked: each checkpoint's manifest (a trial resumes from its newest complete checkpoint, and one cut
short is skipped, see :mod:`fairsearch.train.checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from ray import tune
from sqlalchemy.engine import make_url

from fairsearch.errors import FairsearchError, clip_value
from fairsearch.output.confirm import check_confirmation
from fairsearch.output.results import TRIALS_FILE, read_results, same_setting
from fairsearch.search.sqlite_copy import settled
from fairsearch.search.tracking import read_tracking

__all__ = ["check_resume"]

_FRESH = "run with --restart to discard it and start over, or --name to start a sweep beside it"


def check_resume(
    results_dir: Path, *, study_name: str, optuna_url: str, experiment: str, confirm_experiment: str
) -> None:
    """Checks a results folder that a sweep is about to resume; writes nothing.

    Args:
        results_dir: the sweep's results folder (its ``space.json`` already checked).
        study_name: its Optuna study.
        optuna_url: the Optuna storage the resume will use.
        experiment: its Tune experiment (``<storage>/<name>``).
        confirm_experiment: its confirmation's Tune experiment.

    Raises:
        FairsearchError: a file that is damaged or does not fit the others.
    """
    read_tracking(results_dir)  # the sweep's MLflow run, when it is tracked
    if not (results_dir / TRIALS_FILE).exists():
        return  # killed before its first trial was recorded: nothing to lose
    try:
        trials, _ = read_results(results_dir)
    except FairsearchError as err:
        raise FairsearchError(f"{err}; restore it from a copy, or {_FRESH}") from None
    if trials.empty:
        return
    if not tune.Tuner.can_restore(experiment):
        raise FairsearchError(
            f"{results_dir / TRIALS_FILE} holds {len(trials)} trial(s) but Tune's state of the sweep is not "
            f"at {experiment}: resume with the --storage it ran with, or {_FRESH}"
        )
    _check_study(results_dir, trials, study_name, optuna_url)
    check_confirmation(results_dir, trials, confirm_experiment)


def _check_study(results_dir: Path, trials: pd.DataFrame, study_name: str, url: str) -> None:
    """Every trial of ``trials.parquet`` is a trial of the study, with the same sampled settings."""
    shown = make_url(url).render_as_string(hide_password=True)
    parsed = make_url(url)
    database = str(parsed.database or "")
    if (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
    ):
        path = Path(database).expanduser()
        if not path.is_file() or path.stat().st_size == 0:  # Optuna would make a new one: the study is lost
            raise FairsearchError(
                f"{results_dir / TRIALS_FILE} holds {len(trials)} trial(s) but the Optuna database {path} "
                f"is missing or empty: resume with the --optuna-storage it ran with, or {_FRESH}"
            )
        with settled(path) as (readable, _):  # a journal a kill left is rolled back in a copy only
            sampled = _sampled(f"sqlite:///{readable}", study_name, results_dir, len(trials), shown)
    else:
        sampled = _sampled(url, study_name, results_dir, len(trials), shown)
    for _, row in trials.iterrows():
        number = int(row["number"])
        if number not in sampled:
            raise FairsearchError(
                f"{results_dir / TRIALS_FILE} has trial {number}, which study {study_name!r} in "
                f"{clip_value(shown)} never had (results or a database of another sweep?): {_FRESH}"
            )
        differs = sorted(
            name
            for name, value in sampled[number].items()
            if f"param/{name}" in row and not same_setting(value, row[f"param/{name}"])
        )
        if differs:
            raise FairsearchError(
                f"{results_dir / TRIALS_FILE}: trial {number}'s {clip_value(', '.join(differs))} differ from "
                f"those study {study_name!r} in {clip_value(shown)} sampled (results or a database of another "
                f"sweep?): {_FRESH}"
            )


def _sampled(
    url: str, study_name: str, results_dir: Path, n_trials: int, shown: str
) -> dict[int, dict[str, Any]]:
    """Each trial's sampled settings in the study, by number."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        raise FairsearchError(
            f"{results_dir / TRIALS_FILE} holds {n_trials} trial(s) but {clip_value(shown)} has no study "
            f"{study_name!r}: resume with the --optuna-storage it ran with, or {_FRESH}"
        ) from None
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {t.number: t.params for t in study.get_trials(deepcopy=False)}
