"""Group sizes and label counts of a dataset, as a long table and as a readable pivoted text table."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fairsearch.data.fairvlmed import ATTRIBUTE_VALUES, ATTRIBUTES, Split

__all__ = ["SUMMARY_COLUMNS", "format_summary", "summarize"]

SUMMARY_COLUMNS = ("split", "attribute", "group", "label", "count")
_ALL = "(all)"


def summarize(splits: Mapping[str, Split]) -> pd.DataFrame:
    """Count samples per split, attribute group and label.

    Every group of every attribute's domain appears (with count 0 where a split has none), so the same
    rows exist for every dataset.

    Args:
        splits: ``{"train": Split, ...}`` as returned by :func:`~fairsearch.data.load_fairvlmed`.

    Returns:
        A long table with columns ``split`` (str), ``attribute`` (str), ``group`` (group name, str),
        ``label`` (int64, 1 = glaucoma) and ``count`` (int64); one row per split × attribute × group × label,
        in split, :data:`ATTRIBUTES` and code order.
    """
    rows = []
    for split_name, split in splits.items():
        for attribute in ATTRIBUTES:
            codes = split.attributes[attribute]
            for code, group in ATTRIBUTE_VALUES[attribute].items():
                in_group = codes == code
                for label in (0, 1):
                    count = int(np.count_nonzero(in_group & (split.labels == label)))
                    rows.append((split_name, attribute, group, label, count))
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return table.astype({"split": str, "attribute": str, "group": str, "label": "int64", "count": "int64"})


def _percent(part: float, whole: float) -> str:
    """``'77.0%'``, or ``'-'`` for an empty whole."""
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def format_summary(table: pd.DataFrame) -> str:
    """Pivot :func:`summarize`'s table into text: one row per group, per split ``n``, share and glaucoma %.

    The first row holds each split's total; ``share`` is the group's share of its split and ``glaucoma``
    the share of label 1 inside the group. An ``all`` block sums the splits. Groups empty in every split
    (e.g. an unused ``unknown``) are left out.

    Args:
        table: The output of :func:`summarize`.

    Returns:
        A multi-line string for the terminal.
    """
    if table.empty:
        return "(no samples)"
    splits = list(dict.fromkeys(table["split"]))
    keys = ["split", "attribute", "group"]
    n = table.groupby(keys, sort=False)["count"].sum()
    positives = table[table["label"] == 1].groupby(keys, sort=False)["count"].sum()
    first = table["attribute"].iloc[0]
    totals = {s: int(n[s, first].sum()) for s in splits}
    totals_pos = {s: int(positives[s, first].sum()) for s in splits}
    rows = list(dict.fromkeys(zip(table["attribute"], table["group"], strict=True)))
    index: list[tuple[str, str]] = [(_ALL, _ALL)]
    cells: list[list[str]] = [[]]
    for split in splits:
        cells[0] += [str(totals[split]), _percent(1, 1), _percent(totals_pos[split], totals[split])]
    grand, grand_pos = sum(totals.values()), sum(totals_pos.values())
    cells[0] += [str(grand), _percent(1, 1), _percent(grand_pos, grand)]
    for attribute, group in rows:
        counts = [int(n[s, attribute, group]) for s in splits]
        if not any(counts):
            continue
        pos = [int(positives[s, attribute, group]) for s in splits]
        row: list[str] = []
        for split, count, count_pos in zip(splits, counts, pos, strict=True):
            row += [str(count), _percent(count, totals[split]), _percent(count_pos, count)]
        row += [str(sum(counts)), _percent(sum(counts), grand), _percent(sum(pos), sum(counts))]
        index.append((attribute, group))
        cells.append(row)
    columns = pd.MultiIndex.from_product([[*splits, "all"], ["n", "share", "glaucoma"]])
    frame = pd.DataFrame(
        cells, index=pd.MultiIndex.from_tuples(index, names=["attribute", "group"]), columns=columns
    )
    return frame.to_string(sparsify=True)
