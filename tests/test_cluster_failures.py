"""Sweeps on a multi-node Ray cluster on one machine: a node lost mid-trial, the driver killed, URI storage.

The cluster is ``ray.cluster_utils.Cluster``: a head with no CPUs (so no trial can run on it) and two
one-CPU worker nodes, all started by the test process; the sweep runs as ``fairsearch run --address``
in a subprocess, exactly as a user joins a real cluster. Every Ray file of a test (session folders, the
``ray_current_cluster`` address file) lives under a private ``RAY_TMPDIR``, so a local ``ray.init()``
elsewhere on the machine never joins a test cluster by accident.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from sweep_helpers import (
    assert_each_epoch_trained_once,
    assert_reports_reached_tune,
    result_rows,
    run_command,
    start_sweep,
    trained_parts,
    tune_reports,
    write_space,
)

from fairsearch.search.tune_trials import STATE_FOLDER, trial_key

pytestmark = pytest.mark.slow

EPOCHS = 3
SWEEP_TIMEOUT_S = 420.0


def _space(folder: Path, name: str, trials: int, epochs: int = EPOCHS) -> Path:
    """A tiny sweep on CPUs only, each failed trial retried up to 3 times."""
    return write_space(
        folder, name, trials, fixed={"epochs": epochs}, max_failures=3, resources={"cpus": 1, "gpus": 0}
    )


@pytest.fixture
def ray_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The environment of the test process, its Ray nodes and the sweep subprocesses.

    ``RAY_TMPDIR`` is a short private folder (Ray's socket paths must stay under ~107 characters, which
    pytest's ``tmp_path`` can exceed); it is removed afterwards, its Ray logs kept in
    ``tmp_path/ray-logs`` for a failure's post-mortem (pytest keeps the last runs' ``tmp_path``).
    """
    ray_tmp = Path(tempfile.mkdtemp(prefix="fsray", dir="/tmp"))
    settings = {
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "FAIRSEARCH_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)  # Ray's nodes inherit these; trials run in their worker processes
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield {**os.environ, **settings}
    deadline = time.monotonic() + 30
    while (left := _ray_processes(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for proc in left:  # only this test's own processes; reported as a failure below
        proc.kill()
    for logs in ray_tmp.glob("**/session_2*/logs"):
        with contextlib.suppress(shutil.Error, OSError):  # a file that vanished mid-copy: keep the rest
            shutil.copytree(logs, tmp_path / "ray-logs" / logs.parent.name)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}"


@pytest.fixture
def cluster(ray_env: dict[str, str]) -> Iterator[Any]:
    """A head with no CPUs and two one-CPU worker nodes; shut down however the test ends."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def _ray_processes(ray_tmp: Path) -> list[psutil.Process]:
    """Processes started under this test's ``RAY_TMPDIR`` (Ray renames its workers, but not their env)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("RAY_TMPDIR") == str(ray_tmp):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _raylet_pid(node: Any) -> int:
    """The pid of a ``ray._private.node.Node``'s raylet."""
    from ray._private import ray_constants

    return int(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)


def _node_of(cluster: Any, pid: int) -> Any | None:
    """The worker node whose raylet started the process ``pid`` (trial actors are raylet children)."""
    try:
        ancestors = {p.pid for p in psutil.Process(pid).parents()}
    except psutil.NoSuchProcess:
        return None
    return next((n for n in cluster.worker_nodes if _raylet_pid(n) in ancestors), None)


def _wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[str], timeout: float) -> Any:
    """Polls ``check`` until it returns something other than None; fails early if the sweep exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout} s")


def _finished(proc: subprocess.Popen[str], timeout: float = SWEEP_TIMEOUT_S) -> str:
    """Waits for the sweep subprocess, asserts it exited 0, and returns its stdout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the sweep ran past {timeout} s:\n{err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    return out


def _assert_exits(pid: int, timeout: float) -> None:
    """Fails unless the process ``pid`` ends (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)
    raise AssertionError(f"process {pid} still runs after {timeout} s")


def _read_while_written(path: Path) -> pd.DataFrame:
    """A results file the sweep may be replacing right now, read through one handle (a path opened twice
    could straddle the atomic replace)."""
    with open(path, "rb") as f:
        return pd.read_parquet(f)


def _assert_all_completed(results: Path, name: str, trials: int, epochs: int) -> pd.DataFrame:
    """Every trial completed all its epochs, once: in trials.parquet and in the Optuna study."""
    frame = pd.read_parquet(results / name / "trials.parquet")
    assert len(frame) == trials and frame["trial_id"].is_unique, frame[["trial_id", "status"]]
    assert (frame["status"] == "completed").all(), frame[["trial_id", "status", "error"]]
    assert (frame["epochs_done"] == epochs).all(), frame[["trial_id", "epochs_done"]]
    with sqlite3.connect(results / name / "optuna.db") as db:
        states = dict(db.execute("select state, count(*) from trials group by state").fetchall())
    # A retried or resumed trial is still one Optuna trial. A suggestion asked just before the driver
    # was killed, and so never run, is marked FAIL once the sweep ends: nothing is left RUNNING.
    assert states.get("COMPLETE") == trials and "RUNNING" not in states, states
    assert set(states) <= {"COMPLETE", "FAIL"} and states.get("FAIL", 0) <= 2, states  # <= concurrency
    return frame


def _restart(rows: list[dict[str, Any]]) -> int | None:
    """Index of the first report after a restart (Tune counts ``iterations_since_restore`` from 1 again)."""
    return next((i for i, r in enumerate(rows) if i > 0 and int(r["iterations_since_restore"]) == 1), None)


def _assert_resumed(rows: list[dict[str, Any]], old_pid: int) -> None:
    """The trial reached every report, and went on in a new process from its own last checkpoint: it
    sent the reports that checkpoint holds again (:func:`fairsearch.search.tune_trials.tune_trainable`), then
    trained the rest (that no part was trained twice is :func:`assert_each_epoch_trained_once`'s check).
    """
    assert_reports_reached_tune(rows[0]["trial_id"], rows, EPOCHS)
    restart = _restart(rows)
    assert restart is not None, f"no restart: {rows}"
    resent = [int(r["report"]) for r in rows[restart:]]
    assert resent == list(range(1, EPOCHS + 1)), rows  # from its checkpoint's first report to the end
    assert all(int(r["pid"]) != old_pid for r in rows[restart:]), rows


def _live_reports(ray_env: dict[str, str], storage: Path, name: str) -> dict[str, list[dict[str, Any]]]:
    """Each trial's reports as the driver logs them now: Tune writes ``result.json`` in the driver's
    session folder as each report arrives, and copies it to storage only now and then (trials write
    no checkpoint of Tune's to hurry it); storage's copy where the driver's has fewer rows."""
    reports = tune_reports(storage / name)
    pattern = f"**/session_*/artifacts/*/{name}/driver_artifacts/*/result.json"
    for path in Path(ray_env["RAY_TMPDIR"]).glob(pattern):
        rows = result_rows(path)
        if rows and len(rows) > len(reports.get(rows[0]["trial_id"], [])):
            reports[rows[0]["trial_id"]] = rows
    return reports


def _frozen_unfinished(experiment: Path, rows: list[dict[str, Any]], pid: int) -> bool:
    """Freezes (SIGSTOP) a trial's process and tells whether the trial is still unfinished, by its own log
    of trained parts (written before each report is sent); if it has ended, thaws it and says no.

    The candidates come from Tune's ``result.json``, which can lag a trial by seconds, and an epoch of the
    tiny model takes well under one: a trial seen "between two epochs" there may have ended, and Tune
    seen it end, by the time the test strikes.
    """
    os.kill(pid, signal.SIGSTOP)
    config = rows[0]["config"]
    if len(trained_parts(experiment).get(trial_key(config), [])) < EPOCHS:
        return True
    os.kill(pid, signal.SIGCONT)
    return False


def test_trial_on_a_lost_node_resumes_from_its_checkpoint_on_another(
    tmp_path: Path, ray_env: dict[str, str], cluster: Any
) -> None:
    name, trials = "lostnode", 3
    space, results = _space(tmp_path, name, trials), tmp_path / "results"
    storage = results / ".tune"
    proc = start_sweep(run_command(space, results, "--address", cluster.address), ray_env, new_session=False)
    try:

        def mid_trial() -> tuple[str, int, Any] | None:
            for trial_id, rows in _live_reports(ray_env, storage, name).items():
                if 1 <= int(rows[-1]["epoch"]) < EPOCHS:
                    pid = int(rows[-1]["pid"])
                    node = _node_of(cluster, pid)
                    if node is not None and _frozen_unfinished(storage / name, rows, pid):
                        return trial_id, pid, node
            return None

        # A node dies all at once: the trial is frozen where it is (mid_trial), then the node's raylet and
        # agents are SIGKILLed, then the trial process itself.
        victim, victim_pid, node = _wait_for("a trial between two epochs", mid_trial, proc, 300)
        cluster.remove_node(node, allow_graceful=False)
        os.kill(victim_pid, signal.SIGKILL)
        _assert_exits(victim_pid, timeout=30)
        cluster.add_node(num_cpus=1)  # a replacement joins, as an autoscaler would start one
        printed = _finished(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    frame = _assert_all_completed(results, name, trials, EPOCHS).set_index("trial_id")
    assert str(frame.loc[victim, "checkpoint"]).startswith(str(storage / name))
    assert frame.loc[victim, "failures"] >= 1  # completed, and the row says it recovered
    recovered = int((frame["failures"] > 0).sum())
    assert f"{trials} trials completed ({recovered} after a failure, restarted from a checkpoint" in printed
    _assert_resumed(tune_reports(storage / name)[victim], victim_pid)


def test_killed_driver_rejoins_the_cluster_and_finishes_every_trial_once(
    tmp_path: Path, ray_env: dict[str, str], cluster: Any
) -> None:
    name, trials = "driverkill", 3
    space, results = _space(tmp_path, name, trials), tmp_path / "results"
    storage = results / ".tune"
    command = run_command(
        space, results, "--address", "auto"
    )  # RAY_TMPDIR makes 'auto' find this test's cluster
    proc = start_sweep(command, ray_env, new_session=False)
    try:

        def completed_and_mid_trial() -> tuple[pd.DataFrame, str, int] | None:
            path = results / name / "trials.parquet"
            if not path.exists():
                return None
            frame = _read_while_written(path)
            done = set(frame.loc[frame["status"] == "completed", "trial_id"])
            for trial_id, rows in _live_reports(ray_env, storage, name).items():
                if done and trial_id not in done and 1 <= int(rows[-1]["epoch"]) < EPOCHS:
                    pid = int(rows[-1]["pid"])
                    if _frozen_unfinished(storage / name, rows, pid):
                        return frame, trial_id, pid
            return None

        before, victim, victim_pid = _wait_for(
            "a completed trial beside one between two epochs", completed_and_mid_trial, proc, 300
        )
        proc.send_signal(signal.SIGKILL)  # the driver alone: it joined the cluster and started no Ray process
        proc.communicate(timeout=60)
        os.kill(victim_pid, signal.SIGCONT)  # thawed once its driver is dead: Tune cannot see it end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    _assert_exits(victim_pid, timeout=60)  # the dead driver's trial actors end with its job
    assert len(cluster.worker_nodes) == 2 and cluster.remaining_processes_alive()  # the nodes stay up
    assert (before["status"] == "completed").sum() < trials

    again = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming sweep" in again.stderr
    after = _assert_all_completed(results, name, trials, EPOCHS)
    done_before = before.loc[before["status"] == "completed"].set_index("trial_id")
    assert set(done_before.index) <= set(after["trial_id"])
    assert (
        after.set_index("trial_id").loc[done_before.index, "finished_at"] == done_before["finished_at"]
    ).all()
    reported = tune_reports(storage / name)
    assert sorted(reported) == sorted(after["trial_id"])
    _assert_resumed(reported[victim], victim_pid)
    assert_each_epoch_trained_once(storage / name, EPOCHS)


def test_storage_uri_holds_experiment_state_and_checkpoints_and_resumes(
    tmp_path: Path, ray_env: dict[str, str]
) -> None:
    name, trials, epochs = "uristore", 3, 2
    space, results, remote = _space(tmp_path, name, trials, epochs), tmp_path / "results", tmp_path / "remote"
    command = run_command(space, results, "--storage", remote.as_uri())  # file:///…: a pyarrow filesystem URI
    assert remote.as_uri().startswith("file:///")

    # a local Ray this time; killed with its driver once a trial has finished
    proc = start_sweep(command, ray_env)
    try:

        def one_completed() -> pd.DataFrame | None:
            path = results / name / "trials.parquet"
            frame = _read_while_written(path) if path.exists() else None
            return frame if frame is not None and (frame["status"] == "completed").any() else None

        before = _wait_for("a completed trial", one_completed, proc, 300)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert (before["status"] == "completed").sum() < trials  # the kill left work to resume
    assert not (results / ".tune").exists()  # nothing went to the default storage beside the results
    assert list((remote / name).glob("experiment_state-*.json")) and (remote / name / "tuner.pkl").is_file()

    again = subprocess.run(command, env=ray_env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming sweep {name!r} from {remote.as_uri()}/{name}" in again.stderr
    after = _assert_all_completed(results, name, trials, epochs)
    assert set(before.loc[before["status"] == "completed", "trial_id"]) <= set(after["trial_id"])
    assert not (results / ".tune").exists()

    trial_dirs = sorted(d for d in (remote / name).iterdir() if d.is_dir() and d.name != STATE_FOLDER)
    assert len(trial_dirs) == trials  # Tune's, beside the trials' own stores
    assert_each_epoch_trained_once(remote / name, epochs)
    for checkpoint in after["checkpoint"]:  # each trial's own store, named with the storage's scheme
        assert str(checkpoint).startswith("file:///"), checkpoint
        local = Path(str(checkpoint).removeprefix("file://"))
        assert local.is_dir() and local.is_relative_to(remote / name / "trials"), checkpoint
        assert (local / "test_metrics.json").is_file() and len(list(local.parent.glob("report-*"))) == 1
    front = pd.read_parquet(results / name / "pareto.parquet")
    assert len(front) >= 1 and front["test/acc"].notna().all()  # read from checkpoints in the URI storage


def test_sweep_through_ray_client_runs_on_the_cluster(
    tmp_path: Path, ray_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--address ray://host:port``: the sweep is driven through Ray Client; Tune's driver then runs on
    the head (Ray moves ``Tuner.fit`` there), so the results land on the head's disk, here the same one.

    The nodes start as ``cluster/`` starts its heads, without gRPC's fork handlers: with them, the head's
    Ray Client proxy forked a server that crashed before its ``exec`` on 5 of 25 first connections
    (ray-project/ray#63202, ``benchmarks/ray_client_connect.py``). The driver's own retry of that failure is tested in test_sweep_unit.py."""
    import socket

    from ray.cluster_utils import Cluster

    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "0")  # the nodes' environment, not the driver's
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "ray_client_server_port": port},
    )
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        name, trials = "client", 2
        space, results = _space(tmp_path, name, trials, epochs=2), tmp_path / "results"
        proc = subprocess.run(
            run_command(space, results, "--address", f"ray://127.0.0.1:{port}"),
            env=ray_env,
            capture_output=True,
            text=True,
            timeout=SWEEP_TIMEOUT_S,
        )
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{trials} trials completed, 0 failed" in proc.stdout + proc.stderr
    _assert_all_completed(results, name, trials, epochs=2)
    front = pd.read_parquet(results / name / "pareto.parquet")
    assert len(front) >= 1 and front["test/acc"].notna().all()


def test_trials_share_the_gpus_nodes_declare_each_seeing_the_ids_ray_gave_it(
    ray_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU-only node that declares 2 GPUs (as ``ray start --num-gpus 2``) and a space asking half a GPU
    per trial: four trials run at once, two on each GPU id, each told its ids; the node's
    ``FAIRSEARCH_ALLOW_CPU_FOR_GPU=1`` lets them train on its CPU (without it they stop, see
    tests/test_sweep_unit.py)."""
    from ray.cluster_utils import Cluster

    from fairsearch.search.tune_trials import ALLOW_CPU_FOR_GPU, GPU_IDS

    monkeypatch.setenv(ALLOW_CPU_FOR_GPU, "1")
    ray_env = {**ray_env, ALLOW_CPU_FOR_GPU: "1"}
    space = write_space(
        tmp_path, "gpus", 4, fixed={"epochs": 1}, concurrency=4, resources={"cpus": 0.5, "gpus": 0.5}
    )
    results = tmp_path / "results"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2, num_gpus=2)
        cluster.wait_for_nodes()
        proc = subprocess.run(
            run_command(space, results, "--address", cluster.address),
            env=ray_env,
            capture_output=True,
            text=True,
            timeout=SWEEP_TIMEOUT_S,
        )
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = tune_reports(results / ".tune" / "gpus")
    assert len(reports) == 4
    ids = {trial: {r[GPU_IDS] for r in rows} for trial, rows in reports.items()}
    assert all(len(found) == 1 for found in ids.values()), ids  # one assignment per trial
    per_gpu = Counter(next(iter(found)) for found in ids.values())
    assert per_gpu == {"0": 2, "1": 2}, per_gpu  # half a GPU each: two trials on each id
    spans = [
        (rows[-1]["reported_at"] - rows[-1]["trial_time_s"], rows[-1]["reported_at"])
        for rows in reports.values()
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all four ran at once
