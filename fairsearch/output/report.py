"""``fairsearch report``: a self-contained HTML report of a sweep's trade-off between its objectives.

The report reads only ``trials.parquet`` and ``pareto.parquet`` (see :mod:`fairsearch.output.results`), so it
works on a finished sweep, one still running, and one that was interrupted. It follows the objectives and
constraints the sweep was run with (:func:`fairsearch.output.results.read_sweep_goals`) and holds:

1. the Pareto front: with the default objectives, validation accuracy against validation MaxAccGap for
   every trial, the front as a staircase, and the front members' test-split points with their 95 %
   intervals; with others, one such panel per pair of objectives. Trials that miss a constraint are
   crossed out, and a constraint on a plotted metric is a dashed line at its bound;
2. the hypervolume of the front of the trials finished so far, in the order they finished;
3. per front member, the accuracy of every group of every grouping with its 95 % interval as an error
   bar, and the group sizes;
4. the front as a table with its parameters, each objective on validation, whether it meets the
   constraints, and the test split with intervals; a setting the same in every completed trial is left
   out of the tables and named once above them;
5. with constraints: how many trials meet each, and the front of the trials that meet them all;
6. the comparison the paper makes: the most accurate vanilla trial against the fair methods' trials
   with the lowest gap at equal-or-better accuracy (within one point), and the gap reduction in percent;
7. did a fair method beat thresholding? The trained front, the front of thresholded vanilla trials and
   the combined front side by side, with test intervals (:mod:`fairsearch.output.threshold_fronts`), when the
   trials saved their scores.

Sections 3, 6 and 7 and the seed-confirmed front are about accuracy and MaxAccGap whatever the objectives:
every trial reports both.

A figure of a long front draws the members :func:`fairsearch.output.tables.thin_front` picks (at most
10, spread along it) and says so in its caption; the tables list every member.

Images are PNGs drawn by :mod:`fairsearch.output.report_figures`, embedded as base64 data URIs (the page needs no
network) and also written beside the HTML file.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fairsearch.errors import FairsearchError
from fairsearch.folders import check_writable_folder, write_atomic
from fairsearch.methods import METHODS
from fairsearch.output.confirm import group_summary, paired_verdicts, read_confirmed
from fairsearch.output.report_figures import (
    SHORT,
    accuracy_vs_gap,
    arrow,
    confirmed_figure,
    drawn_groups,
    front_figure,
    group_figure,
    hypervolume_figure,
    hypervolume_progress,
    method_of,
    png,
    reference_text,
    threshold_figure,
)
from fairsearch.output.results import (
    FEASIBLE_FRONT,
    completed_trials,
    feasible_mask,
    pareto_frame,
    read_front,
    read_results,
    read_sweep_goals,
)
from fairsearch.output.tables import (
    constraint_lines,
    fmt_ci,
    fmt_pct,
    method_settings,
    same_in_every_trial,
    thin_front,
)
from fairsearch.output.threshold_fronts import (
    COMPARISON_HEADER,
    FRONT_TITLES,
    GROUPS_AT_INFERENCE,
    MEMBER_HEADER,
    THRESHOLD_FRONTS,
    front_comparison,
    member_rows,
    read_threshold_fronts,
)
from fairsearch.spec.config import METRICS, Constraints, Objectives
from fairsearch.spec.config import OBJECTIVES as THRESHOLD_OBJECTIVES

__all__ = ["ACC_TOLERANCE", "Comparison", "compare_to_vanilla", "write_report"]

logger = logging.getLogger(__name__)

ACC_TOLERANCE = 0.01
"""A fair trial counts as "equal-or-better accuracy" when within this much (one point) of vanilla's."""
FAIR_METHODS = tuple(name for name, spec in METHODS.items() if spec.is_fair)
_GROUP_ACC = re.compile(r"^val/acc/(?P<grouping>[^/]+)/(?P<group>.+)(?<!_ci_low)(?<!_ci_high)$")
"""A group's validation accuracy column (``val/acc/ethnicity/Hispanic``), not its interval's ends."""
ACC, GAP = METRICS["acc"].column, METRICS["max_acc_gap"].column
"""``val/acc`` and ``val/max_acc_gap``: every trial reports both, so the comparison to vanilla uses them
whatever the sweep's objectives (as do the per-group, thresholded and confirmed figures of
:mod:`fairsearch.output.report_figures`); the sweep's own front and hypervolume use its objectives."""
_TEST_KEYS = ("acc", "max_acc_gap", "worst_group_acc")
"""The test-split columns every front table shows (each objective's follows when not among them)."""
CONFIRMED_CAPTION = (
    "Seed-confirmed front: each member's mean over its seeds on validation (circles) and test (diamonds), "
    "with across-seed 95 % intervals"
)
FRONT_CAPTION = (
    "Every trial's validation accuracy vs. MaxAccGap, coloured by method; the validation front as a staircase; "
    "the front members' test-split results as diamonds with 95 % intervals"
)


@dataclass(frozen=True)
class Comparison:
    """The best vanilla trial against the best fair trial of each fair method.

    Attributes:
        vanilla: The ``trials.parquet`` row of the most accurate completed vanilla trial, or None.
        fair: Per fair method, the row of its lowest-gap completed trial with accuracy at least
            ``vanilla acc - ACC_TOLERANCE`` (None when it has no such trial).
        best_fair: The lowest-gap row among ``fair``, or None.
        reduction_pct: ``100 * (vanilla gap - best fair gap) / vanilla gap``; None when undefined.
        sentence: The finding (or why there is none) in one plain sentence.
    """

    vanilla: pd.Series | None
    fair: dict[str, pd.Series | None]
    best_fair: pd.Series | None
    reduction_pct: float | None
    sentence: str


def _completed(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[trials["status"] == "completed"]
    if ACC not in done or GAP not in done:
        return done.iloc[:0]
    return done[np.isfinite(done[ACC].to_numpy(float)) & np.isfinite(done[GAP].to_numpy(float))]


def compare_to_vanilla(trials: pd.DataFrame, tolerance: float = ACC_TOLERANCE) -> Comparison:
    """The paper's comparison on the validation split.

    Args:
        trials: A ``trials.parquet`` table.
        tolerance: How far below vanilla's accuracy a fair trial may be and still count (fraction).

    Returns:
        The :class:`Comparison`; ties break towards higher accuracy, then lower gap, then trial number.
    """
    done = _completed(trials)
    methods = done["param/method"].astype(str) if "param/method" in done else pd.Series("?", index=done.index)
    vanilla_rows = done[methods == "vanilla"].sort_values([ACC, GAP, "number"], ascending=[False, True, True])
    fair_rows = done[methods.isin(FAIR_METHODS)]
    if vanilla_rows.empty or fair_rows.empty:
        if vanilla_rows.empty and fair_rows.empty:
            sentence = (
                "No completed vanilla or fair (fr/gr/hybrid) trial yet, so there is nothing to compare."
            )
        elif vanilla_rows.empty:
            sentence = "No completed vanilla trial yet, so there is nothing to compare the fair methods with."
        else:
            sentence = (
                "No completed fair (fr/gr/hybrid) trial yet, so there is nothing to compare vanilla with."
            )
        return Comparison(None if vanilla_rows.empty else vanilla_rows.iloc[0], {}, None, None, sentence)
    vanilla = vanilla_rows.iloc[0]
    floor = float(vanilla[ACC]) - tolerance - 1e-12
    fair: dict[str, pd.Series | None] = {}
    for method in FAIR_METHODS:
        rows = fair_rows[(methods[fair_rows.index] == method) & (fair_rows[ACC] >= floor)]
        rows = rows.sort_values([GAP, ACC, "number"], ascending=[True, False, True])
        fair[method] = rows.iloc[0] if len(rows) else None
    found = [row for row in fair.values() if row is not None]
    v_desc = f"vanilla (trial {vanilla['number']}: accuracy {fmt_pct(vanilla[ACC])} %, MaxAccGap {fmt_pct(vanilla[GAP])} %)"
    if not found:
        sentence = (
            f"No fair trial reaches within {100 * tolerance:g} point of the best {v_desc}; "
            f"the most accurate fair trial has {fmt_pct(fair_rows[ACC].max())} %."
        )
        return Comparison(vanilla, fair, None, None, sentence)
    best = min(found, key=lambda r: (float(r[GAP]), -float(r[ACC]), int(r["number"])))
    b_desc = f"{method_of(best)} (trial {best['number']}: accuracy {fmt_pct(best[ACC])} %, MaxAccGap {fmt_pct(best[GAP])} %)"
    v_gap = float(vanilla[GAP])
    if v_gap <= 0:
        sentence = f"The best {v_desc} already has no gap; the best fair trial is {b_desc}."
        return Comparison(vanilla, fair, best, None, sentence)
    reduction = 100.0 * (v_gap - float(best[GAP])) / v_gap
    verb = "cuts" if reduction >= 0 else "raises"
    sentence = (
        f"Against the best {v_desc}, {b_desc} {verb} the validation MaxAccGap by "
        f"{abs(reduction):.1f} % at equal-or-better accuracy (within {100 * tolerance:g} point)."
    )
    return Comparison(vanilla, fair, best, reduction, sentence)


# ------------------------------------------------------------------------------- captions, front members


def _goals(objectives: Objectives) -> str:
    """``accuracy ↑, MaxAccGap ↓``."""
    return ", ".join(f"{o.label} {arrow(o)}" for o in objectives)


def _front_caption(objectives: Objectives, constraints: Constraints) -> str:
    if accuracy_vs_gap(objectives):
        caption = FRONT_CAPTION
    else:
        caption = (
            "Every trial's validation values of each pair of objectives ("
            + _goals(objectives)
            + "), coloured by method; the front members ringed and numbered, with their test-split results "
            "as diamonds with 95 % intervals"
        )
    if len(objectives) > 2:
        caption += (
            f". A member of the {len(objectives)}-objective front may look dominated in a 2-D projection: "
            "it is better on an objective the panel does not show"
        )
    if constraints:
        caption += "; a grey × marks a trial that misses a constraint, a dashed line a constraint's bound"
    return caption


def _hypervolume_caption(objectives: Objectives, constraints: Constraints) -> str:
    caption = (
        f"Hypervolume of the front of the trials finished so far, on validation {_goals(objectives)}, against the "
        f"reference point ({reference_text(objectives)}): each objective's worst value"
    )
    return caption + (
        "; over every completed trial, whether it meets the constraints or not" if constraints else ""
    )


def _groupings(front: pd.DataFrame) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for column in front.columns:
        match = _GROUP_ACC.match(str(column))
        if match:
            found.setdefault(match["grouping"], []).append(match["group"])
    return found


def _drawn_of(fronts: Mapping[str, pd.DataFrame], objectives: Objectives, constraints: Constraints) -> str:
    """What a caption adds when a figure draws only some members of its fronts (by name), as
    :func:`~fairsearch.output.tables.thin_front` picks them: ``; drawn: 10 of the 57 … members, …``."""
    counts = [(len(thin_front(f, objectives, constraints)), len(f), name) for name, f in fronts.items()]
    thinned = [f"{drawn} of the {total} {name} members" for drawn, total, name in counts if drawn < total]
    if not thinned:
        return ""
    return (
        f"; drawn: {' and '.join(thinned)}, spread along the front (both ends and those nearest a "
        "constraint's bound kept); the tables below list every one"
    )


# ------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.text { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
.note { background: #fff6e0; border-left: 4px solid #f0b429; padding: 0.5em 1em; }
"""


def _ci(row: pd.Series | None, key: str) -> str:
    if row is None:
        return "-"
    return fmt_ci(row, f"test/{key}")


def _param(value: Any, name: str) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    if name == "lr":
        return f"{float(value):.1e}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{'' if _numeric(c) else ' class=text'}>{html.escape(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _numeric(cell: str) -> bool:
    return bool(re.match(r"^[-+]?[\d.]", cell)) or cell == "-"


def _front_table(
    front: pd.DataFrame,
    objectives: Objectives,
    table_id: str = "front",
    *,
    meets: bool = True,
    same: Mapping[str, str] | None = None,
) -> str:
    """A front's members: parameters, each objective on validation, whether it meets the constraints
    (``meets`` and a ``feasible`` column), the test split with 95 % intervals, and epochs trained; the
    columns of ``same`` (:func:`~fairsearch.output.tables.same_in_every_trial`) left out."""
    same = same or {}
    params = [
        c for c in front.columns if str(c).startswith("param/") and c != "param/method" and c not in same
    ]
    epochs = "epochs_done" not in same
    tested = [*_TEST_KEYS, *(o.key for o in objectives if o.key not in _TEST_KEYS)]
    meets = meets and "feasible" in front
    header = ["trial", "method", *(c[len("param/") :] for c in params)]
    header += [f"val {SHORT.get(o.key, o.key)} %" for o in objectives] + (
        ["meets constraints"] if meets else []
    )
    header += [f"test {SHORT.get(k, k)} % [95 % CI]" for k in tested] + (["epochs"] if epochs else [])
    rows = []
    for _, row in front.iterrows():
        cells = [str(row["number"]), method_of(row), *(_param(row[c], c[len("param/") :]) for c in params)]
        cells += [fmt_pct(row.get(o.column)) for o in objectives]
        cells += [_yes_no(row.get("feasible"))] if meets else []
        cells += [_ci(row, key) for key in tested] + ([f"{float(row['epochs_done']):g}"] if epochs else [])
        rows.append(cells)
    return _table(header, rows, table_id)


def _yes_no(value: Any) -> str:
    """``yes``/``no`` for a ``feasible`` value; ``-`` when unknown."""
    return "-" if value is None or pd.isna(value) else ("yes" if bool(value) else "no")


def _feasible_front(
    folder: Path, trials: pd.DataFrame, objectives: Objectives, constraints: Constraints
) -> pd.DataFrame:
    """The front of the trials meeting every constraint, as ``pareto.parquet`` holds it; recomputed from
    the trials (without test metrics) when the file lacks it though some completed trial meets them all."""
    front = read_front(folder, FEASIBLE_FRONT)
    if front.empty and feasible_mask(completed_trials(trials), constraints).any():
        logger.warning("%s has no feasible front; recomputing it without test metrics", folder)
        front = pareto_frame(trials, {}, objectives, constraints, front_name=FEASIBLE_FRONT)
    return front


def _same_html(same: Mapping[str, str]) -> str:
    """The one sentence naming the settings the tables leave out, the same in every completed trial."""
    if not same:
        return ""
    names = {"epochs_done": "epochs trained"}
    listed = ", ".join(f"{names.get(c, c.removeprefix('param/'))} {v}" for c, v in same.items())
    return f'<p id="same-settings">The same in every completed trial, so left out of the tables: {html.escape(listed)}.</p>'


def _constraints_html(
    trials: pd.DataFrame, feasible: pd.DataFrame, objectives: Objectives, constraints: Constraints
) -> str:
    """The constraints section: how many trials meet each, and the feasible front (or why it is empty)."""
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in constraint_lines(trials, constraints))
    parts = [
        "<h2>Constraints</h2>",
        "<p>Each constraint is checked on the validation split. The Pareto front above spans every "
        "completed trial; the feasible front below holds the trials that no other trial meeting every "
        "constraint beats on all objectives.</p>",
        f'<ul id="constraint-lines">{lines}</ul>',
    ]
    if feasible.empty:
        parts.append(
            '<p class="note" id="feasible-empty">No completed trial meets every constraint, so the feasible '
            "front is empty: no trial of this sweep can be recommended under these constraints. Loosen "
            "them, or search further.</p>"
        )
        return "\n".join(parts)
    hv = float(feasible["hypervolume"].iloc[0])
    parts.append(
        f'<p id="feasible-summary">{len(feasible)} trial(s) on the feasible front, hypervolume {hv:.4f}; '
        "test-split values with 95 % intervals.</p>"
    )
    same = same_in_every_trial(trials)
    parts.append(_front_table(feasible, objectives, "feasible-front", meets=False, same=same))
    return "\n".join(parts)


def _comparison_html(comparison: Comparison, front: pd.DataFrame) -> str:
    parts = [f'<p id="comparison-finding">{html.escape(comparison.sentence)}</p>']
    if comparison.reduction_pct is not None:
        parts.append(
            f'<p>Gap reduction: <strong id="gap-reduction" data-value="{comparison.reduction_pct:.6f}">'
            f"{comparison.reduction_pct:.1f} %</strong></p>"
        )
    if comparison.vanilla is None:
        return "\n".join(parts)
    tested = front.set_index("trial_id") if "trial_id" in front else pd.DataFrame()
    v_gap = float(comparison.vanilla[GAP])
    rows = []
    for role, row in [("vanilla", comparison.vanilla), *comparison.fair.items()]:
        if row is None:
            rows.append([role, "-", "no trial within tolerance", "-", "-", "-", "-", "-", "-"])
            continue
        test = tested.loc[row["trial_id"]] if row["trial_id"] in tested.index else None
        reduction = (
            "-" if role == "vanilla" or v_gap <= 0 else f"{100 * (v_gap - float(row[GAP])) / v_gap:.1f}"
        )
        rows.append([role, str(row["number"]), method_settings(row), fmt_pct(row[ACC]), fmt_pct(row[GAP])])
        rows[-1] += [
            reduction,
            _ci(test, "acc"),
            _ci(test, "max_acc_gap"),
            "yes" if test is not None else "no",
        ]
    header = ["method", "trial", "settings", "val acc %", "val gap %", "gap reduction %"]
    header += ["test acc % [CI]", "test gap % [CI]", "on front"]
    parts.append(_table(header, rows, "comparison"))
    parts.append("<p>Chosen on the validation split. Test-split figures exist for front members only.</p>")
    return "\n".join(parts)


def _figure_html(data: bytes, name: str, caption: str, groups: Sequence[str] | None = None) -> str:
    """A figure: the PNG as a data URI, its caption and a link to the file beside the page; a group chart
    states the groups it drew (:func:`~fairsearch.output.report_figures.drawn_groups`) as ``data-groups``
    (a JSON list)."""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    drawn = "" if groups is None else f' data-groups="{html.escape(json.dumps(list(groups)))}"'
    return (
        f'<figure><img src="{uri}" alt="{html.escape(caption)}"{drawn}>'
        f'<figcaption>{html.escape(caption)} (<a href="{html.escape(name)}">{html.escape(name)}</a>)</figcaption></figure>'
    )


def _check_reportable(folder: Path, trials: pd.DataFrame) -> None:
    if trials.empty:
        raise FairsearchError(f"no trials in {folder} yet: wait for the sweep to record one, or run it first")
    if _completed(trials).empty:
        counts = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().sort_index().items())
        message = f"no completed trial in {folder} yet ({counts}): nothing to report"
        failed = trials[trials["status"] == "failed"]
        if len(failed):
            first = failed.iloc[0]
            message += f"; first error (trial {first['number']}): {first['error']}"
        raise FairsearchError(message)


def write_report(results_folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a sweep, with its PNGs beside it.

    Args:
        results_folder: The sweep's results folder (``results/<name>``).
        out: The HTML file to write; default ``<results_folder>/report.html``. The PNGs go to the same
            folder, named ``<stem>-<figure>.png``.

    Returns:
        The path of the HTML file.

    Raises:
        FairsearchError: If the folder has no results, no trials, or no completed trial; or ``out`` is not
            an ``.html`` path, is a folder, lies under a file or in a folder this user cannot write.
            Nothing is written then.
    """
    folder = Path(results_folder)
    if out is not None:  # a bad --out is refused before the results are read
        _check_out(Path(out))
    trials, front = read_results(folder)
    _check_reportable(folder, trials)
    objectives, constraints = read_sweep_goals(folder)
    fronts = read_threshold_fronts(folder)
    thresholded = any(len(fronts[name]) for name in THRESHOLD_FRONTS)
    out = Path(out) if out is not None else folder / "report.html"
    _check_out(out)
    progress = hypervolume_progress(trials, objectives)
    members = thin_front(front, objectives, constraints)
    figures: list[tuple[str, str, Figure]] = [
        (
            "pareto_front",
            _front_caption(objectives, constraints) + _drawn_of({"front": front}, objectives, constraints),
            front_figure(trials, front, objectives, constraints),
        ),
        (
            "hypervolume",
            _hypervolume_caption(objectives, constraints),
            hypervolume_figure(progress, objectives),
        ),
    ]
    for grouping, groups in _groupings(front).items():
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", grouping)
        caption = (
            f"Validation accuracy per {grouping} group (n = validation samples) for the front members, "
            "with 95 % intervals (Clopper–Pearson)" + _drawn_of({"front": front}, objectives, constraints)
        )
        figures.append((f"groups-{safe}", caption, group_figure(members, grouping, groups)))
    if thresholded:
        titled = {FRONT_TITLES[name]: front for name, front in fronts.items()}
        caption = THRESHOLD_CAPTION + _drawn_of(titled, THRESHOLD_OBJECTIVES, constraints)
        figures.append(("threshold_fronts", caption, threshold_figure(fronts, constraints)))
    _, confirmed = read_confirmed(folder)
    if len(confirmed):
        figures.append(("confirmed_front", CONFIRMED_CAPTION, confirmed_figure(confirmed)))
    pngs = [(f"{out.stem}-{key}.png", png(fig), caption) for key, caption, fig in figures]
    groups_drawn = [drawn_groups(fig) if key.startswith("groups-") else None for key, _, fig in figures]
    images = [
        _figure_html(data, name, caption, groups)
        for (name, data, caption), groups in zip(pngs, groups_drawn, strict=True)
    ]
    extra = int(thresholded) + int(len(confirmed) > 0)
    section = ""
    if constraints:
        feasible = _feasible_front(folder, trials, objectives, constraints)
        section = _constraints_html(trials, feasible, objectives, constraints)
    page = _page(folder, trials, front, images[: len(images) - extra], (objectives, constraints), section)
    if thresholded:
        page = page.replace("</body>", _threshold_html(fronts, images[len(images) - extra]) + "\n</body>")
    if len(confirmed):
        judged = paired_verdicts(folder, confirmed)
        page = page.replace("</body>", _confirmed_html(confirmed, judged, images[-1]) + "\n</body>")
    for name, _, _ in pngs:
        if (out.parent / name).is_dir():
            raise FairsearchError(
                f"--out {out}: {out.parent / name} is a folder; the report writes a PNG there"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, data, _ in pngs:
        write_atomic(out.parent / name, data)
    write_atomic(out, page.encode("utf-8"))
    logger.info("wrote %s and %d figure(s) beside it", out, len(images))
    return out


THRESHOLD_CAPTION = (
    "The trained front, the front of thresholded vanilla trials and the combined front: validation "
    "staircases (circles) and each member's test-split point with 95 % intervals (diamonds)"
)


def _threshold_html(fronts: dict[str, pd.DataFrame], image: str) -> str:
    parts = [
        "<h2>Did a fair method beat thresholding?</h2>",
        "<p>The post-processing baseline: each trial's decision threshold chosen again on validation, one for "
        "everyone (<em>threshold</em>) or one per group for each of a ladder of gap limits "
        "(<em>group_thresholds</em>), then applied to the test split. Side by side: the trained front, the "
        "front of the thresholded vanilla trials and the front of everything together, with each front's "
        "member of the smallest validation gap and its most accurate one on test (%, 95 % intervals).</p>",
        f'<p class="note" id="groups-at-inference">{html.escape(GROUPS_AT_INFERENCE)}</p>',
        image,
        _table(COMPARISON_HEADER, front_comparison(fronts), "threshold-comparison"),
    ]
    for name in THRESHOLD_FRONTS:
        parts.append(f"<h3>{html.escape(FRONT_TITLES[name].capitalize())} front</h3>")
        if fronts[name].empty:
            parts.append("<p>No points: no completed vanilla trial saved its scores.</p>")
        else:
            parts.append(_table(MEMBER_HEADER, member_rows(fronts[name]), f"front-{name}"))
    return "\n".join(parts)


def _check_out(out: Path) -> None:
    """The report's path: an ``.html`` file, not a folder, whose folder exists (or can be made) and is
    writable."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise FairsearchError(f"--out {out}: give an .html file to write (its PNGs are written beside it)")
    if out.is_dir():
        raise FairsearchError(
            f"--out {out}: is a folder; give the HTML file to write, e.g. {out / 'report.html'}"
        )
    check_writable_folder(out.parent, f"--out {out}")


def _seed_ci(row: pd.Series, key: str) -> str:
    point, low, high = row.get(key), row.get(f"{key}_seeds_low"), row.get(f"{key}_seeds_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return fmt_pct(point)
    return f"{fmt_pct(point)} [{fmt_pct(low)}, {fmt_pct(high)}]"


def _confirmed_html(confirmed: pd.DataFrame, verdicts: Mapping[int, str], image: str) -> str:
    rows = []
    for _, row in confirmed.iterrows():
        rows.append(
            [str(row["number"]), method_of(row), str(int(row["n_seeds"])), _seed_ci(row, "val/acc"),
             _seed_ci(row, "val/max_acc_gap"), _seed_ci(row, "test/acc"), _seed_ci(row, "test/max_acc_gap"),
             f"{fmt_pct(row.get('val/max_acc_gap'))} → {fmt_pct(row.get('test/max_acc_gap'))}",
             group_summary(row), verdicts.get(int(row["number"]), "-")]
        )  # fmt: skip
    header = ["trial", "method", "seeds", "val acc %", "val gap %", "test acc %", "test gap %"]
    header += ["gap val → test", "test groups: acc % (predicted positive, n)", "against vanilla, paired"]
    return "\n".join(
        [
            "<h2>Seed-confirmed front</h2>",
            "<p>The front's members, and the trials whose gap interval reached it, trained again with "
            "further seeds; points are means over the seeds with 95 % across-seed intervals (t), and the "
            "front is taken on those means. Each fair member is compared with the vanilla member on the "
            "same test images (both sides' seeds, their decisions averaged per image; 95 % intervals from "
            "a paired bootstrap over the images, as <code>fairsearch compare</code> gives them): a gap "
            "closed while a group's accuracy is clearly lower is marked <em>levelling down</em>.</p>",
            image,
            _table(header, rows, "confirmed"),
        ]
    )


def _page(
    folder: Path,
    trials: pd.DataFrame,
    front: pd.DataFrame,
    images: list[str],
    goals: tuple[Objectives, Constraints],
    constraints_section: str,
) -> str:
    objectives, constraints = goals
    counts = trials["status"].value_counts()
    status = ", ".join(f"{n} {s}" for s, n in counts.sort_index().items())
    unfinished = int(sum(counts.get(s, 0) for s in ("running", "pending", "interrupted")))
    hv = float(front["hypervolume"].iloc[0]) if len(front) else 0.0  # pareto_frame's, one value per row
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    title = f"fairsearch report: {folder.name}"
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{len(trials)} trials ({html.escape(status)}); {len(front)} on the "
            f"validation Pareto front, hypervolume {hv:.4f}. Generated {stamp} from {html.escape(str(folder))}.</p>"]  # fmt: skip
    body.append(f'<p id="goals">{html.escape(_goals_sentence(objectives, constraints))}</p>')
    if unfinished:
        body.append(
            f'<p class="note">{unfinished} trial(s) not finished: the sweep is still running or was interrupted. '
            "This report shows the trials recorded so far; run it again later for the rest.</p>"
        )
    default = accuracy_vs_gap(objectives)
    body += [
        "<h2>Accuracy vs. fairness</h2>" if default else "<h2>The objectives, pair by pair</h2>",
        images[0],
    ]
    body += ["<h2>Search progress</h2>", images[1]]
    body.append("<h2>Accuracy per group, front members</h2>")
    if len(images) == 2:
        body.append("<p>The front members reported no per-group metrics.</p>")
    body += images[2:]
    same = same_in_every_trial(trials)
    body += ["<h2>The Pareto front</h2>", _same_html(same), _front_table(front, objectives, same=same)]
    body += [constraints_section] if constraints_section else []
    body += ["<h2>Vanilla vs. fair methods</h2>", _comparison_html(compare_to_vanilla(trials), front)]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _goals_sentence(objectives: Objectives, constraints: Constraints) -> str:
    """``Objectives (validation): accuracy ↑, MaxAccGap ↓. Constraints: none.``"""
    bounds = ", ".join(c.label for c in constraints) or "none"
    return f"Objectives (validation): {_goals(objectives)}. Constraints: {bounds}."
