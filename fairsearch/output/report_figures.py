"""The report's figures: matplotlib ``Figure`` objects drawn on the Agg canvas, and their PNG bytes.

:mod:`fairsearch.output.report` lays them out in the HTML page with their captions; this module only draws. It holds
the front figure (one panel per pair of the sweep's objectives, with the staircase, the test-split points and
the constraints' bounds), the hypervolume of the front as the sweep progressed, the per-group accuracy of the
front members, the trained vs. thresholded fronts and the seed-confirmed front. Percentages are drawn as
``100 *`` the stored fractions.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fairsearch.judge.pareto import hypervolume
from fairsearch.output.results import SEARCH_FRONT
from fairsearch.output.tables import fmt_pct, thin_front
from fairsearch.output.threshold_fronts import FRONT_TITLES, THRESHOLD_FRONTS
from fairsearch.spec.config import (
    METRICS,
    OBJECTIVES,
    Constraints,
    Objective,
    Objectives,
    objective_directions,
    objective_reference,
)

__all__ = [
    "SHORT",
    "accuracy_vs_gap",
    "arrow",
    "confirmed_figure",
    "drawn_groups",
    "front_figure",
    "group_figure",
    "hypervolume_figure",
    "hypervolume_progress",
    "method_of",
    "png",
    "reference_text",
    "threshold_figure",
]

METHOD_COLOURS = {"vanilla": "#7f7f7f", "fr": "#1f77b4", "gr": "#ff7f0e", "hybrid": "#2ca02c"}
EXTRA_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
CONSTRAINT_COLOUR = "#d62728"
_FRONT_COLOURS = {SEARCH_FRONT: "black", THRESHOLD_FRONTS[0]: "#1f77b4", THRESHOLD_FRONTS[1]: "#d62728"}
ACC_METRIC, GAP_METRIC = METRICS["acc"], METRICS["max_acc_gap"]
ACC, GAP = ACC_METRIC.column, GAP_METRIC.column
"""``val/acc`` and ``val/max_acc_gap``: the per-group, thresholded and confirmed figures draw these whatever
the sweep's objectives; the front figure and the hypervolume use its objectives."""
SHORT = {
    "acc": "acc",
    "max_acc_gap": "gap",
    "worst_group_acc": "worst group",
    "auc": "AUC",
    "es_auc": "ES-AUC",
}
"""How the report's table headings and the hypervolume's reference point name a metric."""


def method_of(row: pd.Series) -> str:
    """A trial's ``param/method``, ``?`` when the row has none."""
    return str(row.get("param/method", "?"))


def _colour(method: str, methods: Sequence[str]) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    others = sorted(m for m in methods if m not in METHOD_COLOURS)
    return EXTRA_COLOURS[others.index(method) % len(EXTRA_COLOURS)] if method in others else "#000000"


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (110 dpi, cropped to its contents)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def front_figure(
    trials: pd.DataFrame, front: pd.DataFrame, objectives: Objectives, constraints: Constraints
) -> Figure:
    """The sweep's objectives, one panel per pair (one panel for two objectives, three for three).

    Each panel shows every trial's validation point by method (hollow: not completed), a grey × on each
    completed trial that misses a constraint, the front members ringed and numbered with their test points
    and 95 % intervals (of a long front, those :func:`~fairsearch.output.tables.thin_front` picks), and a
    constraint on either axis as a dashed line at its bound; with two objectives the whole front is drawn
    as a staircase. The default objectives keep their accuracy-vs.-MaxAccGap titles.
    """
    shown = thin_front(front, objectives, constraints)
    pairs = [_axes_pair(a, b) for a, b in itertools.combinations(objectives, 2)]
    single = len(pairs) == 1
    fig = Figure(figsize=(7.5, 5.2) if single else (5.2 * len(pairs), 4.8))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (x, y) in zip(axes, pairs, strict=True):
        _panel(ax, trials, shown, x, y, constraints)
        if single:
            _staircase(ax, front, trials, x, y)
        ax.set_xlabel(_axis_label(x))
        ax.set_ylabel(_axis_label(y))
    if accuracy_vs_gap(objectives):
        axes[0].set_xlabel("MaxAccGap (%)  ← fairer")
        axes[0].set_ylabel("accuracy (%)  ↑ better")
        axes[0].set_title("Accuracy vs. MaxAccGap: validation (dots), test split (diamonds)")
    elif single:
        x, y = pairs[0]
        axes[0].set_title(f"{y.label} vs. {x.label}: validation (dots), test split (diamonds)")
    else:
        fig.suptitle(
            f"The {len(objectives)} objectives pair by pair: validation (dots), test split (diamonds)"
        )
    if single:
        axes[0].legend(loc="best", fontsize=8)
    else:
        _figure_legend(fig, axes)
    return fig


def accuracy_vs_gap(objectives: Objectives) -> bool:
    """Whether the objectives are the default pair, accuracy and MaxAccGap (drawn as they always were)."""
    return {o.key for o in objectives} == {ACC_METRIC.key, GAP_METRIC.key}


def _axes_pair(a: Objective, b: Objective) -> tuple[Objective, Objective]:
    """``(x, y)`` of a panel: a minimised objective against a maximised one goes on x (MaxAccGap across,
    accuracy up, as in the default figure); otherwise the later objective goes on x."""
    return (a, b) if a.direction == "min" and b.direction == "max" else (b, a)


def _axis_label(objective: Objective) -> str:
    """``worst-group accuracy (%) ↑``: the objective and its better direction."""
    return f"{objective.label} (%) {arrow(objective)}"


def arrow(objective: Objective) -> str:
    """``↑`` for a maximised objective, ``↓`` for a minimised one."""
    return "↑" if objective.direction == "max" else "↓"


def _values(df: pd.DataFrame, column: str) -> np.ndarray:
    """``[N]`` floats of a column, NaN where it is absent."""
    return df[column].to_numpy(dtype=float) if column in df else np.full(len(df), np.nan)


def _methods(df: pd.DataFrame) -> list[str]:
    return sorted(df["param/method"].astype(str).unique()) if "param/method" in df else ["?"]


def _misses(df: pd.DataFrame) -> np.ndarray:
    """Bool ``[N]``: the rows marked as missing a constraint (``feasible`` false; null is not a miss)."""
    if "feasible" not in df:
        return np.zeros(len(df), dtype=bool)
    return df["feasible"].astype("boolean").eq(False).fillna(False).to_numpy(dtype=bool)


def _panel(
    ax: Any, trials: pd.DataFrame, front: pd.DataFrame, x: Objective, y: Objective, constraints: Constraints
) -> None:
    """One pair of objectives in percent (see :func:`front_figure`)."""
    scored = trials[np.isfinite(_values(trials, x.column)) & np.isfinite(_values(trials, y.column))]
    methods = _methods(scored)
    for method in methods:
        rows = scored[scored["param/method"].astype(str) == method] if "param/method" in scored else scored
        colour = _colour(method, methods)
        done, other = rows[rows["status"] == "completed"], rows[rows["status"] != "completed"]
        ax.scatter(100 * done[x.column], 100 * done[y.column], s=28, color=colour, alpha=0.75, label=method)
        ax.scatter(100 * other[x.column], 100 * other[y.column], s=28, facecolors="none", edgecolors=colour)
    if (scored["status"] != "completed").any():
        ax.scatter([], [], s=28, facecolors="none", edgecolors="0.3", label="not completed (latest epoch)")
    missed = scored[_misses(scored)]
    if len(missed):
        ax.scatter(100 * missed[x.column], 100 * missed[y.column], s=46, marker="x", color="0.25", lw=1.3,
                   label="misses a constraint")  # fmt: skip
    for c in constraints:
        if c.key in (x.key, y.key):
            line = ax.axvline if c.key == x.key else ax.axhline
            line(100 * c.bound, ls="--", lw=1.1, color=CONSTRAINT_COLOUR, label=f"constraint {c.label}")
    _front_members(ax, front, x, y, methods)
    ax.grid(alpha=0.3)


def _front_members(ax: Any, front: pd.DataFrame, x: Objective, y: Objective, methods: Sequence[str]) -> None:
    """The front members ringed and numbered, and their test-split points with 95 % intervals."""
    if front.empty:
        return
    xs, ys = 100 * _values(front, x.column), 100 * _values(front, y.column)
    ax.scatter(xs, ys, s=70, facecolors="none", edgecolors="black", lw=1.4, label="Pareto front (val)")
    for number, px, py in zip(front["number"], xs, ys, strict=True):
        ax.annotate(f"#{number}", (px, py), xytext=(4, 5), textcoords="offset points", fontsize=7)
    if f"test/{x.key}" in front and f"test/{y.key}" in front:
        for _, row in front.iterrows():
            _test_point(ax, row, _colour(method_of(row), methods), x, y)
        ax.errorbar(
            [], [], xerr=[], yerr=[], fmt="D", color="0.3", ms=5, label="front on test split, 95 % CI"
        )


def _staircase(ax: Any, front: pd.DataFrame, trials: pd.DataFrame, x: Objective, y: Objective) -> None:
    """A two-objective front as the edge of the region its members dominate, out past the farthest trial
    (rightwards when x is minimised, leftwards when it is maximised)."""
    if front.empty:
        return
    ordered = front.sort_values([x.column, y.column], ascending=[True, y.direction == "min"])
    xs, ys = 100 * _values(ordered, x.column), 100 * _values(ordered, y.column)
    every = 100 * _values(trials, x.column)
    if x.direction == "min":
        edge = max(float(np.nanmax(every)), xs[-1]) * 1.05 + 0.5
        ax.step(np.append(xs, edge), np.append(ys, ys[-1]), where="post", color="black", lw=1.2)
    else:
        edge = min(float(np.nanmin(every)), xs[0]) * 0.95 - 0.5
        ax.step(np.insert(xs, 0, edge), np.insert(ys, 0, ys[0]), where="pre", color="black", lw=1.2)


def _figure_legend(fig: Figure, axes: Sequence[Any]) -> None:
    """One legend under the panels, each label once."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(len(entries), 4), fontsize=8)  # fmt: skip


def _test_point(ax: Any, row: pd.Series, colour: str, x: Objective, y: Objective) -> None:
    """A member's test-split point (diamond, 95 % intervals where the metric has them), dotted from its
    validation point."""
    tx, ty = row.get(f"test/{x.key}"), row.get(f"test/{y.key}")
    if tx is None or ty is None or pd.isna(tx) or pd.isna(ty):
        return

    def err(key: str, centre: float) -> list[list[float]] | None:
        low, high = row.get(f"test/{key}_ci_low"), row.get(f"test/{key}_ci_high")
        if low is None or high is None or pd.isna(low) or pd.isna(high):
            return None
        return [[100 * max(centre - float(low), 0.0)], [100 * max(float(high) - centre, 0.0)]]

    ax.plot([100 * float(row[x.column]), 100 * float(tx)], [100 * float(row[y.column]), 100 * float(ty)],
            ":", color=colour, lw=0.8)  # fmt: skip
    ax.errorbar(
        [100 * float(tx)], [100 * float(ty)], xerr=err(x.key, float(tx)), yerr=err(y.key, float(ty)),
        fmt="D", color=colour, ms=5, elinewidth=1, capsize=2, alpha=0.9,
    )  # fmt: skip


def hypervolume_progress(trials: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """Finished trials in finishing order with the hypervolume (on the sweep's objectives) of the front of
    those finished so far."""
    finished = trials[trials["status"].isin(["completed", "failed"]) | trials["finished_at"].notna()]
    finished = finished.sort_values(["finished_at", "number"], na_position="last", kind="stable")
    ok = (finished["status"] == "completed").to_numpy()
    points = np.stack([_values(finished, o.column) for o in objectives], 1)
    points[~ok] = np.nan
    directions, reference = objective_directions(objectives), objective_reference(objectives)
    hv = [hypervolume(points[: k + 1], directions, reference) for k in range(len(finished))]
    return pd.DataFrame({"number": finished["number"].to_numpy(), "hypervolume": hv, "failed": ~ok})


def reference_text(objectives: Objectives) -> str:
    """``acc 0, gap 1``: the hypervolume's reference point, each objective's worst value."""
    return ", ".join(f"{SHORT.get(o.key, o.key)} {o.reference:g}" for o in objectives)


def hypervolume_figure(progress: pd.DataFrame, objectives: Objectives) -> Figure:
    """The hypervolume of :func:`hypervolume_progress` as a step line, failed trials marked ×."""
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.add_subplot()
    x = np.arange(1, len(progress) + 1)
    hv, failed = progress["hypervolume"].to_numpy(float), progress["failed"].to_numpy(bool)
    ax.step(x, hv, where="post", color="black")
    ax.plot(x[~failed], hv[~failed], "o", ms=3, color="black", label="trial completed")
    if failed.any():
        ax.plot(x[failed], hv[failed], "x", ms=7, color="#d62728", label="trial failed")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("trials finished (in finishing order)")
    ax.set_ylabel(f"hypervolume, ref. ({reference_text(objectives)})")
    ax.set_title("Hypervolume of the validation front as the sweep progressed")
    ax.grid(alpha=0.3)
    return fig


def group_figure(members: pd.DataFrame, grouping: str, groups: list[str]) -> Figure:
    """Grouped bars: each group (x) once, one bar per front member (one colour per member), its 95 %
    interval (``val/acc/<grouping>/<group>_ci_low``/``_ci_high``) as an error bar."""
    fig = Figure(figsize=(max(6.0, 1.3 * len(groups) + 3.0), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(len(members), 1)
    palette = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, max(len(members), 1)))
    for i, (_, row) in enumerate(members.iterrows()):
        accs = np.array([float(row.get(f"val/acc/{grouping}/{g}", np.nan)) for g in groups])
        gap = row.get(f"val/max_acc_gap/{grouping}", np.nan)
        label = f"trial {row['number']} {method_of(row)} (acc {fmt_pct(row[ACC])}, gap here {fmt_pct(gap)})"
        x = np.arange(len(groups)) + (i - (len(members) - 1) / 2) * width
        ax.bar(x, 100 * accs, width, label=label, color=palette[i])
        low, high = (
            np.array([float(row.get(f"val/acc/{grouping}/{g}_ci_{end}", np.nan)) for g in groups])
            for end in ("low", "high")
        )
        known = np.isfinite(accs) & np.isfinite(low) & np.isfinite(high)
        if known.any():
            below, above = np.clip(accs - low, 0, None), np.clip(high - accs, 0, None)
            ax.errorbar(x[known], 100 * accs[known], yerr=100 * np.vstack([below, above])[:, known],
                        fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)  # fmt: skip
        tops = 100 * np.fmax(accs, np.where(known, high, accs))
        for bx, top, acc in zip(x, tops, accs, strict=True):  # each value above its bar and interval
            if np.isfinite(acc):
                ax.annotate(f"{100 * acc:.1f}", (bx, top), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6, rotation=90 if len(members) > 3 else 0)  # fmt: skip
    sizes = [members.get(f"val/n/{grouping}/{g}", pd.Series(dtype=float)).dropna() for g in groups]
    labels = [
        f"{g}\n(n={int(s.iloc[0])})" if len(s) else f"{g}\n(n=?)" for g, s in zip(groups, sizes, strict=True)
    ]
    ax.set_xticks(np.arange(len(groups)), labels)
    ax.set_ylabel("validation accuracy (%), 95 % interval")
    ax.set_ylim(0, 112)
    ax.set_title(f"Accuracy per {grouping} group, front members")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return fig


def drawn_groups(fig: Figure) -> list[str]:
    """The group names a :func:`group_figure` drew on its x axis, read back from its tick labels (each
    ``group\\n(n=…)``), for the report to state beside the image (call it after :func:`png`)."""
    return [tick.get_text().split("\n", 1)[0] for tick in fig.axes[0].get_xticklabels()]


def threshold_figure(fronts: dict[str, pd.DataFrame], constraints: Constraints = ()) -> Figure:
    """The three fronts' validation staircases through every member, and the members
    :func:`~fairsearch.output.tables.thin_front` picks of each ringed with their test points and 95 %
    intervals."""
    fig = Figure(figsize=(7.5, 5.2))
    ax = fig.add_subplot()
    right = 100 * max(float(f[GAP].max()) for f in fronts.values() if len(f)) * 1.05 + 0.5
    for name, front in fronts.items():
        if front.empty:
            continue
        colour, ordered = _FRONT_COLOURS[name], front.sort_values([GAP, ACC], ascending=[True, False])
        gaps, accs = 100 * ordered[GAP].to_numpy(float), 100 * ordered[ACC].to_numpy(float)
        ax.step(np.append(gaps, right), np.append(accs, accs[-1]), where="post", color=colour, lw=1.2)
        shown = thin_front(ordered, OBJECTIVES, constraints)
        ax.scatter(100 * shown[GAP], 100 * shown[ACC], s=40, facecolors="none", edgecolors=colour,
                   label=f"{FRONT_TITLES[name]} (val)")  # fmt: skip
        for _, row in shown.iterrows():
            _test_point(ax, row, colour, GAP_METRIC, ACC_METRIC)
    ax.set_xlabel("MaxAccGap (%)  ← fairer")
    ax.set_ylabel("accuracy (%)  ↑ better")
    ax.set_title("Trained vs. thresholded: validation fronts (circles), test split (diamonds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def confirmed_figure(confirmed: pd.DataFrame) -> Figure:
    """Each confirmed member's seed means, validation (circles) and test (diamonds), with across-seed
    95 % intervals and a dotted line from one to the other."""
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.add_subplot()
    methods = sorted({method_of(r) for _, r in confirmed.iterrows()})
    for _, row in confirmed.iterrows():
        colour = _colour(method_of(row), methods)
        for split, marker in (("val", "o"), ("test", "D")):
            acc, gap = row.get(f"{split}/acc"), row.get(f"{split}/max_acc_gap")
            if acc is None or gap is None or pd.isna(acc) or pd.isna(gap):
                continue
            ax.errorbar(
                [100 * gap], [100 * acc], xerr=_seed_err(row, f"{split}/max_acc_gap"),
                yerr=_seed_err(row, f"{split}/acc"), fmt=marker, color=colour, ms=6, capsize=2,
                mfc="none" if split == "val" else colour,
            )  # fmt: skip
        ax.annotate(f"#{row['number']} ({int(row['n_seeds'])} seeds)", (100 * row[GAP], 100 * row[ACC]),
                    xytext=(4, 5), textcoords="offset points", fontsize=7)  # fmt: skip
        if pd.notna(row.get("test/acc")) and pd.notna(row.get("test/max_acc_gap")):
            ax.plot([100 * row[GAP], 100 * row["test/max_acc_gap"]], [100 * row[ACC], 100 * row["test/acc"]],
                    ":", color=colour, lw=0.8)  # fmt: skip
    for method in methods:
        ax.plot([], [], "s", color=_colour(method, methods), label=method)
    ax.set_xlabel("MaxAccGap (%)  ← fairer")
    ax.set_ylabel("accuracy (%)  ↑ better")
    ax.set_title("Seed-confirmed front: validation means (circles), test means (diamonds)")
    ax.ticklabel_format(useOffset=False)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _seed_err(row: pd.Series, key: str) -> list[list[float]] | None:
    low, high, centre = row.get(f"{key}_seeds_low"), row.get(f"{key}_seeds_high"), row.get(key)
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return None
    return [[100 * max(centre - low, 0.0)], [100 * max(high - centre, 0.0)]]
