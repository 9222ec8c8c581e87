"""Tests for fairsearch.output.report: the HTML report of a synthetic sweep, parsed back and checked."""

from __future__ import annotations

import base64
import html
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from headless_browser import render
from scored_sweeps import GROUP_NAMES, write_scored_sweep

from fairsearch.errors import FairsearchError
from fairsearch.output.confirm import ConfirmPlan, read_confirmed, write_confirmation
from fairsearch.output.report import FRONT_CAPTION, compare_to_vanilla, write_report
from fairsearch.output.report_figures import drawn_groups, front_figure, group_figure, hypervolume_progress
from fairsearch.output.results import (
    FEASIBLE_FRONT,
    TrialRecord,
    front_hypervolume,
    pareto_frame,
    read_front,
    read_results,
    trials_frame,
    write_results,
)
from fairsearch.output.threshold_fronts import GROUPS_AT_INFERENCE, derived_fronts, read_threshold_fronts
from fairsearch.spec.config import OBJECTIVES, Constraint, objectives_named

GROUPS = {
    "race": {"Asian": 80, "Black": 150, "White": 770},
    "gender": {"Female": 550, "Male": 450},
    "ethnicity": {"Non-Hispanic": 950, "Hispanic": 50},
}
# number, method, val acc, val gap (race), status. Best vanilla: trial 1 (0.90, 0.25). Within one point
# (acc >= 0.89): fr trial 2 (gap .15), gr trial 4 (.12), hybrid trials 6 (.10) and 12 (.09, exactly at
# the boundary). Trial 7 (0.889) is just outside. Front: 6, 12, 7.
SWEEP = [
    (0, "vanilla", 0.88, 0.30, "completed"),
    (1, "vanilla", 0.90, 0.25, "completed"),
    (2, "fr", 0.895, 0.15, "completed"),
    (3, "fr", 0.85, 0.05, "completed"),
    (4, "gr", 0.891, 0.12, "completed"),
    (5, "gr", 0.80, 0.04, "completed"),
    (6, "hybrid", 0.905, 0.10, "completed"),
    (7, "hybrid", 0.889, 0.02, "completed"),
    (8, "fr", None, None, "failed"),
    (9, "gr", 0.60, 0.30, "running"),
    (10, "hybrid", None, None, "pending"),
    (11, "vanilla", 0.86, 0.20, "completed"),
    (12, "hybrid", 0.89, 0.09, "completed"),
]
FINISH_ORDER = [3, 0, 5, 1, 8, 2, 4, 11, 6, 7, 12]  # finishing order differs from the trial numbers


def split_metrics(acc: float, gap: float, rng: np.random.Generator) -> dict[str, float]:
    """Flat metrics like ``SplitMetrics.flat()``: race is the primary grouping and carries ``gap``."""
    metrics = {"acc": acc, "max_acc_gap": gap, "auc": min(acc + 0.05, 1.0), "loss": 1.0 - acc}
    metrics |= {"acc_ci_low": acc - 0.03, "acc_ci_high": acc + 0.02}
    metrics |= {"max_acc_gap_ci_low": max(gap - 0.05, 0.0), "max_acc_gap_ci_high": gap + 0.06}
    for grouping, sizes in GROUPS.items():
        spread = gap if grouping == "race" else float(rng.uniform(0.0, 0.08))
        offsets = np.linspace(-spread * 0.7, spread * 0.3, len(sizes))
        for (group, n), offset in zip(sizes.items(), offsets, strict=True):
            group_acc = float(np.clip(acc + offset, 0, 1))
            metrics[f"acc/{grouping}/{group}"] = group_acc
            metrics[f"acc/{grouping}/{group}_ci_low"] = max(group_acc - 3 / np.sqrt(n), 0.0)
            metrics[f"acc/{grouping}/{group}_ci_high"] = min(group_acc + 2 / np.sqrt(n), 1.0)
            metrics[f"n/{grouping}/{group}"] = float(n)
        metrics[f"max_acc_gap/{grouping}"] = float(offsets[-1] - offsets[0])
    worst = min(metrics[f"acc/race/{group}"] for group in GROUPS["race"])  # race's worst group is the lowest
    metrics |= {"worst_group_acc": worst, "worst_group_acc_ci_low": worst - 0.04}
    metrics |= {"worst_group_acc_ci_high": min(worst + 0.03, 1.0)}
    return metrics


def sweep_records() -> tuple[list[TrialRecord], dict[str, dict[str, float]]]:
    rng = np.random.default_rng(0)
    records, test = [], {}
    for number, method, acc, gap, status in SWEEP:
        params: dict[str, object] = {"method": method, "lora_rank": [8, 16, 32][number % 3], "lr": 2e-4}
        if method in ("fr", "hybrid"):
            params["lam"] = 0.1 * (number + 1)
        if method in ("gr", "hybrid"):
            params["w_max"] = float(2 + number % 4)
        finished = 1_700_000_000.0 + 60 * FINISH_ORDER.index(number) if number in FINISH_ORDER else None
        records.append(
            TrialRecord(
                trial_id=f"trial_{number:02d}",
                number=number,
                status=status,
                params=params,
                val_metrics={} if acc is None else split_metrics(acc, gap, rng),  # type: ignore[arg-type]
                epochs_done=0 if acc is None else 5,
                wall_time_s=30.0,
                error="CUDA out of memory" if status == "failed" else None,
                checkpoint=None if acc is None else f"/tmp/ckpt/{number}",
                finished_at=finished,
            )
        )
        if status == "completed":
            test[f"trial_{number:02d}"] = split_metrics(acc - 0.01, gap + 0.01, rng)  # type: ignore[operator]
    return records, test


class ReportParser(HTMLParser):
    """Collects image sources, table cells by table id, and attributes of elements with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: dict[str, dict[str, str | None]] = {}
        self.texts: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._open_id: str | None = None
        self._open_tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if attr.get("id"):
            self.ids[attr["id"]] = attr  # type: ignore[index]
            self._open_id = attr["id"]
            self._open_tag = tag
            self.texts[attr["id"]] = ""  # type: ignore[index]
        if tag == "img":
            self.images.append(attr["src"] or "")
        elif tag == "table":
            self._table = attr.get("id") or "?"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open_tag:
            self._open_id = None
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._open_id and self._open_id in self.texts:
            self.texts[self._open_id] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ReportParser]:
    folder = tmp_path_factory.mktemp("results") / "demo"
    records, test = sweep_records()
    write_results(folder, records, test, derived_fronts=derived_fronts(OBJECTIVES))
    out = write_report(folder)
    parser = ReportParser()
    parser.feed(out.read_text(encoding="utf-8"))
    return folder, out, parser


def test_images_are_embedded_and_written_beside(report: tuple[Path, Path, ReportParser]) -> None:
    folder, out, parser = report
    assert out == folder / "report.html"
    names = ["pareto_front", "hypervolume", "groups-race", "groups-gender", "groups-ethnicity"]
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"report-{n}.png" for n in names)
    assert len(parser.images) == 5
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in parser.images}
    assert embedded == {(folder / f"report-{n}.png").read_bytes() for n in names}
    assert all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in embedded)
    text = out.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text and "https://" not in text


def test_front_table_matches_parquet(report: tuple[Path, Path, ReportParser]) -> None:
    folder, _, parser = report
    _, pareto = read_results(folder)
    header, *rows = parser.tables["front"]
    assert header[:2] == ["trial", "method"] and "lam" in header and "w_max" in header
    assert [int(r[0]) for r in rows] == pareto["number"].tolist() == [6, 12, 7]
    col = {name: i for i, name in enumerate(header)}
    for row, (_, expected) in zip(rows, pareto.iterrows(), strict=True):
        assert row[col["method"]] == expected["param/method"]
        assert float(row[col["val acc %"]]) == pytest.approx(100 * expected["val/acc"], abs=0.05)
        assert float(row[col["val gap %"]]) == pytest.approx(100 * expected["val/max_acc_gap"], abs=0.05)
        acc, ci = row[col["test acc % [95 % CI]"]].split(" ", 1)
        assert float(acc) == pytest.approx(100 * expected["test/acc"], abs=0.05)
        low, high = (float(x) for x in ci.strip("[]").split(","))
        assert (low, high) == pytest.approx(
            (100 * expected["test/acc_ci_low"], 100 * expected["test/acc_ci_high"]), abs=0.05
        )
        assert float(row[col["lam"]]) == pytest.approx(expected["param/lam"])
        assert int(row[col["lora_rank"]]) == expected["param/lora_rank"]


def test_gap_reduction_matches_hand_computation(report: tuple[Path, Path, ReportParser]) -> None:
    _, _, parser = report
    # best vanilla: trial 1, gap 0.25; best fair within one point: hybrid trial 12, gap 0.09
    assert float(parser.ids["gap-reduction"]["data-value"] or "nan") == pytest.approx(
        100 * (0.25 - 0.09) / 0.25
    )
    assert parser.texts["gap-reduction"] == "64.0 %"
    assert "hybrid (trial 12" in parser.texts["comparison-finding"]
    assert "cuts the validation MaxAccGap by 64.0 %" in parser.texts["comparison-finding"]
    rows = {r[0]: r for r in parser.tables["comparison"][1:]}
    assert [rows[m][1] for m in ("vanilla", "fr", "gr", "hybrid")] == ["1", "2", "4", "12"]
    assert [rows[m][5] for m in ("fr", "gr", "hybrid")] == ["40.0", "52.0", "64.0"]
    assert rows["hybrid"][-1] == "yes" and rows["vanilla"][-1] == "no"


def test_report_flags_unfinished_trials(report: tuple[Path, Path, ReportParser]) -> None:
    _, out, _ = report
    text = out.read_text(encoding="utf-8")
    assert (
        "13 trials (10 completed, 1 failed, 1 pending, 1 running); 3 on the validation Pareto front" in text
    )
    assert "2 trial(s) not finished: the sweep is still running or was interrupted" in text


def test_compare_to_vanilla_plain_sentences() -> None:
    records, _ = sweep_records()
    trials = trials_frame(records)
    fair_only = trials[trials["param/method"] != "vanilla"]
    assert compare_to_vanilla(fair_only).sentence == (
        "No completed vanilla trial yet, so there is nothing to compare the fair methods with."
    )
    vanilla_only = trials[trials["param/method"] == "vanilla"]
    result = compare_to_vanilla(vanilla_only)
    assert result.reduction_pct is None and result.vanilla is not None
    assert (
        result.sentence
        == "No completed fair (fr/gr/hybrid) trial yet, so there is nothing to compare vanilla with."
    )
    assert compare_to_vanilla(trials.iloc[:0]).sentence == (
        "No completed vanilla or fair (fr/gr/hybrid) trial yet, so there is nothing to compare."
    )
    strict = compare_to_vanilla(trials, tolerance=0.0)  # only hybrid trial 6 (0.905) is at least 0.90
    assert strict.best_fair is not None and strict.best_fair["number"] == 6
    assert strict.fair["fr"] is None and strict.reduction_pct == pytest.approx(60.0)


def test_hypervolume_progress_follows_finishing_order() -> None:
    records, _ = sweep_records()
    trials = trials_frame(records)
    progress = hypervolume_progress(trials, OBJECTIVES)
    assert progress["number"].tolist() == FINISH_ORDER
    hv = progress["hypervolume"].to_numpy()
    assert np.all(np.diff(hv) >= -1e-12)
    assert hv[0] == pytest.approx(0.85 * 0.95)  # trial 3 alone: (0.85, 0.05)
    assert hv[-1] == pytest.approx(front_hypervolume(trials))


def test_empty_and_failed_sweeps(tmp_path: Path) -> None:
    with pytest.raises(
        FairsearchError, match=r"no results in .*nothing: run `fairsearch run --space \.\.\.` first"
    ):
        write_report(tmp_path / "nothing")
    write_results(tmp_path / "empty", [], {})
    with pytest.raises(FairsearchError, match=r"no trials in .*empty yet: wait for the sweep to record one"):
        write_report(tmp_path / "empty")
    failed = [
        TrialRecord("a", 0, "failed", {"method": "fr"}, error="CUDA out of memory"),
        TrialRecord("b", 1, "failed", {"method": "gr"}, error="disk full"),
        TrialRecord("c", 2, "running", {"method": "gr"}),
    ]
    write_results(tmp_path / "failed", failed, {})
    with pytest.raises(FairsearchError) as info:
        write_report(tmp_path / "failed")
    assert str(info.value) == (
        f"no completed trial in {tmp_path / 'failed'} yet (2 failed, 1 running): nothing to report; "
        "first error (trial 0): CUDA out of memory"
    )
    assert (
        not list((tmp_path / "failed").glob("*.png")) and not (tmp_path / "failed" / "report.html").exists()
    )


def test_front_recomputed_when_pareto_file_is_missing(tmp_path: Path) -> None:
    records, test = sweep_records()
    write_results(tmp_path / "s", records, test)
    (tmp_path / "s" / "pareto.parquet").unlink()
    parser = ReportParser()
    out = write_report(tmp_path / "s", tmp_path / "elsewhere" / "r.html")
    assert (tmp_path / "elsewhere" / "r-pareto_front.png").is_file()
    parser.feed(out.read_text(encoding="utf-8"))
    assert [r[0] for r in parser.tables["front"][1:]] == ["6", "12", "7"]
    assert pd.isna(read_results(tmp_path / "s")[1].get("test/acc", pd.Series([np.nan]))).all()


def test_report_shows_the_threshold_fronts_beside_the_trained_one(tmp_path: Path) -> None:
    records, test, _ = write_scored_sweep(tmp_path / "ckpts", seed=3)
    write_results(tmp_path / "s", records, test, derived_fronts=derived_fronts(OBJECTIVES))
    before = read_threshold_fronts(tmp_path / "s")
    # the confirmation writer rewrites pareto.parquet: the thresholded fronts stay as they were
    run = TrialRecord("c0", 0, "completed", {**records[0].params, "seed": 1}, records[0].val_metrics, 3.0)
    write_confirmation(tmp_path / "s", [run], {"c0": test["t0"]}, ConfirmPlan((0,), (), {0: test["t0"]}))
    after = read_threshold_fronts(tmp_path / "s")
    assert len(read_confirmed(tmp_path / "s")[1]) == 1
    for name in ("vanilla_thresholds", "combined"):
        pd.testing.assert_frame_equal(after[name][before[name].columns], before[name], check_dtype=False)

    out = write_report(tmp_path / "s")
    parser = ReportParser()
    parser.feed(out.read_text())
    assert parser.texts["groups-at-inference"] == GROUPS_AT_INFERENCE
    header, *rows = parser.tables["threshold-comparison"]
    assert header[:4] == ["front", "members", "hypervolume", "smallest val gap"]
    assert [r[0] for r in rows] == ["trained", "thresholded vanilla", "combined"]
    for row, name in zip(rows, ("search", "vanilla_thresholds", "combined"), strict=True):
        assert row[1] == str(len(after[name])) and "[" in row[header.index("test acc [CI]")]
    combined = parser.tables["front-combined"]
    assert len(combined) == 1 + len(after["combined"])
    assert {r[2] for r in combined[1:]} <= {"trained", "threshold", "group_thresholds"}
    assert len(parser.tables["front-vanilla_thresholds"]) == 1 + len(after["vanilla_thresholds"])
    assert (out.parent / "report-threshold_fronts.png").read_bytes().startswith(b"\x89PNG")


def test_report_without_scores_has_no_threshold_section(report: tuple[Path, Path, ReportParser]) -> None:
    *_, parser = report
    assert "threshold-comparison" not in parser.tables and "groups-at-inference" not in parser.ids


# ------------------------------------------------------------------------ objectives and constraints
THREE = objectives_named(["acc", "worst_group_acc", "max_acc_gap"])


def nondominated(points: np.ndarray, maximise: list[bool]) -> np.ndarray:
    """Bool ``[N]``, by brute force: no other row is at least as good everywhere and better somewhere."""
    signed = np.where(maximise, points, -points)
    better_eq = (signed[None, :, :] >= signed[:, None, :]).all(axis=2)
    strictly = (signed[None, :, :] > signed[:, None, :]).any(axis=2)
    return ~(better_eq & strictly).any(axis=1)


def completed_frame() -> pd.DataFrame:
    records, _ = sweep_records()
    trials = trials_frame(records)
    return trials[trials["status"] == "completed"].reset_index(drop=True)


def parse(out: Path) -> tuple[str, ReportParser]:
    text = out.read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(text)
    return text, parser


@pytest.fixture(scope="module")
def three_objectives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, ReportParser]:
    folder = tmp_path_factory.mktemp("results") / "three"
    records, test = sweep_records()
    write_results(folder, records, test, THREE)
    out = write_report(folder)
    return folder, *parse(out)


def test_three_objectives_are_drawn_pair_by_pair(three_objectives: tuple[Path, str, ReportParser]) -> None:
    folder, text, parser = three_objectives
    trials, front = read_results(folder)
    fig = front_figure(trials, front, THREE, (Constraint("worst_group_acc", 0.8, "min"),))
    labels = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    assert labels == [
        ("worst-group accuracy (%) ↑", "accuracy (%) ↑"),
        ("MaxAccGap (%) ↓", "accuracy (%) ↑"),
        ("MaxAccGap (%) ↓", "worst-group accuracy (%) ↑"),
    ]
    dashed = [[line.get_xdata(), line.get_ydata()] for ax in fig.axes for line in ax.get_lines()
              if line.get_linestyle() == "--"]  # fmt: skip
    assert len(dashed) == 2  # the bound on worst-group accuracy: across in panel 1, up in panel 3
    assert [len([ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]) for ax in fig.axes] == [1, 0, 1]
    names = ["pareto_front", "hypervolume", "groups-race", "groups-gender", "groups-ethnicity"]
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"report-{n}.png" for n in names)
    caption = "of each pair of objectives (accuracy ↑, worst-group accuracy ↑, MaxAccGap ↓)"
    assert caption in text and "may look dominated in a 2-D projection" in text
    assert "<h2>The objectives, pair by pair</h2>" in text and "<h2>Accuracy vs. fairness</h2>" not in text
    assert parser.texts["goals"] == (
        "Objectives (validation): accuracy ↑, worst-group accuracy ↑, MaxAccGap ↓. Constraints: none."
    )


def test_three_objective_front_table_and_hypervolume(
    three_objectives: tuple[Path, str, ReportParser],
) -> None:
    folder, text, parser = three_objectives
    header, *rows = parser.tables["front"]
    assert [h for h in header if h.startswith("val ")] == ["val acc %", "val worst group %", "val gap %"]
    assert "meets constraints" not in header and "Constraints</h2>" not in text
    done = completed_frame()
    points = done[["val/acc", "val/worst_group_acc", "val/max_acc_gap"]].to_numpy()
    expected = done["number"][nondominated(points, [True, True, False])]
    assert sorted(int(r[0]) for r in rows) == sorted(expected)
    col = header.index("test worst group % [95 % CI]")
    assert all(r[col].count("[") == 1 for r in rows)  # the test split keeps its intervals
    trials, _ = read_results(folder)
    progress = hypervolume_progress(trials, THREE)
    assert progress["hypervolume"].iloc[-1] == pytest.approx(front_hypervolume(trials, THREE))
    assert progress["hypervolume"].iloc[-1] != pytest.approx(front_hypervolume(trials))
    assert "against the reference point (acc 0, worst group 0, gap 1)" in text


def test_two_other_objectives_get_one_panel_with_a_staircase() -> None:
    records, _ = sweep_records()
    trials = trials_frame(records)
    objectives = objectives_named(["acc", "worst_group_acc"])
    front = pareto_frame(trials, {}, objectives)
    (ax,) = front_figure(trials, front, objectives, ()).axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("worst-group accuracy (%) ↑", "accuracy (%) ↑")
    (stairs,) = [ln for ln in ax.get_lines() if ln.get_drawstyle().startswith("steps")]
    # both maximised: the dominated region lies left and below, so the staircase runs out to the left
    assert stairs.get_drawstyle() == "steps-pre"
    xs, ys = np.asarray(stairs.get_xdata()), np.asarray(stairs.get_ydata())
    assert xs[0] < 100 * np.nanmin(trials["val/worst_group_acc"]) and ys[0] == ys[1]
    np.testing.assert_allclose(sorted(xs[1:]), sorted(100 * front["val/worst_group_acc"]))


CONSTRAINTS = (Constraint("max_acc_gap", 0.09, "max"), Constraint("acc", 0.85, "min"))


def test_constraints_mark_the_front_and_show_the_feasible_front(tmp_path: Path) -> None:
    records, test = sweep_records()
    write_results(tmp_path / "s", records, test, OBJECTIVES, CONSTRAINTS)
    text, parser = parse(write_report(tmp_path / "s"))
    done = completed_frame()
    meets = (done["val/max_acc_gap"] <= 0.09) & (done["val/acc"] >= 0.85)  # from the val columns alone
    feasible = dict(zip(done["number"], meets, strict=True))
    header, *rows = parser.tables["front"]
    col = header.index("meets constraints")
    assert {int(r[0]): r[col] for r in rows} == {n: "yes" if feasible[n] else "no" for n in (6, 12, 7)}
    assert "no" in {r[col] for r in rows}  # trial 6 (gap 10 %) is on the front and misses one
    for line in (
        "constraint MaxAccGap <= 9.0 %: met by 4 of 10 completed trial(s)",
        "constraint accuracy >= 85.0 %: met by 9 of 10 completed trial(s)",
        "all constraints: met by 3 of 10 completed trial(s)",
    ):
        assert f"<li>{html.escape(line)}</li>" in text
    ok = done[meets]
    expected = ok["number"][nondominated(ok[["val/acc", "val/max_acc_gap"]].to_numpy(), [True, False])]
    header, *rows = parser.tables["feasible-front"]
    assert sorted(int(r[0]) for r in rows) == sorted(expected) == [7, 12]
    assert "meets constraints" not in header and all(
        "[" in r[header.index("test acc % [95 % CI]")] for r in rows
    )
    assert [int(r[0]) for r in rows] == read_front(tmp_path / "s", FEASIBLE_FRONT)["number"].tolist()
    assert "feasible-empty" not in parser.ids
    assert "a grey × marks a trial that misses a constraint" in text
    assert parser.texts["goals"].endswith("Constraints: MaxAccGap <= 9.0 %, accuracy >= 85.0 %.")


def test_front_figure_crosses_out_trials_that_miss_a_constraint(tmp_path: Path) -> None:
    records, test = sweep_records()
    write_results(tmp_path / "s", records, test, OBJECTIVES, CONSTRAINTS)
    trials, front = read_results(tmp_path / "s")
    (ax,) = front_figure(trials, front, OBJECTIVES, CONSTRAINTS).axes
    crossed = [c for c in ax.collections if c.get_label() == "misses a constraint"]
    assert len(crossed) == 1
    done = completed_frame()
    missed = done[(done["val/max_acc_gap"] > 0.09) | (done["val/acc"] < 0.85)]
    expected = sorted(zip(100 * missed["val/max_acc_gap"], 100 * missed["val/acc"], strict=True))
    np.testing.assert_allclose(sorted(map(tuple, crossed[0].get_offsets().tolist())), expected)
    bounds = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()
              if ln.get_linestyle() == "--"}  # fmt: skip
    assert bounds["constraint MaxAccGap <= 9.0 %"][0] == pytest.approx([9.0, 9.0])
    assert bounds["constraint accuracy >= 85.0 %"][1] == pytest.approx([85.0, 85.0])
    assert "misses a constraint" in ax.get_legend_handles_labels()[1]


def test_feasible_front_recomputed_when_pareto_file_is_missing(tmp_path: Path) -> None:
    records, test = sweep_records()
    write_results(tmp_path / "s", records, test, OBJECTIVES, CONSTRAINTS)
    (tmp_path / "s" / "pareto.parquet").unlink()
    _, parser = parse(write_report(tmp_path / "s"))
    header, *rows = parser.tables["feasible-front"]
    assert [int(r[0]) for r in rows] == [12, 7]
    assert {r[header.index("test acc % [95 % CI]")] for r in rows} == {"-"}  # no test metrics: none shown


def test_a_constraint_no_trial_meets_says_so(tmp_path: Path) -> None:
    records, test = sweep_records()
    write_results(tmp_path / "s", records, test, OBJECTIVES, (Constraint("max_acc_gap", 0.01, "max"),))
    _, parser = parse(write_report(tmp_path / "s"))
    assert "feasible-front" not in parser.tables
    assert parser.texts["feasible-empty"].startswith("No completed trial meets every constraint")
    lines = parser.texts["constraint-lines"]
    assert "met by 0 of 10 completed trial(s); NO trial meets it (nearest: trial #7 at 2.0 %)" in lines
    assert "the feasible front is empty" in lines
    header, *rows = parser.tables["front"]
    assert {r[header.index("meets constraints")] for r in rows} == {"no"}


def test_default_report_keeps_its_sections(report: tuple[Path, Path, ReportParser]) -> None:
    _, out, parser = report
    text = out.read_text(encoding="utf-8")
    assert "<h2>Accuracy vs. fairness</h2>" in text and "Constraints</h2>" not in text
    assert f"<figcaption>{html.escape(FRONT_CAPTION)} (" in text
    assert "meets constraints" not in parser.tables["front"][0]
    assert parser.texts["goals"] == "Objectives (validation): accuracy ↑, MaxAccGap ↓. Constraints: none."
    assert "hypervolume, ref." not in text  # the axis label stays in the PNG; the caption names the point
    assert "against the reference point (acc 0, gap 1)" in text


def test_group_charts_take_groups_from_accuracy_columns_not_their_intervals() -> None:
    """The per-group bars once showed "Hispanic_ci_low" and "Hispanic_ci_high" as groups of their own."""
    from fairsearch.output.report import _groupings

    columns = ["val/acc", "val/acc_ci_low", "val/acc/ethnicity/Hispanic", "val/acc/ethnicity/Hispanic_ci_low"]
    columns += [
        "val/acc/ethnicity/Hispanic_ci_high",
        "val/acc/ethnicity/Non-Hispanic",
        "val/acc/race*gender/Black*Female",
    ]
    columns += ["val/acc/race*gender/Black*Female_ci_high", "val/n/ethnicity/Hispanic"]
    assert _groupings(pd.DataFrame(columns=columns)) == {
        "ethnicity": ["Hispanic", "Non-Hispanic"],
        "race*gender": ["Black*Female"],
    }


def test_tables_leave_out_the_settings_every_trial_shares_and_say_so_once(
    report: tuple[Path, Path, ReportParser],
) -> None:
    _, out, parser = report
    # every completed trial of SWEEP has lr 2e-4 and trained 5 epochs; rank, λ and w_max vary
    assert parser.texts["same-settings"] == (
        "The same in every completed trial, so left out of the tables: lr 2.0e-04, epochs trained 5."
    )
    header = parser.tables["front"][0]
    assert "lr" not in header and "epochs" not in header and "lora_rank" in header and "lam" in header
    assert out.read_text(encoding="utf-8").count("so left out of the tables") == 1


def test_group_charts_show_each_group_once_with_its_interval_as_an_error_bar() -> None:
    trials = completed_frame()
    members = trials[trials["number"].isin([6, 12, 7])]
    fig = group_figure(members, "race", list(GROUPS["race"]))
    (ax,) = fig.axes
    assert drawn_groups(fig) == ["Asian", "Black", "White"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "Asian\n(n=80)",
        "Black\n(n=150)",
        "White\n(n=770)",
    ]
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == len(members)  # one set of error bars per member, one bar per group
    for container, (_, row) in zip(bars, members.iterrows(), strict=True):
        (segments,) = container.lines[2]
        ends = [sorted(seg[:, 1]) for seg in segments.get_segments()]
        expected = [
            [100 * row[f"val/acc/race/{g}_ci_low"], 100 * row[f"val/acc/race/{g}_ci_high"]]
            for g in GROUPS["race"]
        ]
        np.testing.assert_allclose(ends, expected)


LONG = 30


def long_sweep(folder: Path) -> Path:
    """A sweep whose 30 completed trials are all on the front (accuracy and gap rising together), with
    per-group metrics and intervals for three groupings; its report."""
    rng = np.random.default_rng(1)
    records, test = [], {}
    for number in range(LONG):
        acc, gap = 0.60 + 0.01 * number, 0.01 * number
        method = ("vanilla", "fr", "gr", "hybrid")[number % 4]
        params: dict[str, object] = {"method": method, "lora_rank": 8, "lr": 2e-4 * (1 + number % 3)}
        params |= {"batch_size": 16, "epochs": 3, "group_by": "race", "model": "tiny"}
        records.append(TrialRecord(f"t{number:02d}", number, "completed", params, split_metrics(acc, gap, rng),
                                   3, 10.0, None, f"/ckpt/{number}", 1_700_000_000.0 + number))  # fmt: skip
        test[f"t{number:02d}"] = split_metrics(acc - 0.01, gap + 0.01, rng)
    write_results(folder, records, test, OBJECTIVES, (Constraint("max_acc_gap", 0.155, "max"),))
    return write_report(folder)


def test_a_long_front_is_drawn_thinned_and_listed_whole(tmp_path: Path) -> None:
    text, parser = parse(long_sweep(tmp_path / "s"))
    drawn = "drawn: 10 of the 30 front members, spread along the front (both ends and those nearest a constraint's bound kept); the tables below list every one"
    captions = text.count(f"{html.escape(drawn)} (<a href=")
    assert captions == 4  # the front figure's and the three per-group charts'

    assert len(parser.tables["front"]) == 1 + LONG
    assert parser.texts["same-settings"].endswith(
        "batch_size 16, epochs 3, group_by race, lora_rank 8, model tiny, epochs trained 3."
    )
    assert {"batch_size", "epochs", "group_by", "lora_rank", "model"}.isdisjoint(parser.tables["front"][0])


def check_rendered(page: Path, groupings: dict[str, set[str]]) -> None:
    """The report as Chromium renders it: every image loaded, no error logged, and every group chart
    names (from what matplotlib drew) each group of one grouping of the data once."""
    rendered = render(page)
    assert rendered.errors == []
    figures = sorted(page.parent.glob(f"{page.stem}-*.png"))
    assert len(rendered.images) == len(figures) >= 3
    for image in rendered.images:
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image["alt"]
    charts = [image["groups"] for image in rendered.images if image["groups"] is not None]
    assert len(charts) == len(groupings)
    for groups in charts:
        assert len(groups) == len(set(groups)) and set(groups) in groupings.values(), groups


def test_the_report_renders_in_a_headless_browser(tmp_path: Path) -> None:
    check_rendered(long_sweep(tmp_path / "long"), {k: set(v) for k, v in GROUPS.items()})
    records, test, _ = write_scored_sweep(tmp_path / "ckpts", seed=3)  # with the thresholded fronts' figure
    write_results(tmp_path / "scored", records, test, derived_fronts=derived_fronts(OBJECTIVES))
    page = write_report(tmp_path / "scored")
    assert (page.parent / "report-threshold_fronts.png").exists()
    check_rendered(page, {"ethnicity": set(GROUP_NAMES)})


def test_the_browser_check_sees_a_broken_image_a_missing_file_and_a_logged_error(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        '<html><body><img src="data:image/png;base64,iVBORw0KGgo=" data-groups=\'["A"]\'>'
        '<img src="missing.png"><script>console.error("drawn wrong")</script></body></html>'
    )
    rendered = render(page)
    assert [(i["width"], i["groups"]) for i in rendered.images] == [(0, ["A"]), (0, None)]
    assert "console: drawn wrong" in rendered.errors
    assert any("ERR_FILE_NOT_FOUND" in e and e.endswith("missing.png") for e in rendered.errors)
