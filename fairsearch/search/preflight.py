"""Every input of a sweep, checked on the driver before anything is written: the Ray address, the Tune
storage, the Optuna URL, the data folder and its groups, the model. A run refused here leaves no folder
and no file; what must reach a network (a storage URI, a database server, the Ray head) is given a
bounded time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairsearch.bounded import read_json
from fairsearch.data.synthetic import RECIPE, training_images
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.folders import check_writable_folder
from fairsearch.search.capacity import check_fits
from fairsearch.search.sqlite_copy import settled
from fairsearch.spec.config import TrialConfig, check_reports_per_epoch
from fairsearch.spec.space import SweepSpec

__all__ = ["ADDRESS_TIMEOUT_S", "PROBE_TIMEOUT_S", "RAY_CLIENT_PORT", "check_inputs"]

logger = logging.getLogger("fairsearch.search.sweep")  # its lines are the sweep's

PROBE_TIMEOUT_S = 12
"""How long one check of remote storage or of a database server may take (a run makes two at most)
before the run is refused."""
ADDRESS_TIMEOUT_S = 5.0
"""How long the Ray head named by ``--address`` may take to accept a connection: with two probes of
:data:`PROBE_TIMEOUT_S`, a run is refused within 30 s whatever does not answer."""
RAY_CLIENT_PORT = 10001
"""Ray Client's port on the head node, when ``ray://host`` names none."""
_STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
"""URI schemes of the filesystems pyarrow, and so Ray Tune, reads (``file://`` is a local folder)."""
_STORAGE_PROBE = """
import sys, pyarrow.fs
fs, path = pyarrow.fs.FileSystem.from_uri(sys.argv[1])
print(fs.get_file_info(path.split("/", 1)[0]).type.name, fs.get_file_info(path).type.name)
"""
_BUCKET_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss")
"""Object stores whose paths start with a bucket (or container), which Tune would not create."""
_DATABASE_PROBE = """
import json, sys, sqlalchemy
try:
    with sqlalchemy.create_engine(sys.argv[1]).connect() as connection:
        tables = sqlalchemy.inspect(connection).get_table_names()
        version = None
        if "alembic_version" in tables:
            version = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
except sqlalchemy.exc.SQLAlchemyError as err:  # the driver's reason, on one line (not SQLAlchemy's link)
    sys.exit(" ".join(str(getattr(err, "orig", None) or err).split()))
print(json.dumps({"tables": tables, "version": version}))
"""
_SQLITE_HEADER = b"SQLite format 3\x00"
_MLFLOW_PROBE = """
import os, sys
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
from mlflow import MlflowClient
MlflowClient(sys.argv[1]).search_experiments(max_results=1)
"""


def check_inputs(
    spec: SweepSpec,
    *,
    address: str | None = None,
    storage: str | None = None,
    optuna_storage: str | None = None,
    results_dir: Path | None = None,
    mlflow: str | None = None,
) -> None:
    """Fails fast, on the driver and before anything is written, on a bad Ray address, an Optuna URL or
    Tune storage that is unknown or unreachable, a data folder that is missing or malformed (or lacks
    training samples of a group it evaluates), a model that is not here, and a largest trial that does
    not fit the GPU memory the space states (``resources.gpu_memory_gb``; without it the sweep checks the
    cluster's accelerator once Ray runs).

    Args:
        spec: the space.
        address: ``--address``.
        storage: ``--storage``.
        optuna_storage: ``--optuna-storage``.
        results_dir: ``results/<name>``, where the default Optuna database lives.
        mlflow: ``--mlflow``, else the space's ``tracking.mlflow``: the MLflow server must answer.
    """
    _check_address(address)
    if mlflow is not None:
        _check_mlflow(mlflow, "--mlflow" if mlflow != spec.mlflow else f"{spec.source}: tracking.mlflow:")
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
    n_train = training_images(data, spec.fixed.get("synthetic_n"))
    if n_train is not None:  # what `fairsearch train` refuses, at the largest values the space gives
        check_reports_per_epoch(
            n_train,
            int(spec.largest("batch_size")),
            int(spec.largest("grad_accum")),
            int(spec.largest("reports_per_epoch")),
            f"{spec.source}: the largest batch_size, grad_accum and reports_per_epoch give: ",
        )
    model = spec.fixed.get("model", TrialConfig.model)
    if model == "tiny":
        logger.info("model: the built-in tiny random Qwen2.5-VL (set 'model:' to a hub id or a folder)")
    else:  # a folder that is not there, or a hub id not in the local cache: refused before anything runs
        from fairsearch.model.backbone import resolve_model_folder

        _check_model_config(resolve_model_folder(str(model)))
    if spec.gpu_memory_gb is not None and spec.gpus != 0:  # the cluster's GPUs are checked once Ray runs
        check_fits(
            spec,
            spec.gpu_memory_gb,
            spec.gpus if spec.gpus is not None else 1.0,
            f"resources.gpu_memory_gb: {spec.gpu_memory_gb:g}",
        )


def _check_mlflow(uri: str, where: str) -> None:
    """MLflow is installed (an optional extra) and its tracking store at ``uri`` answers."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise FairsearchError(
            f"{where} {uri}: MLflow is not installed here; install it with: pip install 'fairsearch[mlflow]'"
        )
    _probe(_MLFLOW_PROBE, uri, f"{where} {uri}")


def _check_address(address: str | None) -> None:
    """``--address``: ``auto``, ``local``, ``ray://host[:port]`` or ``host:port``, whose port accepts a
    connection within :data:`ADDRESS_TIMEOUT_S` (Ray's own connect waits minutes for a head that is not
    there)."""
    if address is None or address in ("auto", "local"):
        return
    match = re.fullmatch(r"(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(?::(\d{1,5}))?", address)
    if match is None or (match[3] is None and not match[1]) or (match[3] and not 0 < int(match[3]) < 65536):
        raise FairsearchError(
            f"--address {clip_value(address)!r}: expected 'auto', 'local', ray://host:port or host:port "
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
            f"--storage {clip_value(storage)}: unknown scheme {clip_value(scheme)!r}; give a folder or a URI of "
            f"{', '.join(f'{s}://' for s in _STORAGE_SCHEMES)}"
        )
    bucket, _, kind = _probe(_STORAGE_PROBE, storage, f"--storage {clip_value(storage)}").partition(" ")
    if scheme.lower() in _BUCKET_SCHEMES and bucket == "NotFound":
        name = rest.split("/", 1)[0]
        raise FairsearchError(
            f"--storage {clip_value(storage)}: no bucket {clip_value(name)!r} there, or these credentials cannot "
            f"see it; create it first (e.g. aws s3 mb {scheme}://{clip_value(name)}) or check the credentials"
        )
    if kind == "File":
        raise FairsearchError(f"--storage {clip_value(storage)}: is a file, not a folder")


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
            f"{where} {clip_value(url)}: not a database URL; give e.g. sqlite:///results/optuna.db or "
            "postgresql://user@host/database"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise FairsearchError(
            f"{where} {clip_value(shown)}: unknown database {clip_value(parsed.drivername)!r}; Optuna stores studies "
            "in SQLAlchemy databases: sqlite, postgresql, mysql, oracle, mssql"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return
        path = Path(database).expanduser()
        _check_sqlite_file(path, f"{where} {clip_value(shown)}: ")
        if not path.exists():
            if path.parent.exists() and not path.parent.is_dir():
                raise FairsearchError(
                    f"{where} {clip_value(shown)}: {clip_value(str(path.parent))} is a file, not a folder"
                )
            if not path.parent.is_dir():
                raise FairsearchError(
                    f"{where} {clip_value(shown)}: folder {clip_value(str(path.parent))} does not exist; create it first"
                )
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise FairsearchError(
                    f"{where} {clip_value(shown)}: cannot create a file in {clip_value(str(path.parent))}"
                )
        return
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise FairsearchError(
            f"{where} {clip_value(shown)}: the {parsed.drivername} driver is not installed ({err}); install it "
            "in this environment, or use sqlite:///path/optuna.db"
        ) from None
    found = json.loads(_probe(_DATABASE_PROBE, url, f"{where} {clip_value(shown)}"))
    _check_optuna_schema(set(found["tables"]), found["version"], f"{where} {clip_value(shown)}: the database")


def _check_sqlite_file(path: Path, where: str) -> None:
    """An existing SQLite path must be a readable, writable SQLite database (or an empty file);
    ``where`` starts the message (``--optuna-storage sqlite:///x.db: ``)."""
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_file():
        raise FairsearchError(f"{where}{clip_value(str(path))} is not a file, so not a SQLite database")
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as err:
        raise FairsearchError(f"{where}cannot read {clip_value(str(path))} ({err.strerror or err})") from None
    if header and header != _SQLITE_HEADER:
        raise FairsearchError(
            f"{where}{clip_value(str(path))} is not a SQLite database; give the study's database or a new file"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise FairsearchError(f"{where}cannot write {clip_value(str(path))}")
    if header:
        tables, version = _sqlite_schema(path, where)
        _check_optuna_schema(tables, version, f"{where}{clip_value(str(path))}")


def _sqlite_schema(path: Path, where: str) -> tuple[set[str], str | None]:
    """A SQLite file's tables and Alembic version, read through a read-only connection (not one byte
    written), after SQLite's own check of the file. A database with a journal beside it (a driver
    killed mid-write leaves one, which the next writer rolls back) is read from a copy of both, rolled
    back there, so that the file and its journal stay as they are."""
    with settled(path) as (readable, copied):
        target = readable.as_uri() if copied else f"{readable.resolve().as_uri()}?mode=ro"
        return _read_schema(target, path, where)


def _read_schema(target: str, path: Path, where: str) -> tuple[set[str], str | None]:
    try:
        with contextlib.closing(sqlite3.connect(target, uri=True)) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(str(p) for p in problems))
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = None
            if "alembic_version" in tables:
                row = db.execute("SELECT version_num FROM alembic_version").fetchone()
                version = str(row[0]) if row else None
    except sqlite3.Error as err:
        raise FairsearchError(
            f"{where}{clip_value(str(path))} is a damaged SQLite database ({clip_value(str(err), 200)}); restore it from a "
            "copy, or give a new file (--optuna-storage, or --restart for the default one)"
        ) from None
    return tables, version


@functools.cache
def _optuna_schema() -> tuple[frozenset[str], tuple[str, ...]]:
    """The tables of an Optuna database as the Optuna installed here makes them, and the schema versions
    it knows (oldest last; the first is the one it writes): read from a new in-memory database."""
    import optuna
    import sqlalchemy

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    tables = frozenset(sqlalchemy.inspect(storage.engine).get_table_names())
    return tables, (storage.get_current_version(), *storage.get_all_versions())


def _check_optuna_schema(tables: set[str], version: str | None, what: str) -> None:
    """Refuses a database that Optuna would change or cannot read: another application's (tables but not
    Optuna's), an incomplete Optuna one, or one whose schema another Optuna version wrote. An empty
    database is fine: Optuna makes its tables."""
    if not tables:
        return
    import optuna

    expected, versions = _optuna_schema()
    if not {"studies", "trials", "version_info", "alembic_version"} <= tables:
        others = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
        raise FairsearchError(
            f"{what} is not an Optuna database (its tables: {clip_value(others, 200)}); Optuna would add its "
            "own tables to it. Give the study's database or a new file"
        )
    if version not in versions:
        raise FairsearchError(
            f"{what} was written by another Optuna version than {optuna.__version__} here (schema "
            f"{clip_value(version)}, not one this Optuna knows): run the sweep with the Optuna that wrote it, "
            "or use a new database"
        )
    if version != versions[0]:
        raise FairsearchError(
            f"{what} was written by an older Optuna (schema {version}; {optuna.__version__} here writes "
            f"{versions[0]}): back it up and run 'optuna storage upgrade --storage <its URL>', or use a new "
            "database"
        )
    if not expected <= tables:
        raise FairsearchError(
            f"{what} is an incomplete Optuna database (missing tables: {', '.join(sorted(expected - tables))}); "
            "restore it from a copy, or use a new database"
        )


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
        raise FairsearchError(f"{where}: cannot reach it ({clip_value(reason, 300)})")
    return proc.stdout.strip()


def _check_groups(splits: Mapping[str, Any], group_by: str, exclude_unknown: bool) -> None:
    """Every ``group_by`` group with validation or test samples has training samples, and validation
    holds two groups or more (else MaxAccGap, the objective minimised, is always 0)."""
    from fairsearch.data import ATTRIBUTE_VALUES
    from fairsearch.judge.fairness import encode_groups

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
        config = read_json(path)
    except (OSError, ValueError, FairsearchError) as err:
        raise FairsearchError(
            f"model folder '{folder}': config.json is not readable JSON ({clip_value(str(err))}); "
            "copy the model folder again"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise FairsearchError(
            f"model folder '{folder}': config.json has no 'model_type', so it is not a Hugging Face "
            "model config; copy the model folder again"
        )
