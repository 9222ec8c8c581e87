"""The sweep's vocabulary: the objectives, the samplers and one trial's settings with their bounds.

Every module above it reads these facts from here:

- :data:`METRICS`: the metrics a sweep may optimise or constrain, each with its direction and worst value
  (the hypervolume's reference); :data:`OBJECTIVES` the default pair, :class:`Constraint` a requirement.
- :data:`SAMPLERS`: the Optuna samplers a space file may name.
- :class:`TrialConfig`: every setting of one trial, validated when it is built (by a space file, by
  ``--set``, or from the config dict Ray Tune hands a worker), with :func:`check_setting` as the one
  check of a single value that space files and ``--set`` share. The methods and the parameters each one
  reads (``lam``, ``w_max``) come from the registry, :data:`fairsearch.methods.METHODS`: a trial keeps
  the method parameters in :attr:`TrialConfig.params`, checked against the bounds the method declares.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fairsearch.errors import FairsearchError, clip_value, short_repr
from fairsearch.judge.pareto import Direction
from fairsearch.methods import METHOD_PARAMETERS, METHODS, Method
from fairsearch.methods.base import number_problem

__all__ = [
    "MAX_OBJECTIVES",
    "METRICS",
    "MIN_OBJECTIVES",
    "OBJECTIVES",
    "SAMPLERS",
    "SELECTIONS",
    "SETTINGS",
    "SETTING_NAMES",
    "Constraint",
    "Constraints",
    "Objective",
    "Objectives",
    "TrialConfig",
    "bound_problem",
    "check_reports_per_epoch",
    "check_setting",
    "constraint_problems",
    "is_feasible",
    "mlflow_uri_problem",
    "objective_directions",
    "objective_keys",
    "objective_reference",
    "objectives_named",
    "steps_per_epoch",
    "violations",
]


# --------------------------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Objective:
    """One metric a sweep may optimise or constrain (validation split, the space's ``group_by``).

    Attributes:
        key: the flat metric key a trial reports (``acc``); ``val/<key>`` in ``trials.parquet``.
        direction: ``max`` or ``min``: the better side.
        reference: the worst value it can take: the hypervolume's reference coordinate.
        label: how the report and the CLI name it.
    """

    key: str
    direction: Direction
    reference: float
    label: str

    @property
    def column(self) -> str:
        """``val/<key>``: its column in ``trials.parquet``."""
        return f"val/{self.key}"


METRICS: Mapping[str, Objective] = {
    o.key: o
    for o in (
        Objective("acc", "max", 0.0, "accuracy"),
        Objective("auc", "max", 0.0, "AUC"),
        Objective("worst_group_acc", "max", 0.0, "worst-group accuracy"),
        Objective("es_auc", "max", 0.0, "ES-AUC"),
        Objective("max_acc_gap", "min", 1.0, "MaxAccGap"),
    )
}
"""The metrics a space file may name as objectives (``objectives: {maximize: [...], minimize: [...]}``)
or constraints, each with the one direction that makes sense for it. All are fractions in [0, 1]."""

OBJECTIVES: tuple[Objective, ...] = (METRICS["acc"], METRICS["max_acc_gap"])
"""The default objectives: validation accuracy up, validation MaxAccGap (of ``group_by``) down."""

MIN_OBJECTIVES, MAX_OBJECTIVES = 2, 3
"""How many objectives a sweep may have."""

Objectives = tuple[Objective, ...]


def objectives_named(keys: Sequence[str]) -> Objectives:
    """The registry entries of metric keys, in order (as written in ``trials.parquet``'s metadata).

    Raises:
        FairsearchError: a key that is not in :data:`METRICS`.
    """
    unknown = [k for k in keys if k not in METRICS]
    if unknown:
        raise FairsearchError(f"objectives {unknown} are not among {list(METRICS)}")
    return tuple(METRICS[k] for k in keys)


def objective_keys(prefix: str = "", objectives: Objectives = OBJECTIVES) -> tuple[str, ...]:
    """The objectives' metric keys, each with ``prefix`` (``"val/"`` gives the Parquet columns)."""
    return tuple(prefix + o.key for o in objectives)


def objective_directions(objectives: Objectives = OBJECTIVES) -> tuple[Direction, ...]:
    """One direction per objective: ``("max", "min")`` for the default ones."""
    return tuple(o.direction for o in objectives)


def objective_reference(objectives: Objectives = OBJECTIVES) -> tuple[float, ...]:
    """The hypervolume reference point, the worst value of each objective: ``(0.0, 1.0)`` by default."""
    return tuple(o.reference for o in objectives)


# --------------------------------------------------------------------------------------------- constraints
@dataclass(frozen=True)
class Constraint:
    """A requirement on one validation metric: ``max_acc_gap <= 0.02`` or ``worst_group_acc >= 0.7``.

    Attributes:
        key: a key of :data:`METRICS`.
        bound: the limit, a fraction in [0, 1].
        side: ``max``: the metric must be at most ``bound``; ``min``: at least ``bound``.
    """

    key: str
    bound: float
    side: Literal["max", "min"]

    @property
    def column(self) -> str:
        """``val/<key>``: the column it is checked on."""
        return f"val/{self.key}"

    @property
    def label(self) -> str:
        """``MaxAccGap <= 2.0 %``."""
        return f"{METRICS[self.key].label} {'<=' if self.side == 'max' else '>='} {100 * self.bound:.1f} %"

    def violation(self, value: Any) -> float:
        """How far ``value`` is on the wrong side of the bound (Optuna's convention: ``<= 0`` is met).

        A missing or non-finite value (a metric a trial could not compute) counts as the largest
        violation a fraction can have, 1.0, so that it is never taken as met.
        """
        if value is None or not _is_real(value) or not math.isfinite(float(value)):
            return 1.0
        return float(value) - self.bound if self.side == "max" else self.bound - float(value)

    def as_dict(self) -> dict[str, Any]:
        """``{"key": ..., "bound": ..., "side": ...}``, as kept in the results files' metadata."""
        return dataclasses.asdict(self)


Constraints = tuple[Constraint, ...]


def bound_problem(bound: Any) -> str | None:
    """Why ``bound`` cannot bound a metric, or None: every metric of :data:`METRICS` is a fraction, so a
    bound is a number from 0 to 1 (NaN and the infinities are not)."""
    if isinstance(bound, bool) or not _is_real(bound) or not 0 <= bound <= 1:
        return f"{short_repr(bound)} must be a fraction from 0 to 1 (0.02 is 2 %)"
    return None


def constraint_problems(constraints: Constraints) -> list[str]:
    """What makes a sweep's constraints meaningless, one line each, naming ``<key>.<side>`` or ``<key>``:
    a bound that is not a fraction (:func:`bound_problem`); a floor (``min``) on a metric that is
    minimised, which asks for worse models (``max_acc_gap: {min: 0.05}`` keeps only the *less* fair
    ones; a ceiling on a metric maximised, ``auc: {max: 0.99}``, may screen out leakage and is allowed);
    and a floor above a ceiling on one metric, which no value can meet. The space file
    (:mod:`fairsearch.spec.space`) and the results files' metadata are both checked by it.
    """
    problems: list[str] = []
    for c in constraints:
        metric = METRICS[c.key]
        problem = bound_problem(c.bound)
        if problem is not None:
            problems.append(f"{c.key}.{c.side}: {problem}")
        elif c.side == "min" and metric.direction == "min":
            problems.append(
                f"{c.key}.min: {metric.label} is minimised, so a floor on it keeps only the worse trials; "
                f"it takes a ceiling only ({c.key}: {c.bound:g}, or {{max: {c.bound:g}}})"
            )
    for key in dict.fromkeys(c.key for c in constraints):
        floor = max((c.bound for c in constraints if c.key == key and c.side == "min"), default=-math.inf)
        ceiling = min((c.bound for c in constraints if c.key == key and c.side == "max"), default=math.inf)
        if floor > ceiling:
            problems.append(f"{key}: min {floor:g} is above max {ceiling:g}, so no value can meet both")
    return problems


def violations(constraints: Constraints, metrics: Mapping[str, Any]) -> tuple[float, ...]:
    """Each constraint's violation (``<= 0``: met) for flat metric keys (``max_acc_gap``)."""
    return tuple(c.violation(metrics.get(c.key)) for c in constraints)


def is_feasible(constraints: Constraints, metrics: Mapping[str, Any]) -> bool:
    """Whether flat metrics meet every constraint (always, without constraints)."""
    return all(v <= 0 for v in violations(constraints, metrics))


# --------------------------------------------------------------------------------------------- samplers
ConstraintsFunc = Callable[[Any], Sequence[float]]
"""Optuna's ``constraints_func``: a finished trial's constraint values, ``<= 0`` where met.

Optuna 5.0 deprecates it (removal in 7.0) for ``Trial.set_constraint``, which needs the live trial object
that Ray Tune's ``OptunaSearch`` keeps to itself (it hands the define-by-run function a wrapper that cannot
be unpickled on resume). With Optuna pinned to 5.0 the function is the public way; its FutureWarning is
silenced where the samplers are made, and only that one."""


def _constrained(make: Callable[..., Any], constraints_func: ConstraintsFunc | None, **kwargs: Any) -> Any:
    """A sampler given ``constraints_func`` when there is one (see :data:`ConstraintsFunc`)."""
    if constraints_func is None:
        return make(**kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`constraints_func` has been deprecated", category=FutureWarning
        )
        return make(constraints_func=constraints_func, **kwargs)


def _tpe(seed: int, constraints_func: ConstraintsFunc | None) -> Any:
    import optuna

    return _constrained(
        optuna.samplers.TPESampler,
        constraints_func,
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
    )


def _nsgaii(seed: int, constraints_func: ConstraintsFunc | None) -> Any:
    import optuna

    return _constrained(optuna.samplers.NSGAIISampler, constraints_func, seed=seed)


def _gp(seed: int, constraints_func: ConstraintsFunc | None) -> Any:
    import optuna

    return _constrained(optuna.samplers.GPSampler, constraints_func, seed=seed)


def _random(seed: int, constraints_func: ConstraintsFunc | None) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)  # samples blindly: constraints change nothing


SAMPLERS: Mapping[str, Callable[[int, ConstraintsFunc | None], Any]] = {
    "tpe": _tpe,
    "nsgaii": _nsgaii,
    "gp": _gp,
    "random": _random,
}
"""Optuna sampler factories by the name a space file gives (``sampler: {name: tpe, seed: 0}``), called
with the seed and the sweep's ``constraints_func`` (``None`` without constraints). TPE is multivariate,
grouped over the conditional parameters, and lies constantly about running trials; TPE, NSGA-II and GP
steer towards trials that meet the constraints, random ignores them."""


# --------------------------------------------------------------------------------------------- trial
SELECTIONS: Mapping[str, str | None] = {
    "last": None,
    "best_acc": "acc",
    "best_worst_group": "worst_group_acc",
}
"""Which of a trial's reports stands for it (``select``), by the validation metric that picks it:
``last`` the last epoch's model, ``best_acc`` the report of highest validation accuracy, ``best_worst_group``
the report of highest worst-group validation accuracy (of ``group_by``): early stopping on it."""


@dataclass
class TrialConfig:
    """Every setting of one trial; a sweep fixes some and samples the others. Validated when built.

    Attributes:
        method: a key of :data:`fairsearch.methods.METHODS`: ``vanilla`` (cross-entropy), ``fr`` (+
            λ·soft MaxAccGap), ``gr`` (group-weighted CE), ``hybrid`` (both), ...
        lora_rank: LoRA rank r on the LLM's attention projections.
        lora_alpha: LoRA scaling alpha; ``None`` means 2·r.
        lora_dropout: dropout on the LoRA path.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: share of the optimizer steps spent warming the learning rate up linearly; the rest
            decays it with a cosine to zero.
        batch_size: samples per forward pass.
        grad_accum: forward passes per optimizer step.
        epochs: passes over the training split.
        reports_per_epoch: validation reports (and checkpoints) per epoch, at equal shares of its
            optimizer steps; more than one lets MO-ASHA stop trials at fractions of an epoch.
        seed: seeds LoRA/head initialisation and the data order.
        group_by: the grouping whose MaxAccGap is the objective and the fairness losses use: one
            attribute (``race``) or an intersection (``race*gender``).
        exclude_unknown: leave samples whose attribute is unknown (−1) out of the fairness terms instead
            of treating ``unknown`` as a group of its own.
        model: ``tiny`` (the built-in random Qwen2.5-VL), ``tiny-pretrained`` (it pre-trained on another
            synthetic task, a folder the package ships), a hub id in the local cache, or a folder.
        data: a Harvard-FairVLMed folder, or ``None`` for the built-in synthetic set.
        synthetic_n: size of the built-in synthetic set (all splits, split in its proportions); ``None``:
            its own size, 5,800 (1,200 / 2,300 / 2,300, so that 101 minority images are in validation and
            test; ``fairsearch.data.synthetic.RECIPE``).
        max_pixels: image size cap in pixels; sets the number of image tokens. ``None``: the model's own.
        vision_cache: compute the frozen vision tower's image embeddings once and reuse them.
        gradient_checkpointing: keep only each LLM layer's input for the backward pass and recompute its
            activations there: the same gradients, for about one more forward pass per step, in a
            fraction of the activation memory (``fairsearch plan`` shows how much); a fixed setting, not
            searched.
        eval_batch_size: samples per forward pass when evaluating.
        n_boot: 0 turns the 95 % intervals off, any other value on (a name kept from when they were
            bootstrapped: they are now computed exactly, see ``fairsearch.judge.intervals``).
        select: which report stands for the trial, a key of :data:`SELECTIONS`: every report carries
            the metrics of the model selected so far, and the test split is evaluated on the one selected
            at the end (model selection inside a trial; early stopping by worst-group accuracy).
        refit_last_layer: keep the final model's last-token features of validation and test in its last
            checkpoint, for the last-layer refit (DFR-style) rows of ``pareto.parquet``
            (:mod:`fairsearch.output.refit_fronts`).
        params: every method parameter of :data:`fairsearch.methods.METHOD_PARAMETERS` by name (``lam``,
            ``w_max``, ...), each checked against its method's bounds; one not given takes its default.
    """

    method: str = "vanilla"
    lora_rank: int = 8
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    batch_size: int = 16
    grad_accum: int = 1
    epochs: int = 4
    reports_per_epoch: int = 1
    seed: int = 0
    group_by: str = "ethnicity"
    exclude_unknown: bool = False
    model: str = "tiny"
    data: str | None = None
    synthetic_n: int | None = None
    max_pixels: int | None = None
    vision_cache: bool = True
    gradient_checkpointing: bool = False
    eval_batch_size: int = 64
    n_boot: int = 1000
    select: str = "last"
    refit_last_layer: bool = False
    params: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in SETTINGS:
            setattr(self, name, check_setting(name, name, getattr(self, name), problems))
        params = dict(self.params)
        problems += [
            f"{name}: unknown method parameter; allowed are {sorted(METHOD_PARAMETERS)}"
            for name in params
            if name not in METHOD_PARAMETERS
        ]
        self.params = {
            name: check_setting(name, name, params.get(name, p.default), problems)
            for name, p in METHOD_PARAMETERS.items()
        }
        if not problems and self.method in METHODS:
            for p in self.method_spec.parameters:
                if p.below is not None and not self.params[p.name] < getattr(self, p.below):
                    problems.append(
                        f"{p.name}: {self.params[p.name]!r} must be < {p.below} ({getattr(self, p.below)!r})"
                    )
        if problems:
            raise FairsearchError("\n".join(problems))

    @property
    def method_spec(self) -> Method:
        """The registry entry of :attr:`method`."""
        return METHODS[self.method]

    @property
    def method_params(self) -> dict[str, float]:
        """The values of the parameters :attr:`method` reads (``{"lam": 0.3}`` for ``fr``)."""
        return {name: self.params[name] for name in self.method_spec.parameter_names}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrialConfig:
        """Builds a config from a flat dict (method parameters beside the other settings, as a space
        file, ``--set`` and Ray Tune's config give them), ignoring keys that are not trial settings."""
        return cls(
            **{k: v for k, v in values.items() if k in SETTINGS},
            params={k: v for k, v in values.items() if k in METHOD_PARAMETERS},
        )

    def as_dict(self) -> dict[str, Any]:
        """The flat dict :meth:`from_dict` reads: every setting, and every method parameter beside them."""
        return {**{name: getattr(self, name) for name in SETTINGS}, **self.params}


SETTINGS: Mapping[str, dataclasses.Field[Any]] = {
    f.name: f for f in dataclasses.fields(TrialConfig) if f.name != "params"
}
"""The trial settings every method has, by name (the method parameters are in :attr:`TrialConfig.params`)."""

SETTING_NAMES: tuple[str, ...] = (*SETTINGS, *METHOD_PARAMETERS)
"""Every name a space file or ``--set`` may give a value: the settings, then the method parameters."""

NUMERIC: Mapping[str, type] = {
    "lora_rank": int,
    "batch_size": int,
    "grad_accum": int,
    "epochs": int,
    "reports_per_epoch": int,
    "seed": int,
    "synthetic_n": int,
    "eval_batch_size": int,
    "n_boot": int,
    "lora_alpha": float,
    "lora_dropout": float,
    "lr": float,
    "weight_decay": float,
    "warmup_ratio": float,
    "max_pixels": int,
    **{name: p.kind for name, p in METHOD_PARAMETERS.items()},
}
"""The numeric settings and their type; with ``method`` these are the ones a space file may search."""

_LOWER_BOUNDS: Mapping[str, tuple[float, bool]] = {  # name -> (bound, inclusive)
    "lora_rank": (1, True),
    "batch_size": (1, True),
    "grad_accum": (1, True),
    "epochs": (1, True),
    "reports_per_epoch": (1, True),
    "seed": (0, True),
    "synthetic_n": (40, True),
    "eval_batch_size": (1, True),
    "n_boot": (0, True),
    "lora_alpha": (0, False),
    "lora_dropout": (0, True),
    "lr": (0, False),
    "weight_decay": (0, True),
    "warmup_ratio": (0, True),
    "max_pixels": (56 * 56, True),
}
_UPPER_BOUNDS: Mapping[str, float] = {
    "lora_dropout": 1.0,
    "warmup_ratio": 1.0,
    "lora_rank": 4096,
    "batch_size": 65_536,
    "grad_accum": 65_536,
    "epochs": 10_000,
    "reports_per_epoch": 10_000,
    "seed": 2**31 - 1,
    "synthetic_n": 200_000,
    "eval_batch_size": 65_536,
    "n_boot": 1_000_000,
    "max_pixels": 1 << 26,
}


MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
"""The MLflow tracking URIs a sweep logs to: a tracking server, a local ``file:`` store, a database store or
Databricks (``tracking: {mlflow: URI}`` or ``fairsearch run --mlflow URI``)."""


def mlflow_uri_problem(where: str, value: Any) -> str | None:
    """What is wrong with an MLflow tracking URI, or ``None``: a string of one of :data:`MLFLOW_SCHEMES`.

    Args:
        where: how the message names it (``tracking.mlflow``, ``--mlflow``).
        value: the URI as given.
    """
    scheme = value.split(":", 1)[0].lower() if isinstance(value, str) and ":" in value else ""
    if scheme in MLFLOW_SCHEMES and len(value) <= 2000 and value.isprintable():
        return None
    return (
        f"{where}: {clip_value(value, 80)} must be an MLflow tracking URI, one of "
        f"{', '.join(s + ':' for s in MLFLOW_SCHEMES)} (e.g. http://127.0.0.1:5000)"
    )


def steps_per_epoch(n_train: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps in one epoch of ``n_train`` training images (the last batch and step may be short)."""
    return math.ceil(math.ceil(n_train / batch_size) / grad_accum)


def check_reports_per_epoch(
    n_train: int, batch_size: int, grad_accum: int, reports_per_epoch: int, where: str = ""
) -> None:
    """Refuses more validation reports per epoch than an epoch has optimizer steps: ``fairsearch train``
    on its one config, and ``fairsearch run`` before anything is written, on the largest values the
    space can give each setting (``where`` names the space file).

    Raises:
        FairsearchError: ``reports_per_epoch`` exceeds the steps.
    """
    steps = steps_per_epoch(n_train, batch_size, grad_accum)
    if reports_per_epoch > steps:
        raise FairsearchError(
            f"{where}reports_per_epoch: {reports_per_epoch} is more than the {steps} optimizer steps of an "
            f"epoch ({n_train} training images, batch_size {batch_size}, grad_accum {grad_accum}); report "
            f"at most {steps} times an epoch, or take smaller batches"
        )


def check_setting(where: str, key: str, value: Any, problems: list[str]) -> Any:
    """Checks one trial setting, appending what is wrong to ``problems``.

    Args:
        where: how the message names the value (``fixed.lam``, ``--set lam``, ``search.lam.low``).
        key: the setting, one of :data:`SETTING_NAMES`.
        value: the value as read.
        problems: where a problem is appended, e.g. ``fixed.lam: -0.5 must be >= 0``.

    Returns:
        The value, converted to the setting's type when it is valid (``4.0`` → ``4`` for an int).
    """
    if key == "method":
        if not isinstance(value, str) or value not in METHODS:
            problems.append(f"{where}: {value!r} is not one of {list(METHODS)}")
        return value
    if key == "select":
        if not isinstance(value, str) or value not in SELECTIONS:
            problems.append(f"{where}: {value!r} is not one of {list(SELECTIONS)}")
        return value
    parameter = METHOD_PARAMETERS.get(key)
    if parameter is not None:
        problem = parameter.problem(value)
        if problem is not None:
            problems.append(f"{where}: {value!r} {problem}")
            return value
        return parameter.kind(value)
    kind = NUMERIC.get(key)
    default = SETTINGS[key].default
    if kind is None:
        if value is None and default is None:
            return None
        if isinstance(default, bool) and not isinstance(value, bool):
            problems.append(f"{where}: {value!r} must be true or false")
        elif isinstance(default, str | type(None)) and not isinstance(value, str):
            problems.append(f"{where}: {value!r} must be a string")
        return value
    if value is None and default is None:
        return None
    bound, inclusive = _LOWER_BOUNDS[key]
    problem = number_problem(
        value, low=bound, low_inclusive=inclusive, high=_UPPER_BOUNDS.get(key), integer=kind is int
    )
    if problem is not None:
        problems.append(f"{where}: {value!r} {problem}")
        return value
    return kind(value)


def _is_real(value: Any) -> bool:
    """int, float or a numpy scalar of either (values that went through YAML, Optuna or Ray)."""
    return isinstance(value, numbers.Real)
