"""``--storage s3://``: a sweep's Tune state and checkpoints on S3 (moto's server on 127.0.0.1, reached
through the standard AWS settings), killed and resumed; and a missing bucket or bad credentials refused
before anything is written."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from s3_server import S3Server
from safetensors.torch import load_file
from sweep_helpers import (
    completed_trials,
    kill_after_first_completion,
    run_command,
    run_to_end,
    start_sweep,
    write_space,
)

pytestmark = pytest.mark.slow  # each case starts a server and the CLI; the sweep runs minutes


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        server.create_bucket("sweeps")
        yield server


def _env(tmp_path: Path, server: S3Server) -> dict[str, str]:
    return server.env(
        {**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}
    )


def test_a_sweep_on_s3_killed_mid_way_resumes_and_completes_every_trial_once(
    tmp_path: Path, s3: S3Server
) -> None:
    space = write_space(tmp_path, "s3k", 4)
    results = tmp_path / "results"
    command = run_command(space, results, "--storage", "s3://sweeps/runs")
    env = _env(tmp_path, s3)
    proc = start_sweep(command, env)
    kill_after_first_completion(proc, results / "s3k" / "trials.parquet")
    assert completed_trials(results / "s3k" / "trials.parquet") < 4, "the sweep ended before the kill"

    resumed = run_to_end(command, env, timeout=480)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = pd.read_parquet(results / "s3k" / "trials.parquet")
    assert len(trials) == 4 and (trials["status"] == "completed").all() and trials["number"].is_unique
    assert trials["checkpoint"].str.startswith("s3://sweeps/runs/s3k/").all()
    keys = set(s3.keys("sweeps", "runs/s3k/"))
    assert any(k.startswith("runs/s3k/experiment_state-") for k in keys)  # Tune's state on S3
    for location in trials["checkpoint"]:  # every checkpoint's files on S3, its manifest last
        prefix = location.removeprefix("s3://sweeps/").rstrip("/") + "/"
        assert {"manifest.json", "scores.npz", "trainable.pt"} <= {
            k[len(prefix) :] for k in keys if k.startswith(prefix)
        }
    study = optuna.load_study(study_name="s3k", storage=f"sqlite:///{results / 's3k' / 'optuna.db'}")
    done = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert done == set(trials["number"])  # Optuna and Parquet agree
    assert not list((results.parent).glob("**/fairsearch-ckpt-*"))

    # the chosen model comes out of S3 as it does out of a local folder: its head is the checkpoint's
    number = int(trials["number"].iloc[0])
    out = tmp_path / "export"
    exported = subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", "export", str(results / "s3k"), "--trial", str(number), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    location = trials.set_index("number").loc[number, "checkpoint"]
    key = location.removeprefix("s3://sweeps/").rstrip("/") + "/trainable.pt"
    weights = torch.load(io.BytesIO(s3.get("sweeps", key)), weights_only=True)
    head = load_file(out / "head.safetensors")
    assert head and all(torch.equal(tensor, weights[f"head.{name}"].float()) for name, tensor in head.items())


@pytest.mark.parametrize(
    ("bucket", "auth", "fragment"),
    [
        ("missing", False, "--storage s3://missing/runs: no bucket 'missing' there, or these credentials"),
        ("sweeps", True, "--storage s3://sweeps/runs: cannot reach it ("),
    ],
    ids=["missing-bucket", "bad-credentials"],
)
def test_a_missing_bucket_or_bad_credentials_is_refused_before_anything_is_written(
    tmp_path: Path, s3: S3Server, bucket: str, auth: bool, fragment: str
) -> None:
    space = write_space(tmp_path, "s3x", 2)
    before = sorted(p.name for p in tmp_path.iterdir())
    server = S3Server(auth=True).__enter__() if auth else s3
    try:
        proc = subprocess.run(
            run_command(space, tmp_path / "results", "--storage", f"s3://{bucket}/runs"),
            env=_env(tmp_path, server),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if auth:
            server.stop()
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no results folder, no cache
    assert not s3.keys("sweeps", "runs/s3x")
