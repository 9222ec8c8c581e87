"""Tests for fairsearch.judge.fairness: groupings, hard/soft MaxAccGap, weights, losses, split metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fairsearch.errors import FairsearchError
from fairsearch.judge.fairness import (
    UNKNOWN,
    Grouping,
    cross_entropy,
    encode_groups,
    group_weights,
    max_acc_gap,
    soft_max_acc_gap,
)
from fairsearch.judge.intervals import (
    auc_interval,
    max_gap_interval,
    proportion_interval,
    worst_group_interval,
)
from fairsearch.judge.metrics import evaluate_split
from fairsearch.methods import METHODS, Loss, TrainingGroups

VALUES = {
    "race": {0: "Asian", 1: "Black", 2: "White"},
    "gender": {0: "Female", 1: "Male"},
    "ethnicity": {0: "Non-Hispanic", 1: "Hispanic", -1: "unknown"},
}
FAST = settings(max_examples=40, deadline=None)


# ------------------------------------------------------------------------------------------ references
def ref_gap(pred: list[int], label: list[int], group: list[int]) -> float:
    accs = []
    for g in sorted({x for x in group if x >= 0}):
        members = [i for i, x in enumerate(group) if x == g]
        accs.append(sum(pred[i] == label[i] for i in members) / len(members))
    return max(accs) - min(accs) if len(accs) >= 2 else 0.0


def ref_softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def ref_soft_gap(logits: list[list[float]], labels: list[int], groups: list[int]) -> float:
    p_true = [ref_softmax(row)[y] for row, y in zip(logits, labels, strict=True)]
    accs = []
    for g in sorted({x for x in groups if x >= 0}):
        members = [p for p, x in zip(p_true, groups, strict=True) if x == g]
        accs.append(sum(members) / len(members))
    return max(accs) - min(accs) if len(accs) >= 2 else 0.0


def ref_loss(
    method: str, logits: list[list[float]], labels: list[int], groups: list[int], lam: float, w: list[float]
) -> float:
    ce = [-math.log(ref_softmax(row)[y]) for row, y in zip(logits, labels, strict=True)]
    weight = [w[g] if g >= 0 and method in ("gr", "hybrid") else 1.0 for g in groups]
    base = sum(c * v for c, v in zip(ce, weight, strict=True)) / sum(weight)  # the weighted mean
    return base + lam * ref_soft_gap(logits, labels, groups) if method in ("fr", "hybrid") else base


@st.composite
def batches(
    draw: st.DrawFn, n_classes: int = 2, n_groups: int = 4
) -> tuple[list[list[float]], list[int], list[int]]:
    n = draw(st.integers(1, 24))
    logit = st.floats(-6, 6, allow_nan=False)
    logits = draw(st.lists(st.lists(logit, min_size=n_classes, max_size=n_classes), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    groups = draw(st.lists(st.integers(-1, n_groups - 1), min_size=n, max_size=n))
    return logits, labels, groups


def tensors(
    b: tuple[list[list[float]], list[int], list[int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits, labels, groups = b
    return torch.tensor(logits, dtype=torch.float64), torch.tensor(labels), torch.tensor(groups)


# ------------------------------------------------------------------------------------------ groupings
def test_single_attribute_ids_names_and_counts() -> None:
    g = encode_groups({"race": np.array([2, 0, 1, -1, 2])}, "race", VALUES)
    assert g.name == "race"
    assert g.names == ("Asian", "Black", "White", UNKNOWN)
    assert g.ids.tolist() == [2, 0, 1, 3, 2]
    assert g.counts().tolist() == [1, 1, 2, 1]


def test_intersectional_ids_are_stable_across_splits() -> None:
    # split a holds Black*Female and White*Male only; split b holds Asian*Male, Black*Female, unknown
    a = encode_groups({"race": [1, 2, 1], "gender": [0, 1, 0]}, "race*gender", VALUES)
    b = encode_groups({"race": [0, 1, 2], "gender": [1, 0, -1]}, ["race", "gender"], VALUES)
    assert a.name == b.name == "race*gender"
    assert a.names == b.names == (
        "Asian*Female", "Asian*Male", "Black*Female", "Black*Male", "White*Female", "White*Male", UNKNOWN,
    )  # fmt: skip
    assert [a.names[i] for i in a.ids] == ["Black*Female", "White*Male", "Black*Female"]
    assert [b.names[i] for i in b.ids] == ["Asian*Male", "Black*Female", UNKNOWN]
    assert a.ids[0] == b.ids[1] == 2


def test_unknown_in_any_attribute_is_one_group_and_can_be_excluded() -> None:
    attrs = {"race": np.array([0, -1, 1, 2]), "ethnicity": np.array([-1, 0, 1, 1])}
    g = encode_groups(attrs, "race*ethnicity", VALUES)
    assert g.names[-1] == UNKNOWN and len(g.names) == 7
    assert g.ids.tolist() == [6, 6, 3, 5]
    assert g.names[3] == "Black*Hispanic"
    ex = encode_groups(attrs, "race*ethnicity", VALUES, exclude_unknown=True)
    assert UNKNOWN not in ex.names and len(ex.names) == 6
    assert ex.ids.tolist() == [-1, -1, 3, 5]
    assert ex.counts().tolist() == [0, 0, 0, 1, 0, 1]


def test_integral_float_codes_are_accepted() -> None:
    assert encode_groups({"gender": np.array([1.0, 0.0])}, "gender", VALUES).ids.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("attrs", "by", "match"),
    [
        ({"race": [0]}, "rac", r"^by: attribute 'rac' is not one of \['ethnicity', 'gender', 'race'\]$"),
        ({"race": [0]}, "race*gender", r"^by: no codes for attribute 'gender'; the split has \['race'\]$"),
        ({"race": [0]}, "race**gender", r"^by: 'race\*\*gender' must name one attribute"),
        ({"race": [0]}, "race*race", r"^by: 'race\*race' names an attribute more than once$"),
        (
            {"race": [0, 3, 7, 3, -1]},
            "race",
            r"^race: code\(s\) \[3, 7\] not in the domain; "
            r"allowed: 0 \(Asian\), 1 \(Black\), 2 \(White\), -1 \(unknown\)$",
        ),
        ({"race": [0, 1], "gender": [0]}, "race*gender", r"^gender: 1 codes, but 'race' has 2$"),
        ({"gender": [0.5]}, "gender", r"^gender: codes must be integers, got dtype float64"),
    ],
)
def test_encode_groups_errors(attrs: dict[str, list[float]], by: str, match: str) -> None:
    with pytest.raises(FairsearchError, match=match):
        encode_groups({k: np.array(v) for k, v in attrs.items()}, by, VALUES)


# ------------------------------------------------------------------------------------------ hard gap
gap_cases = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        *(st.lists(st.integers(lo, hi), min_size=n, max_size=n) for lo, hi in ((0, 1), (0, 1), (-1, 3)))
    )
)


@FAST
@given(gap_cases)
def test_max_acc_gap_matches_loop_reference(case: tuple[list[int], list[int], list[int]]) -> None:
    pred, label, group = case
    res = max_acc_gap(pred, label, group, n_groups=4)
    assert res.gap == pytest.approx(ref_gap(pred, label, group), abs=1e-12)
    for g in range(4):
        members = [i for i, x in enumerate(group) if x == g]
        assert res.size[g] == len(members)
        if members:
            assert res.accuracy[g] == pytest.approx(sum(pred[i] == label[i] for i in members) / len(members))
        else:
            assert np.isnan(res.accuracy[g])


@settings(max_examples=15, deadline=None)
@given(gap_cases)
def test_max_acc_gap_equals_fairlearn_between_groups(case: tuple[list[int], list[int], list[int]]) -> None:
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    pred, label, group = (np.array(x) for x in case)
    keep = group >= 0
    assume(keep.sum() >= 2)  # fairlearn squeezes a single sample to a 0-d array and fails
    frame = MetricFrame(
        metrics=accuracy_score, y_true=label[keep], y_pred=pred[keep], sensitive_features=group[keep]
    )
    assert max_acc_gap(pred, label, group).gap == pytest.approx(frame.difference(method="between_groups"))


def test_max_acc_gap_edge_cases() -> None:
    one = max_acc_gap([1, 0, 1], [1, 1, 1], [2, 2, -1], n_groups=4)
    assert one.gap == 0.0 and one.worst == 0.5 and one.size.tolist() == [0, 0, 2, 0]
    assert max_acc_gap([], [], []).gap == 0.0
    assert max_acc_gap([1], [1], [-1]).worst is None
    with pytest.raises(ValueError, match=r"group ids must lie in \[-1, 2\)"):
        max_acc_gap([1, 1], [1, 1], [0, 2], n_groups=2)


# ------------------------------------------------------------------------------------------ soft gap
@FAST
@given(batches(n_classes=3))
def test_soft_gap_matches_loop_reference(b: tuple[list[list[float]], list[int], list[int]]) -> None:
    value = soft_max_acc_gap(*tensors(b))
    assert value.item() == pytest.approx(ref_soft_gap(*b), abs=1e-10)


def test_soft_gap_gradient_raises_worst_and_lowers_best_group() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1] * 6)
    groups = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    # group 0 confidently right, group 2 confidently wrong, group 1 in between
    sign = torch.where(labels == 0, 1.0, -1.0).double()
    logits[:, 0] = sign * torch.tensor([3.0] * 4 + [0.1] * 4 + [-3.0] * 4).double() + 0.1 * logits[:, 0]
    logits.requires_grad_(True)
    loss = soft_max_acc_gap(logits, labels, groups)
    loss.backward()
    assert logits.grad is not None

    def p_true(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, -1).gather(1, labels[:, None]).squeeze(1)

    before = p_true(logits.detach())
    after = p_true(logits.detach() - 0.5 * logits.grad)
    assert (after[8:] > before[8:]).all()  # worst group
    assert (after[:4] < before[:4]).all()  # best group
    assert (logits.grad[4:8] == 0).all()  # middle group untouched


def test_soft_gap_is_zero_with_a_graph_for_fewer_than_two_groups() -> None:
    for groups in ([1, 1, -1, 1], [-1, -1, -1, -1]):
        logits = torch.randn(4, 2, requires_grad=True)
        loss = soft_max_acc_gap(logits, torch.tensor([0, 1, 1, 0]), torch.tensor(groups))
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert logits.grad is not None and (logits.grad == 0).all()


def test_soft_gap_ignores_excluded_samples_and_computes_half_precision_in_float32() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    labels, groups = torch.tensor([0, 0, 1]), torch.tensor([0, 1, -1])
    expected = ref_soft_gap(logits.tolist(), [0, 0, 1], [0, 1, -1])
    assert soft_max_acc_gap(logits, labels, groups).item() == pytest.approx(expected, rel=1e-6)
    half = soft_max_acc_gap(logits.bfloat16(), labels, groups)
    assert half.dtype == torch.float32 and half.item() == pytest.approx(expected, rel=1e-2)


# ------------------------------------------------------------------------------------------ weights
def test_group_weights_clip_a_21_to_1_imbalance() -> None:
    w = group_weights([21, 1], w_max=10)
    assert w.dtype == torch.float32
    assert w[1].item() == 10.0
    assert w[0].item() == torch.tensor(22 / 21, dtype=torch.float32).item()
    assert group_weights([21, 1], w_max=1).tolist() == [1.0, 1.0]


@FAST
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.floats(1, 30))
def test_group_weights_match_loop_reference(counts: list[int], w_max: float) -> None:
    n = sum(counts)
    expected = [min(n / c, w_max) if c > 0 else w_max for c in counts]
    assert group_weights(counts, w_max).tolist() == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------------ methods
def test_group_weights_checks_w_max() -> None:
    with pytest.raises(FairsearchError, match=r"^w_max: 0.5 must be >= 1$"):
        group_weights([3, 1], 0.5)


PAPER_METHODS = ("vanilla", "fr", "gr", "hybrid")


def paper_loss(method: str, counts: Sequence[int], lam: float = 0.0, w_max: float = 10.0) -> Loss:
    """The loss a trial of one of the paper's methods trains with, built from the registry."""
    groups = TrainingGroups(np.asarray(counts), torch.device("cpu"))
    return METHODS[method].make_loss(groups, {"lam": lam, "w_max": w_max})


def test_cross_entropy_refuses_a_caller_s_mistakes() -> None:
    logits, labels, groups = torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"group id 1 has no weight \(table has 1\)"):
        cross_entropy(logits, labels, groups, weights=torch.ones(1))
    with pytest.raises(ValueError, match=r"expected logits \[N, C\]"):
        cross_entropy(logits, labels[:1], groups)
    with pytest.raises(ValueError, match=r"^empty batch"):
        paper_loss("hybrid", [1, 1], lam=0.5)(torch.zeros(0, 2), torch.zeros(0).long(), torch.zeros(0).long())


@FAST
@given(
    batches(),
    st.sampled_from(PAPER_METHODS),
    st.floats(0, 2),
    st.lists(st.integers(0, 60), min_size=4, max_size=4),
    st.floats(1, 12),
)
def test_each_paper_method_s_loss_matches_the_loop_reference(
    b: tuple[list[list[float]], list[int], list[int]],
    method: str,
    lam: float,
    counts: list[int],
    w_max: float,
) -> None:
    """The registry's losses against a plain-Python reference: the weights are min(N/|D_s|, w_max) of the
    training counts the trial hands the method."""
    logits, labels, groups = tensors(b)
    got = paper_loss(method, counts, lam, w_max)(logits, labels, groups)
    w = group_weights(counts, w_max).tolist()
    assert got.item() == pytest.approx(ref_loss(method, *b, lam, w), rel=1e-9, abs=1e-12)


@FAST
@given(batches(), st.floats(0, 2), st.lists(st.floats(0.5, 10), min_size=4, max_size=4))
def test_weighted_cross_entropy_with_any_table_matches_the_loop_reference(
    b: tuple[list[list[float]], list[int], list[int]], lam: float, w: list[float]
) -> None:
    logits, labels, groups = tensors(b)
    got = cross_entropy(logits, labels, groups, weights=torch.tensor(w, dtype=torch.float64))
    assert got.item() == pytest.approx(ref_loss("gr", *b, lam, w), rel=1e-9, abs=1e-12)
    got = cross_entropy(logits, labels, groups) + lam * soft_max_acc_gap(logits, labels, groups)
    assert got.item() == pytest.approx(ref_loss("fr", *b, lam, w), rel=1e-9, abs=1e-12)


def test_paper_method_losses_identities_and_backward() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 2, generator=gen, requires_grad=True)
    labels = torch.randint(0, 2, (32,), generator=gen)
    groups = torch.randint(-1, 3, (32,), generator=gen)
    counts = np.bincount(groups[groups >= 0].numpy(), minlength=3)
    w = group_weights(counts, w_max=10)
    vanilla = paper_loss("vanilla", counts)(logits, labels, groups)
    assert vanilla.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert paper_loss("fr", counts, lam=0.0)(logits, labels, groups).item() == vanilla.item()
    assert paper_loss("gr", counts, w_max=1.0)(logits, labels, groups).item() == pytest.approx(vanilla.item())
    gr = paper_loss("gr", counts)(logits, labels, groups)
    hybrid = paper_loss("hybrid", counts, lam=0.7)(logits, labels, groups)
    gap = soft_max_acc_gap(logits, labels, groups)
    assert gap.item() > 0
    assert hybrid.item() == pytest.approx(gr.item() + 0.7 * gap.item(), rel=1e-6)
    assert gr.item() == pytest.approx(cross_entropy(logits, labels, groups, weights=w).item())
    assert gr.item() != pytest.approx(vanilla.item())
    # normalised by the weights: scaling every group's weight leaves the loss (and the step size) unchanged
    known = groups.clamp(min=0)  # (an excluded sample keeps weight 1, whatever the table)
    assert cross_entropy(logits, labels, known, weights=3 * w).item() == pytest.approx(
        cross_entropy(logits, labels, known, weights=w).item()
    )
    assert cross_entropy(logits, labels, groups, weights=torch.ones(3)).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item()
    )
    hybrid.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and (logits.grad != 0).any()


# ------------------------------------------------------------------------------------------ evaluation
def constructed_split() -> tuple[np.ndarray, np.ndarray, dict[str, Grouping]]:
    """Three race groups: A (acc 3/4, AUC 3/4), B (acc 1, AUC 1), C (two positives, acc 1/2, no AUC)."""
    prob = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.3, 0.7, 0.6, 0.3])
    label = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 1])
    values = {"race": {0: "A", 1: "B", 2: "C"}, "gender": {0: "F", 1: "M"}}
    attrs = {"race": np.array([0] * 4 + [1] * 4 + [2] * 2), "gender": np.array([0, 1] * 4 + [-1, -1])}
    groupings = {by: encode_groups(attrs, by, values) for by in ("race", "gender")}
    return prob, label, groupings


def test_evaluate_split_on_a_constructed_case() -> None:
    prob, label, groupings = constructed_split()
    m = evaluate_split(prob, label, groupings, primary="race", n_boot=0)
    auc = 21.5 / 24  # 23 of 24 (pos, neg) pairs ordered, one tie at 0.3
    es_auc = auc / (1 + abs(0.75 - auc) + abs(1.0 - auc))
    race = m.groupings["race"]
    assert (m.acc, m.auc, m.n, m.n_pos) == (pytest.approx(0.8), pytest.approx(auc), 10, 6)
    assert (race.max_acc_gap, race.worst_group, race.worst_group_acc) == (0.5, "C", 0.5)
    assert race.es_auc == pytest.approx(es_auc)
    c = race.groups[2]
    assert (c.name, c.n, c.n_pos, c.auc, c.p_pos) == ("C", 2, 2, None, 0.5)
    assert c.auc_reason is not None and "one class only" in c.auc_reason
    flat = m.flat()
    expected = {
        "acc": 0.8, "auc": auc, "max_acc_gap": 0.5, "worst_group_acc": 0.5, "es_auc": es_auc,
        "max_acc_gap/race": 0.5, "worst_group_acc/race": 0.5, "es_auc/race": es_auc,
        "acc/race/A": 0.75, "n/race/A": 4, "n_pos/race/A": 2, "p_pos/race/A": 0.25, "auc/race/A": 0.75,
        "acc/race/B": 1.0, "n/race/B": 4, "n_pos/race/B": 2, "p_pos/race/B": 0.5, "auc/race/B": 1.0,
        "acc/race/C": 0.5, "n/race/C": 2, "n_pos/race/C": 2, "p_pos/race/C": 0.5,
        "max_acc_gap/gender": 0.5, "worst_group_acc/gender": 0.5, "es_auc/gender": auc / (1 + 2 * (1.0 - auc)),
        "acc/gender/F": 0.75, "n/gender/F": 4, "n_pos/gender/F": 1, "p_pos/gender/F": 0.0, "auc/gender/F": 1.0,
        "acc/gender/M": 1.0, "n/gender/M": 4, "n_pos/gender/M": 3, "p_pos/gender/M": 0.75, "auc/gender/M": 1.0,
        "acc/gender/unknown": 0.5, "n/gender/unknown": 2, "n_pos/gender/unknown": 2, "p_pos/gender/unknown": 0.5,
    }  # fmt: skip
    assert flat.keys() == expected.keys()
    assert flat == pytest.approx(expected)
    assert all(isinstance(v, float) for v in flat.values())


def test_evaluate_split_with_one_class_and_one_group() -> None:
    prob, label = np.array([0.7, 0.2, 0.9]), np.array([1, 1, 1])
    g = encode_groups({"gender": np.array([0, 0, 0])}, "gender", VALUES)
    m = evaluate_split(prob, label, {"gender": g}, primary="gender", n_boot=50)
    assert m.auc is None and m.auc_reason is not None and "one class only" in m.auc_reason
    gm = m.groupings["gender"]
    assert gm.max_acc_gap == 0.0 and gm.es_auc is None and gm.es_auc_reason == "overall AUC undefined"
    flat = m.flat()
    assert "auc" not in flat and "es_auc" not in flat and "auc/gender/Female" not in flat
    assert flat["max_acc_gap"] == 0.0 and flat["max_acc_gap_ci_low"] == flat["max_acc_gap_ci_high"] == 0.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in flat.values())


def test_evaluate_split_errors() -> None:
    prob, label, groupings = constructed_split()
    with pytest.raises(FairsearchError, match=r"^primary: 'age' is not one of \['race', 'gender'\]$"):
        evaluate_split(prob, label, groupings, primary="age")
    with pytest.raises(ValueError, match=r"prob_pos must be probabilities in \[0, 1\]"):
        evaluate_split(prob * 2, label, groupings, primary="race")
    with pytest.raises(ValueError, match=r"grouping 'race' has 10 ids for 9 samples"):
        evaluate_split(prob[:9], label[:9], groupings, primary="race")


def random_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Grouping]]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    prob = np.clip(0.5 + (label - 0.5) * 0.4 + rng.normal(0, 0.25, n), 0, 1)
    race = rng.choice([0, 1, 2, -1], size=n, p=[0.1, 0.15, 0.7, 0.05])
    return prob, label, {"race": encode_groups({"race": race}, "race", VALUES, exclude_unknown=True)}


def test_intervals_contain_their_point_estimates_are_deterministic_and_fast() -> None:
    prob, label, groupings = random_split(2000, seed=3)
    gender = np.random.default_rng(4).integers(0, 2, 2000)
    groupings["gender"] = encode_groups({"gender": gender}, "gender", VALUES)
    start = time.perf_counter()
    flat = evaluate_split(prob, label, groupings, primary="race", n_boot=1000, seed=7).flat()
    elapsed = time.perf_counter() - start
    bounds = {k for k in flat if k.endswith(("_ci_low", "_ci_high"))}
    with_ci = {k.removesuffix("_ci_low") for k in bounds if k.endswith("_ci_low")}
    expected = {
        k for k in flat.keys() - bounds if k.split("/")[0] in ("acc", "auc", "max_acc_gap", "worst_group_acc")
    }
    assert with_ci == expected and {"acc/gender/Male", "auc/race/Black", "worst_group_acc"} <= with_ci
    for key in with_ci:
        assert 0.0 <= flat[f"{key}_ci_low"] <= flat[key] <= flat[f"{key}_ci_high"] <= 1.0, key
    assert flat["acc_ci_high"] - flat["acc_ci_low"] < 0.05
    assert flat["max_acc_gap_ci_high"] - flat["max_acc_gap_ci_low"] < 0.25
    assert evaluate_split(prob, label, groupings, primary="race", n_boot=1000, seed=8).flat() == flat
    without = evaluate_split(prob, label, groupings, primary="race", n_boot=0).flat()
    assert without == {k: v for k, v in flat.items() if k not in bounds}
    assert elapsed < 2.0  # about 0.1 s on one core; slack for a shared machine


def test_split_intervals_are_those_of_each_group_s_counts() -> None:
    prob, label, groupings = random_split(60, seed=5)
    ids = groupings["race"].ids
    m = evaluate_split(prob, label, groupings, primary="race", n_boot=1)
    correct = (prob >= 0.5) == label
    present = [g for g in range(3) if np.any(ids == g)]
    hits = np.array([correct[ids == g].sum() for g in present])
    size = np.array([np.sum(ids == g) for g in present])
    race = m.groupings["race"]
    assert m.acc_ci == pytest.approx(tuple(np.ravel(proportion_interval(correct.sum(), 60))))
    assert race.max_acc_gap_ci == pytest.approx(tuple(np.ravel(max_gap_interval(hits, size))))
    assert race.worst_group_acc_ci == pytest.approx(tuple(np.ravel(worst_group_interval(hits, size))))
    for k, group in enumerate(race.groups):
        mask = ids == present[k]
        assert group.acc_ci == pytest.approx(tuple(np.ravel(proportion_interval(hits[k], size[k]))))
        assert group.auc_ci == pytest.approx(auc_interval(prob[mask], label[mask]))
    assert m.auc_ci == pytest.approx(auc_interval(prob, label))


def test_threshold_half_counts_as_positive() -> None:
    g = encode_groups({"gender": np.array([0, 1])}, "gender", VALUES)
    m = evaluate_split([0.5, 0.49], [1, 0], {"gender": g}, primary="gender", n_boot=0)
    assert m.acc == 1.0 and m.flat()["p_pos/gender/Female"] == 1.0 and m.flat()["p_pos/gender/Male"] == 0.0


def test_module_imports_neither_ray_nor_transformers() -> None:
    import ast

    import fairsearch.judge.fairness as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("ray", "transformers", "peft")}


def test_split_metrics_without_aucs_are_the_same_but_for_the_aucs() -> None:
    """Thresholded decisions have no AUC of their own: ``aucs=False`` skips them and changes nothing else."""
    rng = np.random.default_rng(5)
    label = rng.integers(0, 2, 400)
    prob = np.clip(0.35 * label + rng.uniform(0, 0.65, 400), 0, 1)
    grouping = Grouping("race", rng.integers(0, 3, 400), ("a", "b", "c"))
    full = evaluate_split(prob, label, {"race": grouping}, primary="race").flat()
    lean = evaluate_split(prob, label, {"race": grouping}, primary="race", aucs=False).flat()
    assert lean == {k: v for k, v in full.items() if "auc" not in k.split("/")[0]}
    assert any("auc" in k for k in full)
