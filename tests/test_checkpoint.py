"""A trial's own checkpoints (:class:`fairsearch.train.checkpoint.TrialStore`): saved whole or passed over,
the newest complete one found whatever else lies beside it, older ones pruned, work logged."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow.fs
import pytest

from fairsearch.train.checkpoint import MANIFEST_FILE, STATE_FILE, TrialStore, write_manifest


def _checkpoint(folder: Path, reports: int) -> Path:
    """A checkpoint folder as :mod:`fairsearch.train.trial` writes it, with ``reports`` reports in its history."""
    folder.mkdir(parents=True)
    history = [{"epoch": float(i + 1), "acc": 0.5 + i / 100} for i in range(reports)]
    (folder / STATE_FILE).write_text(json.dumps({"epoch": float(reports), "history": history}))
    (folder / "trainable.pt").write_bytes(bytes(range(256)) * 40)
    write_manifest(folder)
    return folder


def test_the_newest_complete_checkpoint_is_resumed_and_older_ones_are_pruned(tmp_path: Path) -> None:
    store = TrialStore(str(tmp_path / "trials"), "trial-00003")
    assert store.newest() is None and store.trained() == []
    first = store.save(_checkpoint(tmp_path / "a", 1), 1)
    second = store.save(_checkpoint(tmp_path / "b", 2), 2)
    assert Path(second).parent == tmp_path / "trials" / "trial-00003"
    assert not Path(first).exists()  # pruned once a newer one was complete
    newest = store.newest()
    assert newest is not None and newest[0] == second and len(newest[1]["history"]) == 2
    assert store.trained() == [1, 2]


def test_a_checkpoint_cut_short_is_passed_over_for_the_one_before(tmp_path: Path) -> None:
    store = TrialStore(str(tmp_path / "trials"), "trial-00000")
    kept = store.save(_checkpoint(tmp_path / "a", 1), 1)
    # a kill while report 2 was copied: the manifest (copied last) is missing, or a file is short
    for cut in ("manifest", "short"):
        other = TrialStore(str(tmp_path / "trials"), "trial-00000")
        source = _checkpoint(tmp_path / cut, 2)
        target = Path(other.path) / f"report-000002-{other.token}"
        target.mkdir()
        for name in (STATE_FILE, "trainable.pt", MANIFEST_FILE):
            (target / name).write_bytes((source / name).read_bytes())
        if cut == "manifest":
            (target / MANIFEST_FILE).unlink()
        else:
            (target / "trainable.pt").write_bytes(b"cut")
        newest = store.newest()
        assert newest is not None and newest[0] == kept, cut
        for child in target.iterdir():
            child.unlink()
        target.rmdir()


def test_two_processes_running_one_trial_never_write_the_same_folder_and_the_log_shows_it(
    tmp_path: Path,
) -> None:
    # a worker outliving its killed driver, and the new driver's worker, both at report 2
    a, b = (TrialStore(str(tmp_path / "trials"), "trial-00001") for _ in range(2))
    a.save(_checkpoint(tmp_path / "a1", 1), 1)
    saved = {a.save(_checkpoint(tmp_path / "a2", 2), 2), b.save(_checkpoint(tmp_path / "b2", 2), 2)}
    assert len(saved) == 2 and all(Path(p).is_dir() for p in saved)
    assert a.trained() == [1, 2, 2]  # report 2 was trained twice
    newest = a.newest()
    assert newest is not None and newest[0] in saved


def test_a_remote_store_names_its_scheme_and_fetches_into_a_local_folder(tmp_path: Path) -> None:
    store = TrialStore((tmp_path / "trials").as_uri(), "trial-00002")
    location = store.save(_checkpoint(tmp_path / "a", 1), 1)
    assert location.startswith("file:///") and Path(location.removeprefix("file://")).is_dir()

    memory = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fsspec.filesystem("memory")))
    store.fs = memory  # a filesystem that is not local disk: fetch must copy
    store.path = "/sweep/trials/trial-00002"
    store.save(_checkpoint(tmp_path / "b", 2), 2)
    newest = store.newest()
    assert newest is not None
    local = store.fetch(newest[0], tmp_path / "fetched")
    assert local == tmp_path / "fetched"
    assert json.loads((local / STATE_FILE).read_text())["epoch"] == 2.0
    assert (local / "trainable.pt").read_bytes() == (tmp_path / "b" / "trainable.pt").read_bytes()


@pytest.mark.parametrize("name", ["report-1-abc", "checkpoint_000001", "report-000001-XYZXYZXYZXYZ"])
def test_folders_not_named_by_the_store_are_ignored(tmp_path: Path, name: str) -> None:
    store = TrialStore(str(tmp_path / "trials"), "trial-00004")
    _checkpoint(Path(store.path) / name, 3)
    assert store.newest() is None and store.folders() == []


def test_a_save_removes_the_staging_folders_a_killed_process_left_and_keeps_its_own(tmp_path: Path) -> None:
    store = TrialStore(str(tmp_path / "trials"), "trial-00005")
    assert store.staging.parent == store.resume_copy.parent == Path(store.path)  # in the store itself
    left = [Path(store.path) / f"{kind}-0123456789ab" for kind in ("staging", "resume")]
    for folder in left:
        folder.mkdir(parents=True)
        (folder / "trainable.pt").write_bytes(b"x" * 1000)
    unrelated = Path(store.path) / "notes"
    unrelated.mkdir()
    store.staging.mkdir()
    store.save(_checkpoint(tmp_path / "a", 1), 1)
    assert not any(folder.exists() for folder in left)
    assert store.staging.is_dir() and unrelated.is_dir()  # its own is the writer's to empty
    assert store.newest() is not None and store.trained() == [1]


def test_a_remote_store_stages_in_the_node_s_cache_not_the_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path / "cache"))
    store = TrialStore((tmp_path / "trials").as_uri(), "trial-00006")
    store.fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fsspec.filesystem("memory")))
    other = TrialStore((tmp_path / "other").as_uri(), "trial-00006")
    other.fs = store.fs
    assert store.staging.is_relative_to(tmp_path / "cache" / "staging")
    assert store.staging_area != other.staging_area  # two sweeps' trial 6 never share one
    leftover = store.staging_area / "staging-0123456789ab"
    leftover.mkdir(parents=True)
    store.sweep_staging()
    assert not leftover.exists()
