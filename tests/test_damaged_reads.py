"""Damaged files read back from a results folder or a checkpoint, each over a bound of
:mod:`fairsearch.bounded`: one message naming the file and what is allowed, exit code 2, no traceback,
nothing written; a sweep writing its fronts leaves the trial out with a warning instead.

The files are small: each declares (in an ``.npy`` header or a Parquet footer) far more than it holds, or
is sparse. The memory bomb, a ``scores.npz`` whose deflated zeros inflate to 2 GiB, runs in a child
process under a memory limit and reports its peak memory.
"""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from refusals import MAX_MESSAGE, refused, snapshot
from scored_sweeps import write_scored_sweep

from fairsearch.bounded import MAX_SPLIT_SAMPLES, RESULTS_TABLE, SCORES_MAX_BYTES
from fairsearch.output.confirm import CONFIRM_FILE
from fairsearch.output.refit_fronts import derived_fronts as refit_fronts
from fairsearch.output.results import PARETO_FILE, TRIALS_FILE, write_results
from fairsearch.output.threshold_fronts import derived_fronts
from fairsearch.spec.config import OBJECTIVES
from fairsearch.train.checkpoint import FEATURES_FILE, SCORES_FILE


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs each case in ``tmp_path``, with the cache there (so that a write to it shows)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path / "cache"))
    yield


def _scored(root: Path) -> Path:
    """``results/s`` of five completed trials (0-4) whose checkpoints hold scores and features."""
    records, test, by_trial = write_scored_sweep(root / "ckpts")
    rng = np.random.default_rng(0)
    for record in records[:2]:
        scores = by_trial[record.trial_id]
        features = {
            f"{s}_features": rng.normal(size=(len(getattr(scores, s).label), 4)) for s in ("val", "test")
        }
        np.savez(Path(str(record.checkpoint)) / FEATURES_FILE, allow_pickle=False, **features)
    folder = root / "results" / "s"
    write_results(folder, records, test)
    return folder


def _npy(shape: tuple[int, ...], descr: str = "<f8", data: bytes = bytes(64)) -> bytes:
    """An ``.npy`` whose header declares ``shape`` of ``descr``, followed by ``data`` only."""
    out = io.BytesIO()
    np.lib.format.write_array_header_2_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def _rewrite(name: str, trial: int = 0, **members: bytes | np.ndarray | None) -> Callable[[Path], None]:
    """Trial ``trial``'s ``name`` (scores or features) with ``members`` replaced (None: removed), as raw
    ``.npy`` bytes or arrays."""

    def damage(root: Path) -> None:
        path = root / "ckpts" / f"ckpt{trial}" / name
        with np.load(path, allow_pickle=False) as npz:
            arrays: dict[str, Any] = {k: npz[k] for k in npz.files}
        for key, value in members.items():
            arrays.pop(key, None)
            if value is not None:
                arrays[key] = value
        with zipfile.ZipFile(path, "w") as zf:
            for key, value in arrays.items():
                if isinstance(value, bytes):
                    zf.writestr(f"{key}.npy", value)
                else:
                    with zf.open(f"{key}.npy", "w") as f:
                        np.lib.format.write_array(f, np.asarray(value), allow_pickle=True)

    return damage


def _sparse(path: Path, size: int) -> None:
    """``path`` made a ``size``-byte file of which nothing is written (no disk used)."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(size)


def _extra_member(root: Path) -> None:
    with zipfile.ZipFile(root / "ckpts" / "ckpt0" / SCORES_FILE, "a") as zf:
        zf.writestr("readme.txt", "hello")


def _sparse_scores(root: Path) -> None:
    _sparse(root / "ckpts" / "ckpt0" / SCORES_FILE, SCORES_MAX_BYTES + 1)


SCORES = str(Path("ckpts") / "ckpt0" / SCORES_FILE)
NPZ: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    (
        "scores-declare-8-TiB",
        _rewrite(SCORES_FILE, val_score=_npy((1 << 40,))),
        ["0", "1"],
        "scores.npz: array 'val_score' declares shape (1099511627776,) of float64, over fairsearch's bound "
        "of 4,000,000 elements",
    ),
    (
        "scores-one-sample-over",
        _rewrite(SCORES_FILE, test_label=_npy((MAX_SPLIT_SAMPLES + 1,), "<i8")),
        ["0", "1"],
        "array 'test_label' declares shape (4000001,) of int64",
    ),
    (
        "scores-shape-overflows-int64",
        _rewrite(SCORES_FILE, val_group=_npy((1 << 62, 1 << 62), "<i8")),
        ["1", "0"],
        "array 'val_group' is int64 of shape (4611686018427387904, 4611686018427387904); expected 1-D",
    ),
    (
        "scores-text-as-score",
        _rewrite(SCORES_FILE, val_score=np.array(["0.5"] * 300)),
        ["0", "1"],
        "array 'val_score' is <U3 of shape (300,); expected 1-D of dtype kind 'f'",
    ),
    (
        "scores-complex-label",
        _rewrite(SCORES_FILE, val_label=np.zeros(300, dtype=np.complex128)),
        ["0", "1"],
        "array 'val_label' is complex128 of shape (300,); expected 1-D of dtype kind 'i' or 'u'",
    ),
    (
        "scores-object-names",
        _rewrite(SCORES_FILE, group_names=np.array(["a", None], dtype=object)),
        ["0", "1"],
        "array 'group_names' is an object array (object), which needs pickle",
    ),
    (
        "scores-2d",
        _rewrite(SCORES_FILE, test_score=np.zeros((300, 2))),
        ["0", "1"],
        "array 'test_score' is float64 of shape (300, 2); expected 1-D",
    ),
    (
        "scores-long-group-name",
        _rewrite(SCORES_FILE, group_names=np.array(["x" * 100_000, "b", "c"])),
        ["0", "1"],
        "array 'group_names' declares shape (3,) of <U100000",
    ),
    (
        "scores-unexpected-array",
        _rewrite(SCORES_FILE, payload=np.zeros(3)),
        ["0", "1"],
        "scores.npz: holds ['payload']; expected only arrays named ['group_by', 'group_names', 'test_group'",
    ),
    (
        "scores-member-not-an-array",
        _extra_member,
        ["0", "1"],
        "scores.npz: holds ['readme.txt']; expected only arrays named",
    ),
    (
        "scores-file-over-256-MiB",
        _sparse_scores,
        ["0", "1"],
        "scores.npz: 268,435,457 bytes, over fairsearch's bound of 256 MiB",
    ),
    (
        "features-declare-1-TiB",
        _rewrite(FEATURES_FILE, val_features=_npy((1 << 20, 1 << 18), "<f4")),
        ["0@refit", "1"],
        "features.npz: array 'val_features' declares shape (1048576, 262144) of float32",
    ),
    (
        "features-1d",
        _rewrite(FEATURES_FILE, 1, test_features=np.zeros(300, dtype=np.float32)),
        ["0", "1@refit"],
        "array 'test_features' is float32 of shape (300,); expected 2-D of dtype kind 'f'",
    ),
]


@pytest.mark.parametrize(("damage", "sides", "fragment"), [c[1:] for c in NPZ], ids=[c[0] for c in NPZ])
def test_compare_refuses_a_damaged_checkpoint_array(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    sides: list[str],
    fragment: str,
) -> None:
    _scored(tmp_path)
    damage(tmp_path)
    err = refused(capsys, tmp_path, ["compare", "results/s", *sides], fragment)
    assert "cannot read " in err and ("scores.npz" in err or "features.npz" in err)


def _table_declaring(rows: int) -> pa.Table:
    """A tiny-on-disk table whose footer declares ``rows`` rows (one constant column)."""
    return pa.table({"number": pa.repeat(pa.scalar(0, pa.int64()), rows)})


def _over_rows(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        pq.write_table(_table_declaring(RESULTS_TABLE.max_rows + 1), folder / name, row_group_size=1 << 21)

    return damage


def _over_columns(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        columns = RESULTS_TABLE.max_columns + 1
        pq.write_table(pa.table({f"c{i}": pa.array([0], pa.int8()) for i in range(columns)}), folder / name)

    return damage


def _over_bytes(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        _sparse(folder / name, RESULTS_TABLE.max_bytes + 1)

    return damage


def _big_confirm(folder: Path) -> None:
    _over_rows(CONFIRM_FILE)(folder)


PARQUET: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "trials-declares-1M-rows",
        _over_rows(TRIALS_FILE),
        "results/s/trials.parquet: its footer declares 1,000,001 rows (at most 1,000,000)",
    ),
    (
        "trials-declares-20k-columns",
        _over_columns(TRIALS_FILE),
        "trials.parquet: its footer declares 20,001 columns (at most 20,000)",
    ),
    (
        "trials-file-over-256-MiB",
        _over_bytes(TRIALS_FILE),
        "trials.parquet: 268,435,457 bytes, over fairsearch's bound of 256 MiB",
    ),
    (
        "pareto-declares-1M-rows",
        _over_rows(PARETO_FILE),
        "pareto.parquet: its footer declares 1,000,001 rows",
    ),
    (
        "pareto-file-over-256-MiB",
        _over_bytes(PARETO_FILE),
        "pareto.parquet: 268,435,457 bytes, over fairsearch's bound of 256 MiB",
    ),
    ("confirm-declares-1M-rows", _big_confirm, "confirm.parquet: its footer declares 1,000,001 rows"),
]


@pytest.mark.parametrize("command", ["pareto", "report"])
@pytest.mark.parametrize(("damage", "fragment"), [c[1:] for c in PARQUET], ids=[c[0] for c in PARQUET])
def test_a_results_table_over_its_bounds_is_refused_from_its_footer(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    damage: Callable[[Path], None],
    fragment: str,
) -> None:
    damage(_scored(tmp_path))
    err = refused(capsys, tmp_path, [command, "results/s"], fragment)
    assert "it is damaged or not fairsearch's, and is not read" in err


def test_a_space_record_over_its_bound_is_refused_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a damaged space record reached ray.init")

    monkeypatch.setattr(ray, "init", no_ray)
    (tmp_path / "s.yaml").write_text("name: s\n")
    folder = _scored(tmp_path)
    (folder / "space.json").write_bytes(b'{"digest": "' + b"0" * (17 << 20) + b'"}')
    refused(capsys, tmp_path, ["run", "--space", "s.yaml"], "space.json: damaged, so the space this sweep")


@pytest.mark.parametrize(
    ("damage", "left_out", "kinds"),
    [
        (_rewrite(SCORES_FILE, val_score=_npy((1 << 40,))), "array 'val_score' declares shape", {"threshold", "last_layer_refit"}),
        (_sparse_scores, "scores.npz: 268,435,457 bytes, over fairsearch's bound", {"threshold", "last_layer_refit"}),
        (_rewrite(FEATURES_FILE, val_features=_npy((1 << 20, 1 << 18), "<f4")), "array 'val_features'", {"last_layer_refit"}),
    ],
    ids=["declared-8-TiB", "file-over-bound", "features-declared-1-TiB"],
)  # fmt: skip
def test_a_sweep_leaves_a_trial_with_an_over_bound_file_out_of_its_fronts_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
    left_out: str,
    kinds: set[str],
) -> None:
    records, test, _ = write_scored_sweep(tmp_path / "ckpts", seed=3)
    rng = np.random.default_rng(1)
    for record in records[:2]:
        features = {f"{s}_features": rng.normal(size=(300, 4)) for s in ("val", "test")}
        np.savez(Path(str(record.checkpoint)) / FEATURES_FILE, allow_pickle=False, **features)
    damage(tmp_path)
    fronts = (*derived_fronts(OBJECTIVES), *refit_fronts(OBJECTIVES))
    with caplog.at_level("WARNING"):
        write_results(tmp_path / "s", records, test, derived_fronts=fronts)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(kinds), warnings
    assert all(w.startswith("trial #0 is left out of the ") and left_out in w for w in warnings), warnings
    pareto = pd.read_parquet(tmp_path / "s" / PARETO_FILE)
    assert "t0" not in set(pareto.loc[pareto["kind"].isin(kinds), "trial_id"])
    assert "t0" in set(pareto.loc[pareto["front"] == "search", "trial_id"]) or len(pareto)


# --- the memory bomb ------------------------------------------------------------------------------

BOMB_LIMIT = 3 << 30
"""The child's address space: a ``compare`` reserves about 2.3 GB (peak RSS 0.33 GB); with the bomb's
2 GiB array it reserved 4.1 GB (peak RSS 2.4 GB) before the bound."""


def _bomb(root: Path) -> None:
    """Trial 0's ``val_score``: a valid header of 2**28 float64 (2 GiB) whose zeros are all there,
    deflated to a few MB: what the reader allocated, and filled, before anything checked it."""
    path = root / "ckpts" / "ckpt0" / SCORES_FILE
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "val_score"}
    zeros = bytes(64 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
        with zf.open("val_score.npy", "w", force_zip64=True) as f:
            f.write(_npy((1 << 28,), data=b""))
            for _ in range(32):
                f.write(zeros)


CHILD = """
import resource, sys
from fairsearch.cli import main
code = main(sys.argv[1:])
print(f"peak_rss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def test_a_scores_bomb_is_refused_without_allocating_what_it_declares(tmp_path: Path) -> None:
    _scored(tmp_path)
    _bomb(tmp_path)
    assert (tmp_path / SCORES).stat().st_size < SCORES_MAX_BYTES  # small enough to be read as bytes
    before = snapshot(tmp_path)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (BOMB_LIMIT, BOMB_LIMIT))

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, "compare", "results/s", "0", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        preexec_fn=limit_memory,
        env={**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "OPENBLAS_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-MAX_MESSAGE:]
    assert "array 'val_score' declares shape (268435456,) of float64" in proc.stderr, proc.stderr[-2000:]
    assert "MemoryError" not in proc.stderr and "Traceback" not in proc.stderr
    peak_kib = int(proc.stderr.rsplit("peak_rss_kib=", 1)[1].split()[0])
    assert peak_kib < 1 << 20, peak_kib  # under 1 GiB: the 2 GiB array was never made
    assert snapshot(tmp_path) == before


def test_a_confirmation_plan_over_its_bound_is_refused_unread(tmp_path: Path) -> None:
    from fairsearch.bounded import JSON_MAX_BYTES
    from fairsearch.errors import FairsearchError
    from fairsearch.output.confirm import PLAN_FILE, read_plan

    _sparse(tmp_path / PLAN_FILE, JSON_MAX_BYTES + 1)
    with pytest.raises(
        FairsearchError, match=r"confirm\.json: 16,777,217 bytes, over fairsearch's bound of 16 MiB"
    ):
        read_plan(tmp_path)
