"""One driver per study (fairsearch.search.study) on SQLite: refusal, release, takeover of a gone driver, races."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import optuna
import pytest
from claim_race import race_for_claim
from sweep_helpers import run_command, write_space

from fairsearch.search import study as study_module
from fairsearch.search.study import (
    CLAIM_PREFIX,
    Holder,
    StudyClaim,
    StudyClaimedError,
    claim_holder,
    claim_study,
    is_gone,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _claims(url: str, name: str) -> list[str]:
    return sorted(n for n in optuna.get_all_study_names(url) if n.startswith(f"{CLAIM_PREFIX}{name}/"))


def _write_holder(url: str, name: str, generation: int, holder: Holder | None) -> None:
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.create_new_study(
        [optuna.study.StudyDirection.MINIMIZE], f"{CLAIM_PREFIX}{name}/{generation}"
    )
    if holder is not None:
        storage.set_study_user_attr(study_id, "holder", asdict(holder))


def _elsewhere(heartbeat_age_s: float) -> Holder:
    """A driver on another machine whose last heartbeat was ``heartbeat_age_s`` ago."""
    now = time.time()
    return Holder("node-7", 4242, "node-7|boot|pid:[1]", 99, "feedbeef", now - 3600, now - heartbeat_age_s)


def test_second_driver_is_refused_until_the_first_releases(url: str) -> None:
    first = claim_study(url, "s")
    try:
        holder = claim_holder(optuna.storages.RDBStorage(url), "s")
        assert holder is not None and holder.pid == os.getpid() and not holder.released
        # another process, alive, on this machine: refused, naming it
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from fairsearch.search.study import claim_study; claim_study({url!r}, 's')",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert other.returncode != 0
        assert (
            f"StudyClaimedError: study 's' in {url} is being run by another driver (pid {os.getpid()} on "
            in (other.stderr)
        )
        assert (
            re.search(r"last heartbeat \d+ s ago\)", other.stderr)
            and "give --name for a sweep beside it" in other.stderr
        )
    finally:
        first.release()
    assert claim_holder(optuna.storages.RDBStorage(url), "s").released  # type: ignore[union-attr]
    second = claim_study(url, "s")  # at once after a release
    second.release()
    assert second.generation == first.generation + 1
    assert _claims(url, "s") == [f"{CLAIM_PREFIX}s/{second.generation}"]  # the older generation deleted
    assert optuna.get_all_study_names(url) == _claims(url, "s")  # no sweep study made


def test_claims_of_other_studies_do_not_interfere(url: str) -> None:
    with claim_study(url, "a"), claim_study(url, "a.b"), claim_study(url, "b"):
        assert _claims(url, "a") == [f"{CLAIM_PREFIX}a/0"]


def test_a_fresh_claim_of_another_machine_is_refused_a_stale_one_taken_over(url: str) -> None:
    _write_holder(url, "s", 0, _elsewhere(heartbeat_age_s=10))
    with pytest.raises(
        StudyClaimedError,
        match=r"pid 4242 on node-7, claimed .*, last heartbeat 1\d s ago\).* 60 s after its last heartbeat$",
    ):
        claim_study(url, "s")
    assert _claims(url, "s") == [f"{CLAIM_PREFIX}s/0"]

    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(f"{CLAIM_PREFIX}s/0")
    storage.set_study_user_attr(study_id, "holder", asdict(_elsewhere(heartbeat_age_s=120)))
    with claim_study(url, "s") as claim:
        assert claim.generation == 1 and _claims(url, "s") == [f"{CLAIM_PREFIX}s/1"]


@pytest.mark.parametrize(
    "damage",
    [
        {"heartbeat": "yesterday"},
        {"heartbeat": float("nan")},
        {"pid": 1.5},
        {"pid": True},
        {"host": None},
        {"released": "no"},
        {"extra": 1},
        {"token": ["a"]},
    ],
    ids=[
        "text-heartbeat",
        "nan-heartbeat",
        "fractional-pid",
        "bool-pid",
        "no-host",
        "text-released",
        "unknown-field",
        "list-token",
    ],
)
def test_a_damaged_claim_record_is_taken_over_with_a_warning(
    url: str, damage: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh claim (heartbeat 1 s ago) whose record was damaged: never a traceback, never a driver
    kept out for good; the claim is taken over at once and the damage is logged."""
    _write_holder(url, "s", 0, None)
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(f"{CLAIM_PREFIX}s/0")
    storage.set_study_user_attr(study_id, "holder", asdict(_elsewhere(heartbeat_age_s=1)) | damage)
    with caplog.at_level("WARNING"), claim_study(url, "s") as claim:
        assert claim.generation == 1
    assert "a claim record of this study is damaged" in caplog.text
    alive = _elsewhere(1)
    assert Holder.from_attr(asdict(alive)) == alive and not alive.released
    for record in ({k: v for k, v in asdict(alive).items() if k != "heartbeat"}, "holder", [1, 2]):
        read = Holder.from_attr(record)  # a field missing, or not a record at all
        assert read is not None and read.released
    assert Holder.from_attr(None) is None  # not written yet


def test_is_gone() -> None:
    now = time.time()
    me = study_module._this_driver("t", now)
    assert me.machine and me.process_start > 0
    assert not is_gone(me, now)
    assert is_gone(replace(me, released=True), now)
    assert is_gone(me, now + 61) and not is_gone(me, now + 59)
    assert not is_gone(replace(me, process_start=-1), now)  # unknown start: only staleness tells
    # a pid now running another process (its start time differs) is gone
    assert is_gone(replace(me, process_start=me.process_start - 1), now)
    assert not is_gone(replace(me, machine="elsewhere|boot|pid:[1]", process_start=0), now)


_CLAIM_THEN_WAIT = """
import sys, time
from fairsearch.search.study import claim_study
claim_study(sys.argv[1], "s")
print("claimed", flush=True)
time.sleep(600)
"""


def test_a_killed_driver_on_this_machine_is_taken_over_at_once(url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLAIM_THEN_WAIT, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "claimed\n", proc.stderr
        with pytest.raises(StudyClaimedError, match=f"pid {proc.pid} on "):
            claim_study(url, "s")
    finally:
        proc.kill()
        proc.wait()
    started = time.monotonic()
    with claim_study(url, "s") as claim:  # its heartbeat is fresh, but its process is gone
        assert claim.generation == 1
    assert time.monotonic() - started < 10


def test_the_same_process_claims_again_and_its_earlier_claim_is_released(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = claim_study(url, "s", heartbeat_s=0.1)  # as left by a sweep that raised
    second = claim_study(url, "s", heartbeat_s=0.1)
    time.sleep(0.5)
    assert second.generation == first.generation + 1 and not first.lost and not second.lost
    second.release()
    assert "taken it over" not in caplog.text


def test_heartbeat_refreshes_the_claim(url: str) -> None:
    with claim_study(url, "s", heartbeat_s=0.2) as claim:
        storage = optuna.storages.RDBStorage(url)
        first = claim_holder(storage, "s")
        assert first is not None
        deadline = time.monotonic() + 10
        while (later := claim_holder(storage, "s")) == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert later is not None and later.token == first.token and later.heartbeat > first.heartbeat
        assert claim.holder is not None and claim.holder.token == first.token


def test_a_driver_whose_claim_was_taken_over_knows_it(url: str, caplog: pytest.LogCaptureFixture) -> None:
    slow = claim_study(url, "s", heartbeat_s=0.2)
    try:
        # another process's claim, which sees slow's heartbeat as stale (claim_study would release slow)
        with StudyClaim(url, "s", stale_after_s=0.0).acquire() as other:
            deadline = time.monotonic() + 10
            while not slow.lost and time.monotonic() < deadline:
                time.sleep(0.1)
            assert slow.lost and other.generation == slow.generation + 1
            assert "another driver has taken it over" in caplog.text
            assert not slow.heartbeat()
    finally:
        slow.release()
    # a lost claim's release does not release the new holder's claim
    holder = claim_holder(optuna.storages.RDBStorage(url), "s")
    assert holder is not None and holder.released and holder.token != slow.holder.token  # type: ignore[union-attr]


def test_a_claim_being_written_is_waited_for(url: str) -> None:
    _write_holder(url, "s", 0, None)  # its creator is between creating the claim and writing its holder
    storage = optuna.storages.RDBStorage(url)
    study_id = storage.get_study_id_from_name(f"{CLAIM_PREFIX}s/0")
    holder = asdict(_elsewhere(heartbeat_age_s=0))
    writer = threading.Timer(1.0, lambda: storage.set_study_user_attr(study_id, "holder", holder))
    writer.start()
    try:
        with pytest.raises(StudyClaimedError, match="pid 4242 on node-7"):
            claim_study(url, "s", stale_after_s=30.0)
    finally:
        writer.join()


def test_a_claim_never_written_is_taken_over_once_stale(url: str) -> None:
    _write_holder(url, "s", 0, None)  # its creator died between creating the claim and writing it
    started = time.monotonic()
    with claim_study(url, "s", stale_after_s=5.0) as claim:
        assert claim.generation == 1
    assert time.monotonic() - started >= 5.0


def test_a_driver_that_read_a_superseded_state_loses_the_race(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 3: a driver read generation 3 as the newest and dead, while others moved on to 5 (alive) and
    deleted 4; creating 4 succeeds, so only the re-read after it shows that the driver lost."""
    _write_holder(url, "s", 5, _elsewhere(heartbeat_age_s=1))
    real = study_module._generations
    reads = []

    def stale_first_read(storage: optuna.storages.BaseStorage, name: str) -> dict[int, Holder | None]:
        reads.append(name)
        return {3: _elsewhere(heartbeat_age_s=3600)} if len(reads) == 1 else real(storage, name)

    monkeypatch.setattr(study_module, "_generations", stale_first_read)
    with pytest.raises(StudyClaimedError, match="pid 4242 on node-7"):
        claim_study(url, "s")
    assert len(reads) == 3  # stale read, re-read after creating 4, read that finds 5 alive
    assert _claims(url, "s") == [f"{CLAIM_PREFIX}s/5"]  # its generation 4 deleted


def test_drivers_starting_at_the_same_moment_do_not_both_win(url: str) -> None:
    results = race_for_claim(url, "s", 4)  # in a new database: they make its tables at once too
    assert results[:3] == ["refused"] * 3 and results[3].startswith("won "), results


def test_renew_claims_again_in_a_database_made_anew(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results' / 'optuna.db'}"
    with claim_study(url, "s") as claim:  # the folder is made for the default database
        (tmp_path / "results" / "optuna.db").unlink()  # as --restart removes the results folder
        claim.renew()
        holder = claim_holder(optuna.storages.RDBStorage(url), "s")
        assert holder is not None and holder.token == claim.holder.token  # type: ignore[union-attr]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_cli_refuses_a_second_driver_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    space = write_space(tmp_path, "busy", 2)
    results = tmp_path / "results"
    (results / "busy").mkdir(parents=True)
    url = f"sqlite:///{results / 'busy' / 'optuna.db'}"  # the default database of the sweep
    _write_holder(url, "busy", 0, _elsewhere(heartbeat_age_s=-3600))  # alive however slow this machine is
    before = _tree(tmp_path)
    env = {**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(run_command(space, results), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: study 'busy' in {url} is being run by another driver (pid 4242 on node-7, claimed "
    ), proc.stderr[-3000:]
    assert _tree(tmp_path) == before
