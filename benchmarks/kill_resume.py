"""Sweeps interrupted at random moments, resumed, and checked: is resume correct by construction?

Run from the repository root (about 40 s a sweep on 2 idle CPU cores)::

    .venv/bin/python benchmarks/kill_resume.py --runs 30
    .venv/bin/python benchmarks/kill_resume.py --runs 3 --seed 7 --trials 4 --epochs 2

Each run ``i`` draws, from ``random.Random(seed * 100_000 + i)`` (printed, so any run can be repeated
alone with ``--only i``):

- how it is interrupted, in turn: ``driver-sigkill`` (the driver and the local Ray it started, no
  clean-up), ``driver-sigint`` (Ctrl-C), ``worker-sigkill`` (the process of a trial that is training,
  chosen at random; the sweep goes on and retries it), ``driver-sigkill-twice`` (killed, resumed a few
  seconds, killed again), ``driver-sigkill-alone`` (the driver's process only, as ``kill -9 PID`` or the
  OOM killer would: the Ray it started is left to notice, and the sweep is resumed at once, beside
  whatever of it still runs);
- when: a uniform delay after the first report reaches ``trials.parquet`` (0 to ``--max-delay`` s).

Every driver that was interrupted is then run again with the same command, to its end. The checks:

- ``lost``: trials missing from ``trials.parquet`` or not ``completed`` (the space's ``trials``, each
  to its full epochs);
- ``twice``: parts of epochs trained to their end more than once, from each trial's own log of work
  (:meth:`fairsearch.train.checkpoint.TrialStore.trained`), over the trials of ``trials.parquet``;
- ``optuna``: rows whose ``number`` is not an Optuna trial COMPLETE with the same parameters and values;
- ``front``: ``pareto.parquet``'s search rows differ from a brute-force non-dominated set of the
  completed trials on (``val/acc`` max, ``val/max_acc_gap`` min);
- ``failures``: rows whose ``failures`` column is wrong: after ``worker-sigkill`` the killed worker's
  trial must count one failure or more, and every other trial of every run none.

Printed but not checked: ``outlived``, after ``driver-sigkill-alone``, the seconds until the last process
the killed driver had started exited (Ray's agents wait for their GCS client to give up).

A run passes when all five are 0 and both commands' exit codes are what they should be (130 after
Ctrl-C, 0 at the end). The table prints each run and the totals; ``--out`` keeps the sweeps and
``summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import psutil
import yaml

from fairsearch.search.tune_trials import STATE_FOLDER, trial_key
from fairsearch.spec.config import objective_directions, objective_keys
from fairsearch.spec.space import OPTUNA_NUMBER
from fairsearch.train.checkpoint import TrialStore

KINDS = ("driver-sigkill", "driver-sigint", "worker-sigkill", "driver-sigkill-twice", "driver-sigkill-alone")


@dataclass
class Run:
    """One interrupted sweep and what the checks found."""

    run: int
    seed: int
    kind: str
    delay_s: float
    interrupted_at: int  # trials completed when the interruption came
    lost: int = 0
    twice: int = 0
    optuna: int = 0
    front: int = 0
    failures: int = 0
    exit_ok: bool = True
    outlived_s: float | None = None  # driver-sigkill-alone: until the last process it started exited
    wall_s: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_ok and not (self.lost or self.twice or self.optuna or self.front or self.failures)


def _space(folder: Path, name: str, trials: int, epochs: int, seed: int) -> Path:
    doc = {
        "name": name,
        "objectives": {"group_by": "ethnicity"},
        "search": {
            "method": ["vanilla", "fr", "gr", "hybrid"],
            "lora_rank": [2, 4],
            "lam": {"low": 0.05, "high": 1.0, "log": True},
            "w_max": {"low": 1.0, "high": 10.0},
            "lr": {"low": 1e-3, "high": 3e-3, "log": True},
        },
        "fixed": {"epochs": epochs, "synthetic_n": 580, "batch_size": 16, "n_boot": 0},
        "trials": trials,
        "concurrency": 2,
        "sampler": {"name": "tpe", "seed": seed},
        "resources": {"cpus": 1},
        "max_failures": 3,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _command(space: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "fairsearch.cli", "run", "--space", str(space), "--results", str(results)]


def _completed(path: Path) -> int:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError):
        return 0
    return int((frame["status"] == "completed").sum())


def _reported(path: Path) -> bool:
    """A trial has reported (``trials.parquet`` holds a row with a validation accuracy)."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError):
        return False
    return "val/acc" in frame and bool(frame["val/acc"].notna().any())


def _trial_workers(root_pid: int) -> list[psutil.Process]:
    """The Ray worker processes under the driver that are busy: the trials. (A trial's process title is
    ``ray::IDLE`` while its training thread runs, like the idle workers Ray keeps in its pool, so they
    are told apart by the CPU they use.)"""
    try:
        children = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for child in children:
        try:
            title = " ".join(child.cmdline())
            if title.startswith("ray::") and "Agent" not in title:
                child.cpu_percent(None)
                workers.append(child)
        except psutil.Error:
            continue
    time.sleep(1.0)
    busy = []
    for worker in workers:
        try:
            if worker.cpu_percent(None) > 20.0:
                busy.append(worker)
        except psutil.Error:
            continue
    return busy


@dataclass
class _Killed:
    """A trial worker was SIGKILLed; ``number``: its trial's Optuna number, None when no report named it."""

    number: int | None


class _Outliving:
    """Watches, from a thread, the processes a killed driver had started, until the last one exits."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        self._processes = processes
        self._started = time.monotonic()
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        alive = list(self._processes)
        while alive:
            time.sleep(0.5)
            alive = [p for p in alive if _running(p)]
        self.seconds = time.monotonic() - self._started

    def wait(self, timeout: float) -> float | None:
        """Seconds the last one outlived the driver; None if one still runs after ``timeout`` (then every
        one left is killed, so that runs do not pile up)."""
        self._thread.join(timeout)
        if self.seconds is None:
            for process in self._processes:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        return self.seconds


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _interrupt(
    command: list[str], env: dict[str, str], results: Path, kind: str, delay: float, rng: random.Random
) -> tuple[int, bool, str, Any]:
    """Starts the sweep, interrupts it as ``kind`` says, and returns (trials completed then, the exit code
    was as it should be, a note, what the interruption touched: a :class:`_Killed` when a worker was
    killed, an :class:`_Outliving` for ``driver-sigkill-alone``, else None)."""
    trials_file = results / "trials.parquet"
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while not _reported(trials_file):
            if proc.poll() is not None or time.monotonic() > deadline:
                return _completed(trials_file), False, "ended before any report", None
            time.sleep(0.2)
        time.sleep(delay)
        done = _completed(trials_file)
        if proc.poll() is not None:
            return done, proc.returncode == 0, "ended before the interruption", None
        if kind == "driver-sigint":
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=180)
            return done, proc.returncode == 130 and "resume with:" in err, "", None
        if kind == "worker-sigkill":
            workers = _trial_workers(proc.pid)
            if not workers:
                proc.communicate(timeout=600)
                return done, proc.returncode == 0, "no trial worker running at the moment drawn", None
            victim = rng.choice(workers)
            number = _trial_of(victim, results)
            victim.kill()
            _, err = proc.communicate(timeout=900)  # the sweep retries the trial and goes on
            return done, proc.returncode == 0, "" if proc.returncode == 0 else err[-300:], _Killed(number)
        if kind == "driver-sigkill-alone":
            started = psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.communicate(timeout=60)
            return done, proc.returncode == -signal.SIGKILL, "", _Outliving(started)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        return done, proc.returncode == -signal.SIGKILL, "", None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _trial_of(worker: psutil.Process, results: Path) -> int | None:
    """The Optuna number of the trial a worker process trains, from the ``pid`` of its reports in Tune's
    experiment folder (None when none of them names it)."""
    experiment = results.parent / ".tune" / results.name
    for path in experiment.glob("*/result.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if rows and int(rows[-1].get("pid", -1)) == worker.pid:
                return int(rows[-1]["config"][OPTUNA_NUMBER])
    return None


def _front_errors(trials: pd.DataFrame, pareto: pd.DataFrame) -> int:
    """Rows by which the written front differs from a brute-force non-dominated set."""
    keys, directions = list(objective_keys("val/")), list(objective_directions())
    done = trials[trials["status"] == "completed"]
    signs = [1.0 if d == "max" else -1.0 for d in directions]
    points = [[s * float(row[k]) for s, k in zip(signs, keys, strict=True)] for _, row in done.iterrows()]
    expected = set()
    for i, (trial_id, p) in enumerate(zip(done["trial_id"], points, strict=True)):
        dominated = any(
            all(q[k] >= p[k] for k in range(len(p))) and any(q[k] > p[k] for k in range(len(p)))
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            expected.add(trial_id)
    written = pareto.loc[pareto["front"] == "search", "trial_id"]  # the trained front; thresholds follow
    return len(expected ^ set(written))


def _optuna_errors(trials: pd.DataFrame, name: str, url: str) -> int:
    """Rows whose Optuna trial (same number) is not COMPLETE with the row's parameters and values."""
    study = optuna.load_study(study_name=name, storage=url)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    keys = list(objective_keys("val/"))
    errors = 0
    for _, row in trials.iterrows():
        ot = by_number.get(int(row["number"]))
        if ot is None or ot.state != optuna.trial.TrialState.COMPLETE:
            errors += 1
            continue
        same_params = all(
            f"param/{k}" in row
            and (
                row[f"param/{k}"] == v or (isinstance(v, float) and math.isclose(float(row[f"param/{k}"]), v))
            )
            for k, v in ot.params.items()
        )
        same_values = ot.values is not None and all(
            math.isclose(v, float(row[k]), rel_tol=1e-9, abs_tol=1e-12)
            for v, k in zip(ot.values, keys, strict=True)
        )
        errors += not (same_params and same_values)
    return errors


def _failure_errors(trials: pd.DataFrame, killed: _Killed | None) -> int:
    """Rows whose ``failures`` is wrong: the trial whose worker was killed (any one trial when its number
    is unknown) must count at least one, the others none."""
    failed = trials.set_index("number")["failures"] > 0
    if killed is not None and killed.number is not None:
        return int(failed.drop(index=[killed.number]).sum()) + int(not failed.get(killed.number, False))
    return abs(int(failed.sum()) - int(killed is not None))


def _twice(trials: pd.DataFrame, experiment: Path, reports: int) -> int:
    root = str(experiment / STATE_FOLDER)
    count = 0
    for number in trials["number"]:
        trained = TrialStore(root, trial_key({OPTUNA_NUMBER: int(number)})).trained()
        count += len(trained) - len(set(trained))
        count += len(set(range(1, reports + 1)) - set(trained))  # a part skipped counts too
    return count


def run_one(i: int, seed: int, args: argparse.Namespace, out: Path, env: dict[str, str]) -> Run:
    draw = seed * 100_000 + i
    rng = random.Random(draw)
    kind = KINDS[i % len(KINDS)]
    delay = rng.uniform(0.0, args.max_delay)
    name = f"kill{i:03d}"
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    space = _space(folder, name, args.trials, args.epochs, seed=draw % 1000)
    results = folder / "results"
    command = _command(space, results)
    t0 = time.monotonic()
    first = "driver-sigkill" if kind == "driver-sigkill-twice" else kind
    done, exit_ok, note, touched = _interrupt(command, env, results / name, first, delay, rng)
    if kind == "driver-sigkill-twice" and exit_ok:
        _, exit_ok, note, _ = _interrupt(
            command, env, results / name, "driver-sigkill", rng.uniform(0, 5), rng
        )
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    run = Run(i, draw, kind, round(delay, 2), done, exit_ok=exit_ok and resumed.returncode == 0, note=note)
    if isinstance(touched, _Outliving):
        outlived = touched.wait(timeout=300)
        run.outlived_s = None if outlived is None else round(outlived, 1)
        if outlived is None:
            run.note += " a process of the killed driver still ran 300 s after the resume ended"
    if resumed.returncode != 0:
        run.note = (run.note + " resume: " + resumed.stderr[-300:]).strip()
    run.wall_s = round(time.monotonic() - t0, 1)
    try:
        trials = pd.read_parquet(results / name / "trials.parquet")
        pareto = pd.read_parquet(results / name / "pareto.parquet")
    except (OSError, ValueError) as err:
        run.lost = args.trials
        run.note += f" unreadable results: {err}"
        return run
    full = trials[(trials["status"] == "completed") & (trials["epochs_done"] == args.epochs)]
    run.lost = args.trials - len(full)
    run.twice = _twice(full, results / ".tune" / name, args.epochs)
    run.optuna = _optuna_errors(trials, name, f"sqlite:///{results / name / 'optuna.db'}")
    run.front = _front_errors(trials, pareto)
    run.failures = _failure_errors(trials, touched if isinstance(touched, _Killed) else None)
    if not args.keep:
        shutil.rmtree(results / ".tune", ignore_errors=True)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, default=None, help="run this one run index alone")
    parser.add_argument("--first", type=int, default=0, help="start at this run index (split a long job)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-delay", type=float, default=15.0, help="seconds after the first report")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps and summary.json here")
    parser.add_argument("--keep", action="store_true", help="keep Ray Tune's experiment folders too")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="fairsearch-kill-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "FAIRSEARCH_CACHE": str(out / "cache"),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    indices = [args.only] if args.only is not None else list(range(args.first, args.runs))
    print(f"{len(indices)} runs, seed {args.seed}, {args.trials} trials x {args.epochs} epochs; out {out}")
    header = f"{'run':>3} {'seed':>7} {'kind':<21} {'delay':>6} {'done@':>5} {'lost':>4} {'twice':>5} "
    header += f"{'optuna':>6} {'front':>5} {'fails':>5} {'exit':>4} {'wall s':>7} {'outlived':>8}  note"
    print(header, flush=True)
    runs = []
    for i in indices:
        run = run_one(i, args.seed, args, out, env)
        runs.append(run)
        print(
            f"{run.run:>3} {run.seed:>7} {run.kind:<21} {run.delay_s:>6.1f} {run.interrupted_at:>5} "
            f"{run.lost:>4} {run.twice:>5} {run.optuna:>6} {run.front:>5} {run.failures:>5} "
            f"{'ok' if run.exit_ok else 'BAD':>4} {run.wall_s:>7.1f} "
            f"{'' if run.outlived_s is None else f'{run.outlived_s:.1f}':>8}  {run.note}",
            flush=True,
        )
    passed = sum(r.ok for r in runs)
    by_kind = {k: [r for r in runs if r.kind == k] for k in KINDS}
    print(f"\npassed {passed}/{len(runs)}")
    for kind, rs in by_kind.items():
        if rs:
            print(f"  {kind:<21} {sum(r.ok for r in rs)}/{len(rs)} passed")
    totals = {f: sum(getattr(r, f) for r in runs) for f in ("lost", "twice", "optuna", "front", "failures")}
    print("  totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    outlived = [r.outlived_s for r in runs if r.outlived_s is not None]
    if outlived:
        print(f"  a lone-killed driver's processes outlived it by {min(outlived):.0f}-{max(outlived):.0f} s")
    summary: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": [asdict(r) for r in runs],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0 if passed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
