"""Bad input of every kind: one message, exit code 2, no traceback, and nothing written.

Every case builds its inputs in ``tmp_path`` (the working folder of the run), snapshots that tree (paths,
sizes, modification times and contents), runs the CLI in-process, and checks the exit code, the message,
that no traceback is printed and that the tree is unchanged: every input is checked before any file or
folder is created. ``ray.init`` raises, so a check that lets bad input through fails the case instead of
starting a sweep. Memory bombs run in a child process under a memory limit.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from refusals import MAX_MESSAGE, refused, snapshot

from fairsearch.errors import FairsearchError, clip_value
from fairsearch.output.results import PARETO_FILE, TRIALS_FILE, TrialRecord, write_results

FOLDERS = {"train": "Training", "val": "Validation", "test": "Test"}


class ReachedRay(Exception):
    """Raised by ``ray.init`` in these tests: bad input got past every check."""


@pytest.fixture(scope="module", autouse=True)
def _imported() -> None:
    """The run and train commands' imports (Ray, Optuna, torch) happen once, outside the cases' time."""
    import fairsearch.search.sweep
    import fairsearch.train.trial  # noqa: F401


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs each case in ``tmp_path``, with caches there (so that a write to them shows), and Ray off."""
    import ray

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise ReachedRay("bad input reached ray.init")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "a_folder").mkdir()
    yield


# --- space files ----------------------------------------------------------------------------------

BILLION_LAUGHS = "".join(
    [
        "lol: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
        *(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)),
    ]
)

SPACES: list[tuple[str, str | bytes, str]] = [
    # syntax
    ("unclosed-list", "name: s\nsearch:\n  method: [vanilla, fr\n", "s.yaml: not valid YAML at line"),
    ("bad-indent", "name: s\n  search: 1\n", "s.yaml: not valid YAML at line 2"),
    ("tab-indent", "name: s\nsearch:\n\tlr: 1\n", "s.yaml: not valid YAML at line 3"),
    ("empty-file", "", "s.yaml: a space file is a mapping of keys, got NoneType"),
    ("comment-only", "# nothing\n", "s.yaml: a space file is a mapping of keys, got NoneType"),
    ("top-level-list", "- name\n- s\n", "s.yaml: a space file is a mapping of keys, got list"),
    ("top-level-scalar", "hello\n", "s.yaml: a space file is a mapping of keys, got str"),
    (
        "two-documents",
        "name: a\n---\nname: b\n",
        "s.yaml: not valid YAML at line 2, column 1: but found another",
    ),
    ("duplicate-key", "name: a\ntrials: 2\nname: b\n", "duplicate key 'name' (first at line 1)"),
    ("python-tag", "name: !!python/object/apply:os.system ['true']\n", "s.yaml: not valid YAML at line 1"),
    ("undefined-alias", "name: *nowhere\n", "found undefined alias 'nowhere'"),
    ("nul-byte", "name: s\x00\n", "character '\\x00' at offset 7 is not allowed"),
    ("binary", bytes(range(256)) * 4, "s.yaml: not a text file (byte 0x80 at offset 128 is not UTF-8)"),
    ("latin-1", "name: caf\xe9\n".encode("latin-1"), "s.yaml: not a text file (byte 0xe9 at offset 9"),
    # types
    ("trials-text", "trials: ten\n", "trials: 'ten' must be an integer from 1 to 100000"),
    ("trials-bool", "trials: true\n", "trials: True must be an integer from 1 to 100000"),
    ("trials-zero", "trials: 0\n", "trials: 0 must be an integer from 1 to 100000"),
    ("trials-huge", "trials: 1000000000000\n", "trials: 1000000000000 must be an integer from 1 to 100000"),
    ("concurrency-negative", "concurrency: -1\n", "concurrency: -1 must be an integer from 1 to 10000"),
    ("name-number", "name: 123\n", "name: 123 must be 1-64 letters"),
    ("name-path", "name: ../evil\n", "name: '../evil' must be 1-64 letters"),
    ("name-hidden", "name: .hidden\n", "name: '.hidden' must be 1-64 letters"),
    ("name-date", "name: 2024-01-01\n", "name: datetime.date(2024, 1, 1) must be 1-64 letters"),
    ("search-string", "search: lr\n", "search: 'lr' must be a mapping of parameter"),
    ("search-range-text", "search:\n  lr: {low: a, high: b}\n", "search.lr.low: 'a' must be a number"),
    ("search-range-half", "search:\n  lr: {low: 0.001}\n", "search.lr: a range needs both 'low' and 'high'"),
    ("search-yaml11-float", "search:\n  lr: {low: 1e-5, high: 0.01}\n", "YAML 1.1 reads '1e-5' as text"),
    (
        "search-empty-choices",
        "search:\n  lora_rank: []\n",
        "search.lora_rank.choices: [] must be a non-empty",
    ),
    (
        "search-duplicate-choices",
        "search:\n  lora_rank: [4, 4]\n",
        "search.lora_rank.choices: [4, 4] has dupl",
    ),
    ("search-set", "search:\n  lora_rank: !!set {4, 8}\n", "search.lora_rank: {4, 8} must be a list"),
    ("method-unknown", "search:\n  method: [vanilla, grr]\n", "search.method: 'grr' is not one of"),
    ("method-range", "search:\n  method: {low: 1, high: 2}\n", "search.method: must be a list of methods"),
    ("method-mapping", "search:\n  method: [vanilla, {a: 1}]\n", "search.method: {'a': 1} is not one of"),
    ("step-negative", "search:\n  lora_rank: {low: 1, high: 8, step: -1}\n", "step: -1 must be a number > 0"),
    ("step-nan", "search:\n  lora_rank: {low: 1, high: 8, step: .nan}\n", "step: nan must be a number > 0"),
    (
        "step-and-log",
        "search:\n  lam: {low: 0.1, high: 1, log: true, step: 0.1}\n",
        "'step' and 'log' cannot",
    ),
    ("log-text", "search:\n  lam: {low: 0.1, high: 1, log: maybe}\n", "search.lam.log: 'maybe' must be true"),
    ("range-extra-key", "search:\n  lam: {low: 0.1, high: 1, by: 2}\n", "search.lam: unknown keys ['by']"),
    ("unknown-searched", "search:\n  colour: [red]\n", "search.colour: not a searchable parameter"),
    ("searched-and-fixed", "search:\n  lr: [0.001]\nfixed:\n  lr: 0.01\n", "search.lr: also set in 'fixed'"),
    ("fixed-list", "fixed: [1, 2]\n", "fixed: [1, 2] must be a mapping of trial settings"),
    ("fixed-unknown", "fixed:\n  colour: red\n", "fixed.colour: unknown trial setting"),
    ("fixed-null-key", "fixed:\n  null: 1\n", "fixed.None: unknown trial setting"),
    ("fixed-group-by", "fixed:\n  group_by: race\n", "fixed.group_by: unknown trial setting"),
    # bounds
    (
        "low-above-high",
        "search:\n  lora_rank: {low: 16, high: 4}\n",
        "search.lora_rank: low 16 must be < high 4",
    ),
    (
        "log-from-zero",
        "search:\n  weight_decay: {low: 0, high: 0.1, log: true}\n",
        "a log range needs low > 0",
    ),
    ("epochs-negative", "fixed:\n  epochs: -1\n", "fixed.epochs: -1 must be >="),
    ("lr-nan", "fixed:\n  lr: .nan\n", "fixed.lr: nan must be finite"),
    ("lr-inf", "fixed:\n  lr: .inf\n", "fixed.lr: inf must be finite"),
    ("w-max-below-one", "fixed:\n  w_max: 0.5\n", "fixed.w_max: 0.5 must be >= 1"),
    ("dro-eta-negative", "fixed:\n  eta: -0.1\n", "fixed.eta: -0.1 must be >= 0"),
    (
        "dro-eta-searched-below-zero",
        "search:\n  eta: {low: -1, high: 1}\n",
        "search.eta.low: -1 must be >= 0",
    ),
    ("select-unknown", "fixed:\n  select: best\n", "fixed.select: 'best' is not one of ['last', 'best_acc'"),
    ("select-searched", "search:\n  select: [last, best_acc]\n", "search.select: not a searchable parameter"),
    ("method-unknown-in-list", "search:\n  method: [vanilla, jtt2]\n", "'jtt2'"),
    (
        "jtt-first-stage-not-below-epochs",
        "fixed:\n  method: jtt\n  jtt_epochs: 4\n  epochs: 4\n",
        "fixed.jtt_epochs: 4 must stay below epochs (fixed.epochs can be 4)",
    ),
    ("cpus-zero", "resources: {cpus: 0}\n", "resources.cpus: 0 must be a finite number > 0"),
    ("cpus-nan", "resources: {cpus: .nan}\n", "resources.cpus: nan must be a finite number > 0"),
    ("gpus-negative", "resources: {gpus: -1}\n", "resources.gpus: -1 must be 'auto' or a number >= 0"),
    ("gpus-inf", "resources: {gpus: .inf}\n", "resources.gpus: inf must be 'auto' or a number >= 0"),
    (
        "max-failures-huge",
        "max_failures: 10000000000000000000000\n",
        "max_failures: 10000000000000000000000 must",
    ),
    ("confirm-seeds", "confirm: {seeds: 99}\n", "confirm.seeds: 99 must be an integer from 0 to 20"),
    ("confirm-scalar", "confirm: 3\n", "confirm: 3 must be a mapping such as {seeds: 2}"),
    # unknown keys and values
    ("unknown-top-key", "colour: red\n", "colour: unknown key; allowed keys are ['name'"),
    ("number-top-key", "1: x\n", "s.yaml: 1: unknown key"),
    ("objectives-key", "objectives: {group_by: race, fairness: max}\n", "objectives.fairness: unknown key"),
    ("objectives-direction", "objectives: {accuracy: min}\n", "objectives.accuracy: 'min' must be 'max'"),
    ("group-by-unknown", "objectives: {group_by: race*shoe}\n", "objectives.group_by: 'race*shoe' must be"),
    ("group-by-repeated", "objectives: {group_by: race*race}\n", "objectives.group_by: 'race*race' must be"),
    (
        "objective-wrong-way",
        "objectives: {minimize: [acc]}\n",
        "objectives.minimize: 'acc' is maximized, not",
    ),
    ("objective-unknown", "objectives: {maximize: [f1]}\n", "objectives.maximize: 'f1' is not a metric"),
    ("objective-twice", "objectives: {maximize: [acc, acc]}\n", "objectives.maximize: 'acc' is named twice"),
    (
        "objectives-one",
        "objectives: {maximize: [], minimize: [max_acc_gap]}\n",
        "are 1 objective(s); a sweep",
    ),
    (
        "objectives-four",
        "objectives: {maximize: [acc, auc, es_auc], minimize: [max_acc_gap]}\n",
        "are 4 objective(s); a sweep has 2 or 3",
    ),
    (
        "objectives-not-list",
        "objectives: {maximize: 3}\n",
        "objectives.maximize: 3 must be a list of metrics",
    ),
    ("constraint-unknown", "constraints: {gap: 0.02}\n", "constraints.gap: unknown metric; allowed"),
    (
        "constraint-percent",
        "constraints: {max_acc_gap: 2}\n",
        "constraints.max_acc_gap: 2 must be a fraction",
    ),
    ("constraint-side", "constraints: {acc: {atleast: 0.5}}\n", "constraints.acc.atleast: unknown key"),
    ("constraints-list", "constraints: [max_acc_gap]\n", "constraints: ['max_acc_gap'] must be a mapping"),
    (
        "constraint-min-above-max",
        "constraints: {acc: {min: 0.3, max: 0.1}}\n",
        "constraints.acc: min 0.3 is above max 0.1, so no value can meet both",
    ),
    (
        "constraint-floor-above-ceiling-of-auc",
        "constraints: {auc: {max: 0.6, min: 0.61}}\n",
        "constraints.auc: min 0.61 is above max 0.6",
    ),
    (
        "constraint-floor-on-gap",
        "constraints: {max_acc_gap: {min: 0.05}}\n",
        "constraints.max_acc_gap.min: MaxAccGap is minimised, so a floor on it keeps only the worse trials; "
        "it takes a ceiling only (max_acc_gap: 0.05, or {max: 0.05})",
    ),
    (
        "constraint-floor-on-gap-beside-a-ceiling",
        "constraints: {max_acc_gap: {min: 0.0, max: 0.1}}\n",
        "constraints.max_acc_gap.min: MaxAccGap is minimised",
    ),
    ("constraint-nan", "constraints: {acc: .nan}\n", "constraints.acc: nan must be a fraction from 0 to 1"),
    ("constraint-inf", "constraints: {acc: {max: .inf}}\n", "constraints.acc.max: inf must be a fraction"),
    (
        "constraint-negative",
        "constraints: {worst_group_acc: -0.1}\n",
        "constraints.worst_group_acc: -0.1 must",
    ),
    ("sampler-unknown", "sampler: cmaes\n", "sampler.name: 'cmaes' is not one of ['tpe'"),
    ("sampler-list-name", "sampler: {name: [tpe]}\n", "sampler.name: ['tpe'] is not one of ['tpe'"),
    ("sampler-seed", "sampler: {name: tpe, seed: -1}\n", "sampler.seed: -1 must be an integer >= 0"),
    ("sampler-key", "sampler: {name: tpe, speed: 2}\n", "sampler.speed: unknown key"),
    ("resources-key", "resources: {tpus: 1}\n", "resources.tpus: unknown key"),
    ("scheduler-string", "scheduler: asha\n", "scheduler: 'asha' must be a mapping"),
    ("scheduler-unknown", "scheduler: {name: asha}\n", "scheduler.name: 'asha' is not one of"),
    ("model-number", "model: 5\n", "model: 5 must be a string (a hub id or a folder) or null"),
    ("data-empty", "data: ''\n", "data: '' must be a string (a hub id or a folder) or null"),
    ("optuna-storage-number", "optuna_storage: 5\n", "optuna_storage: 5 must be a database URL string"),
    # aliases, depth, size
    ("recursive-alias", "name: &a [*a]\n", "an alias refers to a node that contains it"),
    ("nested-20000-lists", "name: s\nsearch: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than 32"),
    (
        "nested-10000-maps",
        "name: s\nsearch: " + "{a: " * 10_000 + "1" + "}" * 10_000,
        "nested deeper than 32",
    ),
    (
        "deep-through-aliases",
        "a: &a0 "
        + "[" * 20
        + "]" * 20
        + "\n"
        + "".join(f"b{i}: &a{i} [[*a{i - 1}]]\n" for i in range(1, 20)),
        "aliases expand to lists and mappings nested deeper than 32",
    ),
    ("over-64-kib", "name: s\n" + "# padding\n" * 7000, "s.yaml: larger than 64 KiB, so not a space file"),
    ("huge-name", "name: " + "x" * 60_000 + "\n", "name: 'xxxxxxxx"),
    ("huge-key", "? " + "x" * 60_000 + "\n: 1\n", "xxxxxxx…: unknown key"),
    ("huge-choices", "search:\n  lora_rank: [" + ", ".join(["a"] * 20_000) + "]\n", "'a' must be a number"),
    ("many-problems", "".join(f"k{i}: 1\n" for i in range(100)), "… and 85 more problems"),
    ("long-alias-name", "name: *" + "z" * 30_000 + "\n", "found undefined alias 'zzzz"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in SPACES], ids=[c[0] for c in SPACES])
def test_bad_space_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, fragment: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    refused(capsys, tmp_path, ["run", "--space", "s.yaml"], fragment)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda root: root / "missing.yaml", "missing.yaml: cannot read the space file (No such file"),
        (lambda root: root, "cannot read the space file (Is a directory)"),
        (lambda root: root / "a_file" / "s.yaml", "cannot read the space file (Not a directory)"),
    ],
    ids=["missing", "a-folder", "under-a-file"],
)
def test_unreadable_space_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], fragment: str
) -> None:
    refused(capsys, tmp_path, ["train", "--space", str(make(tmp_path))], fragment)


def _bomb_run(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    limit = 3 << 30  # a bomb that got through would pass this at once

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", "run", "--space", "bomb.yaml"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        preexec_fn=limit_memory,
        env={**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1"},
    )


LAUGHS_IN_A_LIST = "".join(
    [
        "search:\n  lora_rank:\n    - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
        *(f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)),
    ]
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "text",
    [
        BILLION_LAUGHS + "name: *l9\n",
        LAUGHS_IN_A_LIST,
        LAUGHS_IN_A_LIST.replace("lora_rank:", "method:") + "fixed:\n  lam: *l9\n",
    ],
    ids=["under-name", "inside-search-list", "under-fixed"],
)
def test_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path, text: str) -> None:
    (tmp_path / "bomb.yaml").write_text(text)
    before = snapshot(tmp_path)
    proc = _bomb_run(tmp_path)
    assert proc.returncode == 2, proc.stderr[-MAX_MESSAGE:]
    assert "aliases expand to more than 1048576 nodes" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr) < MAX_MESSAGE
    assert snapshot(tmp_path) == before


# --- command-line flags ---------------------------------------------------------------------------


def _space(tmp_path: Path, **doc: Any) -> str:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", **doc}))
    return "s.yaml"


FLAGS: list[tuple[str, list[str], str]] = [
    (
        "set-without-equals",
        ["train", "--space", "s.yaml", "--set", "lora_rank"],
        "--set 'lora_rank': expected KEY",
    ),
    (
        "set-unknown",
        ["train", "--space", "s.yaml", "--set", "colour=red"],
        "--set colour: unknown trial setting",
    ),
    (
        "set-text-for-number",
        ["train", "--space", "s.yaml", "--set", "lora_rank=abc"],
        "--set lora_rank: 'abc' must",
    ),
    ("set-negative-lr", ["train", "--space", "s.yaml", "--set", "lr=-1"], "--set lr: -1 must be >"),
    (
        "set-unknown-method",
        ["train", "--space", "s.yaml", "--set", "method=grr"],
        "--set method: 'grr' is not one",
    ),
    (
        "set-broken-yaml",
        ["train", "--space", "s.yaml", "--set", "lora_rank=[4"],
        "--set lora_rank: '[4' must be",
    ),
    ("set-deep-yaml", ["train", "--space", "s.yaml", "--set", "lr=" + "[" * 5000], "--set lr: '[[[["),
    ("set-huge", ["train", "--space", "s.yaml", "--set", "x" * 50_000], "--set 'xxxxxxxx"),
    (
        "resume-without-checkpoint",
        ["train", "--space", "s.yaml", "--resume", "--out", "o"],
        "--resume: no checkpoint",
    ),
    ("train-out-a-file", ["train", "--space", "s.yaml", "--out", "a_file"], "--out a_file: a_file is a file"),
    (
        "train-out-under-file",
        ["train", "--space", "s.yaml", "--out", "a_file/o"],
        "--out a_file/o: a_file is a file",
    ),
    ("run-name-path", ["run", "--space", "s.yaml", "--name", "../x"], "name: '../x' must be 1-64 letters"),
    ("run-name-empty", ["run", "--space", "s.yaml", "--name", ""], "name: '' must be 1-64 letters"),
    (
        "run-address",
        ["run", "--space", "s.yaml", "--address", "not an address"],
        "--address 'not an address':",
    ),
    ("run-address-port", ["run", "--space", "s.yaml", "--address", "head:99999"], "--address 'head:99999':"),
    (  # a closed port: refused at once (Ray's own connect would wait minutes), before anything is written
        "run-address-closed",
        ["run", "--space", "s.yaml", "--address", "127.0.0.1:1"],
        "--address 127.0.0.1:1: nothing accepts connections at 127.0.0.1:1",
    ),
    (
        "run-results-file",
        ["run", "--space", "s.yaml", "--results", "a_file"],
        "a_file is a file, not a folder",
    ),
    (
        "run-results-under-file",
        ["run", "--space", "s.yaml", "--results", "a_file/r"],
        "a_file is a file, not a",
    ),
    ("synth-n-zero", ["data", "synth", "out", "--n", "0"], "--n 0: must be an integer from 30 to 100000"),
    (
        "synth-n-negative",
        ["data", "synth", "out", "--n", "-5"],
        "--n -5: must be an integer from 30 to 100000",
    ),
    ("synth-n-huge", ["data", "synth", "out", "--n", str(10**12)], "--n 1000000000000: must be an integer"),
    (
        "synth-size-huge",
        ["data", "synth", "out", "--size", "100000"],
        "--size 100000: must be an integer from 16",
    ),
    (
        "synth-size-small",
        ["data", "synth", "out", "--size", "4"],
        "--size 4: must be an integer from 16 to 1024",
    ),
    (
        "synth-too-many-bytes",
        ["data", "synth", "out", "--n", "90000", "--size", "512"],
        "GiB of images; at most 2",
    ),
    ("synth-seed-negative", ["data", "synth", "out", "--seed", "-1"], "--seed -1: must be an integer from 0"),
    ("synth-exists", ["data", "synth", "a_file"], "a_file: already exists; give a new folder"),
    ("synth-under-file", ["data", "synth", "a_file/out"], "data synth a_file/out: a_file is a file"),
    ("argparse-bad-int", ["data", "synth", "out", "--n", "many"], "argument --n: invalid int value: 'many'"),
    ("argparse-unknown-flag", ["run", "--space", "s.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    ("argparse-missing-space", ["run"], "the following arguments are required: --space"),
    ("argparse-unknown-command", ["fly"], "invalid choice: 'fly'"),
]


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in FLAGS], ids=[c[0] for c in FLAGS])
def test_bad_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    _space(tmp_path)
    refused(capsys, tmp_path, argv, fragment)


# --- data folders ---------------------------------------------------------------------------------


def _subject(label: int, race: int | None = 2, **overrides: Any) -> dict[str, Any]:
    """One subject's npz keys; ethnicity and gender follow the label; an override of None drops a key."""
    keys: dict[str, Any] = {
        "slo_fundus": np.full((6, 5), 40 + 10 * label, dtype=np.uint8),
        "glaucoma": np.array(label),
        "race": None if race is None else np.array(race),
        "gender": np.array(label),
        "ethnicity": np.array(label),
        "language": np.array(0),
        "maritalstatus": np.array(0),
        "age": np.array(60.5),
    }
    keys |= overrides
    return {k: v for k, v in keys.items() if v is not None}


def _dataset(root: Path, subjects: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """A tiny npz-variant FairVLMed folder: 4 subjects a split, both labels and ethnicities, races 1, 2."""
    if subjects is None:
        subjects = {s: [_subject(0), _subject(1), _subject(0, race=1), _subject(1, race=1)] for s in FOLDERS}
    number = 0
    for split, items in subjects.items():
        (root / FOLDERS[split]).mkdir(parents=True, exist_ok=True)
        for keys in items:
            number += 1
            np.savez(root / FOLDERS[split] / f"data_{number:05d}.npz", **keys)
    return root


def _first(root: Path, split: str = "train") -> Path:
    return sorted((root / FOLDERS[split]).glob("data_*.npz"))[0]


def _truncate(root: Path) -> None:
    victim = _first(root)
    victim.write_bytes(victim.read_bytes()[:100])


def _text_npz(root: Path) -> None:
    _first(root).write_text("this is not a zip file\n")


def _pickled(root: Path) -> None:
    np.savez(_first(root), **_subject(0, race=np.array({"evil": 1}, dtype=object)))


def _rewrite(root: Path, **overrides: Any) -> None:
    np.savez(_first(root), **_subject(0, **overrides))


def _remove_split(root: Path) -> None:
    for path in (root / "Test").iterdir():
        path.unlink()
    (root / "Test").rmdir()


def _empty_split(root: Path) -> None:
    for path in (root / "Validation").iterdir():
        path.unlink()


def _one_class(root: Path) -> None:
    for path in sorted((root / "Validation").glob("*.npz")):
        np.savez(path, **_subject(1))


def _group_only_in_val(root: Path) -> None:
    np.savez(_first(root, "val"), **_subject(0, race=0))  # an Asian subject, and none in training


def _csv(text: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        (root / "data_summary.csv").write_text(text)

    return write


def _binary_csv(root: Path) -> None:
    (root / "data_summary.csv").write_bytes(bytes(range(256)) * 8)


DATA: list[tuple[str, Callable[[Path], None] | None, str]] = [
    ("truncated-npz", _truncate, "data_00001.npz: cannot read this .npz file, it looks corrupt or truncated"),
    ("text-as-npz", _text_npz, "data_00001.npz: cannot read this .npz file"),
    ("pickled-npz", _pickled, "holds an object array (object) that needs pickle to load"),
    ("no-label", lambda r: _rewrite(r, glaucoma=None), "data_00001.npz: no label key 'glaucoma'"),
    (
        "no-image",
        lambda r: _rewrite(r, slo_fundus=None),
        "data_00001.npz: no image key: expected 'slo_fundus'",
    ),
    ("no-race", lambda r: _rewrite(r, race=None), "data_00001.npz: no attribute key 'race'"),
    (
        "image-rank-4",
        lambda r: _rewrite(r, slo_fundus=np.zeros((2, 2, 2, 2), np.uint8)),
        "has shape (2, 2, 2, 2)",
    ),
    ("image-text", lambda r: _rewrite(r, slo_fundus=np.full((6, 5), "a")), "expected a numeric image"),
    (
        "race-code",
        lambda r: _rewrite(r, race=np.array(7)),
        "has unknown race code 7; allowed codes: 0 (Asian)",
    ),
    (
        "label-two",
        lambda r: _rewrite(r, glaucoma=np.array(2)),
        "key 'glaucoma' has value 2; expected 0 or 'no'",
    ),
    ("label-array", lambda r: _rewrite(r, glaucoma=np.array([0, 1])), "key 'glaucoma' should hold one value"),
    ("missing-split", _remove_split, "missing split folder(s) Test/"),
    ("empty-split", _empty_split, "folder FairVLMed/Validation holds no data_*.npz files"),
    ("one-class", _one_class, "split 'val' holds only glaucoma (1) samples"),
    ("group-absent-from-training", _group_only_in_val, "group 'Asian' (code 0) has 1 samples in split 'val'"),
    ("csv-columns", _csv("filename,use\ndata_00001.npz,training\n"), "data_summary.csv: missing column(s)"),
    ("csv-binary", _binary_csv, "data_summary.csv: cannot read the CSV"),
    (
        "csv-use",
        _csv(
            "filename,glaucoma,use,race,gender,ethnicity,language,maritalstatus\n1,yes,sometimes,white,male,n,e,s\n"
        ),
        "column 'use' has value 'sometimes'; expected training, validation or test",
    ),
]


@pytest.mark.parametrize(("damage", "fragment"), [c[1:] for c in DATA], ids=[c[0] for c in DATA])
def test_bad_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[Path], None], fragment: str
) -> None:
    root = _dataset(tmp_path / "FairVLMed")
    damage(root)
    refused(capsys, tmp_path, ["data", "inspect", "FairVLMed"], fragment)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda root: None, "FairVLMed: dataset folder does not exist"),
        (lambda root: (root / "FairVLMed").write_text("a file"), "FairVLMed: dataset folder does not exist"),
        (lambda root: (root / "FairVLMed").mkdir(), "missing split folder(s) Training/, Validation/, Test/"),
    ],
    ids=["missing", "a-file", "empty"],
)
def test_missing_or_empty_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], object], fragment: str
) -> None:
    make(tmp_path)
    refused(capsys, tmp_path, ["data", "inspect", "FairVLMed"], fragment)


def _black_female_only_in_val(root: Path) -> None:
    # gender follows the label, so training holds no Black (race 1) female (gender 0) subject
    items = {s: [_subject(0), _subject(1), _subject(1, race=1), _subject(1, race=1)] for s in FOLDERS}
    items["val"][2] = _subject(0, race=1)
    _dataset(root, items)


RUN_DATA: list[tuple[str, Callable[[Path], object], dict[str, Any], str]] = [
    ("missing", lambda root: None, {}, "FairVLMed: dataset folder does not exist"),
    (
        "truncated-npz",
        lambda root: _truncate(_dataset(root)),
        {},
        "data_00001.npz: cannot read this .npz file",
    ),
    ("pickled-npz", lambda root: _pickled(_dataset(root)), {}, "needs pickle to load"),
    (
        "group-missing-in-train",
        lambda root: _group_only_in_val(_dataset(root)),
        {},
        "group 'Asian' (code 0) has 1 samples in split 'val'",
    ),
    (
        "intersection-missing-in-train",
        _black_female_only_in_val,
        {"objectives": {"group_by": "race*gender"}},
        "group_by 'race*gender': groups ['Black*Female'] have val samples but no training samples",
    ),
    (
        "one-group-in-val",
        lambda root: _dataset(root),
        {"objectives": {"group_by": "language"}},
        "group_by 'language': the validation split holds samples of 1 group(s) ['English']",
    ),
]


@pytest.mark.parametrize(("make", "doc", "fragment"), [c[1:] for c in RUN_DATA], ids=[c[0] for c in RUN_DATA])
def test_run_with_bad_data_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], object],
    doc: dict[str, Any],
    fragment: str,
) -> None:
    make(tmp_path / "FairVLMed")
    _space(tmp_path, data="FairVLMed", **doc)
    refused(capsys, tmp_path, ["run", "--space", "s.yaml"], fragment)


def test_train_with_bad_data_leaves_no_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _space(tmp_path, data="FairVLMed")
    refused(capsys, tmp_path, ["train", "--space", "s.yaml", "--out", "o"], "dataset folder does not exist")


@pytest.mark.parametrize("command", ["run", "train"])
@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (  # 120 training images of the 580, batches of 16: 8 steps an epoch
            {"fixed": {"synthetic_n": 580, "reports_per_epoch": 50}},
            "reports_per_epoch: 50 is more than the 8 optimizer steps of an epoch (120 training images, "
            "batch_size 16, grad_accum 1)",
        ),
        (
            {"fixed": {"synthetic_n": 580, "reports_per_epoch": 3, "grad_accum": 4}},
            "reports_per_epoch: 3 is more than the 2 optimizer steps",
        ),
        (  # the FairVLMed folder of _dataset: 4 training images
            {"data": "FairVLMed", "fixed": {"reports_per_epoch": 2}},
            "reports_per_epoch: 2 is more than the 1 optimizer steps of an epoch (4 training images",
        ),
    ],
    ids=["synthetic", "grad-accum", "data-folder"],
)
def test_reports_per_epoch_beyond_an_epochs_steps_is_refused_by_run_as_by_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, doc: dict[str, Any], fragment: str
) -> None:
    """One check, shared: what `train` refuses, `run` refuses before anything is written (it used to start
    the sweep, every trial failed, and it exited 0)."""
    if doc.get("data"):
        _dataset(tmp_path / "FairVLMed")
    _space(tmp_path, **doc)
    argv = ["run", "--space", "s.yaml"] if command == "run" else ["train", "--space", "s.yaml", "--out", "o"]
    err = refused(capsys, tmp_path, argv, fragment)
    assert ("s.yaml: the largest batch_size" in err) == (command == "run")


def test_run_checks_the_largest_batches_a_space_can_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _space(tmp_path, fixed={"synthetic_n": 580, "reports_per_epoch": 4}, search={"batch_size": [8, 64]})
    refused(
        capsys,
        tmp_path,
        ["run", "--space", "s.yaml"],
        "reports_per_epoch: 4 is more than the 2 optimizer steps",
    )


def test_the_synthetic_training_split_is_counted_as_it_is_written(tmp_path: Path) -> None:
    from fairsearch.data import builtin_synthetic, load_fairvlmed, training_images

    for n in (580, 97):
        assert training_images(None, n) == len(load_fairvlmed(builtin_synthetic(n))["train"])


# --- results folders ------------------------------------------------------------------------------


def _records() -> list[TrialRecord]:
    return [
        TrialRecord(
            trial_id=f"t{i}",
            number=i,
            status="completed",
            params={"method": "vanilla", "lora_rank": 4, "lr": 1e-3},
            val_metrics={"acc": 0.7 + 0.05 * i, "max_acc_gap": 0.1 + 0.05 * i},
            epochs_done=1.0,
            wall_time_s=3.0,
            finished_at=1.0,
        )
        for i in range(3)
    ]


def _results(root: Path) -> Path:
    folder = root / "results" / "s"
    write_results(folder, _records(), {"t0": {"acc": 0.7}})
    return folder


def _cut(name: str, keep: float) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])

    return damage


def _garble_pages(name: str) -> Callable[[Path], None]:
    """16 bytes in the middle of the column chunks (before the footer) flipped."""

    def damage(folder: Path) -> None:
        path = folder / name
        data = bytearray(path.read_bytes())
        pages_end = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
        start = pages_end // 2
        data[start : start + 16] = bytes(b ^ 0x5A for b in data[start : start + 16])
        path.write_bytes(bytes(data))

    return damage


def _change_a_value(name: str) -> Callable[[Path], None]:
    """Trial 1's val/acc (0.75, stored once, in a data page) becomes another number: without page
    checksums the file still reads, with a wrong value."""

    def damage(folder: Path) -> None:
        path = folder / name
        data = bytearray(path.read_bytes())
        at = data.index(struct.pack("<d", 0.75))
        assert at < len(data) - 8 - int.from_bytes(data[-8:-4], "little")  # in the pages, not the footer
        data[at + 7] ^= 0x01
        path.write_bytes(bytes(data))

    return damage


def _other_schema(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(folder / name)

    return damage


def _edit_trials(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        path = folder / TRIALS_FILE
        table = pq.read_table(path)
        frame = edit(table.to_pandas())
        pq.write_table(pa.Table.from_pandas(frame).replace_schema_metadata(table.schema.metadata), path)

    return damage


def _old_trials_value_changed(folder: Path) -> None:
    """A trials.parquet written before page checksums, then a value changed: the front disagrees."""
    path = folder / TRIALS_FILE
    pq.write_table(pq.read_table(path), path)  # the same table and metadata, no checksums
    _change_a_value(TRIALS_FILE)(folder)


def _trials_from_other_sweep(folder: Path) -> None:
    records = _records()
    for r in records:
        r.trial_id = "other-" + r.trial_id
    write_results(folder.parent / "other", records, {})
    os.replace(folder.parent / "other" / TRIALS_FILE, folder / TRIALS_FILE)
    for path in (folder.parent / "other").iterdir():
        path.unlink()
    (folder.parent / "other").rmdir()


def _edit_metadata(**changes: str) -> Callable[[Path], None]:
    """trials.parquet with key-value metadata changed (the objectives or constraints it names)."""

    def damage(folder: Path) -> None:
        path = folder / TRIALS_FILE
        table = pq.read_table(path)
        metadata = {**table.schema.metadata, **{k.encode(): v.encode() for k, v in changes.items()}}
        pq.write_table(table.replace_schema_metadata(metadata), path)

    return damage


def _replace_with_folder(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()

    return damage


RESULTS: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "trials-cut-to-100-bytes",
        _cut(TRIALS_FILE, 0.01),
        "cannot read results/s/trials.parquet: the file is damaged",
    ),
    (
        "trials-cut-in-half",
        _cut(TRIALS_FILE, 0.5),
        "trials.parquet: the file is damaged or not a Parquet file",
    ),
    ("trials-empty", _cut(TRIALS_FILE, 0.0), "trials.parquet: the file is damaged or not a Parquet file"),
    ("trials-pages-garbled", _garble_pages(TRIALS_FILE), "trials.parquet: the file is damaged"),
    ("trials-value-changed", _change_a_value(TRIALS_FILE), "trials.parquet: the file is damaged"),
    (
        "old-trials-value-changed",
        _old_trials_value_changed,
        "pareto.parquet: its search front holds trial(s) t1 (#1) that trials.parquet does not hold as completed",
    ),
    ("trials-other-schema", _other_schema(TRIALS_FILE), "trials.parquet: not a fairsearch results table"),
    (
        "trials-no-status",
        _edit_trials(lambda df: df.drop(columns=["status"])),
        "not a fairsearch results table (no column(s) ['status'])",
    ),
    (
        "trials-unknown-status",
        _edit_trials(lambda df: df.assign(status="exploded")),
        "unknown status(es) ['exploded']",
    ),
    (
        "trials-number-text",
        _edit_trials(lambda df: df.assign(number=df["number"].astype(str))),
        "column 'number' is",
    ),
    (
        "trials-a-folder",
        _replace_with_folder(TRIALS_FILE),
        "trials.parquet: it is a folder, not a Parquet file",
    ),
    (
        "trials-from-other-sweep",
        _trials_from_other_sweep,
        "pareto.parquet: its search front holds trial(s) t2 (#2)",
    ),
    (
        "pareto-cut-in-half",
        _cut(PARETO_FILE, 0.5),
        "pareto.parquet: the file is damaged or not a Parquet file",
    ),
    ("pareto-pages-garbled", _garble_pages(PARETO_FILE), "pareto.parquet: the file is damaged"),
    ("pareto-value-changed", _change_a_value(PARETO_FILE), "pareto.parquet: the file is damaged"),
    ("pareto-other-schema", _other_schema(PARETO_FILE), "pareto.parquet: not a fairsearch results table"),
    (
        "objectives-unknown-metadata",
        _edit_metadata(objectives=json.dumps(["val/f1", "val/max_acc_gap"])),
        "trials.parquet: its metadata names objectives or constraints this fairsearch does not read",
    ),
    (
        "constraints-garbled-metadata",
        _edit_metadata(constraints='[{"key": "acc"}]'),
        "trials.parquet: its metadata names objectives or constraints this fairsearch does not read",
    ),
    (
        "front-disagrees-with-trials",
        _edit_trials(lambda df: df.assign(**{"val/acc": df["val/acc"] - 0.01})),
        "does not hold as completed with the same objectives",
    ),
]


@pytest.mark.parametrize("command", ["pareto", "report"])
@pytest.mark.parametrize(("damage", "fragment"), [c[1:] for c in RESULTS], ids=[c[0] for c in RESULTS])
def test_damaged_results(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    damage: Callable[[Path], None],
    fragment: str,
) -> None:
    damage(_results(tmp_path))
    refused(capsys, tmp_path, [command, "results/s"], fragment)


@pytest.mark.parametrize("command", ["pareto", "report"])
def test_results_folder_without_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    (tmp_path / "results" / "s").mkdir(parents=True)
    refused(capsys, tmp_path, [command, "results/s"], "no results in results/s: run `fairsearch run --space")


REPORT_OUT: list[tuple[str, str, str]] = [
    ("existing-folder", "results", "--out results: give an .html file"),
    ("existing-folder-html", "folder.html", "--out folder.html: is a folder; give the HTML file"),
    ("under-a-file", "a_file/report.html", "--out a_file/report.html: a_file is a file, not a folder"),
    ("deep-under-a-file", "a_file/x/y/report.html", "--out a_file/x/y/report.html: a_file is a file"),
    ("a-results-file", "results/s/trials.parquet", "--out results/s/trials.parquet: give an .html file"),
    ("png-target-a-folder", "r.html", "r-pareto_front.png is a folder; the report writes a PNG there"),
]


@pytest.mark.parametrize(("out", "fragment"), [c[1:] for c in REPORT_OUT], ids=[c[0] for c in REPORT_OUT])
def test_bad_report_out(tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, fragment: str) -> None:
    _results(tmp_path)
    (tmp_path / "folder.html").mkdir()
    (tmp_path / "r-pareto_front.png").mkdir()
    refused(capsys, tmp_path, ["report", "results/s", "--out", out], fragment)


def _resumable(tmp_path: Path, marker: bytes | None) -> None:
    """A results folder of space ``s`` whose ``space.json`` is ``marker`` (``None``: a folder)."""
    folder = _results(tmp_path)
    if marker is None:
        (folder / "space.json").mkdir()
    else:
        (folder / "space.json").write_bytes(marker)


GOOD_MARKER = b'{"digest": "0123456789abcdef", "source": "s.yaml", "space": {"name": "s"}}'
MARKERS: list[tuple[str, bytes | None, str]] = [
    ("cut-short", GOOD_MARKER[:30], "space.json: damaged, so the space this sweep was made from is unknown"),
    ("empty", b"", "space.json: damaged, so the space this sweep was made from is unknown"),
    ("binary", bytes(range(256)), "space.json: damaged"),
    ("deeply-nested", b"[" * 100_000 + b"]" * 100_000, "space.json: damaged"),
    ("a-list", b"[1, 2]", "space.json: not a space record of fairsearch (no 'digest')"),
    ("digest-number", b'{"digest": 5}', "space.json: not a space record of fairsearch (no 'digest')"),
    (
        "a-folder",
        None,
        "space.json: damaged, so the space this sweep was made from is unknown (Is a directory)",
    ),
    (
        "another-space",
        GOOD_MARKER,
        "holds a sweep made from a different space file (s.yaml, digest 0123456789abcdef",
    ),
]


@pytest.mark.parametrize(("marker", "fragment"), [c[1:] for c in MARKERS], ids=[c[0] for c in MARKERS])
def test_resume_with_damaged_space_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], marker: bytes | None, fragment: str
) -> None:
    _space(tmp_path)
    _resumable(tmp_path, marker)
    refused(capsys, tmp_path, ["run", "--space", "s.yaml"], fragment)


def test_results_name_taken_by_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _space(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "s").write_text("a file where the sweep's folder goes")
    refused(capsys, tmp_path, ["run", "--space", "s.yaml"], "--results: ")


def test_default_optuna_database_not_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _space(tmp_path)
    (tmp_path / "results" / "s").mkdir(parents=True)
    (tmp_path / "results" / "s" / "optuna.db").write_text("not a database")
    refused(capsys, tmp_path, ["run", "--space", "s.yaml"], "optuna.db is not a SQLite database")


# --- storage and Optuna URLs ----------------------------------------------------------------------

URLS: list[tuple[str, list[str], str]] = [
    (
        "optuna-unknown-scheme",
        ["--optuna-storage", "foo://x"],
        "--optuna-storage foo://x: unknown database 'foo'",
    ),
    ("optuna-not-a-url", ["--optuna-storage", "not a url"], "--optuna-storage not a url: not a database URL"),
    (
        "optuna-sqlite-no-folder",
        ["--optuna-storage", "sqlite:////no/such/dir/x.db"],
        "sqlite:////no/such/dir/x.db: folder /no/such/dir does not exist",
    ),
    (
        "optuna-sqlite-under-file",
        ["--optuna-storage", "sqlite:///a_file/x.db"],
        "sqlite:///a_file/x.db: a_file is a file, not a folder",
    ),
    ("optuna-sqlite-not-sqlite", ["--optuna-storage", "sqlite:///a_file"], "a_file is not a SQLite database"),
    (
        "optuna-sqlite-a-folder",
        ["--optuna-storage", "sqlite:///a_folder"],
        "a_folder is not a file, so not a SQLite",
    ),
    (
        "optuna-postgres-driver",
        ["--optuna-storage", "postgresql+pg8000://u@127.0.0.1:1/db"],  # psycopg is a dev dependency
        "the postgresql+pg8000 driver is not installed",
    ),
    (
        "optuna-mysql-driver",
        ["--optuna-storage", "mysql://u:secret@127.0.0.1:1/db"],
        "mysql://u:***@127.0.0.1",
    ),
    (
        "storage-unknown-scheme",
        ["--storage", "foo://bucket/x"],
        "--storage foo://bucket/x: unknown scheme 'foo'",
    ),
    ("storage-a-file", ["--storage", "a_file"], "--storage: "),
    ("storage-under-a-file", ["--storage", "a_file/tune"], "a_file is a file, not a folder"),
    ("storage-file-uri-under-file", ["--storage", "file://a_file/tune"], "a_file is a file, not a folder"),
    (
        "storage-hdfs-unreachable",
        ["--storage", "hdfs://namenode:8020/x"],
        "--storage hdfs://namenode:8020/x: cannot",
    ),
]


@pytest.mark.parametrize(("flags", "fragment"), [c[1:] for c in URLS], ids=[c[0] for c in URLS])
def test_bad_storage_or_optuna_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragment: str
) -> None:
    _space(tmp_path)
    refused(capsys, tmp_path, ["run", "--space", "s.yaml", *flags], fragment)


def test_optuna_url_in_the_space_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _space(tmp_path, optuna_storage="sqlite:////no/such/dir/x.db")
    refused(
        capsys, tmp_path, ["run", "--space", "s.yaml"], "s.yaml: optuna_storage: sqlite:////no/such/dir/x.db:"
    )


@pytest.mark.slow
def test_s3_storage_without_network_is_refused_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    _space(tmp_path)
    started = time.monotonic()
    refused(
        capsys,
        tmp_path,
        ["run", "--space", "s.yaml", "--storage", "s3://no-such-bucket-x/sweeps"],
        "--storage s3",
    )
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_storage_that_never_answers_times_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fairsearch.search.preflight

    monkeypatch.setattr(fairsearch.search.preflight, "PROBE_TIMEOUT_S", 3)
    _space(tmp_path)
    refused(
        capsys,
        tmp_path,
        ["run", "--space", "s.yaml", "--storage", "gs://no-such-bucket-x/sweeps"],
        "within 3 s",
    )


# --- model paths ----------------------------------------------------------------------------------


def _model_folder(root: Path, config: bytes | None) -> None:
    folder = root / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_bytes(config)


MODELS: list[tuple[str, str, bytes | None, str]] = [
    ("missing-folder", "models/none", None, "no folder 'models/none' either"),
    (
        "hub-id-not-cached",
        "Qwen/No-Such-Model",
        None,
        "model 'Qwen/No-Such-Model' is not in the local Hugging Face",
    ),
    ("a-file", "a_file", None, "model folder 'a_file' does not exist"),
    ("no-config", "model", None, "model folder 'model' has no config.json"),
    ("config-not-json", "model", b"{not json", "model folder 'model': config.json is not readable JSON"),
    ("config-binary", "model", bytes(range(256)), "model folder 'model': config.json is not readable JSON"),
    ("config-no-model-type", "model", b'{"hidden_size": 8}', "config.json has no 'model_type'"),
]


@pytest.mark.parametrize(("model", "config", "fragment"), [c[1:] for c in MODELS], ids=[c[0] for c in MODELS])
def test_bad_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, config: bytes | None, fragment: str
) -> None:
    if model == "model":
        _model_folder(tmp_path, config)
    _space(tmp_path, model=model)
    refused(capsys, tmp_path, ["run", "--space", "s.yaml"], fragment)


# --- the vision cache's key -----------------------------------------------------------------------


def test_vision_cache_key_follows_image_bytes_the_zip_directory_does_not_see(tmp_path: Path) -> None:
    from fairsearch.data import load_fairvlmed
    from fairsearch.model.vision_cache import VisionCache

    root = _dataset(tmp_path / "FairVLMed")
    np.savez(_first(root), **_subject(0, slo_fundus=np.full((100, 100), 40, np.uint8)))  # > zip read-ahead
    backbone = SimpleNamespace(fingerprint="tiny:0", dtype="torch.float32")
    builder = SimpleNamespace(image_settings={"max_pixels": 1})
    cache = VisionCache(tmp_path / "cache")
    key = cache.key(backbone, builder, load_fairvlmed(root)["train"])  # type: ignore[arg-type]
    # Corrupt the image bytes in place: same size, zip directory (and its CRC) untouched.
    victim = _first(root)
    data = bytearray(victim.read_bytes())
    start = data.index(bytes([40]) * 10_000) + 5_000  # the middle of the first subject's image
    data[start : start + 30] = bytes([99]) * 30
    victim.write_bytes(bytes(data))
    corrupted = load_fairvlmed(root)["train"]
    assert cache.key(backbone, builder, corrupted) != key  # type: ignore[arg-type]
    with pytest.raises(FairsearchError, match=r"data_00001\.npz: cannot read this \.npz file.*CRC"):
        corrupted.image(0)  # and reading it says so


def test_feasible_front_of_a_sweep_without_constraints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _results(tmp_path)
    refused(
        capsys,
        tmp_path,
        ["pareto", "results/s", "--feasible"],
        "--feasible: results/s is a sweep without constraints; add e.g. 'constraints: {max_acc_gap: 0.02}'",
    )


# --- what a message quotes ------------------------------------------------------------------------

ESC, BEL, RLO, CSI = "\x1b", "\x07", "\u202e", "\x9b"
"""ESC ] 0 ; … BEL sets a terminal's title, ESC [ 2 J clears its screen, CSI is the one-byte ESC [,
U+202E (right-to-left override) shows the text after it backwards."""

ESCAPES: list[tuple[str, list[str], str]] = [
    (
        "space-top-key",
        ["run", "--space", "keys.yaml"],
        "keys.yaml: na\\x1b]0;pwned\\x07me: unknown key",
    ),
    (
        "space-nested-key",
        ["run", "--space", "nested.yaml"],
        "fixed.lr\\u202e\\x9b2J: unknown trial setting",
    ),
    (
        "space-constraint-key",
        ["run", "--space", "constraint.yaml"],
        "constraints.gap\\x1b[2J: unknown metric",
    ),
    ("space-name-value", ["run", "--space", "name.yaml"], "name: 'a\\x1b[2Jb' must be 1-64 letters"),
    ("space-model-folder", ["run", "--space", "model.yaml"], "model folder 'no\\x1b[2Jwhere' does not exist"),
    (
        "storage-url",
        ["run", "--space", "s.yaml", "--storage", f"s{ESC}[2J3://bucket/x"],
        "--storage s\\x1b[2J3://bucket/x: unknown scheme",
    ),
    (
        "optuna-url",
        ["run", "--space", "s.yaml", "--optuna-storage", f"sqlite:///a_file{RLO}/x.db"],
        "folder a_file\\u202e does not exist",
    ),
    ("compare-side", ["compare", "results/s", f"1{ESC}[2J", "0"], "compare: 1\\x1b[2J is not a trial"),
    ("results-path", ["pareto", f"results/{ESC}]0;x{BEL}"], "no results in results/\\x1b]0;x\\x07"),
    ("argparse-flag", ["run", "--space", "s.yaml", f"--bogus{CSI}"], "unrecognized arguments: --bogus\\x9b"),
]


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in ESCAPES], ids=[c[0] for c in ESCAPES])
def test_a_message_quotes_control_characters_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    """A key, URL, value or path the user wrote comes back with its control and format characters written
    as escapes: no message can set the terminal's title, clear its screen or reverse its text."""
    _space(tmp_path)
    (tmp_path / "keys.yaml").write_text('"na\\e]0;pwned\\ame": 1\n')  # YAML's own escapes: ESC, BEL
    (tmp_path / "nested.yaml").write_text('fixed:\n  "lr\\u202e\\x9b2J": 1\n')
    (tmp_path / "constraint.yaml").write_text('constraints:\n  "gap\\e[2J": 0.1\n')
    (tmp_path / "name.yaml").write_text('name: "a\\e[2Jb"\n')
    (tmp_path / "model.yaml").write_text('name: m\nmodel: "no\\e[2Jwhere"\n')
    _results(tmp_path)
    err = refused(capsys, tmp_path, argv, fragment)
    assert not {ESC, BEL, RLO, CSI} & set(err), err


@pytest.mark.parametrize(
    "char",
    ["\x00", "\t", "\r", ESC, "\x7f", "\x85", CSI, "\u200e", "\u202a", RLO, "\u2066", "\u2069", "\u2028"],
)
def test_clip_value_writes_a_control_or_format_character_as_its_escape(char: str) -> None:
    shown = clip_value(f"key{char}end")
    assert shown == f"key{repr(char)[1:-1]}end" and shown.isprintable()


def test_clip_value_leaves_letters_of_any_script_and_spaces_alone() -> None:
    assert clip_value("Hispanic café 中文 ü") == "Hispanic café 中文 ü"
