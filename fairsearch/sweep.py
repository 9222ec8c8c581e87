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
import pickle
import re
import shutil
import socket
import subprocess
import sys
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

from fairsearch.checkpoint import read_test_metrics_at
from fairsearch.config import (
    OBJECTIVES,
    SAMPLERS,
    Constraints,
    ConstraintsFunc,
    Objectives,
    TrialConfig,
    objective_directions,
    objective_keys,
)
from fairsearch.confirm import (
    make_plan,
    read_confirmed,
    read_plan,
    refresh_confirmed,
    write_plan,
)
from fairsearch.data.synthetic import RECIPE
from fairsearch.errors import FairsearchError, clip_text
from fairsearch.folders import check_writable_folder
from fairsearch.results import FEASIBLE_FRONT, read_front, read_results
from fairsearch.scheduler import scheduler_from_settings
from fairsearch.space import SweepSpec, load_space
from fairsearch.study import claim_study
from fairsearch.tables import constraint_lines
from fairsearch.tune_trials import (
    STATE_FOLDER,
    ConfirmCallback,
    ConstraintValues,
    ResultsCallback,
    SweepSearch,
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
        objectives: the sweep's objectives.
        constraints: the sweep's constraints.
        feasible: the front of the trials meeting every constraint (empty without constraints).
        constraint_report: how many trials met each constraint, and the nearest miss of one no trial
            met (:func:`fairsearch.tables.constraint_lines`).
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
    recovered: int = 0


def make_sampler(name: str, seed: int, constraints_func: ConstraintsFunc | None = None) -> Any:
    """The Optuna sampler a space file names, seeded, steered by ``constraints_func`` when it takes one
    (:data:`fairsearch.config.SAMPLERS`)."""
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

    # Every input is checked before anything is written: a refused run leaves no folder and no file.
    _check_results_folder(results_dir, spec, restart)
    _check_inputs(
        spec, address=address, storage=storage, optuna_storage=optuna_storage, results_dir=results_dir
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
        _start_ray(address)
    gpus = _gpus_per_trial(spec, float(ray.cluster_resources().get("GPU", 0.0)), joined=address is not None)
    claim = claim_study(optuna_url, spec.name)  # one driver per study: a second one is refused
    resuming = _prepare_folder(spec, results_dir, experiment, restart)
    if restart:
        claim.renew()  # --restart removed the results folder, and the default database with the claim
        _remove_experiment(_confirm_experiment(storage_root, spec.name))

    # Trials keep their checkpoints in <experiment>/trials/<key>, not in Tune's bookkeeping.
    state_root = f"{experiment}/{STATE_FOLDER}"
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, state_root=state_root), {"cpu": spec.cpus, "gpu": gpus}
    )

    if resuming:
        logger.info("resuming sweep %r from %s", spec.name, experiment)
        try:
            tuner = _restore(experiment, trainable)
        except FairsearchError:
            claim.release()
            raise
    else:
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
                callbacks=callbacks,
                verbose=0,
            ),
        )
    tuner.fit()
    outcome = _outcome(results_dir, spec)
    if outcome.unfinished:
        claim.release()
        return outcome
    _fail_orphans(spec.name, optuna_url)
    if spec.confirm_seeds:
        outcome = _confirm(spec, results_dir, storage_root, {"cpu": spec.cpus, "gpu": gpus}, outcome)
    claim.release()
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
        plan = make_plan(
            trials,
            spec.confirm_seeds,
            spec.confirm_max_trials,
            read_test_metrics_at,
            spec.objectives,
            spec.constraints,
        )
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
    tuner.fit()
    refresh_confirmed(results_dir, plan)  # the search's writer may have rewritten pareto.parquet on resume
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
            f"be read here ({type(err).__name__}: {_short(str(err))}); run with --restart to start the "
            "sweep over, or --name to start one beside it"
        ) from None


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

    from fairsearch.space import parse_space

    parse_space({**spec.raw, "name": name}, source=spec.source)  # validates the name
    return replace(spec, name=name)


def _check_inputs(
    spec: SweepSpec,
    *,
    address: str | None = None,
    storage: str | None = None,
    optuna_storage: str | None = None,
    results_dir: Path | None = None,
) -> None:
    """Fails fast, on the driver and before anything is written, on a bad Ray address, an Optuna URL or
    Tune storage that is unknown or unreachable, a data folder that is missing or malformed (or lacks
    training samples of a group it evaluates), and a model that is not here.

    Args:
        spec: the space.
        address: ``--address``.
        storage: ``--storage``.
        optuna_storage: ``--optuna-storage``.
        results_dir: ``results/<name>``, where the default Optuna database lives.
    """
    _check_address(address)
    if optuna_storage is not None:
        _check_optuna_url(optuna_storage, "--optuna-storage")
    elif spec.optuna_storage is not None:
        _check_optuna_url(spec.optuna_storage, f"{spec.source}: optuna_storage:")
    elif results_dir is not None:  # the default, made in the results folder: only an existing file is checked
        _check_sqlite_file(results_dir / "optuna.db", "")
    _check_storage(storage)
    data = spec.fixed.get("data")
    if data is None:
        logger.info(
            "data: the built-in synthetic fundus set (%s images; set 'data:' to a FairVLMed folder)",
            spec.fixed.get("synthetic_n") or RECIPE.default_n,
        )
    elif "://" not in str(data):
        from fairsearch.data import load_fairvlmed

        splits = load_fairvlmed(data)
        _check_groups(
            splits, spec.group_by, bool(spec.fixed.get("exclude_unknown", TrialConfig.exclude_unknown))
        )
    model = spec.fixed.get("model", TrialConfig.model)
    if model == "tiny":
        logger.info("model: the built-in tiny random Qwen2.5-VL (set 'model:' to a hub id or a folder)")
    else:  # a folder that is not there, or a hub id not in the local cache: refused before anything runs
        from fairsearch.model.backbone import resolve_model_folder

        _check_model_config(resolve_model_folder(str(model)))


PROBE_TIMEOUT_S = 12
"""How long one check of remote storage or of a database server may take (a run makes two at most)
before the run is refused."""
ADDRESS_TIMEOUT_S = 5.0
"""How long the Ray head named by ``--address`` may take to accept a connection: with two probes of
:data:`PROBE_TIMEOUT_S`, a run is refused within 30 s whatever does not answer."""
RAY_CLIENT_PORT = 10001
"""Ray Client's port on the head node, when ``ray://host`` names none."""
RAY_CLIENT_ATTEMPTS = 3
"""How many times a ``ray://`` connection is tried when the head's Ray Client server dies as it starts."""
RAY_CLIENT_SERVER_DIED = "Starting Ray client server failed"
"""What the head answers when the Ray Client server it forked for this driver died at once: a race between
fork() and gRPC's threads in the head's proxy (ray-project/ray#63202), on 5 of 30 first connections on a
2-core machine. A head started with ``GRPC_ENABLE_FORK_SUPPORT=0``, as ``cluster/`` starts them, had none
in 26."""
_STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
"""URI schemes of the filesystems pyarrow, and so Ray Tune, reads (``file://`` is a local folder)."""
_STORAGE_PROBE = """
import sys, pyarrow.fs
fs, path = pyarrow.fs.FileSystem.from_uri(sys.argv[1])
print(fs.get_file_info(path).type.name)
"""
_DATABASE_PROBE = """
import sys, sqlalchemy
try:
    sqlalchemy.create_engine(sys.argv[1]).connect().close()
except sqlalchemy.exc.SQLAlchemyError as err:  # the driver's reason, on one line (not SQLAlchemy's link)
    sys.exit(" ".join(str(getattr(err, "orig", None) or err).split()))
"""
_SQLITE_HEADER = b"SQLite format 3\x00"


def _short(value: object, limit: int = 120) -> str:
    return clip_text(value if isinstance(value, str) else repr(value), limit)


def _start_ray(address: str | None) -> None:
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
            died = RAY_CLIENT_SERVER_DIED in str(err)
            if not died or attempt == RAY_CLIENT_ATTEMPTS:
                hint = (
                    f"; its Ray Client server died as it started, {attempt} times in a row: start the head "
                    "with GRPC_ENABLE_FORK_SUPPORT=0 in its environment (ray-project/ray#63202)"
                )
                raise FairsearchError(
                    f"--address {address}: cannot connect to the Ray cluster ({err}){hint if died else ''}"
                ) from None
            logger.warning(
                "--address %s: the head's Ray Client server died as it started (ray-project/ray#63202); "
                "connecting again (%d of %d)",
                address,
                attempt + 1,
                RAY_CLIENT_ATTEMPTS,
            )


def _check_address(address: str | None) -> None:
    """``--address``: ``auto``, ``local``, ``ray://host[:port]`` or ``host:port``, whose port accepts a
    connection within :data:`ADDRESS_TIMEOUT_S` (Ray's own connect waits minutes for a head that is not
    there)."""
    if address is None or address in ("auto", "local"):
        return
    match = re.fullmatch(r"(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(\d{1,5}))?", address)
    if match is None or (match[3] is None and not match[1]) or (match[3] and not 0 < int(match[3]) < 65536):
        raise FairsearchError(
            f"--address {_short(address)!r}: expected 'auto', 'local', ray://host:port or host:port "
            "(the address of a running Ray cluster)"
        )
    host, port = match[2].strip("[]"), int(match[3] or RAY_CLIENT_PORT)
    try:
        socket.create_connection((host, port), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise FairsearchError(
            f"--address {address}: nothing accepts connections at {host}:{port} ({reason} within "
            f"{ADDRESS_TIMEOUT_S:g} s); start the cluster's head node (ray start --head) or give its address"
        ) from None


def _check_storage(storage: str | None) -> None:
    """``--storage``: a folder that can be made, or a URI of a filesystem Ray Tune reads that answers
    within :data:`PROBE_TIMEOUT_S` (the check only looks: it creates nothing)."""
    if storage is None:
        return
    scheme, sep, rest = storage.partition("://")
    if not sep or scheme == "file":
        check_writable_folder(Path(rest if sep else storage).expanduser().resolve(), "--storage")
        return
    if scheme.lower() not in _STORAGE_SCHEMES:
        raise FairsearchError(
            f"--storage {_short(storage)}: unknown scheme {_short(scheme)!r}; give a folder or a URI of "
            f"{', '.join(f'{s}://' for s in _STORAGE_SCHEMES)}"
        )
    kind = _probe(_STORAGE_PROBE, storage, f"--storage {_short(storage)}")
    if kind == "File":
        raise FairsearchError(f"--storage {_short(storage)}: is a file, not a folder")


def _check_optuna_url(url: str, where: str) -> None:
    """An Optuna storage URL: a SQLAlchemy URL of a known dialect whose driver is installed; a SQLite
    file that is a SQLite database or can be made in an existing folder; any other database answering
    within :data:`PROBE_TIMEOUT_S`. Nothing is created while checking."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise FairsearchError(
            f"{where} {_short(url)}: not a database URL; give e.g. sqlite:///results/optuna.db or "
            "postgresql://user@host/database"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise FairsearchError(
            f"{where} {_short(shown)}: unknown database {_short(parsed.drivername)!r}; Optuna stores studies "
            "in SQLAlchemy databases: sqlite, postgresql, mysql, oracle, mssql"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return
        path = Path(database).expanduser()
        _check_sqlite_file(path, f"{where} {_short(shown)}: ")
        if not path.exists():
            if path.parent.exists() and not path.parent.is_dir():
                raise FairsearchError(f"{where} {_short(shown)}: {path.parent} is a file, not a folder")
            if not path.parent.is_dir():
                raise FairsearchError(
                    f"{where} {_short(shown)}: folder {path.parent} does not exist; create it first"
                )
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise FairsearchError(f"{where} {_short(shown)}: cannot create a file in {path.parent}")
        return
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise FairsearchError(
            f"{where} {_short(shown)}: the {parsed.drivername} driver is not installed ({err}); install it "
            "in this environment, or use sqlite:///path/optuna.db"
        ) from None
    _probe(_DATABASE_PROBE, url, f"{where} {_short(shown)}")


def _check_sqlite_file(path: Path, where: str) -> None:
    """An existing SQLite path must be a readable, writable SQLite database (or an empty file);
    ``where`` starts the message (``--optuna-storage sqlite:///x.db: ``)."""
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_file():
        raise FairsearchError(f"{where}{path} is not a file, so not a SQLite database")
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as err:
        raise FairsearchError(f"{where}cannot read {path} ({err.strerror or err})") from None
    if header and header != _SQLITE_HEADER:
        raise FairsearchError(
            f"{where}{path} is not a SQLite database; give the study's database or a new file"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise FairsearchError(f"{where}cannot write {path}")


def _probe(code: str, target: str, where: str) -> str:
    """Runs ``code`` with ``target`` in a child Python killed after :data:`PROBE_TIMEOUT_S` (a network
    client's retries cannot be cut short from inside); returns its output, or refuses with its error."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, target],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise FairsearchError(
            f"{where}: no answer within {PROBE_TIMEOUT_S} s; check the network, the address and the "
            "credentials"
        ) from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise FairsearchError(f"{where}: cannot reach it ({_short(reason, 300)})")
    return proc.stdout.strip()


def _check_groups(splits: Mapping[str, Any], group_by: str, exclude_unknown: bool) -> None:
    """Every ``group_by`` group with validation or test samples has training samples, and validation
    holds two groups or more (else MaxAccGap, the objective minimised, is always 0)."""
    from fairsearch.data import ATTRIBUTE_VALUES
    from fairsearch.fairness import encode_groups

    groupings = {
        name: encode_groups(split.attributes, group_by, ATTRIBUTE_VALUES, exclude_unknown=exclude_unknown)
        for name, split in splits.items()
    }
    train = groupings["train"].counts()
    for name in ("val", "test"):
        counts = groupings[name].counts()
        missing = [groupings[name].names[g] for g in range(len(counts)) if counts[g] > 0 and train[g] == 0]
        if missing:
            raise FairsearchError(
                f"group_by {group_by!r}: groups {missing} have {name} samples but no training samples; "
                "choose another grouping or set exclude_unknown"
            )
    counts = groupings["val"].counts()
    present = [groupings["val"].names[g] for g in range(len(counts)) if counts[g] > 0]
    if len(present) < 2:
        raise FairsearchError(
            f"group_by {group_by!r}: the validation split holds samples of {len(present)} group(s) "
            f"{present}; MaxAccGap, the objective minimised, needs two or more: choose another grouping"
        )


def _check_model_config(folder: Path) -> None:
    """A model folder's ``config.json`` is a JSON object with a ``model_type``."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_bytes()[: 1 << 24].decode("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise FairsearchError(
            f"model folder '{folder}': config.json is not readable JSON ({_short(str(err))}); "
            "copy the model folder again"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise FairsearchError(
            f"model folder '{folder}': config.json has no 'model_type', so it is not a Hugging Face "
            "model config; copy the model folder again"
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
            f"({_short(saved.get('source'))}, digest {_short(saved.get('digest'))}; {spec.source} has digest "
            f"{spec.digest}). "
            f"Run with --restart to discard it and start over, or --name to start a sweep beside it."
        )


def _read_marker(marker: Path) -> dict[str, Any]:
    """``space.json``: which space a results folder was made from."""
    again = (
        f"run with --restart to discard {marker.parent} and start over, or --name to start a sweep beside it"
    )
    try:
        with marker.open("rb") as f:
            data = f.read(1 << 24)
        saved = json.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _short(str(err), 80)
        raise FairsearchError(
            f"{marker}: damaged, so the space this sweep was made from is unknown ({reason}); {again}"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("digest"), str):
        raise FairsearchError(f"{marker}: not a space record of fairsearch (no 'digest'); {again}")
    return saved


def _prepare_folder(spec: SweepSpec, results_dir: Path, experiment: str, restart: bool) -> bool:
    """Creates the results folder, or keeps an existing one of this space (checked by
    :func:`_check_results_folder`).

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
    if exists and tune.Tuner.can_restore(experiment):
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
    ended = trials["status"].isin(("completed", "stopped"))
    recovered = int((ended & (trials["failures"] > 0)).sum()) if "failures" in trials else 0
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
    )
