"""The sweep: Ray Tune schedules trials, Optuna proposes them, results land in Parquet.

``run_sweep`` reads a space file, starts or joins a Ray cluster, and runs (or resumes) the experiment
``<storage>/<name>``. Optuna searches both objectives at once: ``OptunaSearch`` gets the metric and mode
*lists*; ``TuneConfig`` gets none, since a metric there silently makes the study single-objective. The
Optuna study lives in durable storage (SQLite in the results folder by default) so that
``optuna-dashboard`` can open it. Each completed trial rewrites ``trials.parquet`` and ``pareto.parquet``
atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from fairsearch.bounded import read_json
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.folders import check_writable_folder, write_atomic
from fairsearch.output.confirm import (
    make_plan,
    read_confirmed,
    read_plan,
    refresh_confirmed,
    write_plan,
)
from fairsearch.output.refit_fronts import REFIT_FRONT, refit_rows
from fairsearch.output.results import FEASIBLE_FRONT, read_front, read_results, rows_of_other_fronts
from fairsearch.output.tables import constraint_lines
from fairsearch.search.capacity import check_fits, cluster_gpu_memory
from fairsearch.search.preflight import check_inputs
from fairsearch.search.resumable import check_resume
from fairsearch.search.scheduler import scheduler_from_settings
from fairsearch.search.study import claim_study
from fairsearch.search.tracking import SweepTracking
from fairsearch.search.tune_trials import (
    STATE_FOLDER,
    ConfirmCallback,
    ConstraintValues,
    ResultsCallback,
    SweepSearch,
    confirm_trainable,
    tune_trainable,
)
from fairsearch.spec.config import (
    OBJECTIVES,
    SAMPLERS,
    Constraints,
    ConstraintsFunc,
    Objectives,
    objective_directions,
    objective_keys,
)
from fairsearch.spec.space import SweepSpec, load_space
from fairsearch.train.checkpoint import read_test_metrics_at

logger = logging.getLogger(__name__)

SPACE_FILE = "space.json"
RAY_CLIENT_ATTEMPTS = 3
"""How many times a ``ray://`` connection is tried when the head's Ray Client server dies as it starts."""
RAY_CLIENT_SERVER_DIED = (
    "Starting Ray client server failed",  # the server had exited when the proxy looked
    "in start_specific_server",  # it exited while the proxy looked (psutil's ZombieProcess)
    "Proxy failed to Connect to backend",  # it never answered
)
"""What the head answers when the Ray Client server its proxy forked for this driver died at once: a race
between fork() and gRPC's threads in the proxy (ray-project/ray#63202), on 5 of 25 first connections on
a 2-core machine; a head started with ``GRPC_ENABLE_FORK_SUPPORT=0``, as ``cluster/`` starts them, on 0
of 25 (``benchmarks/ray_client_connect.py``)."""


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
        objectives: the sweep's objectives.
        constraints: the sweep's constraints.
        feasible: the front of the trials meeting every constraint (empty without constraints).
        constraint_report: how many trials met each constraint, and the nearest miss of one no trial
            met (:func:`fairsearch.output.tables.constraint_lines`).
        first_error: the error of the failed trial numbered first, and how many failed trials had that
            very error (``None`` when none failed).
        recovered: of the completed trials, those whose process failed at least once and that Tune
            restarted from their checkpoint (``trials.parquet``'s ``failures``).
    """

    results_dir: Path
    completed: int
    failed: int
    unfinished: int
    front: pd.DataFrame
    confirmed: pd.DataFrame = field(default_factory=pd.DataFrame)
    unconfirmed: int = 0
    objectives: Objectives = OBJECTIVES
    constraints: Constraints = ()
    feasible: pd.DataFrame = field(default_factory=pd.DataFrame)
    constraint_report: tuple[str, ...] = ()
    first_error: tuple[str, int] | None = None
    recovered: int = 0


def make_sampler(name: str, seed: int, constraints_func: ConstraintsFunc | None = None) -> Any:
    """The Optuna sampler a space file names, seeded, steered by ``constraints_func`` when it takes one
    (:data:`fairsearch.spec.config.SAMPLERS`)."""
    factory = SAMPLERS.get(name)
    if factory is None:
        raise FairsearchError(f"sampler.name: {name!r} is not one of {list(SAMPLERS)}")
    return factory(seed, constraints_func)


def run_sweep(
    space: str | Path,
    *,
    results_root: str | Path = "results",
    storage: str | None = None,
    address: str | None = None,
    name: str | None = None,
    restart: bool = False,
    optuna_storage: str | None = None,
    mlflow: str | None = None,
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
        mlflow: an MLflow tracking URI to log the sweep to; default the space file's ``tracking.mlflow``,
            else the one a resumed sweep logged to (``mlflow.json``), else none.

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
    mlflow = mlflow or spec.mlflow

    # Every input is checked before anything is written: a refused run leaves no folder and no file.
    _check_results_folder(results_dir, spec, restart)
    check_inputs(
        spec,
        address=address,
        storage=storage,
        optuna_storage=optuna_storage,
        results_dir=results_dir,
        mlflow=mlflow,
    )
    if not restart and (results_dir / SPACE_FILE).exists():  # a resume: every file it relies on, checked
        check_resume(
            results_dir,
            study_name=spec.name,
            optuna_url=optuna_url,
            experiment=experiment,
            confirm_experiment=_confirm_experiment(storage_root, spec.name),
        )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's automatic TensorBoard logger rejects group names with spaces; JSON and CSV loggers are added
    # explicitly below.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray is started (or joined) before anything is written: an unreachable --address, or GPUs asked of a
    # cluster without them, is refused with the results folder untouched.
    if not ray.is_initialized():
        start_ray(address)
    gpus = _gpus_per_trial(spec, float(ray.cluster_resources().get("GPU", 0.0)), joined=address is not None)
    if gpus > 0 and spec.gpu_memory_gb is None:  # a stated memory was checked with the other inputs
        memory, accelerator = cluster_gpu_memory(ray.cluster_resources())
        if memory is None:
            logger.info(
                "memory: trials not checked against the GPUs (%s); state resources.gpu_memory_gb to check "
                "them, or see fairsearch plan",
                accelerator,
            )
        else:
            check_fits(spec, memory, gpus, f"the cluster's {accelerator}")
    # Trials keep their checkpoints in <experiment>/trials/<key>, not in Tune's bookkeeping.
    state_root = f"{experiment}/{STATE_FOLDER}"
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, state_root=state_root), {"cpu": spec.cpus, "gpu": gpus}
    )
    tuner: tune.Tuner | None = None
    if _resumable(results_dir, experiment, restart):
        logger.info("resuming sweep %r from %s", spec.name, experiment)
        # read before the study is claimed: a state that cannot load leaves the study as it was
        tuner = _restore(experiment, trainable)
    claim = claim_study(optuna_url, spec.name)  # one driver per study: a second one is refused
    if tuner is None and _resumable(results_dir, experiment, restart):  # made while the claim was awaited
        try:
            tuner = _restore(experiment, trainable)
        except FairsearchError:
            claim.release()
            raise
    if tuner is None:
        _prepare_folder(spec, results_dir, experiment, restart)
    if restart:
        claim.renew()  # --restart removed the results folder, and the default database with the claim
        _remove_experiment(_confirm_experiment(storage_root, spec.name))
    if mlflow is not None:  # else a resumed sweep logs where mlflow.json says, if anywhere
        try:
            SweepTracking.start(
                mlflow, spec.name, results_dir, _tracked_settings(spec), results_dir / SPACE_FILE
            )
        except FairsearchError:
            claim.release()
            raise

    if tuner is None:
        tuner = search_tuner(spec, trainable, results_dir, storage_root, optuna_url)
    _fit(tuner)
    outcome = _outcome(results_dir, spec)
    if not outcome.unfinished:
        _fail_orphans(spec.name, optuna_url)
        if spec.confirm_seeds:
            outcome = _confirm(spec, results_dir, storage_root, {"cpu": spec.cpus, "gpu": gpus}, outcome)
    _track_fronts(results_dir, ended=not outcome.unfinished and not outcome.unconfirmed)
    claim.release()
    return outcome


def _tracked_settings(spec: SweepSpec) -> dict[str, Any]:
    """The sweep's settings as its MLflow run's params: the space file's top-level keys (``tracking``
    left out), a block as its JSON."""
    return {
        key: value if isinstance(value, str | int | float) else json.dumps(value, sort_keys=True, default=str)
        for key, value in spec.raw.items()
        if key != "tracking"
    }


def _track_fronts(results_dir: Path, *, ended: bool) -> None:
    """Tags the front members' MLflow runs and logs their test metrics, when the sweep is tracked."""
    tracking = SweepTracking.of(results_dir)
    if tracking is None:
        return
    try:
        fronts = rows_of_other_fronts(results_dir, but=())
    except FairsearchError as err:  # the sweep has ended either way: its exit code does not hang on this
        logger.warning("MLflow: the fronts were not logged: %s", err)
        return
    tracking.finish(fronts, ended)


def search_tuner(
    spec: SweepSpec, trainable: Any, results_dir: Path, storage_root: str, optuna_url: str
) -> tune.Tuner:
    """The search's Tune experiment, new: ``trainable`` under Optuna's searcher in ``optuna_url`` (and the
    space's scheduler), with the callbacks that write the results folder.

    Args:
        spec: the space.
        trainable: the trial (:func:`~fairsearch.search.tune_trials.tune_trainable` with its resources; a
            benchmark's stand-in).
        results_dir: where the Parquet files go.
        storage_root: Tune's storage; the experiment is ``<storage_root>/<name>``.
        optuna_url: the study's storage.
    """
    scheduler = scheduler_from_settings(
        spec.scheduler or {},
        max_epochs=spec.max_epochs,
        objectives=spec.objectives,
        constraints=spec.constraints,
    )
    callbacks: list[tune.Callback] = [
        ResultsCallback(str(results_dir), objectives=spec.objectives, constraints=spec.constraints),
        JsonLoggerCallback(),
        CSVLoggerCallback(),
    ]
    if scheduler is not None:
        callbacks.append(scheduler.state_callback())  # Tune saves callbacks' state, not the scheduler's
    return tune.Tuner(
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
            callbacks=callbacks,
            verbose=0,
        ),
    )


def _confirm(
    spec: SweepSpec,
    results_dir: Path,
    storage_root: str,
    resources: Mapping[str, float],
    outcome: SweepOutcome,
) -> SweepOutcome:
    """Trains each front candidate with ``spec.confirm_seeds`` further seeds, as a second Tune
    experiment ``<storage>/.confirm/<name>`` that resumes like the search's (see :mod:`fairsearch.output.confirm`)."""
    plan = read_plan(results_dir)
    if plan is None:  # made once: a resumed sweep confirms the same candidates
        trials, _ = read_results(results_dir)
        plan = make_plan(
            trials,
            spec.confirm_seeds,
            spec.confirm_max_trials,
            read_test_metrics_at,
            spec.objectives,
            spec.constraints,
            refit_front=read_front(results_dir, REFIT_FRONT),
        )
        write_plan(results_dir, plan)
        logger.info(
            "confirming %d candidate(s) (trials %s%s) with %d more seed(s) each: %d runs",
            len(plan.candidates),
            ", ".join(f"#{n}" for n in plan.candidates),
            f"; refitted too: {', '.join(f'#{n}' for n in plan.refit_candidates)}"
            if plan.refit_candidates
            else "",
            spec.confirm_seeds,
            len(plan.runs),
        )
    if not plan.runs:
        return outcome
    experiment = _confirm_experiment(storage_root, spec.name)
    trainable = tune.with_resources(
        tune.with_parameters(confirm_trainable, state_root=f"{experiment}/{STATE_FOLDER}"), dict(resources)
    )
    if tune.Tuner.can_restore(experiment):
        tuner = _restore(experiment, trainable)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search(list(plan.runs))},
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.concurrency),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=experiment.rsplit("/", 1)[0],
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                callbacks=[ConfirmCallback(str(results_dir)), JsonLoggerCallback(), CSVLoggerCallback()],
                verbose=0,
            ),
        )
    _fit(tuner)
    # the search's writer may have rewritten pareto.parquet on resume
    refresh_confirmed(results_dir, plan, refit_rows)
    runs, confirmed = read_confirmed(results_dir)
    ended = int(runs["status"].isin(["completed", "failed"]).sum()) if len(runs) else 0
    return replace(outcome, confirmed=confirmed, unconfirmed=max(len(plan.runs) - ended, 0))


def _restore(experiment: str, trainable: Any) -> tune.Tuner:
    """Tune's saved experiment, or a clear refusal when it cannot be read: its pickles name classes of
    the fairsearch or Ray that wrote them, and one from another version may not load here."""
    try:
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    except (ImportError, AttributeError, pickle.UnpicklingError, EOFError) as err:
        raise FairsearchError(
            f"{experiment}: its saved state was written by another version of fairsearch or Ray and cannot "
            f"be read here ({type(err).__name__}: {clip_value(str(err))}); run with --restart to start the "
            "sweep over, or --name to start one beside it"
        ) from None


def _fit(tuner: tune.Tuner) -> None:
    """Runs Tune with its own console output (its "Configuration for experiment" box, "View detailed
    results here") on stderr beside the sweep's log lines: stdout holds the results alone."""
    with contextlib.redirect_stdout(sys.stderr):
        tuner.fit()


def _confirm_experiment(storage_root: str, name: str) -> str:
    """``<storage>/.confirm/<name>``: a sweep's name cannot start with a dot, so no sweep is there."""
    return f"{storage_root.rstrip('/')}/.confirm/{name}"


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


def _searcher(spec: SweepSpec, url: str) -> SweepSearch:
    """Optuna's multi-objective searcher over the space's define-by-run function, in durable storage,
    its sampler told each trial's constraint values (a sweep with ``constraints:``)."""
    values = ConstraintValues(spec.constraints) if spec.constraints else None
    return SweepSearch(
        constraint_values=values,
        space=spec.define_by_run(),
        metric=list(objective_keys(objectives=spec.objectives)),
        mode=list(objective_directions(spec.objectives)),
        sampler=make_sampler(spec.sampler, spec.seed, values),
        study_name=spec.name,
        storage=optuna.storages.RDBStorage(url),
    )


def _renamed(spec: SweepSpec, name: str) -> SweepSpec:
    from dataclasses import replace

    from fairsearch.spec.space import parse_space

    parse_space({**spec.raw, "name": name}, source=spec.source)  # validates the name
    return replace(spec, name=name)


def start_ray(address: str | None) -> None:
    """Starts Ray here (``address`` ``None``), or joins the cluster at ``address``; a ``ray://`` connection
    whose server died as it started (:data:`RAY_CLIENT_SERVER_DIED`) is tried again, up to
    :data:`RAY_CLIENT_ATTEMPTS` times in all."""
    for attempt in range(1, RAY_CLIENT_ATTEMPTS + 1):
        try:
            # "local": a sweep without --address starts its own Ray, never joining one already running on
            # this machine (another sweep's, whose end or kill would take this one down with it).
            ray.init(
                address=address or "local",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            return
        except (ConnectionError, RuntimeError, ValueError) as err:
            died = any(sign in str(err) for sign in RAY_CLIENT_SERVER_DIED)
            if not died or attempt == RAY_CLIENT_ATTEMPTS:
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                reason = clip_value(lines[-1] if lines else type(err).__name__, 300)  # not Ray's traceback
                hint = (
                    f"; its Ray Client server died as it started, {attempt} times in a row: start the head "
                    "with GRPC_ENABLE_FORK_SUPPORT=0 in its environment (ray-project/ray#63202)"
                    if died
                    else ""
                )
                raise FairsearchError(
                    f"--address {address}: cannot connect to the Ray cluster ({reason}){hint}"
                ) from None
            logger.warning(
                "--address %s: the head's Ray Client server died as it started (ray-project/ray#63202); "
                "connecting again (%d of %d)",
                address,
                attempt + 1,
                RAY_CLIENT_ATTEMPTS,
            )


def _check_results_folder(results_dir: Path, spec: SweepSpec | None = None, restart: bool = False) -> None:
    """Refuses a results folder that is a file, or lies under one, and (unless ``restart``) one whose
    ``space.json`` is damaged or belongs to another space, before anything is written."""
    check_writable_folder(results_dir, "--results")
    marker = results_dir / SPACE_FILE
    if spec is None or restart or not (marker.exists() or marker.is_symlink()):
        return
    saved = _read_marker(marker)
    if saved.get("digest") != spec.digest:
        raise FairsearchError(
            f"{results_dir} holds a sweep made from a different space file "
            f"({clip_value(saved.get('source'))}, digest {clip_value(saved.get('digest'))}; {spec.source} has digest "
            f"{spec.digest}). "
            f"Run with --restart to discard it and start over, or --name to start a sweep beside it."
        )


def _read_marker(marker: Path) -> dict[str, Any]:
    """``space.json``: which space a results folder was made from."""
    again = (
        f"run with --restart to discard {marker.parent} and start over, or --name to start a sweep beside it"
    )
    try:
        saved = read_json(marker)
    except (OSError, ValueError, FairsearchError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else clip_value(str(err), 80)
        raise FairsearchError(
            f"{marker}: damaged, so the space this sweep was made from is unknown ({reason}); {again}"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("digest"), str):
        raise FairsearchError(f"{marker}: not a space record of fairsearch (no 'digest'); {again}")
    return saved


def _resumable(results_dir: Path, experiment: str, restart: bool) -> bool:
    """Whether the run resumes: no ``--restart``, a results folder of this space and Tune's state of it."""
    return not restart and (results_dir / SPACE_FILE).exists() and tune.Tuner.can_restore(experiment)


def _prepare_folder(spec: SweepSpec, results_dir: Path, experiment: str, restart: bool) -> None:
    """Makes the results folder of a sweep that starts (not one that resumes): after ``--restart`` has
    removed the old one and its experiment state, or beside an existing one of this space that has no
    experiment to resume (checked by :func:`_check_results_folder`), with its ``space.json``."""
    marker = results_dir / SPACE_FILE
    if marker.exists() and restart:
        logger.info("--restart: removing %s and its experiment state", results_dir)
        shutil.rmtree(results_dir)
        _remove_experiment(experiment)
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"digest": spec.digest, "source": str(spec.source), "space": spec.raw}, default=str)
    write_atomic(marker, payload.encode("utf-8"))


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
    ended = trials["status"].isin(("completed", "stopped"))
    recovered = int((ended & (trials["failures"] > 0)).sum()) if "failures" in trials else 0
    first_error = None
    if failed and "error" in trials:
        errors = trials[trials["status"] == "failed"].sort_values("number")["error"].fillna("(no message)")
        first_error = (str(errors.iloc[0]), int((errors == errors.iloc[0]).sum()))
    return SweepOutcome(
        results_dir,
        done,
        failed,
        max(spec.trials - done - failed, 0),
        front,
        objectives=spec.objectives,
        constraints=spec.constraints,
        feasible=read_front(results_dir, FEASIBLE_FRONT) if spec.constraints else pd.DataFrame(),
        constraint_report=tuple(constraint_lines(trials, spec.constraints)),
        recovered=recovered,
        first_error=first_error,
    )
