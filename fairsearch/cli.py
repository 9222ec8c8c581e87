"""The ``fairsearch`` command: parse arguments, call one function, map user errors to exit code 2.

Examples::

    fairsearch run --space search_spaces/hybrid.yaml              # run, or resume, a sweep
    fairsearch run --space hybrid.yaml --address auto --storage s3://bucket/sweeps
    fairsearch pareto results/hybrid                              # the fronts: trained, thresholded, both
    fairsearch report results/hybrid                              # HTML report with plots
    fairsearch compare results/hybrid 3 0                         # trial 3 vs trial 0, paired on test
    fairsearch train --space search_spaces/hybrid.yaml --set method=gr lora_rank=16
    fairsearch plan --space search_spaces/hybrid.yaml --gpu-memory 80     # GPU memory of the largest trial
    fairsearch export results/hybrid --trial 3 --thresholds group --out exports/t3   # transformers + peft
    fairsearch predict exports/t3 --data /data/FairVLMed --out preds.parquet         # its decisions
    fairsearch data inspect /data/FairVLMed                       # group sizes per split and label
    fairsearch data synth /tmp/synthetic --n 2000 --seed 0        # the built-in synthetic set on disk
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fairsearch.errors import FairsearchError, clip_value, printable
from fairsearch.folders import check_writable_folder

if TYPE_CHECKING:
    from fairsearch.spec.config import Constraints, Objectives

logger = logging.getLogger("fairsearch")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_ALL_FAILED = 1
"""``run``: the sweep ended and not one trial completed."""
DEFAULT_GPU_MEMORY_GB = 80.0
"""``plan``'s GPU when neither ``--gpu-memory`` nor the space names one: an H100's."""
SYNTH_MAX_N = 100_000
SYNTH_MAX_SIZE = 1024
SYNTH_MAX_BYTES = 2 << 30
"""``data synth`` writes (and holds a split of) ``n × size²`` bytes of images: at most 2 GiB."""
ALL_HELP = (
    "list every member of every front (by default a long front is thinned to a few members spread along "
    "it, both ends and those nearest a constraint's bound kept; pareto.parquet holds every one)"
)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose refusals (``unrecognized arguments: ...``) quote the arguments with their
    control characters escaped, as every other message does."""

    def error(self, message: str) -> NoReturn:
        super().error(printable(message))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="fairsearch",
        description="Multi-objective (accuracy vs. MaxAccGap) search for fair LoRA fine-tuning of Qwen2.5-VL.",
        epilog=__doc__.split("Examples::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sweep, or resume it if its results folder exists")
    run.add_argument("--space", required=True, help="search-space YAML file")
    run.add_argument("--results", default="results", help="folder of results/<name>/ (default: results)")
    run.add_argument(
        "--storage", help="Ray Tune storage for checkpoints and state: a folder or s3://, gs://…"
    )
    run.add_argument("--address", help="Ray cluster to join: 'auto' or ray://host:port (default: local Ray)")
    run.add_argument("--name", help="sweep name (default: the space file's 'name')")
    run.add_argument("--optuna-storage", help="Optuna storage URL (default: SQLite in the results folder)")
    run.add_argument(
        "--mlflow",
        metavar="URI",
        help="MLflow tracking URI: a parent run for the sweep, a nested run per trial (default: the space's "
        "tracking.mlflow; needs fairsearch[mlflow])",
    )
    run.add_argument("--restart", action="store_true", help="discard an existing sweep of this name first")
    run.add_argument("--all", action="store_true", dest="show_all", help=ALL_HELP)

    train = sub.add_parser("train", help="run one trial in the foreground (no Ray) to debug a configuration")
    train.add_argument("--space", required=True, help="search-space YAML file (its fixed settings are used)")
    train.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="trial settings, e.g. method=gr"
    )
    train.add_argument("--out", default="runs/train", help="folder for metrics.jsonl and the checkpoint")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")

    plan = sub.add_parser(
        "plan", help="the GPU memory the space's largest trial needs, by part, and how many fit one GPU"
    )
    plan.add_argument("--space", required=True, help="search-space YAML file")
    plan.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GB",
        help=f"memory of one GPU (default: the space's resources.gpu_memory_gb, else {DEFAULT_GPU_MEMORY_GB:g})",
    )

    pareto = sub.add_parser(
        "pareto", help="print a sweep's Pareto front, and the fronts of thresholding its trials' scores"
    )
    pareto.add_argument("folder", help="results/<name>")
    pareto.add_argument(
        "--feasible",
        action="store_true",
        help="show the front of the trials that meet the space's constraints instead of the search's",
    )
    pareto.add_argument(
        "--kind",
        choices=["trained", "threshold", "group_thresholds"],
        help="list only the thresholded fronts' members of this kind",
    )
    pareto.add_argument("--all", action="store_true", dest="show_all", help=ALL_HELP)

    report = sub.add_parser("report", help="write an HTML report with Pareto plots and per-group views")
    report.add_argument("folder", help="results/<name>")
    report.add_argument(
        "--out", help="the HTML file to write, its PNGs beside it (default: <folder>/report.html)"
    )

    compare = sub.add_parser(
        "compare",
        help="two trials on the same test images: each metric's difference with a 95 %% paired interval",
    )
    compare.add_argument("folder", help="results/<name>")
    compare.add_argument(
        "a",
        help="a trial number (7), a trial at a decision threshold (7@0.42), at the thresholds of its "
        "group_thresholds or threshold row on the thresholded fronts (7@group: needs the group at "
        "inference; 7@single), or refitted (7@refit)",
    )
    compare.add_argument("b", help="the trial to compare it with, written the same way")

    export = sub.add_parser(
        "export", help="write a trial as a folder that transformers + peft load: adapter, head, model card"
    )
    export.add_argument("folder", help="results/<name>")
    export.add_argument("--trial", type=int, required=True, help="the trial number")
    export.add_argument(
        "--seed", type=int, help="the trial's run with this seed (a confirmation run; default: its own)"
    )
    export.add_argument(
        "--thresholds",
        choices=["none", "single", "group"],
        default="none",
        help="the decision rule: the model's own 0.5 (none), or the thresholds of the trial's thresholded "
        "front row of that kind (single: one for everyone; group: one per group)",
    )
    export.add_argument("--out", required=True, help="a new or empty folder")

    predict = sub.add_parser(
        "predict", help="an export's p(glaucoma) and decisions for a folder of images, as a Parquet file"
    )
    predict.add_argument("export", help="a folder made by `fairsearch export`")
    predict.add_argument(
        "--data", required=True, help="a FairVLMed folder, or a folder of PNG, JPEG and .npz files"
    )
    predict.add_argument("--out", required=True, help="the Parquet file to write (its folder must exist)")
    predict.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        default="test",
        help="a FairVLMed folder's split to score (default: test)",
    )
    predict.add_argument(
        "--groups",
        help="a CSV of columns image (the path relative to --data) and group: each image's group, for an "
        "export with per-group thresholds (a FairVLMed folder's attributes give them otherwise)",
    )
    predict.add_argument("--batch-size", type=int, default=16, help="images scored at once (default 16)")
    predict.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:1… (default: cuda when there is one)"
    )
    predict.add_argument("--force", action="store_true", help="replace --out if it exists")

    data = sub.add_parser("data", help="inspect a dataset or write the synthetic one")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="group sizes per split, attribute and label")
    inspect.add_argument("path", help="a Harvard-FairVLMed folder")
    synth = data_sub.add_parser("synth", help="write the built-in synthetic fundus set in FairVLMed layout")
    synth.add_argument("out", help="output folder (must not exist)")
    synth.add_argument(
        "--n", type=int, default=None, help="images in all splits (default: the built-in set's, 5800)"
    )
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    synth.add_argument("--size", type=int, default=112, help="image side in pixels (default 112)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fairsearch`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing at run time reaches the network
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "train":
            return _train(args)
        if args.command == "pareto":
            return _pareto(args)
        if args.command == "plan":
            return _plan(args)
        if args.command == "report":
            from fairsearch.output.report import write_report

            print(write_report(Path(args.folder), Path(args.out) if args.out else None))
            return 0
        if args.command == "compare":
            from fairsearch.output.compare import compare_trials, format_comparison

            print(format_comparison(*compare_trials(args.folder, args.a, args.b)))
            return 0
        if args.command == "export":
            from fairsearch.export.exporter import export_run

            print(export_run(args.folder, args.trial, args.out, seed=args.seed, thresholds=args.thresholds))
            return 0
        if args.command == "predict":
            from fairsearch.export.predict import format_prediction, predict_folder

            prediction = predict_folder(
                args.export, args.data, args.out, groups=args.groups, split=args.split,
                batch_size=args.batch_size, device=args.device, force=args.force,
            )  # fmt: skip
            print(format_prediction(prediction))
            return 0
        if args.command == "data":
            return _data(args)
    except FairsearchError as err:
        print("error: " + printable(str(err), keep="\n"), file=sys.stderr)  # a path may hold an ESC too
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _plan(args: argparse.Namespace) -> int:
    from fairsearch.search.capacity import format_plan, largest_trial
    from fairsearch.spec.space import load_space

    spec = load_space(args.space)
    gpu_memory = (
        args.gpu_memory if args.gpu_memory is not None else spec.gpu_memory_gb or DEFAULT_GPU_MEMORY_GB
    )
    if not 0 < gpu_memory <= 100_000:
        raise FairsearchError(f"--gpu-memory {gpu_memory:g}: must be the memory of one GPU in GB, > 0")
    print(format_plan(largest_trial(spec), gpu_memory, spec.gpus))
    return 0


def _pareto(args: argparse.Namespace) -> int:
    from fairsearch.output.confirm import format_confirmed, paired_verdicts, read_confirmed
    from fairsearch.output.results import FEASIBLE_FRONT, read_front, read_results, read_sweep_goals
    from fairsearch.output.tables import constraint_lines, format_front
    from fairsearch.output.threshold_fronts import read_threshold_fronts

    folder = Path(args.folder)
    fronts = read_threshold_fronts(folder)
    objectives, constraints = read_sweep_goals(folder)
    if args.feasible:
        if not constraints:
            raise FairsearchError(
                f"--feasible: {folder} is a sweep without constraints; add e.g. "
                "'constraints: {max_acc_gap: 0.02}' to its space file"
            )
        feasible = read_front(folder, FEASIBLE_FRONT)
        title = "Feasible front"
        print(format_front(feasible, objectives, title, constraints=constraints, show_all=args.show_all))
    else:
        print(format_front(fronts["search"], objectives, constraints=constraints, show_all=args.show_all))
    if constraints:  # how many trials met each: read from the trials, which only then are needed
        trials, _ = read_results(folder)
        for line in constraint_lines(trials, constraints):
            print(line)
    print("\n" + _thresholded(fronts, objectives, args.kind, constraints, args.show_all))
    refit = _refit_front(folder, objectives, constraints, args.show_all)
    if refit:
        print("\n" + refit)
    runs, confirmed = read_confirmed(folder)
    if len(runs):
        print("\n" + format_confirmed(confirmed, paired_verdicts(folder, confirmed)))
    refit_confirmed = _confirmed_refit(folder)
    if refit_confirmed:
        print("\n" + refit_confirmed)
    return 0


def _run(args: argparse.Namespace) -> int:
    from fairsearch.output.confirm import format_confirmed, paired_verdicts
    from fairsearch.output.tables import format_front
    from fairsearch.search.sweep import run_sweep
    from fairsearch.spec.config import mlflow_uri_problem

    problem = args.mlflow is not None and mlflow_uri_problem("--mlflow", args.mlflow)
    if problem:
        raise FairsearchError(problem)
    try:
        outcome = run_sweep(
            args.space,
            results_root=args.results,
            storage=args.storage,
            address=args.address,
            name=args.name,
            restart=args.restart,
            optuna_storage=args.optuna_storage,
            mlflow=args.mlflow,
        )
    except KeyboardInterrupt:  # before Tune ran (starting Ray, checking inputs) or while it shut down
        print(f"interrupted; resume with: {shlex.join(_resume_command(args))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    objectives, constraints, show_all = outcome.objectives, outcome.constraints, args.show_all
    print(format_front(outcome.front, objectives, constraints=constraints, show_all=show_all))
    if constraints:
        feasible = format_front(
            outcome.feasible, objectives, "Feasible front", constraints=constraints, show_all=show_all
        )
        print("\n" + feasible)
    if outcome.completed:
        from fairsearch.output.threshold_fronts import read_threshold_fronts

        try:  # the sweep has ended either way: its exit code does not hang on this table
            fronts = read_threshold_fronts(outcome.results_dir)
            listing = None if show_all else f"fairsearch pareto {shlex.quote(str(outcome.results_dir))}"
            print("\n" + _thresholded(fronts, objectives, None, constraints, show_all, listing))
            refit = _refit_front(outcome.results_dir, objectives, constraints, show_all)
            if refit:
                print("\n" + refit)
        except FairsearchError as err:
            logger.warning("threshold fronts not shown: %s", err)
    if len(outcome.confirmed):
        try:
            verdicts = paired_verdicts(outcome.results_dir, outcome.confirmed)
        except FairsearchError as err:  # the sweep has ended: its exit code does not hang on the verdicts
            logger.warning("confirmed front not judged against vanilla: %s", err)
            verdicts = {}
        print("\n" + format_confirmed(outcome.confirmed, verdicts))
        try:
            refit_confirmed = _confirmed_refit(outcome.results_dir)
        except FairsearchError as err:
            logger.warning("confirmed refit front not shown: %s", err)
            refit_confirmed = None
        if refit_confirmed:
            print("\n" + refit_confirmed)
    recovered = (
        f" ({outcome.recovered} after a failure, restarted from a checkpoint: the 'failures' column; Tune's "
        "error.txt in its folder records the failure)"
        if outcome.recovered
        else ""
    )
    print(
        f"{outcome.completed} trials completed{recovered}, {outcome.failed} failed; "
        f"results in {outcome.results_dir}/trials.parquet and pareto.parquet"
    )
    for line in outcome.constraint_report:
        print(line)
    if outcome.unfinished or outcome.unconfirmed:
        left = (
            f"{outcome.unfinished} trials"
            if outcome.unfinished
            else f"{outcome.unconfirmed} confirmation runs"
        )
        print(f"{left} unfinished; resume with: {shlex.join(_resume_command(args))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.failed and not outcome.completed and outcome.first_error is not None:
        error, count = outcome.first_error
        print(
            f"error: every trial failed ({outcome.failed}); the first one's error, which {count} of them had: "
            f"{clip_value(error, 2000)}",
            file=sys.stderr,
        )
        return EXIT_ALL_FAILED
    return 0


def _refit_front(
    folder: Path, objectives: Objectives, constraints: Constraints = (), show_all: bool = False
) -> str | None:
    """The last-layer refit front's table, or None for a sweep whose trials kept no features."""
    from fairsearch.output.refit_fronts import REFIT_FRONT
    from fairsearch.output.results import read_front
    from fairsearch.output.tables import format_front

    refit = read_front(folder, REFIT_FRONT)
    if refit.empty:
        return None
    title = "Last-layer refit front (a new head fitted on half of validation; val = the other half)"
    return format_front(refit, objectives, title, constraints=constraints, show_all=show_all)


def _confirmed_refit(folder: Path) -> str | None:
    """The confirmed refit front's table, or None for a sweep that confirmed no refit."""
    from fairsearch.output.confirm import CONFIRMED_REFIT_FRONT, format_confirmed
    from fairsearch.output.results import read_front

    front = read_front(folder, CONFIRMED_REFIT_FRONT)
    if front.empty:
        return None
    title = "Confirmed refit front (each seed's run refitted as its trial was; val = the selection halves)"
    return format_confirmed(front, title=title)


def _thresholded(
    fronts: dict[str, Any],
    objectives: Objectives,
    kind: str | None = None,
    constraints: Constraints = (),
    show_all: bool = False,
    members_at: str | None = None,
) -> str:
    """The thresholded fronts' table, or why a sweep has none (they trace accuracy against MaxAccGap)."""
    from fairsearch.output.threshold_fronts import format_threshold_fronts, thresholds_apply

    if not thresholds_apply(objectives):
        return (
            "Thresholded fronts: not built, since accuracy and MaxAccGap are not both objectives of this "
            "sweep (they trace one against the other)"
        )
    return format_threshold_fronts(
        fronts, kind, constraints=constraints, show_all=show_all, members_at=members_at
    )


def _resume_command(args: argparse.Namespace) -> list[str]:
    """The ``fairsearch run`` command that resumes this sweep (``--restart`` left out)."""
    resume = ["fairsearch", "run", "--space", str(args.space)]
    for flag in ("results", "storage", "address", "name", "optuna_storage", "mlflow"):
        value = getattr(args, flag)
        if value is not None and not (flag == "results" and value == "results"):
            resume += [f"--{flag.replace('_', '-')}", str(value)]
    return resume


def _train(args: argparse.Namespace) -> int:
    import shutil

    from fairsearch.data import training_images
    from fairsearch.spec.config import check_reports_per_epoch
    from fairsearch.spec.space import load_space, trial_config
    from fairsearch.train.trial import run_trial

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise FairsearchError(f"--set {_short(item)}: expected KEY=VALUE, e.g. method=gr")
        overrides[key] = value
    config = trial_config(load_space(args.space), overrides)
    n_train = training_images(
        config.data, config.synthetic_n
    )  # as `run` checks it, before anything is written
    if n_train is not None:
        check_reports_per_epoch(n_train, config.batch_size, config.grad_accum, config.reports_per_epoch)
    out = Path(args.out)
    check_writable_folder(out, f"--out {out}")
    checkpoint = out / "checkpoint"
    if args.resume and not checkpoint.is_dir():
        raise FairsearchError(f"--resume: no checkpoint in {checkpoint}")
    logger.info("trial config: %s", json.dumps(config.as_dict(), default=str))

    def report(metrics: dict[str, float], folder: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)  # at the first report: a trial refused early leaves nothing
        staging = out / "checkpoint.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(folder, staging)
        shutil.rmtree(checkpoint, ignore_errors=True)
        staging.rename(checkpoint)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    result = run_trial(
        config,
        report=report,
        resume_from=checkpoint if args.resume else None,
        staging=out / ".checkpoint-staging",
        progress=True,
    )
    print(json.dumps({k: round(v, 4) for k, v in result.val.items() if "/" not in k}, indent=1))
    print(f"metrics and checkpoint in {out}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from fairsearch.data import format_summary, load_fairvlmed, summarize, write_synthetic

    if args.data_command == "inspect":
        print(format_summary(summarize(load_fairvlmed(args.path))))
    else:
        from fairsearch.data.synthetic import MIN_SAMPLES, RECIPE

        args.n = RECIPE.default_n if args.n is None else args.n

        _check_bounds("--n", args.n, MIN_SAMPLES, SYNTH_MAX_N)
        _check_bounds("--size", args.size, 16, SYNTH_MAX_SIZE)
        _check_bounds("--seed", args.seed, 0, 2**32 - 1)
        if args.n * args.size**2 > SYNTH_MAX_BYTES:
            raise FairsearchError(
                f"--n {args.n} --size {args.size}: {args.n * args.size**2 / 2**30:.1f} GiB of images; "
                f"at most {SYNTH_MAX_BYTES >> 30} GiB (n × size² bytes): lower --n or --size"
            )
        out = Path(args.out)
        if out.exists() or out.is_symlink():
            raise FairsearchError(f"{out}: already exists; give a new folder")
        check_writable_folder(out, f"data synth {out}")
        print(write_synthetic(out, n=args.n, seed=args.seed, image_size=args.size))
    return 0


def _check_bounds(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise FairsearchError(f"{flag} {value}: must be an integer from {low} to {high}")


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 1]) + "…"


if __name__ == "__main__":
    sys.exit(main())
