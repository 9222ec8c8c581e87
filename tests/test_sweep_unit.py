"""Sweep decisions that need no running Ray: GPUs per trial, samplers, joining a cluster."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import fairsearch.search.sweep
from fairsearch.errors import FairsearchError
from fairsearch.search.sweep import RAY_CLIENT_ATTEMPTS, _gpus_per_trial, make_sampler, start_ray
from fairsearch.spec.space import parse_space


@pytest.mark.parametrize(
    ("gpus", "cluster", "joined", "expected"),
    [
        ("auto", 0.0, False, 0.0),
        ("auto", 4.0, False, 1.0),
        (0.5, 2.0, False, 0.5),
        (1, 0.0, True, 1.0),  # an autoscaling cluster may add GPU workers later
    ],
)
def test_gpus_per_trial(gpus: object, cluster: float, joined: bool, expected: float) -> None:
    spec = parse_space({"resources": {"gpus": gpus}})
    assert _gpus_per_trial(spec, cluster, joined=joined) == expected


def test_gpus_asked_of_a_local_ray_without_gpus_is_refused() -> None:
    spec = parse_space({"resources": {"gpus": 1}})
    with pytest.raises(
        FairsearchError, match=r"resources.gpus: 1.0 but the Ray cluster has no GPUs; use 'gpus: auto'"
    ):
        _gpus_per_trial(spec, 0.0, joined=False)


@pytest.mark.parametrize("name", ["tpe", "nsgaii", "gp", "random"])
def test_every_offered_sampler_is_seeded(name: str) -> None:
    import optuna

    a, b = make_sampler(name, 7), make_sampler(name, 7)
    assert type(a) is type(b) and isinstance(a, optuna.samplers.BaseSampler)
    values = []
    for sampler in (a, b):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        trial = study.ask()
        values.append(trial.suggest_float("lr", 1e-4, 1e-2, log=True))
    assert values[0] == values[1]


def test_a_trial_is_known_by_its_optuna_number_or_the_trial_and_seed_it_confirms() -> None:
    from fairsearch.search.tune_trials import trial_key
    from fairsearch.spec.space import OPTUNA_NUMBER

    assert trial_key({"method": "fr", OPTUNA_NUMBER: 7}) == "trial-00007"
    assert trial_key({"method": "fr", OPTUNA_NUMBER: 7, "confirms": 7, "seed": 12}) == "confirm-00007-seed-12"
    assert trial_key({OPTUNA_NUMBER: 3}) != trial_key({OPTUNA_NUMBER: 30})


def test_callback_pickled_without_newer_fields_still_works(tmp_path: object) -> None:
    from fairsearch.search.tune_trials import ResultsCallback

    old = ResultsCallback.__new__(ResultsCallback)
    old.__dict__.update({"results_dir": str(tmp_path), "min_interval_s": 10.0, "_last_write": 0.0})
    assert old._last_status == 0.0 and old._front == "none yet" and old.status_interval_s == 30.0
    old.announce([])  # logs a status line from the class defaults


def _fake_trial(trial_id: str, status: str, epoch: int) -> object:
    from types import SimpleNamespace

    result = {"epoch": epoch, "acc": 0.8, "max_acc_gap": 0.1, "timestamp": 1.0, "time_total_s": 2.0}
    return SimpleNamespace(
        trial_id=trial_id,
        status=status,
        last_result=result,
        config={"epochs": 2, "method": "vanilla"},
        checkpoint=None,
        error_file=None,
        num_failures=0,
    )


def test_trials_shut_down_by_ctrl_c_read_interrupted_not_completed(tmp_path: object) -> None:
    import pickle
    from pathlib import Path

    import pandas as pd

    from fairsearch.search.tune_trials import ResultsCallback

    callback = ResultsCallback(str(tmp_path))
    done, short, cut, waiting, again = (
        _fake_trial("done", "RUNNING", 2),
        _fake_trial("short", "RUNNING", 1),
        _fake_trial("cut", "RUNNING", 1),
        _fake_trial("wait", "PENDING", 0),
        _fake_trial("again", "RUNNING", 1),
    )
    trials = [done, short, cut, waiting, again]
    callback.on_trial_error(0, trials, again)  # failed for good in an earlier session...
    again.status, again.num_failures = "ERROR", 1  # as Tune counts it
    callback.on_trial_start(0, trials, again)  # ...and retried when the sweep was resumed
    again.status = "RUNNING"
    callback.on_trial_complete(0, trials, done)
    done.status = "TERMINATED"
    callback.on_trial_complete(0, trials, short)  # ended by the scheduler after one epoch
    short.status = "TERMINATED"
    # Ctrl-C: Tune snapshots the experiment (callback state included), then shuts the rest down
    saved = pickle.loads(pickle.dumps(callback.get_state()))
    cut.status = again.status = "TERMINATED"
    callback.on_experiment_end(trials)
    labels = pd.read_parquet(Path(str(tmp_path)) / "trials.parquet").set_index("trial_id")["status"]
    assert labels.to_dict() == {
        "done": "completed",
        "short": "stopped",
        "cut": "interrupted",
        "wait": "pending",
        "again": "interrupted",
    }
    failures = pd.read_parquet(Path(str(tmp_path)) / "trials.parquet").set_index("trial_id")["failures"]
    assert failures.to_dict() == {"done": 0, "short": 0, "cut": 0, "wait": 0, "again": 1}

    # resumed: a fresh callback gets the saved state back and tells the same story
    restored = ResultsCallback(str(tmp_path))
    restored.set_state(saved)
    restored.on_experiment_end(trials)
    again = pd.read_parquet(Path(str(tmp_path)) / "trials.parquet").set_index("trial_id")["status"]
    assert again["cut"] == "interrupted" and again["done"] == "completed"

    # a callback pickled before ended trials were tracked trusts Tune's TERMINATED, as before
    old = ResultsCallback.__new__(ResultsCallback)
    old.__dict__.update({"results_dir": str(tmp_path), "min_interval_s": 10.0, "_last_write": 0.0})
    old.on_experiment_end(trials)
    legacy = pd.read_parquet(Path(str(tmp_path)) / "trials.parquet").set_index("trial_id")["status"]
    assert legacy["cut"] == "stopped"  # epochs 1 of 2 and TERMINATED: the old reading


def test_the_callback_builds_again_only_the_records_of_trials_that_changed(tmp_path: object) -> None:
    import pickle

    from fairsearch.search.tune_trials import ResultsCallback, trial_record

    callback = ResultsCallback(str(tmp_path))
    trials = [_fake_trial(f"t{n}", "RUNNING", 2) for n in range(4)]
    first = callback.records(trials)
    assert callback.records(trials) == first
    assert all(a is b for a, b in zip(callback.records(trials), first, strict=True))  # kept, not rebuilt
    trials[1].last_result = {**trials[1].last_result, "acc": 0.9}  # a new report
    trials[2].status = "TERMINATED"
    trials[3].num_failures = 1
    again = callback.records(trials, completed=trials[0])
    assert [a is b for a, b in zip(again, first, strict=True)] == [False, False, False, False]
    assert again[1].val_metrics["acc"] == 0.9 and again[0].status == "completed"
    expected = [
        trial_record(n, t, completed=t is trials[0], interrupted=callback._interrupted(t))
        for n, t in enumerate(trials)
    ]
    assert again == expected
    assert callback.records(trials)[0].status == "running"  # no longer the completed one
    callback.write(trials)
    state = pickle.loads(pickle.dumps(callback)).__dict__
    assert "_kept" in callback.__dict__ and "_table" in callback.__dict__
    assert "_kept" not in state and "_table" not in state  # made again by the driver that resumes
    assert "_last_write" in callback.__dict__ and "_last_write" not in state  # another process's clock
    assert pickle.loads(pickle.dumps(callback))._due()  # so the resumed driver's first write is due


def test_trial_ends_are_joined_into_one_write_once_writing_costs_more_than_its_share(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write here takes 1 s of a fake clock: at a 10 % share the next may come 10 s after it. The ends
    in between are written together by the first write due, and the experiment's end writes at once."""
    from types import SimpleNamespace

    import fairsearch.search.tune_trials as tune_trials
    from fairsearch.search.tune_trials import ResultsCallback

    now = [100.0]
    monkeypatch.setattr(tune_trials, "time", SimpleNamespace(monotonic=lambda: now[0]))
    written: list[list[str]] = []

    class Timed(ResultsCallback):
        def write(self, trials: object, completed: object = None) -> None:
            written.append([t.trial_id for t in trials if t.status == "TERMINATED" or t is completed])
            now[0] += 1.0

    callback = Timed(str(tmp_path))
    callback.write_share = 0.1
    trials = [_fake_trial(f"t{n}", "RUNNING", 2) for n in range(4)]

    def end(n: int, seconds_later: float) -> None:
        now[0] += seconds_later
        callback.on_trial_complete(0, trials, trials[n])
        trials[n].status = "TERMINATED"

    end(0, 0.0)  # the first write is due at once
    assert written == [["t0"]]
    end(1, 5.0)  # 5 s after a 1-s write: not yet
    callback.on_step_end(0, trials)
    assert len(written) == 1
    now[0] += 4.9
    callback.on_step_end(0, trials)  # 9.9 s after it: not yet
    assert len(written) == 1
    end(2, 0.1)  # 10 s after it: this end writes the one before too
    assert written[-1] == ["t0", "t1", "t2"]
    end(3, 3.0)
    now[0] += 10.0
    callback.on_step_end(0, trials)  # no trial ends: the driver's step writes it
    assert written[-1] == ["t0", "t1", "t2", "t3"] and len(written) == 3
    now[0] += 10.0
    callback.on_step_end(0, trials)  # nothing new: nothing written
    assert len(written) == 3
    callback.on_experiment_end(trials)  # at once, due or not
    assert len(written) == 4
    callback.min_interval_s = 2.0  # a report writes at most every min_interval_s...
    now[0] += 2.0
    callback.on_trial_result(0, trials, trials[0], {})  # ...and no more often than the share allows
    assert len(written) == 4
    now[0] += 8.0
    callback.on_trial_result(0, trials, trials[0], {})
    assert len(written) == 5


def test_a_saved_experiment_another_version_wrote_is_refused_with_a_way_out(tmp_path: object) -> None:
    """Tune pickles the Tuner; one that names a module this fairsearch no longer has (a sweep made before
    ``fairsearch.resume`` was removed) cannot be restored, and the run says so instead of a traceback."""
    from pathlib import Path

    from fairsearch.search.sweep import _restore

    experiment = Path(str(tmp_path)) / "old"
    experiment.mkdir()
    (experiment / "tuner.pkl").write_bytes(b"cfairsearch.resume\nResumeCallback\n.")  # protocol 0: a global
    with pytest.raises(
        FairsearchError,
        match=r"old: its saved state was written by another version of fairsearch or Ray and cannot be read "
        r"here \(ModuleNotFoundError: No module named 'fairsearch.resume'\); run with --restart",
    ):
        _restore(str(experiment), lambda config: None)


# What a Ray Client driver is told when the server the head forked for it died at once
# (ray-project/ray#63202): Ray's client wraps the proxy's traceback, one of these three.
_PROXY = 'Initialization failure from server:\nTraceback (most recent call last):\n  File "proxier.py", line {}, in {}\n'
SERVER_DIED = {
    "exited": ConnectionAbortedError(
        _PROXY.format(765, "Datapath")
        + "    raise RuntimeError(\nRuntimeError: Starting Ray client server failed. See "
        "ray_client_server_23000.err for detailed logs.\n"
    ),
    "exiting": ConnectionAbortedError(
        _PROXY.format(765, "Datapath")
        + '  File "proxier.py", line 384, in start_specific_server\n    cmd = psutil_proc.cmdline()\n'
        "psutil.ZombieProcess: PID still exists but it's a zombie (pid=27764)\n"
    ),
    "silent": ConnectionAbortedError(
        _PROXY.format(780, "Datapath") + "RuntimeError: Proxy failed to Connect to backend! Check "
        "`ray_client_server.err` and `ray_client_server_23000.err` on the head node of the cluster\n"
    ),
}


def _ray_init_failing(monkeypatch: pytest.MonkeyPatch, errors: list[Exception]) -> list[str]:
    """``ray.init`` raising ``errors`` in turn, then connecting; returns the addresses it was called with."""
    calls: list[str] = []

    def init(address: str, **_: object) -> None:
        calls.append(address)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]

    monkeypatch.setattr(fairsearch.search.sweep.ray, "init", init)
    return calls


@pytest.mark.parametrize("died", sorted(SERVER_DIED))
@pytest.mark.parametrize("failures", range(1, RAY_CLIENT_ATTEMPTS))
def test_a_ray_client_server_that_died_as_it_started_is_connected_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failures: int, died: str
) -> None:
    calls = _ray_init_failing(monkeypatch, [SERVER_DIED[died]] * failures)
    with caplog.at_level(logging.WARNING, logger="fairsearch.search.sweep"):
        start_ray("ray://head:10001")
    assert calls == ["ray://head:10001"] * (failures + 1)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == failures and all("ray-project/ray#63202" in w for w in warnings), warnings
    assert warnings[-1].endswith(f"({failures + 1} of {RAY_CLIENT_ATTEMPTS})")


def test_a_ray_client_server_dying_every_time_is_refused_with_the_remedy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    died = list(SERVER_DIED.values())
    calls = _ray_init_failing(monkeypatch, [died[i % len(died)] for i in range(RAY_CLIENT_ATTEMPTS + 1)])
    with pytest.raises(FairsearchError) as refused:
        start_ray("ray://head:10001")
    assert len(calls) == RAY_CLIENT_ATTEMPTS
    message = str(refused.value)
    assert message.startswith("--address ray://head:10001: cannot connect to the Ray cluster (")
    assert f"{RAY_CLIENT_ATTEMPTS} times in a row" in message and "GRPC_ENABLE_FORK_SUPPORT=0" in message
    assert (
        "\n" not in message and "Traceback" not in message
    )  # the last line of Ray's answer, not its traceback


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("could not reach the head"),
        RuntimeError("Version mismatch"),
        ValueError("bad address"),
    ],
)
def test_other_connection_failures_are_refused_at_once(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    calls = _ray_init_failing(monkeypatch, [error])
    with pytest.raises(FairsearchError, match="cannot connect to the Ray cluster") as refused:
        start_ray("ray://head:10001")
    assert len(calls) == 1 and str(error) in str(refused.value)
    assert "GRPC_ENABLE_FORK_SUPPORT" not in str(refused.value)


def test_a_failed_trial_s_error_is_the_last_line_of_its_error_file_read_from_its_end(
    tmp_path: object,
) -> None:
    from pathlib import Path

    from fairsearch.search.tune_trials import ERROR_TAIL_BYTES, trial_record

    assert isinstance(tmp_path, Path)

    error_file = tmp_path / "error.txt"
    error_file.write_bytes(
        b"Traceback (most recent call last):\n" + b"  frame\n" * 2_000_000 + b"ValueError: boom\n\n"
    )
    assert error_file.stat().st_size > 100 * ERROR_TAIL_BYTES
    trial = _fake_trial("t1", "ERROR", 1)
    trial.error_file = str(error_file)  # type: ignore[attr-defined]
    assert trial_record(1, trial).error == "ValueError: boom"


def test_a_sweep_whose_every_trial_failed_exits_1_naming_the_first_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The outcome carries the first failed trial's error and how many failed trials had it; `run` prints
    it and exits 1 (it used to exit 0)."""
    from fairsearch.cli import EXIT_ALL_FAILED, main
    from fairsearch.output.results import TrialRecord, write_results
    from fairsearch.search.sweep import _outcome

    spec = parse_space({"name": "s", "trials": 3})
    records = [
        TrialRecord("t2", 2, "failed", {"method": "vanilla"}, error="RuntimeError: other"),
        TrialRecord("t0", 0, "failed", {"method": "vanilla"}, error="ValueError: boom"),
        TrialRecord("t1", 1, "failed", {"method": "vanilla"}, error="ValueError: boom"),
    ]
    write_results(tmp_path, records, {})
    outcome = _outcome(tmp_path, spec)
    assert (outcome.completed, outcome.failed, outcome.first_error) == (0, 3, ("ValueError: boom", 2))

    monkeypatch.setattr(fairsearch.search.sweep, "run_sweep", lambda *a, **k: outcome)
    (tmp_path / "s.yaml").write_text("name: s\n")
    assert main(["run", "--space", str(tmp_path / "s.yaml")]) == EXIT_ALL_FAILED == 1
    err = capsys.readouterr().err
    assert (
        "error: every trial failed (3); the first one's error, which 2 of them had: ValueError: boom" in err
    )

    records[0] = TrialRecord("t2", 2, "completed", {"method": "vanilla"}, {"acc": 0.9, "max_acc_gap": 0.1})
    write_results(tmp_path, records, {})
    monkeypatch.setattr(fairsearch.search.sweep, "run_sweep", lambda *a, **k: _outcome(tmp_path, spec))
    assert (
        main(["run", "--space", str(tmp_path / "s.yaml")]) == 0
    )  # one trial completed: the sweep gave an answer


def _killed_mid_write(path: Path) -> None:
    """An Optuna database whose writer was killed inside a transaction: a hot journal beside it, which
    a read-only connection cannot open ("attempt to write a readonly database")."""
    import sqlite3
    import subprocess
    import sys

    import optuna

    optuna.create_study(study_name="s", storage=f"sqlite:///{path}", directions=["maximize", "minimize"])
    code = (
        "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('PRAGMA cache_size=1'); c.execute('BEGIN'); "
        "c.execute(\"UPDATE studies SET study_name = 'x' || study_name\"); "
        "c.execute('CREATE TABLE filler (b BLOB)'); "
        "c.executemany('INSERT INTO filler VALUES (?)', [(b'0' * 4000,)] * 50); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert path.with_name(path.name + "-journal").stat().st_size > 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True).execute(
            "PRAGMA quick_check"
        ).fetchall()


def test_a_database_left_with_a_hot_journal_by_a_kill_is_checked_in_a_copy_and_left_as_it_is(
    tmp_path: Path,
) -> None:
    """A driver SIGKILLed while Optuna wrote: the checks before a resume read the database as the rollback
    will leave it (from a copy), and neither the file nor its journal changes."""
    import hashlib

    from fairsearch.search.preflight import _check_sqlite_file
    from fairsearch.search.sqlite_copy import settled

    path = tmp_path / "optuna.db"
    _killed_mid_write(path)

    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())}

    before = digests()
    _check_sqlite_file(path, "")  # an Optuna database once rolled back: accepted
    with settled(path) as (readable, copied):
        assert copied and readable != path
        import optuna

        assert optuna.get_all_study_names(f"sqlite:///{readable}") == ["s"]  # the rollback, in the copy
    assert digests() == before and set(before) == {"optuna.db", "optuna.db-journal"}


def test_a_trial_given_a_gpu_on_a_node_without_cuda_stops_unless_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from fairsearch.search.tune_trials import ALLOW_CPU_FOR_GPU, trial_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(ALLOW_CPU_FOR_GPU, raising=False)
    assert trial_device([]) is None  # no GPU asked: the trial's own choice
    with pytest.raises(
        RuntimeError, match=r"Ray gave this trial GPU\(s\) 1 on .*, but torch sees no CUDA device"
    ):
        trial_device(["1"])
    monkeypatch.setenv(ALLOW_CPU_FOR_GPU, "1")
    assert trial_device(["1"]) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trial_device(["0", "1"]) == "cuda"
