"""The sweep: Ray Tune schedules trials, Optuna proposes them, results land in Parquet.

``run_sweep`` reads a space file, starts or joins a Ray cluster, and runs (or resumes) the experiment
``<storage>/<name>``. Optuna searches both objectives at once: ``OptunaSearch`` gets the metric and mode
*lists*; ``TuneConfig`` gets none, since a metric there silently makes the study single-objective. The
Optuna study lives in durable storage (SQLite in the results folder by default) so that
``optuna-dashboard`` can open it. Each completed trial rewrites ``trials.parquet`` and ``pareto.parquet``
atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.optuna import OptunaSearch

from fairsearch.checkpoint import read_test_metrics
from fairsearch.config import SAMPLERS, TrialConfig, objective_directions, objective_keys
from fairsearch.confirm import (
    make_plan,
    read_confirmed,
    read_plan,
    refresh_confirmed,
    write_plan,
)
from fairsearch.errors import FairsearchError
from fairsearch.results import read_results
from fairsearch.resume import CheckpointRepair
from fairsearch.scheduler import scheduler_from_settings
from fairsearch.space import SweepSpec, load_space
from fairsearch.tune_trials import (
    ConfirmCallback,
    ResultsCallback,
    confirm_trainable,
    tune_trainable,
)

logger = logging.getLogger(__name__)

SPACE_FILE = "space.json"


@dataclass(frozen=True)
class SweepOutcome:
    """How a sweep ended.

    Attributes:
        results_dir: where ``trials.parquet`` and ``pareto.parquet`` are.
        completed: trials that finished (including ones stopped early by the scheduler).
        failed: trials that failed after their retries.
        unfinished: trials left pending or running (an interrupted sweep).
        front: the validation Pareto front as written to ``pareto.parquet``.
        confirmed: the seed-confirmed front (empty without ``confirm:`` in the space).
        unconfirmed: confirmation runs left unfinished (an interrupted confirmation).
    """

    results_dir: Path
    completed: int
    failed: int
    unfinished: int
    front: pd.DataFrame
    confirmed: pd.DataFrame = field(default_factory=pd.DataFrame)
    unconfirmed: int = 0


def make_sampler(name: str, seed: int) -> Any:
    """The Optuna sampler a space file names, seeded (:data:`fairsearch.config.SAMPLERS`)."""
    factory = SAMPLERS.get(name)
    if factory is None:
        raise FairsearchError(f"sampler.name: {name!r} is not one of {list(SAMPLERS)}")
    return factory(seed)


def run_sweep(
    space: str | Path,
    *,
    results_root: str | Path = "results",
    storage: str | None = None,
    address: str | None = None,
    name: str | None = None,
    restart: bool = False,
    optuna_storage: str | None = None,
) -> SweepOutcome:
    """Runs (or resumes) the sweep a space file describes.

    Args:
        space: the space YAML file.
        results_root: the Parquet files go to ``<results_root>/<name>/``.
        storage: Ray Tune's storage for experiment state and checkpoints: a local folder or a URI
            (``s3://``, ``gs://``, any pyarrow filesystem). Default: the results folder's parent.
        address: a Ray cluster to join (``auto``, ``ray://host:port``); ``None`` starts Ray locally.
        name: overrides the space file's name.
        restart: discard an existing experiment of this name and start over.
        optuna_storage: an Optuna storage URL; default the space file's, else SQLite in the results folder.

    Returns:
        How the sweep ended.

    Raises:
        FairsearchError: bad space file, missing data, a changed space on resume, GPUs asked of a
            cluster that has none.
    """
    spec = load_space(space)
    if name is not None:
        spec = _renamed(spec, name)
    results_dir = Path(results_root).resolve() / spec.name
    storage_root = storage or str(results_dir.parent / ".tune")
    if "://" not in storage_root:
        storage_root = str(Path(storage_root).resolve())
    experiment = f"{storage_root.rstrip('/')}/{spec.name}"
    optuna_url = optuna_storage or spec.optuna_storage or f"sqlite:///{results_dir / 'optuna.db'}"

    _check_inputs(spec)
    _check_results_folder(results_dir)
    resuming = _prepare_folder(spec, results_dir, experiment, restart)
    if restart:
        _remove_experiment(_confirm_experiment(storage_root, spec.name))

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's automatic TensorBoard logger rejects group names with spaces; JSON and CSV loggers are added
    # explicitly below. Snapshots are forced by num_to_keep=1 on purpose (checkpoints and experiment
    # state stay consistent for resume), so Tune's warning about them is noise.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        try:
            # "local": a sweep without --address starts its own Ray, never joining one already running on
            # this machine (another sweep's, whose end or kill would take this one down with it).
            ray.init(
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise FairsearchError(f"--address {address}: cannot connect to the Ray cluster ({err})") from None
    gpus = _gpus_per_trial(spec, float(ray.cluster_resources().get("GPU", 0.0)), joined=address is not None)
    trainable = tune.with_resources(tune_trainable, {"cpu": spec.cpus, "gpu": gpus})

    if resuming:
        logger.info("resuming sweep %r from %s", spec.name, experiment)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        scheduler = scheduler_from_settings(spec.scheduler or {}, max_epochs=spec.max_epochs)
        callbacks: list[tune.Callback] = [
            ResultsCallback(str(results_dir)),
            JsonLoggerCallback(),
            CSVLoggerCallback(),
            CheckpointRepair(),  # on resume after a driver kill: each trial from its newest checkpoint
        ]
        if scheduler is not None:
            callbacks.append(scheduler.state_callback())  # Tune saves callbacks' state, not the scheduler's
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_searcher(spec, optuna_url),
                scheduler=scheduler,
                num_samples=spec.trials,
                max_concurrent_trials=spec.concurrency,
                # No metric/mode here on purpose: they would make the Optuna study single-objective.
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=storage_root,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=callbacks,
                verbose=0,
            ),
        )
    tuner.fit()
    outcome = _outcome(results_dir, spec)
    if outcome.unfinished:
        return outcome
    _fail_orphans(spec.name, optuna_url)
    if spec.confirm_seeds:
        outcome = _confirm(spec, results_dir, storage_root, {"cpu": spec.cpus, "gpu": gpus}, outcome)
    return outcome


def _confirm(
    spec: SweepSpec,
    results_dir: Path,
    storage_root: str,
    resources: Mapping[str, float],
    outcome: SweepOutcome,
) -> SweepOutcome:
    """Trains each front candidate with ``spec.confirm_seeds`` further seeds, as a second Tune
    experiment ``<storage>/.confirm/<name>`` that resumes like the search's (see :mod:`fairsearch.confirm`)."""
    plan = read_plan(results_dir)
    if plan is None:  # made once: a resumed sweep confirms the same candidates
        trials, _ = read_results(results_dir)
        plan = make_plan(trials, spec.confirm_seeds, spec.confirm_max_trials, _checkpoint_test_metrics)
        write_plan(results_dir, plan)
        logger.info(
            "confirming %d candidate(s) (trials %s) with %d more seed(s) each: %d runs",
            len(plan.candidates),
            ", ".join(f"#{n}" for n in plan.candidates),
            spec.confirm_seeds,
            len(plan.runs),
        )
    if not plan.runs:
        return outcome
    experiment = _confirm_experiment(storage_root, spec.name)
    trainable = tune.with_resources(confirm_trainable, dict(resources))
    if tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search(list(plan.runs))},
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.concurrency),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=experiment.rsplit("/", 1)[0],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[
                    ConfirmCallback(str(results_dir)),
                    JsonLoggerCallback(),
                    CSVLoggerCallback(),
                    CheckpointRepair(),
                ],
                verbose=0,
            ),
        )
    tuner.fit()
    refresh_confirmed(results_dir, plan)  # the search's writer may have rewritten pareto.parquet on resume
    runs, confirmed = read_confirmed(results_dir)
    ended = int(runs["status"].isin(["completed", "failed"]).sum()) if len(runs) else 0
    return replace(outcome, confirmed=confirmed, unconfirmed=max(len(plan.runs) - ended, 0))


def _confirm_experiment(storage_root: str, name: str) -> str:
    """``<storage>/.confirm/<name>``: a sweep's name cannot start with a dot, so no sweep is there."""
    return f"{storage_root.rstrip('/')}/.confirm/{name}"


def _checkpoint_test_metrics(location: str) -> dict[str, float]:
    """The test metrics in the checkpoint at a path or URI (``trials.parquet``'s ``checkpoint``)."""
    import pyarrow.fs

    if "://" in location:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
    else:
        fs, path = pyarrow.fs.LocalFileSystem(), location
    return read_test_metrics(fs, path)


def _fail_orphans(study_name: str, url: str) -> None:
    """Marks FAIL the Optuna trials left RUNNING by a driver killed between ``ask`` and Tune's next
    snapshot: Tune never ran them, and once the sweep is over nothing will."""
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:  # no such study in that storage
        return
    for orphan in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)
        logger.info("Optuna trial %d was suggested but never run (driver killed): marked FAIL", orphan.number)


def _searcher(spec: SweepSpec, url: str) -> OptunaSearch:
    """Optuna's multi-objective searcher over the space's define-by-run function, in durable storage."""
    return OptunaSearch(
        space=spec.define_by_run(),
        metric=list(objective_keys()),
        mode=list(objective_directions()),
        sampler=make_sampler(spec.sampler, spec.seed),
        study_name=spec.name,
        storage=optuna.storages.RDBStorage(url),
    )


def _renamed(spec: SweepSpec, name: str) -> SweepSpec:
    from dataclasses import replace

    from fairsearch.space import parse_space

    parse_space({**spec.raw, "name": name}, source=spec.source)  # validates the name
    return replace(spec, name=name)


def _check_inputs(spec: SweepSpec) -> None:
    """Fails fast, on the driver, on a data folder that is missing or malformed."""
    data = spec.fixed.get("data")
    if data is None:
        logger.info(
            "data: the built-in synthetic fundus set (%d images; set 'data:' to a FairVLMed folder)",
            int(spec.fixed.get("synthetic_n", TrialConfig.synthetic_n)),
        )
    elif "://" not in str(data):
        from fairsearch.data import load_fairvlmed

        load_fairvlmed(data)
    model = spec.fixed.get("model", TrialConfig.model)
    if model == "tiny":
        logger.info("model: the built-in tiny random Qwen2.5-VL (set 'model:' to a hub id or a folder)")
    else:  # a folder that is not there, or a hub id not in the local cache: refused before anything runs
        from fairsearch.model.backbone import resolve_model_folder

        resolve_model_folder(str(model))


def _check_results_folder(results_dir: Path) -> None:
    """Refuses a results folder that is a file, or lies under one, before anything is written."""
    for path in (results_dir, *results_dir.parents):
        if path.exists() and not path.is_dir():
            raise FairsearchError(f"--results: {path} is a file, not a folder; give a folder for the results")
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise FairsearchError(f"--results: cannot write in {path}")
            return


def _prepare_folder(spec: SweepSpec, results_dir: Path, experiment: str, restart: bool) -> bool:
    """Creates the results folder, or checks that an existing one belongs to this space.

    Returns:
        True when an existing experiment is resumed.
    """
    marker = results_dir / SPACE_FILE
    exists = marker.exists()
    if exists and restart:
        logger.info("--restart: removing %s and its experiment state", results_dir)
        shutil.rmtree(results_dir)
        _remove_experiment(experiment)
        exists = False
    if exists:
        saved = json.loads(marker.read_text())
        if saved.get("digest") != spec.digest:
            raise FairsearchError(
                f"{results_dir} holds a sweep made from a different space file "
                f"({saved.get('source')}, digest {saved.get('digest')}; {spec.source} has digest {spec.digest}). "
                f"Run with --restart to discard it and start over, or --name to start a sweep beside it."
            )
        if tune.Tuner.can_restore(experiment):
            return True
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"digest": spec.digest, "source": str(spec.source), "space": spec.raw}, default=str)
    with tempfile.NamedTemporaryFile("w", dir=results_dir, delete=False, suffix=".tmp") as f:
        f.write(payload)
    os.replace(f.name, marker)
    return False


def _remove_experiment(experiment: str) -> None:
    if "://" in experiment:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(experiment)
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            fs.delete_dir(path)
    elif os.path.isdir(experiment):
        shutil.rmtree(experiment)


def _gpus_per_trial(spec: SweepSpec, cluster_gpus: float, *, joined: bool) -> float:
    """GPUs per trial: ``auto`` takes one when the cluster has GPUs now. An explicit count is refused
    on a local Ray without GPUs (the trials would wait forever), but kept when joining a cluster, whose
    autoscaler may add GPU workers once trials ask for them."""
    if spec.gpus is None:
        return 1.0 if cluster_gpus >= 1 else 0.0
    if spec.gpus > 0 and cluster_gpus == 0 and joined:
        logger.warning("the cluster has no GPUs yet; trials wait until its autoscaler adds GPU workers")
    elif spec.gpus > 0 and cluster_gpus == 0:
        raise FairsearchError(
            f"{spec.source}: resources.gpus: {spec.gpus} but the Ray cluster has no GPUs; "
            f"use 'gpus: auto' or 'gpus: 0' to run on CPUs"
        )
    return spec.gpus


def _outcome(results_dir: Path, spec: SweepSpec) -> SweepOutcome:
    trials, front = read_results(results_dir)
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    done = int(counts.get("completed", 0) + counts.get("stopped", 0))
    failed = int(counts.get("failed", 0))
    return SweepOutcome(results_dir, done, failed, max(spec.trials - done - failed, 0), front)
