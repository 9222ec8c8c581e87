"""``tracking: {mlflow: URI}`` / ``--mlflow URI``: a sweep logged to a real ``mlflow server`` (SQLite
backend, on 127.0.0.1, tests/mlflow_server.py) as one parent run and one nested run per trial, killed and
resumed without a run or a report logged twice; and bad tracking input refused before anything is written.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow_server import MlflowServer
from sweep_helpers import (
    completed_trials,
    kill_after_first_completion,
    run_command,
    run_to_end,
    start_sweep,
    write_space,
)

from fairsearch.search.tracking import TRACKING_FILE, SweepTracking

pytestmark = pytest.mark.slow  # each case starts an MLflow server (about 15 s) and most the CLI


@pytest.fixture(scope="module")
def server() -> Iterator[MlflowServer]:
    with MlflowServer() as running:
        yield running


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}


def test_a_tracked_sweep_killed_mid_way_resumes_into_the_same_runs(
    tmp_path: Path, server: MlflowServer
) -> None:
    space = write_space(tmp_path, "tracked", 4, tracking={"mlflow": server.uri})
    results = tmp_path / "results"
    command = run_command(space, results)
    proc = start_sweep(command, _env(tmp_path))
    kill_after_first_completion(proc, results / "tracked" / "trials.parquet")
    assert completed_trials(results / "tracked" / "trials.parquet") < 4, "the sweep ended before the kill"

    resumed = run_to_end(command, _env(tmp_path), timeout=480)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "View run" not in resumed.stdout  # MLflow's own links do not mix into the results
    trials = pd.read_parquet(results / "tracked" / "trials.parquet")
    assert (trials["status"] == "completed").all() and len(trials) == 4

    client = server.client()
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]  # the resume found the sweep's run
    parent = parents[0]
    record = json.loads((results / "tracked" / TRACKING_FILE).read_text())
    assert record["run_id"] == parent.info.run_id and record["uri"] == server.uri
    assert parent.info.status == "FINISHED" and parent.data.params["trials"] == "4"
    assert json.loads(parent.data.params["search"])["method"] == ["vanilla", "hybrid"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["space.json"]

    children = {int(r.data.tags["fairsearch.trial"]): r for r in runs if r is not parent}
    assert sorted(children) == sorted(trials["number"])  # one run per trial, none twice
    front = pd.read_parquet(results / "tracked" / "pareto.parquet")
    members = set(front.loc[front["front"] == "search", "number"])
    for number, run in children.items():
        row = trials.set_index("number").loc[number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["fairsearch.status"] == "completed"
        assert run.data.params["method"] == row["param/method"]
        assert float(run.data.params["lr"]) == pytest.approx(row["param/lr"])
        epochs = client.get_metric_history(run.info.run_id, "epoch")
        assert sorted((m.step, m.value) for m in epochs) == [(1, 1.0), (2, 2.0)]  # each report once
        accuracy = client.get_metric_history(run.info.run_id, "val/acc")
        assert len(accuracy) == 2 and accuracy[-1].value == pytest.approx(row["val/acc"])
        if number in members:  # the front's members carry the front and their test figures
            assert "search" in run.data.tags["front"] and "trained" in run.data.tags["kind"]
            test = front[(front["front"] == "search") & (front["number"] == number)].iloc[0]
            assert run.data.metrics["test/acc"] == pytest.approx(test["test/acc"])
            assert run.data.metrics["test/max_acc_gap"] == pytest.approx(test["test/max_acc_gap"])
        else:
            assert "test/acc" not in run.data.metrics and "search" not in run.data.tags.get("front", "")


@pytest.fixture
def quick_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client settings for this test only (the tracking sets defaults in the environment)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


@pytest.mark.usefixtures("quick_client")
def test_a_report_logged_before_a_kill_is_not_logged_again(tmp_path: Path, server: MlflowServer) -> None:
    """The steps a killed trial trains again from its checkpoint reach its run once, read back from the
    server by a new driver (a new :class:`SweepTracking`), not from memory."""
    (tmp_path / "space.json").write_text("{}")
    first = SweepTracking.start(server.uri, "steps", tmp_path, {"trials": 1}, tmp_path / "space.json")
    first.report(0, {"method": "gr"}, {"acc": 0.5, "epoch": 1.0}, 1)
    first.report(0, {"method": "gr"}, {"acc": 0.6, "epoch": 2.0}, 2)
    again = SweepTracking.start(server.uri, "steps", tmp_path, {"trials": 1}, tmp_path / "space.json")
    assert again.run_id == first.run_id
    for step, acc in ((2, 0.61), (3, 0.7)):  # report 2 trained again after the kill, then report 3
        again.report(0, {"method": "gr"}, {"acc": acc, "epoch": float(step)}, step)
    client = server.client()
    (run,) = client.search_runs([again.experiment_id], filter_string="tags.`fairsearch.trial` = '0'")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "acc"))
    assert history == [(1, 0.5), (2, 0.6), (3, 0.7)]


@pytest.mark.usefixtures("quick_client")
def test_a_server_that_stops_answering_costs_warnings_not_the_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After three failed calls in a row the driver stops logging, and says so once."""
    with MlflowServer() as own:
        (tmp_path / "space.json").write_text("{}")
        tracking = SweepTracking.start(own.uri, "gone", tmp_path, {}, tmp_path / "space.json")
    for step in range(1, 6):
        tracking.report(0, {}, {"acc": 0.5}, step)  # no exception reaches Tune
    warnings = [r.getMessage() for r in caplog.records if r.name == "fairsearch.search.sweep"]
    assert len(warnings) == 3 and "stopped logging" in warnings[-1]


@pytest.mark.parametrize(
    ("top", "extra", "fragment"),
    [
        (
            {"tracking": {"mlflow": "ftp://elsewhere"}},
            (),
            "tracking.mlflow: ftp://elsewhere must be an MLflow",
        ),
        ({"tracking": {"mlflow": 5000}}, (), "tracking.mlflow: 5000 must be an MLflow tracking URI"),
        ({"tracking": {"wandb": "x"}}, (), "tracking.wandb: unknown key; allowed are ['mlflow']"),
        ({}, ("--mlflow", "127.0.0.1:5000"), "--mlflow: 127.0.0.1:5000 must be an MLflow tracking URI"),
        ({}, ("--mlflow", "CLOSED"), "--mlflow http://127.0.0.1:"),
    ],
    ids=["scheme", "not-text", "unknown-key", "no-scheme", "no-server"],
)
def test_bad_tracking_input_is_refused_before_anything_is_written(
    tmp_path: Path, top: dict, extra: tuple[str, ...], fragment: str
) -> None:
    if "CLOSED" in extra:  # a port nothing listens on
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        extra = ("--mlflow", f"http://127.0.0.1:{port}")
    space = write_space(tmp_path, "bad", 2, **top)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        run_command(space, tmp_path / "results", *extra),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no results folder, no cache
