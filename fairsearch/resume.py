"""Resuming after a driver killed without warning: no trial fails for a checkpoint Tune deleted.

Ray Tune names each trial's latest checkpoint in its experiment snapshot, which it saves every few
seconds, and with ``CheckpointConfig(num_to_keep=1)`` it deletes a trial's previous checkpoint as soon as
the next one is registered. A driver killed (SIGKILL, a lost head node) after that deletion and before the
next snapshot leaves a snapshot naming a checkpoint that no longer exists, and on ``Tuner.restore`` Tune
fails the trial: "Could not recover from checkpoint as it does not exist on storage anymore".

:class:`CheckpointRepair` fixes this on resume, before any trial starts: such a trial goes on from its
newest *complete* checkpoint on storage (see :func:`fairsearch.checkpoint.complete_checkpoint_state`), with
Tune's view of the trial (its iteration count, its last result) brought up to that checkpoint's epoch.
The report of that epoch died with the driver, so Tune's ``result.json`` lacks it, and MO-ASHA judges the
trial by its next report instead. The same window in reverse (Tune logged a report, then the sweep was
interrupted before it registered the report's checkpoint, or before its snapshot caught up with its log)
is repaired too: the trial goes on from that checkpoint rather than training and reporting the epoch
again. Whether Tune saw a report is judged from the snapshot's last result *and* the trial's own
``result.json``, which Tune appends to as each report arrives.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from ray import tune

from fairsearch.checkpoint import complete_checkpoint_state

logger = logging.getLogger(__name__)

_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")  # Ray's StorageContext._make_checkpoint_dir_name
_STATE_VERSION = 1
RESULT_FILE = "result.json"  # ray.tune's JsonLoggerCallback (EXPR_RESULT_FILE)


class CheckpointRepair(tune.Callback):
    """On ``Tuner.restore``, points trials whose checkpoint is gone at their newest complete one.

    Tune saves this callback's (trivial) state with every snapshot and hands it back on restore; that is
    the signal that trials are being resumed. The repair runs at the first step, after Tune has requeued
    the restored trials and before it starts any of them.
    """

    _pending = False

    def get_state(self) -> dict[str, Any]:
        """Non-empty, so that Tune calls :meth:`set_state` on restore."""
        return {"version": _STATE_VERSION}

    def set_state(self, state: dict[str, Any]) -> None:
        """Called by Tune on restore: repair at the next step."""
        self._pending = True

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if not self._pending:
            return
        self._pending = False
        for trial in trials:
            repair_trial(trial)


def repair_trial(trial: Any) -> bool:
    """Makes an unfinished Tune trial resume from its newest complete checkpoint that Tune should use.

    - Its named checkpoint is gone (deleted before a driver kill): the newest complete one on storage.
    - Its named checkpoint exists (or none is named) but a newer complete one lies beside it whose epoch
      Tune has already seen reported (a Ctrl-C or kill between the report and Tune's registering its
      checkpoint): that one, so that the epoch is neither trained nor reported twice.
    - A newer checkpoint whose report never reached Tune is not used: Tune trains that epoch again,
      exactly as before (see :mod:`fairsearch.trial`), so that the scheduler and Tune's log see it.

    Args:
        trial: a restored ``ray.tune.experiment.Trial``, not yet started.

    Returns:
        True when the trial now resumes from another checkpoint than the snapshot named.
    """
    if str(trial.status) == "TERMINATED":
        return False
    named = trial.checkpoint
    fs = trial.storage.storage_filesystem
    named_exists = named is not None and _exists(fs, named.path)
    last = dict(trial.last_result or {})
    # The snapshot can lag behind Tune's log of the reports (result.json) after a SIGKILL: an epoch that
    # is in the log reached Tune, and its checkpoint was on storage before its report was sent.
    reported = max(float(last.get("epoch", 0.0) or 0.0), _logged_epoch(trial, fs))
    from ray.train._internal.session import _TrainingResult

    for index, path in _checkpoint_dirs(fs, trial.storage.trial_fs_path):
        if named_exists and path.rsplit("/", 1)[-1] == named.path.rstrip("/").rsplit("/", 1)[-1]:
            return False  # no newer checkpoint to take: Tune resumes from the one it named
        state = complete_checkpoint_state(fs, path)
        if state is None:  # cut short by the kill, or written before checkpoints had a manifest
            logger.warning("trial %s: skipping %s, not a complete fairsearch checkpoint", trial, path)
            continue
        epoch = float(state["epoch"])
        if (named is None or named_exists) and epoch > reported + 1e-9:
            continue  # its report never reached Tune: Tune trains that part again, for the scheduler to see
        metrics = {**(state["history"][-1] if state["history"] else {}), "epoch": epoch}
        metrics["training_iteration"] = len(state["history"])  # one history entry per report
        if "time_total_s" in last:
            metrics["time_total_s"] = last["time_total_s"]
        if named is not None and not named_exists:
            fs.create_dir(
                named.path
            )  # Tune deletes the checkpoint this one replaces: a folder, not a traceback
        trial.on_checkpoint(_TrainingResult(checkpoint=tune.Checkpoint(path, filesystem=fs), metrics=metrics))
        trial.storage.current_checkpoint_index = index + 1  # the next checkpoint goes after this one
        if float(last.get("epoch", 0.0) or 0.0) < epoch:
            trial.update_last_result({**last, **metrics})
        logger.info(
            "trial %s resumes from %s (epoch %g): the experiment snapshot named %s, %s",
            trial,
            path,
            epoch,
            None if named is None else named.path,
            "saved before that epoch's report"
            if named_exists or named is None
            else "deleted before the driver was killed",
        )
        return True
    if named is None or named_exists:
        return False
    logger.warning(
        "trial %s: its checkpoint %s is gone and no complete one is left in %s; Tune will fail it",
        trial,
        named.path,
        trial.storage.trial_fs_path,
    )
    return False


def _logged_epoch(trial: Any, fs: Any) -> float:
    """The last epoch in the trial's ``result.json``, Tune's log of the reports it received (0 when none).

    Read from the driver's local copy when there is one, else from storage; a line cut short by the
    kill ends the log.
    """
    texts = []
    local = os.path.join(str(getattr(trial, "local_path", "") or ""), RESULT_FILE)
    if os.path.isfile(local):
        with open(local, "rb") as f:
            texts.append(f.read())
    try:
        with fs.open_input_stream(f"{trial.storage.trial_fs_path}/{RESULT_FILE}") as f:
            texts.append(f.readall())
    except OSError:
        pass
    epoch = 0.0
    for text in texts:
        for line in text.decode("utf-8", "replace").splitlines():
            try:
                epoch = max(epoch, float(json.loads(line).get("epoch", 0.0) or 0.0))
            except (ValueError, AttributeError, TypeError):
                break
    return epoch


def _checkpoint_dirs(fs: Any, trial_path: str) -> list[tuple[int, str]]:
    """``(index, path)`` of the trial's ``checkpoint_NNNNNN`` folders, newest first."""
    import pyarrow.fs

    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_path, allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        match = _CHECKPOINT_DIR.match(info.base_name)
        if match and info.type == pyarrow.fs.FileType.Directory:
            found.append((int(match.group(1)), info.path))
    return sorted(found, reverse=True)


def _exists(fs: Any, path: str) -> bool:
    import pyarrow.fs

    return bool(fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound)
