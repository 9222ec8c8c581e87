"""Tests for fairsearch.output.results: schema, dtypes, atomic writes, the front and its text table (tables)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scored_sweeps import GROUP_NAMES, write_scored_sweep

from fairsearch.cli import build_parser, main
from fairsearch.errors import FairsearchError
from fairsearch.judge.pareto import hypervolume
from fairsearch.judge.thresholds import threshold_points
from fairsearch.output.results import (
    PARETO_FILE,
    TRIALS_FILE,
    TrialRecord,
    front_hypervolume,
    pareto_frame,
    read_parquet_metadata,
    read_results,
    trials_frame,
    write_parquet_atomic,
    write_results,
)
from fairsearch.output.tables import format_front
from fairsearch.output.threshold_fronts import (
    GROUPS_AT_INFERENCE,
    derived_fronts,
    format_threshold_fronts,
    read_threshold_fronts,
)
from fairsearch.spec.config import OBJECTIVES, Constraint
from fairsearch.train.checkpoint import SCORES_FILE

FIXED = ["trial_id", "number", "status"]
TAIL = ["epochs_done", "wall_time_s", "error", "failures", "checkpoint", "finished_at"]


def record(
    number: int, method: str, acc: float | None, gap: float | None, status: str = "completed"
) -> TrialRecord:
    params: dict[str, object] = {
        "method": method,
        "lora_rank": 8 * (1 + number % 3),
        "lr": 1e-4 * (1 + number),
    }
    if method in ("fr", "hybrid"):
        params["lam"] = 0.5 * number
    if method in ("gr", "hybrid"):
        params["w_max"] = 2.0 + number
    metrics = {} if acc is None else {"acc": acc, "max_acc_gap": gap, "acc/race/Asian": acc - 0.1}
    return TrialRecord(
        trial_id=f"t{number:03d}",
        number=number,
        status=status,
        params=params,
        val_metrics=metrics,  # type: ignore[arg-type]
        epochs_done=3,
        wall_time_s=10.0 + number,
        error="boom" if status == "failed" else None,
        failures=number % 2 if status == "completed" else 2 if status == "failed" else 0,
        checkpoint=None if acc is None else f"/ckpt/t{number:03d}",
        finished_at=None if status in ("running", "pending") else 1_700_000_000.0 + number,
    )


@pytest.fixture
def records() -> list[TrialRecord]:
    return [
        record(3, "hybrid", 0.80, 0.05),
        record(0, "vanilla", 0.90, 0.30),
        record(1, "fr", 0.85, 0.10),
        record(2, "gr", 0.70, 0.20),  # dominated by trial 1
        record(4, "vanilla", 0.85, 0.10),  # duplicate of trial 1's point: also on the front
        record(5, "gr", 0.95, 0.01, status="running"),  # not completed: never on the front
        record(6, "fr", None, None, status="failed"),
    ]


def test_trials_frame_schema_and_rows(records: list[TrialRecord]) -> None:
    df = trials_frame(records)
    params = ["param/method", "param/lam", "param/lora_rank", "param/lr", "param/w_max"]
    vals = ["val/acc", "val/max_acc_gap", "val/acc/race/Asian"]
    assert list(df.columns) == FIXED + params + vals + TAIL
    assert df["number"].tolist() == list(range(7))  # sorted by number whatever the input order
    dtypes = {c: str(t) for c, t in df.dtypes.items()}
    assert dtypes["trial_id"] == dtypes["status"] == dtypes["param/method"] == dtypes["error"] == "str"
    assert dtypes["number"] == "int64" and dtypes["epochs_done"] == "float64"  # 1.5 with half-epoch reports
    assert dtypes["param/lora_rank"] == "Int64"
    assert all(dtypes[c] == "float64" for c in ["param/lam", "param/lr", "param/w_max", *vals, "finished_at"])
    lam = df.set_index("param/method")["param/lam"]
    assert lam["vanilla"].isna().all() and lam["gr"].isna().all()
    assert df.loc[df["number"] == 3, "param/lam"].item() == 1.5
    assert df.loc[df["number"] == 6, "error"].item() == "boom"
    assert df["error"].isna().sum() == 6
    assert dtypes["failures"] == "Int64"
    assert df.set_index("number")["failures"].to_dict() == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0, 5: 0, 6: 2}
    assert np.isnan(df.loc[df["number"] == 5, "finished_at"].item())
    # the column order does not depend on the order of the records or of the dict keys
    shuffled = [r for r in reversed(records)]
    for r in shuffled:
        r.params = dict(reversed(list(r.params.items())))
    assert list(trials_frame(shuffled).columns) == list(df.columns)


def test_trials_frame_empty_and_mixed_types() -> None:
    empty = trials_frame([])
    assert list(empty.columns) == FIXED + TAIL
    assert [str(t) for t in empty.dtypes] == [
        "str",
        "int64",
        "str",
        "float64",
        "float64",
        "str",
        "Int64",
        "str",
        "float64",
    ]
    mixed = trials_frame(
        [
            TrialRecord("a", 0, "pending", params={"x": 1, "flag": True, "choice": 16}),
            TrialRecord("b", 1, "pending", params={"x": 2.5, "flag": None, "choice": "auto"}),
        ]
    )
    assert str(mixed["param/x"].dtype) == "float64" and mixed["param/x"].tolist() == [1.0, 2.5]
    assert str(mixed["param/flag"].dtype) == "boolean" and mixed["param/flag"].isna().tolist() == [
        False,
        True,
    ]
    assert str(mixed["param/choice"].dtype) == "str" and mixed["param/choice"].tolist() == ["16", "auto"]
    with pytest.raises(ValueError, match=r"trial status must be one of .* got \['done'\]"):
        trials_frame([TrialRecord("a", 0, "done")])


def brute_front(points: list[tuple[float, float]]) -> list[int]:
    return [
        i
        for i, (a, g) in enumerate(points)
        if not any((a2 >= a and g2 <= g) and (a2 > a or g2 < g) for a2, g2 in points)
    ]


def test_pareto_frame_against_brute_force(records: list[TrialRecord]) -> None:
    df = trials_frame(records)
    test = {"t001": {"acc": 0.84, "acc_ci_low": 0.80, "acc_ci_high": 0.88}, "t003": {"acc": 0.79}}
    front = pareto_frame(df, test)
    done = df[df["status"] == "completed"]
    expected = set(
        done["trial_id"].iloc[brute_front(list(zip(done["val/acc"], done["val/max_acc_gap"], strict=True)))]
    )
    assert set(front["trial_id"]) == expected == {"t000", "t001", "t003", "t004"}
    assert front["trial_id"].tolist() == ["t000", "t001", "t004", "t003"]  # acc desc, then gap, then number
    assert list(front.columns) == [
        *df.columns,
        "test/acc",
        "test/acc_ci_low",
        "test/acc_ci_high",
        "hypervolume",
        "front",
        "kind",
    ]
    assert (front["front"] == "search").all() and (front["kind"] == "trained").all()
    assert front["test/acc"].tolist()[1] == 0.84 and np.isnan(front["test/acc"].tolist()[0])
    hv = 0.8 * 0.95 + 0.05 * 0.9 + 0.05 * 0.7  # staircase over (0.8, .05), (0.85, .1), (0.9, .3)
    assert front["hypervolume"].tolist() == pytest.approx([hv] * 4)
    assert front_hypervolume(df) == pytest.approx(hv)


@pytest.mark.parametrize("seed", range(5))
def test_pareto_frame_random_sweeps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    recs = [
        record(
            i,
            "vanilla",
            float(rng.integers(5, 10)) / 10,
            float(rng.integers(0, 5)) / 10,
            str(rng.choice(["completed", "failed"])),
        )
        for i in range(30)
    ]
    df = trials_frame(recs)
    front = pareto_frame(df, {})
    done = df[df["status"] == "completed"].reset_index(drop=True)
    pts = list(zip(done["val/acc"], done["val/max_acc_gap"], strict=True))
    assert sorted(front["trial_id"]) == sorted(done["trial_id"].iloc[brute_front(pts)])
    assert front["val/acc"].is_monotonic_decreasing
    assert front_hypervolume(df) == pytest.approx(
        hypervolume(np.array(pts).reshape(-1, 2), ("max", "min"), (0, 1))
    )


def test_pareto_frame_without_completed_trials() -> None:
    df = trials_frame([record(0, "fr", None, None, "failed"), record(1, "gr", 0.9, 0.1, "running")])
    front = pareto_frame(df, {})
    assert front.empty and "hypervolume" in front.columns
    assert front_hypervolume(df) == 0.0
    assert format_front(front) == "Pareto front: no completed trials yet."
    assert pareto_frame(trials_frame([]), {}).empty


def test_write_and_read_results_with_pandas_pyarrow_duckdb(
    tmp_path: Path, records: list[TrialRecord]
) -> None:
    trials_path, pareto_path, search_front = write_results(
        tmp_path / "sweep", records, {"t001": {"acc": 0.84}}
    )
    assert trials_path == tmp_path / "sweep" / TRIALS_FILE and pareto_path == tmp_path / "sweep" / PARETO_FILE
    trials_df, pareto_df = read_results(tmp_path / "sweep")
    pd.testing.assert_frame_equal(trials_df, trials_frame(records))
    pd.testing.assert_frame_equal(pareto_df, pareto_frame(trials_frame(records), {"t001": {"acc": 0.84}}))
    pd.testing.assert_frame_equal(search_front.reset_index(drop=True), pareto_df)  # the front written
    schema = pq.read_schema(trials_path)
    assert str(schema.field("number").type) == "int64" and str(schema.field("val/acc").type) == "double"
    assert pq.read_table(pareto_path).num_rows == 4
    meta = read_parquet_metadata(pareto_path)
    assert json.loads(meta["hypervolume"]) == pytest.approx(pareto_df["hypervolume"].iloc[0])
    assert json.loads(meta["objectives"]) == ["val/acc", "val/max_acc_gap"]
    assert json.loads(meta["directions"]) == ["max", "min"]
    assert json.loads(meta["reference"]) == [0.0, 1.0]
    con = duckdb.connect()
    rows = con.execute(
        f"""SELECT "param/method", count(*) AS n, max("val/acc") AS best FROM '{trials_path}'
            WHERE status = 'completed' GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    assert rows == [("fr", 1, 0.85), ("gr", 1, 0.70), ("hybrid", 1, 0.80), ("vanilla", 2, 0.90)]
    assert con.execute(f"SELECT count(*) FROM '{pareto_path}' WHERE \"param/lam\" IS NULL").fetchall() == [
        (2,)
    ]


def test_read_results_errors(tmp_path: Path, records: list[TrialRecord]) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(
        FairsearchError, match=f"^no results in {missing}: run `fairsearch run --space ...` first$"
    ):
        read_results(missing)
    write_results(tmp_path / "s", records, {})
    (tmp_path / "s" / PARETO_FILE).unlink()  # stopped between the two writes: recomputed from the trials
    _, front = read_results(tmp_path / "s")
    assert sorted(front["trial_id"]) == ["t000", "t001", "t003", "t004"]
    # an empty front older than the trials' completed ones (written before them) is recomputed too
    write_parquet_atomic(front.iloc[:0], tmp_path / "s" / PARETO_FILE, {})
    _, again = read_results(tmp_path / "s")
    assert sorted(again["trial_id"]) == ["t000", "t001", "t003", "t004"]
    (tmp_path / "s" / TRIALS_FILE).write_bytes(b"not parquet")
    with pytest.raises(FairsearchError, match=r"cannot read .*trials\.parquet"):
        read_results(tmp_path / "s")


def test_write_parquet_atomic_metadata_and_reserved_keys(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1, 2]})
    path = write_parquet_atomic(df, tmp_path / "x.parquet", {"k": "v", "n": "3"})
    assert read_parquet_metadata(path) == {"k": "v", "n": "3"}
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)
    with pytest.raises(ValueError, match="reserved"):
        write_parquet_atomic(df, tmp_path / "y.parquet", {"pandas": "x"})


def test_write_parquet_atomic_file_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_parquet_atomic(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    path.chmod(0o640)
    write_parquet_atomic(pd.DataFrame({"a": [2]}), path)
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("where", ["replace", "writer"])
def test_write_parquet_atomic_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path = tmp_path / "trials.parquet"
    old = pd.DataFrame({"a": [1, 2, 3]})
    write_parquet_atomic(old, path)

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    if where == "replace":
        monkeypatch.setattr(os, "replace", fail)
    else:

        def half_write(table: object, where: object, **kwargs: object) -> None:
            where.write(b"PAR1 partial")  # type: ignore[attr-defined]
            raise OSError("disk full")

        monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pd.DataFrame({"a": [9]}), path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(path), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.parquet"]


def test_format_front(records: list[TrialRecord]) -> None:
    test = {"t001": {"acc": 0.84, "acc_ci_low": 0.8, "acc_ci_high": 0.88, "max_acc_gap": 0.12}}
    text = format_front(pareto_frame(trials_frame(records), test))
    lines = text.splitlines()
    assert lines[0].startswith("Pareto front: 4 trial(s), hypervolume 0.8400")
    assert lines[1].split() == [
        "trial",
        "method",
        "rank",
        "settings",
        "lr",
        "val",
        "acc",
        "val",
        "gap",
        "test",
        "acc",
        "[CI]",
        "test",
        "gap",
        "[CI]",
    ]
    assert lines[3].split() == ["0", "vanilla", "8", "-", "1.0e-04", "90.0", "30.0", "-", "-"]
    assert lines[4].split() == [
        "1",
        "fr",
        "16",
        "lam=0.5",
        "2.0e-04",
        "85.0",
        "10.0",
        "84.0",
        "[80.0,",
        "88.0]",
        "12.0",
    ]
    assert lines[6].split() == [
        "3",
        "hybrid",
        "8",
        "lam=1.5",
        "w_max=5.0",
        "4.0e-04",
        "80.0",
        "5.0",
        "-",
        "-",
    ]


LEFT_OUT = (
    "… 20 of 30 members left out (10 shown, spread along the front: both ends and those nearest a "
    "constraint's bound kept); --all lists them"
)


def long_front(n: int = 30) -> pd.DataFrame:
    """A front of ``n`` completed trials, accuracy and gap rising together (0.60 / 0.00 up by 0.01)."""
    return pareto_frame(trials_frame([record(i, "fr", 0.60 + 0.01 * i, 0.01 * i) for i in range(n)]), {})


def listed(lines: list[str]) -> list[int]:
    """The trial numbers of a text table's rows (the lines that start with one)."""
    return [int(line.split()[0]) for line in lines if line.split() and line.split()[0].isdigit()]


def test_a_long_front_lists_ten_members_spread_along_it_and_every_one_with_all() -> None:
    front = long_front()
    gap_limit = Constraint("max_acc_gap", 0.155, "max")  # met by trials 0-15, missed from 16 on
    lines = format_front(front, OBJECTIVES, constraints=(gap_limit,)).splitlines()
    assert lines[0].startswith("Pareto front: 30 trial(s), hypervolume")
    shown = listed(lines)
    assert len(shown) == 10 and {0, 29, 15, 16} <= set(shown)  # both ends, both sides of the bound
    assert shown == [n for n in front["number"] if n in shown]  # in the front's order
    assert max(np.diff(sorted(shown))) <= 6  # spread along it: evenly, 10 of 30 would be 3.2 apart
    assert lines[-1] == LEFT_OUT
    every = format_front(front, OBJECTIVES, show_all=True).splitlines()
    assert listed(every) == front["number"].tolist() and "left out" not in every[-1]
    short = format_front(front.head(10), OBJECTIVES).splitlines()
    assert len(listed(short)) == 10 and "left out" not in short[-1]


def test_pareto_and_run_take_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [record(i, "fr", 0.60 + 0.01 * i, 0.01 * i) for i in range(30)]
    write_results(tmp_path / "s", records, {}, derived_fronts=derived_fronts(OBJECTIVES))
    assert main(["pareto", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(listed(out)) == 10 and LEFT_OUT in out
    assert main(["pareto", str(tmp_path / "s"), "--all"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert listed(out) == list(range(29, -1, -1)) and not any("left out" in line for line in out)
    assert build_parser().parse_args(["run", "--space", "s.yaml", "--all"]).show_all


def test_thresholded_fronts_list_ten_members_of_each_and_every_one_with_all() -> None:
    front = long_front()
    points = front.assign(kind="threshold", thresholds=json.dumps({"all": 0.4}))
    fronts = {"search": front.head(3), "vanilla_thresholds": points, "combined": points}
    lines = format_threshold_fronts(fronts).splitlines()
    assert lines.count(LEFT_OUT) == 2
    for title in ("Thresholded vanilla front: 30 point(s):", "Combined front: 30 point(s):"):
        rows = lines[lines.index(title) + 3 :][:10]
        assert len(listed(rows)) == 10 and lines[lines.index(title) + 13] == LEFT_OUT
    every = format_threshold_fronts(fronts, show_all=True).splitlines()
    assert not any("left out" in line for line in every)
    assert len(listed(every[every.index("Combined front: 30 point(s):") :])) == 30


def test_the_end_of_run_names_the_thresholded_fronts_members_instead_of_listing_them() -> None:
    front = long_front()
    points = front.assign(kind="threshold", thresholds=json.dumps({"all": 0.4}))
    fronts = {"search": front.head(3), "vanilla_thresholds": points, "combined": points.head(12)}
    full = format_threshold_fronts(fronts).splitlines()
    short = format_threshold_fronts(fronts, members_at="fairsearch pareto results/x").splitlines()
    assert short[:-1] == full[: full.index(GROUPS_AT_INFERENCE) + 1]  # the side-by-side table, whole
    assert short[-1] == "Their members (thresholded vanilla 30, combined 12): fairsearch pareto results/x"
    assert not listed(short[short.index(GROUPS_AT_INFERENCE) :])


# --------------------------------------------------------------------------------------------- thresholds
def _objectives(df: pd.DataFrame) -> list[tuple[float, float]]:
    return sorted(zip(df["val/acc"].round(12), df["val/max_acc_gap"].round(12), strict=True))


def test_threshold_fronts_against_brute_force(tmp_path: Path) -> None:
    records, test, scores = write_scored_sweep(tmp_path / "ckpts")
    write_results(tmp_path / "s", records, test, derived_fronts=derived_fronts(OBJECTIVES))
    trials, search = read_results(tmp_path / "s")
    pd.testing.assert_frame_equal(search, pareto_frame(trials, test))  # the search's rows as before
    assert (search["kind"] == "trained").all()
    meta = read_parquet_metadata(tmp_path / "s" / PARETO_FILE)
    assert json.loads(meta["search_columns"]) == list(search.columns)
    fronts = read_threshold_fronts(tmp_path / "s")
    assert list(fronts) == ["search", "vanilla_thresholds", "combined"]

    # every candidate, computed here from each trial's scores; fronts by pairwise dominance
    points = {tid: threshold_points(s) for tid, s in scores.items()}
    vanilla_pool = [(p.val["acc"], p.val["max_acc_gap"]) for r in records[:5] if r.params["method"] == "vanilla" for p in points[r.trial_id]]  # fmt: skip
    trained_pool = [(r.val_metrics["acc"], r.val_metrics["max_acc_gap"]) for r in records[:5]]
    combined_pool = trained_pool + [
        (p.val["acc"], p.val["max_acc_gap"]) for ps in points.values() for p in ps
    ]
    for name, pool in (("vanilla_thresholds", vanilla_pool), ("combined", combined_pool)):
        front = fronts[name]
        expected = sorted((round(pool[i][0], 12), round(pool[i][1], 12)) for i in brute_front(pool))
        assert _objectives(front) == expected, name
        assert front["hypervolume"].tolist() == pytest.approx(
            [hypervolume(pool, ("max", "min"), (0, 1))] * len(front)
        )
        assert list(front["val/acc"]) == sorted(front["val/acc"], reverse=True)
    vanilla = fronts["vanilla_thresholds"]
    assert set(vanilla["param/method"]) == {"vanilla"} and set(vanilla["kind"]) <= {
        "threshold",
        "group_thresholds",
    }
    assert "group_thresholds" in set(fronts["combined"]["kind"])

    # each row's stored thresholds give its test figures again; its number is its base trial's
    for _, row in pd.concat([vanilla, fronts["combined"]]).iterrows():
        assert records[int(row["number"])].trial_id == row["trial_id"]
        if row["kind"] == "trained":
            assert row["test/acc"] == test[row["trial_id"]]["acc"]
            continue
        split = scores[row["trial_id"]].test
        thresholds = json.loads(row["thresholds"])
        if row["kind"] == "threshold":
            assert list(thresholds) == ["all"] and np.isnan(row["gap_limit"])
            pred = split.score >= thresholds["all"]
        else:
            assert row["val/max_acc_gap"] <= row["gap_limit"] + 1e-12
            pred = split.score >= np.array([thresholds[n] for n in GROUP_NAMES])[split.group]
        assert row["test/acc"] == pytest.approx((pred == split.label).mean(), abs=1e-12)
        assert row["test/acc_ci_low"] <= row["test/acc"] <= row["test/acc_ci_high"]
        assert row["test/max_acc_gap_ci_low"] <= row["test/max_acc_gap"] <= row["test/max_acc_gap_ci_high"]
    # readable by DuckDB too, thresholds as JSON
    con = duckdb.connect()
    kinds = con.execute(
        f"SELECT front, kind, count(*) FROM '{tmp_path / 's' / PARETO_FILE}' GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert {(f, k) for f, k, _ in kinds} >= {("search", "trained"), ("vanilla_thresholds", "threshold")}


def test_damaged_scores_leave_the_trial_out_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records, test, _ = write_scored_sweep(tmp_path / "ckpts", seed=1)
    (Path(str(records[0].checkpoint)) / SCORES_FILE).write_bytes(b"not a zip")
    with caplog.at_level("WARNING", logger="fairsearch.output.threshold_fronts"):
        write_results(tmp_path / "s", records, test, derived_fronts=derived_fronts(OBJECTIVES))
        write_results(
            tmp_path / "s", records, test, derived_fronts=derived_fronts(OBJECTIVES)
        )  # a sweep writes every few seconds: warned once
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith("trial #0 is left out of the threshold fronts: cannot read ")
    assert "scores.npz: damaged or not an .npz of plain arrays" in warnings[0]
    fronts = read_threshold_fronts(tmp_path / "s")
    assert "t0" not in set(fronts["vanilla_thresholds"]["trial_id"]) and len(fronts["vanilla_thresholds"])


def test_pareto_command_shows_the_three_fronts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records, test, _ = write_scored_sweep(tmp_path / "ckpts", seed=2)
    write_results(tmp_path / "s", records, test, derived_fronts=derived_fronts(OBJECTIVES))
    assert main(["pareto", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "Did a fair method beat thresholding?" in out and GROUPS_AT_INFERENCE in out
    lines = out.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("front "))) + 2 :][:3]
    assert [row.split("  ")[0] for row in table] == ["trained", "thresholded vanilla", "combined"]
    assert all("[" in row for row in table)  # test figures with intervals
    assert "Thresholded vanilla front:" in out and "Combined front:" in out
    assert main(["pareto", str(tmp_path / "s"), "--kind", "group_thresholds"]) == 0
    listed = capsys.readouterr().out.split(GROUPS_AT_INFERENCE)[1]
    assert "group_thresholds" in listed and "  threshold  " not in listed and " trained " not in listed

    # a thresholded row of a trial the trials file does not hold: one message, exit 2
    pareto = pd.read_parquet(tmp_path / "s" / PARETO_FILE)
    pareto.loc[pareto["front"] == "combined", "trial_id"] = "stranger"
    write_parquet_atomic(
        pareto, tmp_path / "s" / PARETO_FILE, read_parquet_metadata(tmp_path / "s" / PARETO_FILE)
    )
    assert main(["pareto", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "its combined front holds trial(s) stranger (#" in err
    assert "Traceback" not in err


def test_sweep_without_scores_says_so(tmp_path: Path, records: list[TrialRecord]) -> None:
    write_results(tmp_path / "s", records, {}, derived_fronts=derived_fronts(OBJECTIVES))
    fronts = read_threshold_fronts(tmp_path / "s")
    assert fronts["vanilla_thresholds"].empty and fronts["combined"].empty
    assert format_threshold_fronts(fronts).startswith("Threshold fronts: none yet")


def test_a_derived_front_of_an_unregistered_name_is_not_written(
    tmp_path: Path, records: list[TrialRecord]
) -> None:
    """Readers refuse a front that ``fairsearch.output.fronts.FRONTS`` does not name, so the writer does
    not write one."""

    def unnamed(trials: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
        return front.assign(front="my_front")

    with pytest.raises(ValueError, match=r"derived front\(s\) \['my_front'\] are not registered"):
        write_results(tmp_path / "s", records, {}, derived_fronts=(unnamed,))
    assert not (tmp_path / "s" / PARETO_FILE).exists() and not (tmp_path / "s" / "trials.parquet").exists()
