"""Record full learning curves once, for ``replay.py`` to replay under any early-stopping scheduler.

Run from the repository root (about 30–40 minutes on 2 CPU cores; run it ``nice``)::

    nice -n 10 .venv/bin/python benchmarks/record_curves.py
    nice -n 10 .venv/bin/python benchmarks/record_curves.py --space benchmarks/spaces/curves.yaml \\
        --results results --out benchmarks/data/curves.parquet

It is an ordinary fairsearch sweep (:func:`fairsearch.search.sweep.run_sweep`, as ``fairsearch run`` runs it) of
the space file, which has no scheduler, so every trial trains to its full budget and reports
``reports_per_epoch`` times an epoch. Running the same command again resumes the sweep (finished trials
are kept, unfinished ones continue from their last checkpoint) and then writes the record.

Each completed trial's per-report validation metrics are read from its final checkpoint's ``state.json``
(``history``: one entry per report, in order; the ``checkpoint`` column of ``trials.parquet`` names the
folder), never from Ray Tune's ``result.json``, whose reports a resumed trial may repeat. The record is
one Parquet file, one row per (trial, report):

==================  =======  ===============================================================
column              type     meaning
==================  =======  ===============================================================
``trial``           int64    the trial's number in the sweep (0, 1, ...)
``trial_id``        str      Ray Tune's trial id
``report``          int64    1, 2, ...: the report's index within the trial
``epoch``           float64  epochs trained at the report (0.5, 1.0, ... with 2 per epoch)
``acc``             float64  validation accuracy
``max_acc_gap``     float64  validation MaxAccGap of the space's ``group_by``
``auc``             float64  validation AUC
``loss``            float64  validation cross-entropy
``worst_group_acc`` float64  validation accuracy of the worst group
``train_loss``      float64  mean training loss since the previous report
``wall_time_s``     float64  the trial's whole wall time (start-up included)
``method`` ...      any      every searched parameter, as the trial was trained
==================  =======  ===============================================================

The file's schema metadata keeps the space file's text (``fairsearch.spec.space``) and the number of reports
per trial (``fairsearch.reports``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

logger = logging.getLogger("record_curves")

REPORT_METRICS = ("epoch", "acc", "max_acc_gap", "auc", "loss", "worst_group_acc", "train_loss")
"""Keys of a ``history`` entry kept per report."""
DEFAULT_SPACE = Path(__file__).parent / "spaces" / "curves.yaml"
DEFAULT_OUT = Path(__file__).parent / "data" / "curves.parquet"


def read_history(location: str) -> dict[str, Any] | None:
    """A checkpoint folder's saved state (``history``, ``config``), if the folder is complete.

    Args:
        location: a local path or a URI (``trials.parquet``'s ``checkpoint``).

    Returns:
        The parsed ``state.json``, or ``None`` for a missing or incomplete checkpoint.
    """
    from fairsearch.train.checkpoint import complete_checkpoint_state

    if "://" in location:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
    else:
        fs, path = pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())
    return complete_checkpoint_state(fs, path)


def curves_table(trials: pd.DataFrame, parameters: list[str], reports: int) -> pd.DataFrame:
    """One row per (completed trial, report) from the trials' final checkpoints.

    Args:
        trials: ``trials.parquet`` of the sweep.
        parameters: the searched parameters (columns taken from each checkpoint's config).
        reports: reports a full trial makes (``epochs * reports_per_epoch``); shorter trials are left out
            with a warning.

    Returns:
        The record, sorted by trial and report.
    """
    rows: list[dict[str, Any]] = []
    for trial in trials[trials["status"] == "completed"].itertuples(index=False):
        state = read_history(str(trial.checkpoint)) if isinstance(trial.checkpoint, str) else None
        if state is None:
            logger.warning("trial %s: no complete checkpoint at %r; left out", trial.number, trial.checkpoint)
            continue
        history = state["history"]
        if len(history) != reports:
            logger.warning("trial %s: %d reports, not %d; left out", trial.number, len(history), reports)
            continue
        config = state["config"]
        for index, entry in enumerate(history, start=1):
            row: dict[str, Any] = {
                "trial": int(trial.number),
                "trial_id": str(trial.trial_id),
                "report": index,
            }
            row.update({key: float(entry[key]) for key in REPORT_METRICS})
            row["wall_time_s"] = float(trial.wall_time_s)
            row.update({name: config[name] for name in parameters})
            rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["trial", "report"], kind="stable").reset_index(drop=True) if rows else table


def write_record(table: pd.DataFrame, out: Path, *, space_text: str, reports: int) -> None:
    """Write the record atomically, with the space file and the reports per trial as schema metadata."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta.update({b"fairsearch.spec.space": space_text.encode(), b"fairsearch.reports": str(reports).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".parquet.tmp")
    pq.write_table(arrow.replace_schema_metadata(meta), tmp, compression="zstd")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE, help="space file (no scheduler)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root of the sweep")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the record's Parquet file")
    parser.add_argument("--restart", action="store_true", help="discard the sweep's results and start over")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from fairsearch.errors import FairsearchError
    from fairsearch.output.results import read_results
    from fairsearch.search.sweep import run_sweep
    from fairsearch.spec.config import TrialConfig
    from fairsearch.spec.space import load_space

    try:
        spec = load_space(args.space)
        if spec.scheduler:
            raise FairsearchError(f"{args.space}: a curve record trains every trial fully; drop `scheduler:`")
        outcome = run_sweep(args.space, results_root=args.results, restart=args.restart)
    except FairsearchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; resume with the same command ({' '.join(sys.argv)})", file=sys.stderr)
        return 130
    if outcome.unfinished:
        print(f"{outcome.unfinished} trials unfinished; rerun the same command to resume", file=sys.stderr)
        return 130
    trials, _ = read_results(outcome.results_dir)
    fixed = TrialConfig.from_dict(spec.fixed)
    reports = fixed.epochs * fixed.reports_per_epoch
    table = curves_table(trials, sorted(spec.search), reports)
    write_record(table, args.out, space_text=args.space.read_text(), reports=reports)
    print(
        f"{table['trial'].nunique() if len(table) else 0} trials × {reports} reports "
        f"({outcome.failed} failed) written to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
