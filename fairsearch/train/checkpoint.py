"""A trial's checkpoint folder: the names of its files, its manifest, and reading it on any filesystem.

:mod:`fairsearch.train.trial` writes the folder (``trainable.pt``, ``optimizer.pt``, ``rng.pt`` and the files
named here; ``docs/ARCHITECTURE.md`` lists them). In a sweep each trial keeps its checkpoints in its own
:class:`TrialStore` and resumes from the newest complete one; the driver reads the test metrics of the
front's members, on whatever pyarrow filesystem the sweep's storage is (local, S3, GCS). This module
needs no torch, so the driver does not import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, cast

from fairsearch.bounded import (
    FEATURES_MAX_BYTES,
    JSON_MAX_BYTES,
    MAX_GROUPS,
    MAX_NAME_CHARS,
    MAX_SPLIT_SAMPLES,
    SCORES_MAX_BYTES,
    STATE_MAX_BYTES,
    ArraySpec,
    load_npz,
    read_bytes,
    read_json,
)
from fairsearch.cache import cache_root
from fairsearch.errors import FairsearchError

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
"""``epoch`` (float), ``history`` (one validation report per report so far), the trial's config and
``backbone`` (the fingerprint of the weights it was trained on)."""
TEST_METRICS_FILE = "test_metrics.json"
"""The test split's flat metrics, in the checkpoint of a trial's last report only (the test split is
evaluated once per trial); read for the Pareto front only, never reported to Tune."""
SCORES_FILE = "scores.npz"
"""Per-sample scores of the validation and test splits, with labels and groups, in the checkpoint of a
trial's last report only: what post-processing (per-group decision thresholds) needs. Read with
``allow_pickle=False``."""
FEATURES_FILE = "features.npz"
"""In a trial's last checkpoint with ``refit_last_layer``: the final model's last-token features of the
validation and test splits (``val_features``, ``test_features``, float32 ``[N, hidden]``), which the
last-layer refit (:mod:`fairsearch.judge.refit`) reads."""
REPORT_FILE = "report.json"
"""In a sweep's checkpoint: ``reported_at`` (unix time its report was first sent) and ``trial_time_s``
(seconds the trial had run by then, over all its restarts), so that a report sent again by a resumed
trial carries the first sending's times."""
MANIFEST_FILE = "manifest.json"
"""Written last: each other file's name and size, so that a copy cut short (a driver or node killed
while Ray persisted the folder) is told apart from a complete checkpoint."""

JSON_BOUNDS = {STATE_FILE: STATE_MAX_BYTES}
"""The most bytes each JSON file of a checkpoint may hold: :data:`~fairsearch.bounded.JSON_MAX_BYTES`
unless named here."""
_PER_SAMPLE = ArraySpec("f", 1, MAX_SPLIT_SAMPLES), ArraySpec("iu", 1, MAX_SPLIT_SAMPLES)
SCORES_ARRAYS = {
    "group_by": ArraySpec("U", 0, 1, 4 * MAX_NAME_CHARS),
    "group_names": ArraySpec("U", 1, MAX_GROUPS, 4 * MAX_NAME_CHARS),
    **{f"{split}_score": _PER_SAMPLE[0] for split in ("val", "test")},
    **{f"{split}_{what}": _PER_SAMPLE[1] for split in ("val", "test") for what in ("label", "group")},
}
"""The arrays a :data:`SCORES_FILE` may hold, checked from their headers before any is read."""
FEATURES_ARRAYS = {
    name: ArraySpec("f", 2, FEATURES_MAX_BYTES // 8) for name in ("val_features", "test_features")
}
"""The arrays a :data:`FEATURES_FILE` may hold: float ``[N, hidden]``, each at most
:data:`~fairsearch.bounded.FEATURES_MAX_BYTES` however stored."""


def write_manifest(folder: Path) -> None:
    """Writes the manifest of a checkpoint folder whose other files are all written."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.name != MANIFEST_FILE}
    (folder / MANIFEST_FILE).write_text(json.dumps(sizes))


def _read_json(fs: Any, path: str, name: str) -> Any:
    return read_json(f"{path}/{name}", JSON_BOUNDS.get(name, JSON_MAX_BYTES), fs)


def complete_checkpoint_state(fs: Any, path: str) -> dict[str, Any] | None:
    """A checkpoint folder's saved state (``epoch``, ``history``) when every file its manifest names is
    there at its full size.

    Args:
        fs: a ``pyarrow.fs.FileSystem``.
        path: the folder's path on ``fs``.

    Returns:
        The state, or None for a folder that is missing, cut short, or not a fairsearch checkpoint.
    """
    import pyarrow.fs

    try:
        sizes = _read_json(fs, path, MANIFEST_FILE)
        infos = fs.get_file_info([f"{path}/{name}" for name in sizes])
        if any(i.type != pyarrow.fs.FileType.File or i.size != sizes[i.base_name] for i in infos):
            return None
        state = _read_json(fs, path, STATE_FILE)
        float(state["epoch"]), list(state["history"])
    except FairsearchError as err:
        logger.warning("checkpoint passed over: %s", err)
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return cast(dict[str, Any], state)


def read_test_metrics(fs: Any, path: str) -> dict[str, float]:
    """A checkpoint's test-split metrics; empty when the folder has none (or cannot be read)."""
    try:
        return {k: float(v) for k, v in _read_json(fs, path, TEST_METRICS_FILE).items()}
    except FairsearchError as err:
        logger.warning("test metrics left out: %s", err)
        return {}
    except (OSError, ValueError, AttributeError):
        return {}


def read_report_info(fs: Any, path: str) -> dict[str, float]:
    """A checkpoint's :data:`REPORT_FILE`; empty when it has none (written by ``fairsearch train``)."""
    try:
        return {k: float(v) for k, v in _read_json(fs, path, REPORT_FILE).items()}
    except FairsearchError as err:
        logger.warning("report times left out: %s", err)
        return {}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def read_test_metrics_at(location: str) -> dict[str, float]:
    """The test metrics in the checkpoint at a path or URI (``trials.parquet``'s ``checkpoint``); empty
    when it holds none."""
    return read_test_metrics(*filesystem_of(location))


def filesystem_of(location: str) -> tuple[Any, str]:
    """The ``pyarrow.fs`` filesystem and path of a local path or a URI (``s3://bucket/…``)."""
    import pyarrow.fs

    if "://" in location:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
        return fs, path.rstrip("/")
    return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())


REPORT_FOLDER = re.compile(r"^report-(\d{6})-([0-9a-f]{12})$")
"""A saved checkpoint: ``report-<report number, from 1>-<token of the process that wrote it>``."""
TRAINED_LOG = "trained"
"""A folder of empty files ``<report number>-<token>``, one per part of an epoch trained to its end and
saved: the trial's record of work done, never pruned. Two files for one report number mean that part was
trained twice (two processes ran the trial at once, e.g. a worker outliving its killed driver)."""


STAGING_PREFIXES = ("staging-", "resume-")
"""Folders of a store's staging area (:attr:`TrialStore.staging_area`), each named by the token of the
process that made it: ``staging-<token>`` where a checkpoint is written before it is saved, ``resume-<token>``
where a remote checkpoint is copied to resume from."""


class TrialStore:
    """A trial's own checkpoints, in a folder named by its stable identity: ``<root>/<key>/``.

    Ray Tune is given no checkpoint. Each report's checkpoint is copied here before the report is sent,
    file by file with the manifest last, into a folder of its own (``report-000004-<token>``), and the
    trial always goes on from its newest *complete* folder, whatever Tune restarts it with: after a
    Ctrl-C, a driver or worker killed at any moment, a retry, or a lost node. A folder cut short by a kill
    has no manifest, or files shorter than it says, and is passed over: the part whose save it was is
    trained again. Nothing Tune writes or deletes is read, so Tune's snapshot can lag behind the trial
    without a saved part being lost or trained again.

    Older folders are removed only after a newer one is complete; every writer uses its own token, so two
    processes running one trial at once never write into the same folder.

    A checkpoint is written first into :attr:`staging` (never the system's temp folder), which the save
    empties; what a killed process left there is removed by the next save or resume of the trial
    (:meth:`sweep_staging`). A kill so costs at most the part of an epoch being trained or saved.

    Args:
        root: folder or URI holding every trial's store (``<storage>/<experiment>/trials``).
        key: the trial's identity, stable across restarts (``trial-00007`` for Optuna trial 7).
    """

    def __init__(self, root: str, key: str) -> None:
        self.fs, root_path = filesystem_of(root)
        self.scheme = "" if "://" not in root else root.split("://", 1)[0]
        self.path = f"{root_path}/{key}"
        self.token = uuid.uuid4().hex[:12]

    @property
    def staging_area(self) -> Path:
        """Local folder of this trial's staging folders: the store itself on local storage; on remote
        storage (S3, GCS) a folder of the node's fairsearch cache named by the store's location."""
        import pyarrow.fs

        if isinstance(self.fs, pyarrow.fs.LocalFileSystem):
            return Path(self.path)
        digest = hashlib.sha256(self.location(self.path).encode()).hexdigest()[:16]
        return cache_root("staging") / digest

    @property
    def staging(self) -> Path:
        """Where this process writes a checkpoint before :meth:`save` copies it into the store."""
        return self.staging_area / f"{STAGING_PREFIXES[0]}{self.token}"

    @property
    def resume_copy(self) -> Path:
        """Where this process copies a remote checkpoint to resume from (:meth:`fetch`)."""
        return self.staging_area / f"{STAGING_PREFIXES[1]}{self.token}"

    def sweep_staging(self) -> None:
        """Removes the staging folders other processes of this trial left (a process killed while it
        wrote or copied a checkpoint). A process running the trial at the same time (a worker outliving its
        killed driver) loses the save in progress: its folder was never complete, so nothing is lost."""
        try:
            entries = list(self.staging_area.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(STAGING_PREFIXES) and not entry.name.endswith(self.token):
                shutil.rmtree(entry, ignore_errors=True)

    def location(self, path: str) -> str:
        """A folder's path as the results files name it: with the scheme on remote storage."""
        return f"{self.scheme}://{path}" if self.scheme else path

    def folders(self) -> list[tuple[int, str]]:
        """``(report number, path)`` of the saved folders, complete or not, newest first."""
        import pyarrow.fs

        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))
        except OSError:
            return []
        found = [
            (int(match.group(1)), info.path)
            for info in infos
            if info.type == pyarrow.fs.FileType.Directory and (match := REPORT_FOLDER.match(info.base_name))
        ]
        return sorted(found, reverse=True)

    def newest(self) -> tuple[str, dict[str, Any]] | None:
        """The newest complete checkpoint's path and state (:func:`complete_checkpoint_state`), or None."""
        for _, path in self.folders():
            state = complete_checkpoint_state(self.fs, path)
            if state is not None:
                return path, state
        return None

    def save(self, folder: Path, report: int) -> str:
        """Copies a checkpoint folder written by :mod:`fairsearch.train.trial` (manifest included) as report
        number ``report``; then logs the part as trained and removes older folders.

        Returns:
            The saved folder's location (path, or URI on remote storage).
        """
        target = f"{self.path}/report-{report:06d}-{self.token}"
        self.fs.create_dir(target, recursive=True)
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        for name in [n for n in names if n != MANIFEST_FILE] + [MANIFEST_FILE]:  # the manifest last
            with (folder / name).open("rb") as src, self.fs.open_output_stream(f"{target}/{name}") as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
        self.fs.create_dir(f"{self.path}/{TRAINED_LOG}", recursive=True)
        with self.fs.open_output_stream(f"{self.path}/{TRAINED_LOG}/{report:06d}-{self.token}"):
            pass
        for number, path in self.folders():
            if number < report:
                with contextlib.suppress(OSError):  # another process may be removing it too
                    self.fs.delete_dir(path)
        self.sweep_staging()
        return self.location(target)

    def fetch(self, path: str, local: Path) -> Path:
        """A saved folder on local disk: itself on a local filesystem, else copied into ``local``."""
        import pyarrow.fs

        if isinstance(self.fs, pyarrow.fs.LocalFileSystem):
            return Path(path)
        local.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(path, str(local), source_filesystem=self.fs)
        return local

    def trained(self) -> list[int]:
        """The report numbers logged as trained, once per time each was trained, ascending."""
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(f"{self.path}/{TRAINED_LOG}", allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError:
            return []
        return sorted(int(i.base_name.split("-", 1)[0]) for i in infos if i.base_name[:6].isdigit())


def read_scores_at(location: str) -> dict[str, Any] | None:
    """The per-sample scores (:data:`SCORES_FILE`) in the checkpoint at a path or URI, as plain numpy
    arrays by name (``fairsearch.judge.thresholds.TrialScores.from_arrays`` checks what they hold).

    Args:
        location: the checkpoint folder's path or URI (``trials.parquet``'s ``checkpoint``).

    Returns:
        The arrays, or None when the checkpoint holds no scores file (a trial's earlier reports, or a
        checkpoint written before the file existed).

    Raises:
        FairsearchError: the file is there but cannot be read as an ``.npz`` of plain (non-object) arrays,
            or holds more than :data:`SCORES_ARRAYS` allows.
    """
    return _read_npz_at(location, SCORES_FILE, SCORES_MAX_BYTES, SCORES_ARRAYS)


def read_features_at(location: str) -> dict[str, Any] | None:
    """The last-token features (:data:`FEATURES_FILE`: ``val_features``, ``test_features``) in the
    checkpoint at a path or URI, or None when it holds none (a trial without ``refit_last_layer``).

    Raises:
        FairsearchError: the file is there but cannot be read as an ``.npz`` of plain (non-object) arrays,
            or holds more than :data:`FEATURES_ARRAYS` allows.
    """
    return _read_npz_at(location, FEATURES_FILE, FEATURES_MAX_BYTES, FEATURES_ARRAYS)


def _read_npz_at(
    location: str, file_name: str, bound: int, arrays: dict[str, ArraySpec]
) -> dict[str, Any] | None:
    """An ``.npz`` of a checkpoint, at most ``bound`` bytes and only ``arrays`` (their headers checked
    before any is read)."""
    import pyarrow.fs

    fs, path = filesystem_of(location) if "://" in location else (pyarrow.fs.LocalFileSystem(), location)
    name = f"{path.rstrip('/')}/{file_name}"
    source = f"{location.rstrip('/')}/{file_name}"
    try:
        if fs.get_file_info(name).type == pyarrow.fs.FileType.NotFound:
            return None
        return load_npz(read_bytes(name, bound, fs), source, arrays)
    except FairsearchError as err:
        raise FairsearchError(f"cannot read {err}") from None
    except Exception as exc:  # anything numpy, zipfile or the filesystem meets in a damaged file
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise FairsearchError(
            f"cannot read {source}: damaged or not an .npz of plain arrays ({reason})"
        ) from None
