"""Does the default sweep find a fairer configuration that holds up on the test split? Three sampler seeds.

Runs ``search_spaces/hybrid.yaml`` (the main command's sweep, confirmation included) once per sampler seed
and, per seed, compares on the **test** split:

- the best vanilla trial: the completed vanilla trial with the highest validation accuracy;
- the chosen fair trial: among the fair-method members of the validation front whose validation accuracy is
  within 2 points of that vanilla's, the one with the lowest validation MaxAccGap (chosen on validation
  only, as a user would);
- any fair front member that meets the target on test (reported, never used to choose).

Target (issue "A front you can trust"): a fair-method front member whose test MaxAccGap is at most half the
best vanilla's, at no more than 2 points lower test accuracy. Each figure carries its 95 % interval
(per-trial: exact, ``fairsearch.judge.intervals``); each group's test accuracy and predicted-positive rate are
printed beside it, so a gap closed by levelling everyone down shows as such. Where the space confirms
candidates with further seeds, the confirmed means (with across-seed intervals) are printed too.

    .venv/bin/python benchmarks/fair_front.py --out /tmp/fair_front            # 3 seeds, ~10 min on 2 cores
    .venv/bin/python benchmarks/fair_front.py --out /tmp/ff --seeds 0 --space search_spaces/hybrid.yaml

Writes ``<out>/fair_front.json`` (every figure) and prints a table; sweeps go to ``<out>/seed<k>/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fairsearch.judge.paired import verdict
from fairsearch.methods import METHODS
from fairsearch.output.compare import compare_trials
from fairsearch.output.confirm import group_summary, paired_verdicts, read_confirmed
from fairsearch.train.checkpoint import read_test_metrics_at

ACC_SLACK = 0.02
"""How much lower a fair trial's accuracy may be (validation for choosing, test for the target)."""

logger = logging.getLogger("fair_front")


def seeded_space(space: Path, seed: int, out: Path) -> Path:
    """A copy of a space file in ``out`` with its sampler seeded ``seed`` and its name ending ``-s<seed>``."""
    doc = yaml.safe_load(space.read_text())
    doc["sampler"] = {**(doc.get("sampler") or {}), "seed": seed}
    doc["name"] = f"{doc.get('name', space.stem)}-s{seed}"
    path = out / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _test(row: pd.Series) -> dict[str, float]:
    checkpoint = row.get("checkpoint")
    return read_test_metrics_at(str(checkpoint)) if isinstance(checkpoint, str) else {}


def _figures(row: pd.Series, test: dict[str, float]) -> dict[str, Any]:
    flat = {f"test/{k}": v for k, v in test.items()} | {
        k: v for k, v in row.items() if str(k).startswith("param/")
    }
    return {
        "number": int(row["number"]),
        "method": str(row["param/method"]),
        "params": {k[len("param/") :]: _plain(v) for k, v in row.items() if str(k).startswith("param/")},
        "val_acc": float(row["val/acc"]),
        "val_gap": float(row["val/max_acc_gap"]),
        **{f"test_{k}": test.get(k) for k in ("acc", "acc_ci_low", "acc_ci_high")},
        **{f"test_gap{s}": test.get(f"max_acc_gap{s}") for s in ("", "_ci_low", "_ci_high")},
        "test_groups": group_summary(flat),
        "_flat": flat,
    }


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def _meets(fair: dict[str, Any], vanilla: dict[str, Any]) -> bool:
    return (
        fair["test_gap"] is not None
        and vanilla["test_gap"] is not None
        and fair["test_gap"] <= vanilla["test_gap"] / 2
        and fair["test_acc"] >= vanilla["test_acc"] - ACC_SLACK
    )


def one_seed(space: Path, seed: int, out: Path) -> dict[str, Any]:
    """Runs the sweep with sampler seed ``seed`` and returns its comparison."""
    from fairsearch.search.sweep import run_sweep

    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outcome = run_sweep(seeded_space(space, seed, folder), results_root=folder / "results")
    wall = time.perf_counter() - started
    trials = pd.read_parquet(outcome.results_dir / "trials.parquet")
    done = trials[trials["status"] == "completed"]
    vanillas = done[done["param/method"] == "vanilla"].sort_values("val/acc", ascending=False)
    front = outcome.front
    fair_front = front[front["param/method"].map(lambda m: METHODS[str(m)].is_fair)]
    result: dict[str, Any] = {"seed": seed, "wall_s": wall, "trials": len(trials), "front": len(front)}
    if vanillas.empty:
        return result | {"note": "no completed vanilla trial"}
    vanilla = _figures(vanillas.iloc[0], _test(vanillas.iloc[0]))
    fair = [_figures(row, _test(row)) for _, row in fair_front.iterrows()]
    eligible = [f for f in fair if f["val_acc"] >= vanilla["val_acc"] - ACC_SLACK]
    chosen = min(eligible, key=lambda f: (f["val_gap"], -f["val_acc"])) if eligible else None
    if chosen is not None:
        _, _, differences = compare_trials(outcome.results_dir, str(chosen["number"]), str(vanilla["number"]))
        chosen["verdict"] = "paired on the test images: " + verdict(differences, ("fair", "vanilla"))
        chosen["meets_target"] = _meets(chosen, vanilla)
    result |= {
        "vanilla": vanilla,
        "chosen_fair": chosen,
        "fair_front_members": len(fair),
        "any_fair_member_meets_target": any(_meets(f, vanilla) for f in fair),
    }
    _, confirmed = read_confirmed(outcome.results_dir)
    judged = paired_verdicts(outcome.results_dir, confirmed)
    result["confirmed"] = [
        {
            "number": int(r["number"]),
            "method": str(r["param/method"]),
            "n_seeds": int(r["n_seeds"]),
            **{
                k: _plain(r.get(k))
                for k in (
                    "val/acc",
                    "val/max_acc_gap",
                    "test/acc",
                    "test/acc_seeds_low",
                    "test/acc_seeds_high",
                    "test/max_acc_gap",
                    "test/max_acc_gap_seeds_low",
                    "test/max_acc_gap_seeds_high",
                )
            },
            "test_groups": group_summary(r),
            "against_vanilla": judged.get(int(r["number"]), "-"),
        }
        for _, r in confirmed.iterrows()
    ]
    return result


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _ci(d: dict[str, Any], key: str) -> str:
    return f"{_pct(d.get(key))} [{_pct(d.get(key + '_ci_low'))}, {_pct(d.get(key + '_ci_high'))}]"


def table(results: list[dict[str, Any]]) -> str:
    """The per-seed comparison as Markdown."""
    lines = [
        "| seed | role | trial | method | val acc | val gap | test acc [95 % CI] | test gap [95 % CI] | target met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for role in ("vanilla", "chosen_fair"):
            d = r.get(role)
            if d is None:
                lines.append(
                    f"| {r['seed']} | {role} | - | - | - | - | - | - | no candidate within 2 points |"
                )
                continue
            met = "" if role == "vanilla" else ("yes" if d["meets_target"] else "no") + f" ({d['verdict']})"
            lines.append(
                f"| {r['seed']} | {role} | #{d['number']} | {d['method']} | {_pct(d['val_acc'])} | "
                f"{_pct(d['val_gap'])} | {_ci(d, 'test_acc')} | {_ci(d, 'test_gap')} | {met} |"
            )
    lines.append("")
    for r in results:
        lines.append(
            f"seed {r['seed']}: {r.get('trials')} trials in {r.get('wall_s', 0):.0f} s, front {r.get('front')}; "
            f"any fair front member meets the target on test: {r.get('any_fair_member_meets_target')}"
        )
        for role in ("vanilla", "chosen_fair"):
            d = r.get(role)
            if d:
                lines.append(f"  {role} #{d['number']} test groups: {d['test_groups']}")
        for c in r.get("confirmed", []):
            lines.append(
                f"  confirmed #{c['number']} {c['method']} ({c['n_seeds']} seeds): test acc "
                f"{_pct(c['test/acc'])} [{_pct(c['test/acc_seeds_low'])}, {_pct(c['test/acc_seeds_high'])}], "
                f"test gap {_pct(c['test/max_acc_gap'])} [{_pct(c['test/max_acc_gap_seeds_low'])}, "
                f"{_pct(c['test/max_acc_gap_seeds_high'])}]; {c['test_groups']}"
            )
            if c["against_vanilla"] != "-":
                lines.append(f"    {c['against_vanilla']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the sweeps and fair_front.json")
    parser.add_argument("--space", type=Path, default=Path("search_spaces/hybrid.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        results.append(one_seed(args.space.resolve(), seed, out))
        import ray

        ray.shutdown()  # each sweep starts its own local Ray
    for r in results:
        for role in ("vanilla", "chosen_fair"):
            if r.get(role):
                r[role].pop("_flat", None)
    (out / "fair_front.json").write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
