"""A trial's checkpoint folder: the names of its files, its manifest, and reading it on any filesystem.

:mod:`fairsearch.trial` writes the folder (``trainable.pt``, ``optimizer.pt``, ``rng.pt`` and the files
named here; ``docs/ARCHITECTURE.md`` lists them). The sweep's driver reads the test metrics of the
front's members, and :mod:`fairsearch.resume` asks whether a folder is complete, on whatever pyarrow
filesystem the sweep's storage is (local, S3, GCS). This module needs no torch, so the driver does not
import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

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
MANIFEST_FILE = "manifest.json"
"""Written last: each other file's name and size, so that a copy cut short (a driver or node killed
while Ray persisted the folder) is told apart from a complete checkpoint."""


def write_manifest(folder: Path) -> None:
    """Writes the manifest of a checkpoint folder whose other files are all written."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.name != MANIFEST_FILE}
    (folder / MANIFEST_FILE).write_text(json.dumps(sizes))


def _read_json(fs: Any, path: str, name: str) -> Any:
    with fs.open_input_stream(f"{path}/{name}") as f:
        return json.loads(f.readall())


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
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return cast(dict[str, Any], state)


def read_test_metrics(fs: Any, path: str) -> dict[str, float]:
    """A checkpoint's test-split metrics; empty when the folder has none (or cannot be read)."""
    try:
        return {k: float(v) for k, v in _read_json(fs, path, TEST_METRICS_FILE).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def read_test_metrics_at(location: str) -> dict[str, float]:
    """The test metrics in the checkpoint at a path or URI (``trials.parquet``'s ``checkpoint``); empty
    when it holds none."""
    import pyarrow.fs

    if "://" in location:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
    else:
        fs, path = pyarrow.fs.LocalFileSystem(), location
    return read_test_metrics(fs, path)
