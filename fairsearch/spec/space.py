"""Search-space files: the YAML schema, its validation, and Optuna's define-by-run function.

A space file names the sweep, the grouping whose MaxAccGap is minimised, the parameters to search and
the settings to fix, and how to run (trials, concurrency, sampler, resources). Every problem in a file
is collected and raised at once as a :class:`~fairsearch.errors.FairsearchError`, one line per problem,
naming the key, the value and what is allowed::

    search.method: 'grr' is not one of ['vanilla', 'fr', 'gr', 'hybrid']

Parameters that only matter to some methods are conditional: each is sampled only for the methods that
use it (:data:`fairsearch.methods.METHODS`, where each method declares them and their bounds). The other
trial settings, their bounds and the objectives live in :mod:`fairsearch.spec.config`; the file's YAML is
read by the bounded reader of :mod:`fairsearch.spec.yaml_input`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fairsearch.errors import FairsearchError, clip_text, clip_value, short_repr
from fairsearch.methods import METHOD_PARAMETERS, METHODS
from fairsearch.spec.config import (
    MAX_OBJECTIVES,
    METRICS,
    MIN_OBJECTIVES,
    NUMERIC,
    OBJECTIVES,
    SAMPLERS,
    SETTING_NAMES,
    Constraint,
    Constraints,
    Objectives,
    TrialConfig,
    bound_problem,
    check_setting,
    constraint_problems,
    mlflow_uri_problem,
)
from fairsearch.spec.scheduler_settings import scheduler_settings
from fairsearch.spec.yaml_input import read_yaml, read_yaml_file

ALL_METHODS = "all"
"""``search: {method: all}``: every method of :data:`fairsearch.methods.METHODS`."""
SEARCHABLE = ("method", *NUMERIC)
"""Trial settings a space file may search; any trial setting may be fixed."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOP_KEYS = (
    "name",
    "objectives",
    "search",
    "fixed",
    "trials",
    "concurrency",
    "sampler",
    "resources",
    "scheduler",
    "max_failures",
    "model",
    "data",
    "optuna_storage",
    "confirm",
    "constraints",
    "tracking",
)
CONFIRM_KEYS = {"seeds": (0, 20, 0), "max_trials": (1, 100, 8)}
"""``confirm.<key>``: (lowest, highest, default)."""
_MAX_PROBLEMS = 15
_MAX_LINE = 300


@dataclass(frozen=True)
class Distribution:
    """One searched parameter: categorical ``choices``, or a ``low``–``high`` range (int or float)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False


@dataclass(frozen=True)
class SweepSpec:
    """A validated space file.

    Attributes:
        name: the sweep's name; its results go to ``results/<name>/``.
        group_by: the grouping whose MaxAccGap is minimised.
        search: the searched parameters, by name.
        fixed: trial settings fixed for every trial (the file's ``fixed``, ``model`` and ``data``).
        trials: how many trials the sweep runs in total.
        concurrency: how many trials run at once at most.
        sampler: Optuna sampler name (``tpe``, ``nsgaii``, ``gp``, ``random``).
        seed: the sampler's seed.
        cpus: CPUs per trial.
        gpus: GPUs per trial (fractional allowed); ``None`` = one if the cluster has GPUs, else none.
        scheduler: the ``scheduler`` block (``None``: no early stopping).
        max_failures: retries of a failing trial from its last checkpoint before it is recorded failed.
        optuna_storage: an Optuna storage URL; ``None`` = SQLite in the experiment folder.
        confirm_seeds: K, further seeds each front candidate is trained with once the search ends
            (``confirm: {seeds: K}``); 0 = no confirmation (see :mod:`fairsearch.output.confirm`).
        confirm_max_trials: the most candidates confirmed (``confirm: {max_trials: M}``, default 8).
        source: the file it was read from.
        digest: hash of the parsed content; a resumed sweep refuses a changed space.
        objectives: what the search optimises (``objectives: {maximize: [...], minimize: [...]}``), 2 or 3
            of :data:`fairsearch.spec.config.METRICS`; default accuracy up and MaxAccGap down.
        constraints: requirements a configuration must meet to count (``constraints:``); empty: none.
        gpu_memory_gb: the memory of one GPU the trials run on, in GB, as the user states it
            (``resources: {gpu_memory_gb: 80}``); ``None``: read from the cluster's accelerator type.
        mlflow: the MLflow tracking URI the sweep logs to (``tracking: {mlflow: URI}``); ``None``: none.
    """

    name: str
    group_by: str
    search: Mapping[str, Distribution]
    fixed: Mapping[str, Any]
    trials: int
    concurrency: int
    sampler: str
    seed: int
    cpus: float
    gpus: float | None
    scheduler: Mapping[str, Any] | None
    max_failures: int
    optuna_storage: str | None
    confirm_seeds: int
    confirm_max_trials: int
    source: Path
    digest: str
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)
    objectives: Objectives = OBJECTIVES
    constraints: Constraints = ()
    gpu_memory_gb: float | None = None
    mlflow: str | None = None

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this sweep may try."""
        dist = self.search.get("method")
        if dist is not None and dist.choices is not None:
            return tuple(dist.choices)
        return (str(self.fixed.get("method", TrialConfig.method)),)

    def largest(self, setting: str) -> Any:
        """The largest value a trial setting takes in this sweep: its fixed value, its largest choice or
        the top of its range when searched, else :class:`TrialConfig`'s default."""
        dist = self.search.get(setting)
        if dist is None:
            return self.fixed.get(setting, getattr(TrialConfig, setting))
        return max(dist.choices) if dist.choices else dist.high

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial runs."""
        return _max_epochs(self.fixed, self.search)

    def uses_builtin_data(self) -> bool:
        """True when no dataset folder is named: the built-in synthetic set is used."""
        return self.fixed.get("data") is None

    def define_by_run(self) -> DefineByRun:
        """Optuna's define-by-run function for this space (picklable: Ray checkpoints the searcher)."""
        return DefineByRun(dict(self.search), dict(self.fixed))


OPTUNA_NUMBER = "optuna_number"
"""Config key holding the Optuna trial's number, so that results rows carry the study's own numbering."""


class DefineByRun:
    """Samples the searched parameters of one Optuna trial; returns the fixed settings, and the Optuna
    trial's number under :data:`OPTUNA_NUMBER`, as constants.

    A method-specific setting (``lam``, ``w_max``) is sampled only for the methods of
    :data:`fairsearch.methods.METHODS` that use it. Ray merges the returned constants with the suggested
    values into the trial's config.
    """

    def __init__(self, search: Mapping[str, Distribution], fixed: Mapping[str, Any]) -> None:
        self.search = dict(search)
        self.fixed = dict(fixed)

    def __call__(self, trial: Any) -> dict[str, Any]:
        method = self.fixed.get("method", TrialConfig.method)
        if "method" in self.search:
            method = _suggest(trial, self.search["method"])
        for name, dist in self.search.items():
            if name == "method":
                continue
            if name in METHOD_PARAMETERS and name not in METHODS[method].parameter_names:
                continue
            _suggest(trial, dist)
        return {**self.fixed, OPTUNA_NUMBER: trial.number}


def trial_config(spec: SweepSpec, overrides: Mapping[str, str] | None = None) -> TrialConfig:
    """One trial's config from a space: fixed settings, ``overrides`` (``--set k=v``), and for each
    searched parameter not overridden, a representative value (its first choice, or the middle of its
    range — geometric for log ranges).

    Raises:
        FairsearchError: an override names an unknown setting or has a bad value (all at once).
    """
    problems: list[str] = []
    values: dict[str, Any] = dict(spec.fixed)
    for name, dist in spec.search.items():
        if dist.choices is not None:
            values[name] = dist.choices[0]
        else:
            assert dist.low is not None and dist.high is not None
            mid = math.sqrt(dist.low * dist.high) if dist.log else (dist.low + dist.high) / 2
            values[name] = round(mid) if dist.integer else mid
    for key, text in (overrides or {}).items():
        if key not in SETTING_NAMES:
            problems.append(f"--set {_key(key)}: unknown trial setting; allowed are {sorted(SETTING_NAMES)}")
            continue
        values[key] = _check(f"--set {key}", key, _parse_scalar(text), problems)
    if problems:
        raise FairsearchError("\n".join(problems))
    return TrialConfig.from_dict(values)


def _parse_scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return read_yaml(text, "--set")
    except FairsearchError:  # not YAML: the text itself, which the setting's check then names
        return text


def _max_epochs(fixed: Mapping[str, Any], search: Mapping[str, Distribution]) -> int:
    dist = search.get("epochs")
    if dist is None:
        return int(fixed.get("epochs", TrialConfig.epochs))
    return int(max(dist.choices) if dist.choices else dist.high or 1)


def _suggest(trial: Any, dist: Distribution) -> Any:
    if dist.choices is not None:
        return trial.suggest_categorical(dist.name, list(dist.choices))
    assert dist.low is not None and dist.high is not None  # guaranteed by validation
    if dist.integer:
        return trial.suggest_int(
            dist.name, int(dist.low), int(dist.high), step=int(dist.step or 1), log=dist.log
        )
    return trial.suggest_float(dist.name, dist.low, dist.high, step=dist.step, log=dist.log)


def load_space(path: str | Path) -> SweepSpec:
    """Reads and validates a space file.

    The file is read as :func:`yaml.safe_load` reads it, within the bounds of :mod:`fairsearch.spec.yaml_input`
    (size, UTF-8, nesting, alias expansion, duplicate keys): a "billion laughs" file is refused before
    any value is built.

    Args:
        path: the YAML file.

    Returns:
        The validated spec.

    Raises:
        FairsearchError: the file is missing, too large, not text or not YAML, or any key is wrong (all
            problems at once).
    """
    path = Path(path)
    return parse_space(read_yaml_file(path), source=path)


def _key(key: Any) -> str:
    """A document key as a message names it: the text of a string key, else its repr, cut to 60."""
    return clip_value(key, 60)


def _check(where: str, key: str, value: Any, problems: list[str]) -> Any:
    """:func:`fairsearch.spec.config.check_setting`, with the value's repr in its messages cut to 80."""
    found: list[str] = []
    checked = check_setting(where, key, value, found)
    if found:
        full, short = repr(value), short_repr(value)  # repr is bounded: read_yaml caps the expansion
        found = [p.replace(full, short) if full != short else p for p in found]
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
            found = [f"{p} (YAML 1.1 reads {short} as text: write it with a dot, e.g. 1.0e-4)" for p in found]
        problems.extend(found)
    return checked


def _message(problems: list[str], source: Path) -> str:
    """One line per distinct problem, each prefixed with the file; at most :data:`_MAX_PROBLEMS` lines
    of at most :data:`_MAX_LINE` characters."""
    unique = list(dict.fromkeys(problems))  # one bad value listed 1,000 times is one problem
    lines = [clip_text(f"{source}: {p}", _MAX_LINE) for p in unique[:_MAX_PROBLEMS]]
    if len(unique) > _MAX_PROBLEMS:
        lines.append(f"{source}: … and {len(unique) - _MAX_PROBLEMS} more problems")
    return "\n".join(lines)


def parse_space(raw: Any, *, source: Path = Path("<space>")) -> SweepSpec:
    """Validates a parsed space document; see :func:`load_space`."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise FairsearchError(f"{source}: a space file is a mapping of keys, got {type(raw).__name__}")
    for key in raw:
        if key not in _TOP_KEYS:
            problems.append(f"{_key(key)}: unknown key; allowed keys are {list(_TOP_KEYS)}")

    name = raw.get("name", source.stem if _NAME.match(source.stem) else "sweep")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name: {short_repr(name)} must be 1-64 letters, digits, '_', '-' or '.'")

    group_by, objectives = _objectives(raw.get("objectives"), problems)
    constraints = _constraints(raw.get("constraints"), problems)
    fixed = _fixed(raw, problems)
    search = _search(raw.get("search"), fixed, problems)
    _check_below(search, fixed, problems)
    trials = _positive_int(raw, "trials", 8, problems, most=100_000)
    concurrency = _positive_int(raw, "concurrency", 2, problems, most=10_000)
    sampler, seed = _sampler(raw.get("sampler"), problems)
    cpus, gpus, gpu_memory_gb = _resources(raw.get("resources"), problems)
    max_failures = raw.get("max_failures", 2)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or not 0 <= max_failures <= 1000:
        problems.append(f"max_failures: {short_repr(max_failures)} must be an integer from 0 to 1000")
    scheduler = raw.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, dict):
        problems.append(f"scheduler: {short_repr(scheduler)} must be a mapping such as {{name: mo_asha}}")
    elif isinstance(scheduler, dict):
        _check_scheduler(scheduler, fixed, search, problems)
    confirm = _confirm(raw.get("confirm"), problems)
    storage = raw.get("optuna_storage")
    if storage is not None and not isinstance(storage, str):
        problems.append(f"optuna_storage: {short_repr(storage)} must be a database URL string")
    mlflow = _tracking(raw.get("tracking"), problems)

    if problems:
        raise FairsearchError(_message(problems, source))
    fixed["group_by"] = group_by
    canonical = json.dumps(raw, sort_keys=True, default=str)
    return SweepSpec(
        name=str(name),
        group_by=group_by,
        search=search,
        fixed=fixed,
        trials=trials,
        concurrency=concurrency,
        sampler=sampler,
        seed=seed,
        cpus=cpus,
        gpus=gpus,
        scheduler=None if not scheduler or scheduler.get("name", "none") == "none" else dict(scheduler),
        max_failures=int(max_failures),
        optuna_storage=storage,
        confirm_seeds=confirm["seeds"],
        confirm_max_trials=confirm["max_trials"],
        source=source,
        digest=hashlib.sha256(canonical.encode()).hexdigest()[:16],
        raw=raw,
        objectives=objectives,
        constraints=constraints,
        gpu_memory_gb=gpu_memory_gb,
        mlflow=mlflow,
    )


_OBJECTIVE_KEYS = ("group_by", "maximize", "minimize", "accuracy", "max_acc_gap")
"""``objectives.<key>``; ``accuracy: max`` and ``max_acc_gap: min`` are the older spelling of the default."""


def _objectives(block: Any, problems: list[str]) -> tuple[str, Objectives]:
    """``objectives:``: the grouping, and the metrics maximised and minimised (2 or 3 in all)."""
    if block is None:
        return TrialConfig.group_by, OBJECTIVES
    if not isinstance(block, dict):
        problems.append(f"objectives: {short_repr(block)} must be a mapping with 'group_by'")
        return TrialConfig.group_by, OBJECTIVES
    for key in block:
        if key not in _OBJECTIVE_KEYS:
            problems.append(f"objectives.{_key(key)}: unknown key; allowed are {list(_OBJECTIVE_KEYS)}")
    if block.get("accuracy", "max") != "max":
        problems.append(f"objectives.accuracy: {short_repr(block['accuracy'])} must be 'max'")
    if block.get("max_acc_gap", "min") != "min":
        problems.append(f"objectives.max_acc_gap: {short_repr(block['max_acc_gap'])} must be 'min'")
    objectives = _objective_lists(block, problems)
    group_by = block.get("group_by", TrialConfig.group_by)
    if isinstance(group_by, list):
        group_by = "*".join(str(a) for a in group_by)
    from fairsearch.data import ATTRIBUTES  # data knows the attribute names; it imports no models

    attrs = str(group_by).split("*") if isinstance(group_by, str) else []
    bad = [a for a in attrs if a not in ATTRIBUTES]
    if not attrs or bad or len(set(attrs)) != len(attrs):
        problems.append(
            f"objectives.group_by: {short_repr(group_by)} must be an attribute or attributes joined by '*' "
            f"(e.g. 'race*gender'), from {list(ATTRIBUTES)}"
        )
    return str(group_by), objectives


def _objective_lists(block: Mapping[str, Any], problems: list[str]) -> Objectives:
    """``maximize: [acc]`` and ``minimize: [max_acc_gap]``: metric keys of the right direction, 2 or 3
    in all, none twice; either list left out is the default's (``[acc]``, ``[max_acc_gap]``)."""
    if "maximize" not in block and "minimize" not in block:
        return OBJECTIVES
    chosen: list[str] = []
    before = len(problems)
    for direction, verb in (("max", "maximize"), ("min", "minimize")):
        default = [o.key for o in OBJECTIVES if o.direction == direction]
        names = block.get(verb, default)
        if isinstance(names, str):
            names = [names]
        allowed = [k for k, m in METRICS.items() if m.direction == direction]
        if not isinstance(names, list):
            problems.append(
                f"objectives.{verb}: {short_repr(names)} must be a list of metrics from {allowed}"
            )
            continue
        for name in names:
            if not isinstance(name, str) or name not in METRICS:
                problems.append(f"objectives.{verb}: {short_repr(name)} is not a metric; allowed: {allowed}")
            elif name not in allowed:
                other = "maximized" if direction == "min" else "minimized"
                problems.append(f"objectives.{verb}: {name!r} is {other}, not {verb}d; allowed: {allowed}")
            elif name in chosen:
                problems.append(f"objectives.{verb}: {name!r} is named twice")
            else:
                chosen.append(name)
    if len(problems) == before and not MIN_OBJECTIVES <= len(chosen) <= MAX_OBJECTIVES:
        problems.append(
            f"objectives: {chosen} are {len(chosen)} objective(s); a sweep has {MIN_OBJECTIVES} or "
            f"{MAX_OBJECTIVES} (maximize and minimize together)"
        )
    if len(problems) != before:
        return OBJECTIVES
    return tuple(METRICS[k] for k in chosen)


def _constraints(block: Any, problems: list[str]) -> Constraints:
    """``constraints:``: ``max_acc_gap: 0.02`` bounds a metric on its bad side (at most 0.02 for a
    metric minimised, at least for one maximised); ``worst_group_acc: {min: 0.7}`` names the side."""
    if block is None:
        return ()
    example = "{max_acc_gap: 0.02, worst_group_acc: {min: 0.7}}"
    if not isinstance(block, dict) or not block:
        problems.append(
            f"constraints: {short_repr(block)} must be a mapping of metrics to bounds, e.g. {example}"
        )
        return ()
    out: list[Constraint] = []
    for key, value in block.items():
        where = f"constraints.{_key(key)}"
        if not isinstance(key, str) or key not in METRICS:
            problems.append(f"{where}: unknown metric; allowed: {list(METRICS)}")
            continue
        sides: Mapping[Any, Any]
        if isinstance(value, dict):
            sides = value
            for side in sides:
                if side not in ("min", "max"):
                    problems.append(f"{where}.{_key(side)}: unknown key; allowed are ['min', 'max']")
            if not sides:
                problems.append(f"{where}: {{}} names no bound; give {{min: x}} or {{max: x}}")
        else:
            sides = {"max" if METRICS[key].direction == "min" else "min": value}
        bounds: tuple[Literal["min", "max"], ...] = ("min", "max")
        for limit in bounds:
            if limit not in sides:
                continue
            bound = sides[limit]
            shown = where if not isinstance(value, dict) else f"{where}.{limit}"
            problem = bound_problem(bound)
            if problem is not None:
                problems.append(f"{shown}: {problem}")
                continue
            out.append(Constraint(key, float(bound), limit))
    problems += [f"constraints.{p}" for p in constraint_problems(tuple(out))]
    return tuple(out)


def _fixed(raw: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    block = raw.get("fixed") or {}
    if not isinstance(block, dict):
        problems.append(f"fixed: {short_repr(block)} must be a mapping of trial settings")
        return {}
    fixed: dict[str, Any] = {}
    for key, value in block.items():
        if key not in SETTING_NAMES or key == "group_by":
            allowed = sorted(k for k in SETTING_NAMES if k != "group_by")
            problems.append(f"fixed.{_key(key)}: unknown trial setting; allowed are {allowed}")
            continue
        fixed[key] = _check(f"fixed.{key}", key, value, problems)
    for key in ("model", "data"):
        if key in raw:
            value = raw[key]
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{key}: {short_repr(value)} must be a string (a hub id or a folder) or null")
            fixed[key] = value
    fixed.setdefault("model", TrialConfig.model)
    fixed.setdefault("data", TrialConfig.data)
    return fixed


def _search(block: Any, fixed: Mapping[str, Any], problems: list[str]) -> dict[str, Distribution]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        problems.append(f"search: {short_repr(block)} must be a mapping of parameter -> choices or range")
        return {}
    search: dict[str, Distribution] = {}
    for key, spec in block.items():
        where = f"search.{_key(key)}"
        if key not in SEARCHABLE:
            problems.append(f"{where}: not a searchable parameter; allowed are {list(SEARCHABLE)}")
            continue
        if key in fixed:
            problems.append(f"{where}: also set in 'fixed'; a parameter is either fixed or searched")
            continue
        if isinstance(spec, list):
            spec = {"choices": spec}
        if key == "method" and spec == ALL_METHODS:
            spec = {"choices": list(METHODS)}
        elif key == "method" and isinstance(spec, str):
            spec = {"choices": [spec]}
        if not isinstance(spec, dict):
            problems.append(
                f"{where}: {short_repr(spec)} must be a list of choices or {{low, high[, log, step]}}"
            )
            continue
        dist = _distribution(where, key, spec, problems)
        if dist is not None:
            search[key] = dist
    return {**search, **_default_ranges(search, fixed)}


def _check_below(search: Mapping[str, Distribution], fixed: Mapping[str, Any], problems: list[str]) -> None:
    """A method parameter that must stay below another setting (JTT's ``jtt_epochs`` below ``epochs``):
    its largest possible value must be below the other's smallest, or some trials could not run."""

    def extent(name: str) -> tuple[float, float, str]:
        dist = search.get(name)
        if dist is None:
            value = fixed.get(name, METHOD_PARAMETERS[name].default if name in METHOD_PARAMETERS else None)
            if value is None:
                value = getattr(TrialConfig, name)
            return float(value), float(value), f"fixed.{name}" if name in fixed else name
        values = (
            [float(c) for c in dist.choices]
            if dist.choices
            else [float(dist.low or 0), float(dist.high or 0)]
        )
        return min(values), max(values), f"search.{name}"

    dist = search.get("method")
    methods = (
        dist.choices if dist is not None and dist.choices else (fixed.get("method", TrialConfig.method),)
    )
    used = {p.name: p for m in methods if m in METHODS for p in METHODS[m].parameters}
    for name, parameter in used.items():
        if parameter.below is None or (name not in search and name not in fixed and parameter.search is None):
            continue
        _, most, where = extent(name)
        least, _, other = extent(parameter.below)
        if not most < least:
            problems.append(
                f"{where}: {most:g} must stay below {parameter.below} ({other} can be {least:g}); "
                f"lower {name} or raise {parameter.below}"
            )


def _default_ranges(search: Mapping[str, Distribution], fixed: Mapping[str, Any]) -> dict[str, Distribution]:
    """The method parameters a space neither fixes nor searches, for the methods it may try, searched over
    the default ranges their methods declare (``fairsearch/methods/<name>.py``)."""
    dist = search.get("method")
    methods = (
        dist.choices if dist is not None and dist.choices else (fixed.get("method", TrialConfig.method),)
    )
    used = {p for m in methods if m in METHODS for p in METHODS[m].parameter_names}
    out = {}
    for name, parameter in METHOD_PARAMETERS.items():
        if name in used and name not in search and name not in fixed and parameter.search is not None:
            low, high, log = parameter.search
            out[name] = Distribution(name=name, low=low, high=high, log=log, integer=parameter.integer)
    return out


def _distribution(where: str, key: str, spec: Mapping[str, Any], problems: list[str]) -> Distribution | None:
    unknown = [k for k in spec if k not in ("choices", "low", "high", "log", "step")]
    if unknown:
        problems.append(
            f"{where}: unknown keys {short_repr(unknown)}; allowed are ['choices', 'low', 'high', 'log', 'step']"
        )
        return None
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            problems.append(f"{where}.choices: {short_repr(choices)} must be a non-empty list")
            return None
        if len(set(map(repr, choices))) != len(choices):
            problems.append(f"{where}.choices: {short_repr(choices)} has duplicates")
        n_before = len(problems)
        checked = [_check(where, key, c, problems) for c in choices]
        if len(problems) > n_before:
            return None
        return Distribution(name=key, choices=tuple(checked))
    if key == "method":
        problems.append(f"{where}: must be a list of methods from {list(METHODS)}")
        return None
    if "low" not in spec or "high" not in spec:
        problems.append(f"{where}: a range needs both 'low' and 'high' (or give 'choices')")
        return None
    integer = NUMERIC[key] is int
    n_before = len(problems)
    low = _check(f"{where}.low", key, spec["low"], problems)
    high = _check(f"{where}.high", key, spec["high"], problems)
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: {short_repr(log)} must be true or false")
    if len(problems) > n_before:
        return None
    if low >= high:
        problems.append(f"{where}: low {low!r} must be < high {high!r}")
    if log and low <= 0:
        problems.append(f"{where}: a log range needs low > 0, got {low!r}")
    if step is not None and (
        isinstance(step, bool) or not isinstance(step, int | float) or not 0 < step < math.inf
    ):
        problems.append(f"{where}.step: {short_repr(step)} must be a number > 0")
    if step is not None and log:
        problems.append(f"{where}: 'step' and 'log' cannot be combined")
    if len(problems) > n_before:
        return None
    return Distribution(name=key, low=low, high=high, log=bool(log), step=step, integer=integer)


def _positive_int(raw: Mapping[str, Any], key: str, default: int, problems: list[str], most: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        problems.append(f"{key}: {short_repr(value)} must be an integer from 1 to {most}")
        return default
    return value


def _sampler(block: Any, problems: list[str]) -> tuple[str, int]:
    if block is None:
        return "tpe", 0
    if isinstance(block, str):
        block = {"name": block}
    if not isinstance(block, dict):
        problems.append(f"sampler: {short_repr(block)} must be a name or {{name, seed}}")
        return "tpe", 0
    for key in block:
        if key not in ("name", "seed"):
            problems.append(f"sampler.{_key(key)}: unknown key; allowed are ['name', 'seed']")
    name = block.get("name", "tpe")
    if not isinstance(name, str) or name not in SAMPLERS:
        problems.append(f"sampler.name: {short_repr(name)} is not one of {list(SAMPLERS)}")
    seed = block.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"sampler.seed: {short_repr(seed)} must be an integer >= 0")
        seed = 0
    return str(name), int(seed)


def _confirm(block: Any, problems: list[str]) -> dict[str, int]:
    values = {key: default for key, (_, _, default) in CONFIRM_KEYS.items()}
    if block is None:
        return values
    if not isinstance(block, dict):
        problems.append(f"confirm: {short_repr(block)} must be a mapping such as {{seeds: 2}}")
        return values
    for key, value in block.items():
        if key not in CONFIRM_KEYS:
            problems.append(f"confirm.{_key(key)}: unknown key; allowed are {list(CONFIRM_KEYS)}")
            continue
        low, high, _ = CONFIRM_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"confirm.{key}: {short_repr(value)} must be an integer from {low} to {high}")
            continue
        values[key] = value
    return values


TRACKING_KEYS = ("mlflow",)
"""``tracking.<key>``."""


def _tracking(block: Any, problems: list[str]) -> str | None:
    """``tracking: {mlflow: URI}``: the MLflow tracking URI, or ``None``."""
    if block is None:
        return None
    if not isinstance(block, dict):
        problems.append(
            f"tracking: {short_repr(block)} must be a mapping such as {{mlflow: http://127.0.0.1:5000}}"
        )
        return None
    for key in block:
        if key not in TRACKING_KEYS:
            problems.append(f"tracking.{_key(key)}: unknown key; allowed are {list(TRACKING_KEYS)}")
    uri = block.get("mlflow")
    if uri is None:
        return None
    problem = mlflow_uri_problem("tracking.mlflow", uri)
    if problem:
        problems.append(problem)
        return None
    return str(uri)


RESOURCE_KEYS = ("cpus", "gpus", "gpu_memory_gb")
"""``resources.<key>``."""


def _resources(block: Any, problems: list[str]) -> tuple[float, float | None, float | None]:
    """``resources:``: CPUs and GPUs per trial, and the memory of one GPU in GB when the user states it."""
    if block is None:
        return 1.0, None, None
    if not isinstance(block, dict):
        problems.append(f"resources: {short_repr(block)} must be a mapping with 'cpus' and/or 'gpus'")
        return 1.0, None, None
    for key in block:
        if key not in RESOURCE_KEYS:
            problems.append(f"resources.{_key(key)}: unknown key; allowed are {list(RESOURCE_KEYS)}")
    cpus = block.get("cpus", 1)
    if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0 < cpus < math.inf:
        problems.append(f"resources.cpus: {short_repr(cpus)} must be a finite number > 0")
        cpus = 1
    memory = block.get("gpu_memory_gb")
    if memory is not None and (
        isinstance(memory, bool) or not isinstance(memory, int | float) or not 0 < memory <= 100_000
    ):
        problems.append(
            f"resources.gpu_memory_gb: {short_repr(memory)} must be the memory of one GPU in GB, a number "
            "> 0 (e.g. 80 for an H100)"
        )
        memory = None
    gpu_memory = float(memory) if memory is not None else None
    gpus = block.get("gpus", "auto")
    if gpus == "auto":
        return float(cpus), None, gpu_memory
    if isinstance(gpus, bool) or not isinstance(gpus, int | float) or not 0 <= gpus < math.inf:
        problems.append(
            f"resources.gpus: {short_repr(gpus)} must be 'auto' or a number >= 0 (fractions allowed)"
        )
        return float(cpus), None, gpu_memory
    return float(cpus), float(gpus), gpu_memory


def _check_scheduler(
    block: Mapping[str, Any],
    fixed: Mapping[str, Any],
    search: Mapping[str, Distribution],
    problems: list[str],
) -> None:
    try:
        scheduler_settings(block, max_epochs=_max_epochs(fixed, search))
    except FairsearchError as err:
        problems.extend(str(err).splitlines())
