"""The memory model of a trial against the models it describes and against measured peaks; gradient
checkpointing as a setting; ``fairsearch plan``; the sweep's refusal of trials that do not fit their GPUs."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from refusals import refused
from transformers import Qwen2_5_VLModel

from fairsearch.cli import main
from fairsearch.data.synthetic import write_synthetic
from fairsearch.errors import FairsearchError
from fairsearch.model import (
    build_classifier,
    load_backbone,
    parameter_counts,
    qwen2_5_vl_3b_config,
    qwen2_5_vl_7b_config,
)
from fairsearch.model.memory import Architecture, TrialShape, trial_memory
from fairsearch.model.tiny import tiny_image_processor, tiny_tokenizer
from fairsearch.search.capacity import CUDA_CONTEXT_BYTES, check_fits, cluster_gpu_memory, largest_trial
from fairsearch.spec.config import TrialConfig
from fairsearch.spec.space import load_space
from fairsearch.train.trial import run_trial

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_size_step", ROOT / "benchmarks" / "real_size_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_size_step"] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ counts and the step
@pytest.mark.parametrize(
    ("make", "published"),
    [(qwen2_5_vl_3b_config, 3_754_622_976), (qwen2_5_vl_7b_config, 7_747_169_280)],
)
def test_parameter_counts_are_those_of_the_built_models(make: Any, published: int) -> None:
    config = make()
    with torch.device("meta"):
        model = Qwen2_5_VLModel._from_config(config)
    built = sum(p.numel() for p in model.parameters())
    arch = Architecture.from_config(config.to_dict())
    assert arch.parameters == built == published
    assert arch.vision_parameters == sum(p.numel() for p in model.visual.parameters())


def test_trainable_count_is_the_classifiers() -> None:
    backbone = load_backbone("tiny")
    arch = Architecture.from_config(backbone.config.to_dict())
    classifier = build_classifier(backbone, lora_rank=16, lora_alpha=32)
    trainable, total = parameter_counts(classifier)
    assert (trainable, total) == (
        arch.trainable_parameters(16),
        arch.parameters + arch.trainable_parameters(16),
    )


def test_7b_lora_share_is_the_papers() -> None:
    arch = Architecture.from_config(qwen2_5_vl_7b_config().to_dict())
    lora = arch.trainable_parameters(32) - (arch.hidden_size * 2 + 2)
    assert lora == 20_185_088  # r = 32 on q, k, v, o of 28 layers (docs: 0.24 % of 8.29 B)


def test_the_model_keeps_far_less_with_checkpointing() -> None:
    arch = Architecture.from_config(qwen2_5_vl_7b_config().to_dict())
    shape = TrialShape(batch_size=8, tokens_per_sample=470, lora_rank=32, weight_bytes=2)
    without = trial_memory(arch, shape)
    with_gc = trial_memory(arch, TrialShape(**{**shape.__dict__, "gradient_checkpointing": True}))
    assert with_gc.activations < without.activations / 20
    assert with_gc.base_weights == without.base_weights
    assert with_gc.total < without.total


# ------------------------------------------------------------------------------------ gradient checkpointing
def _saved_bytes_and_grads(checkpointing: bool) -> tuple[int, dict[str, torch.Tensor], float]:
    from fairsearch.model import InputBuilder

    backbone = load_backbone("tiny")
    builder = InputBuilder(backbone.tokenizer, backbone.image_processor)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (112, 112, 3), generator=generator, dtype=torch.uint8).numpy()] * 4
    batch = builder.collate(images)
    torch.manual_seed(0)
    classifier = build_classifier(backbone, lora_rank=8, lora_alpha=16, gradient_checkpointing=checkpointing)
    storages: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in classifier.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in params:
            storages[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = classifier(batch)
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in classifier.named_parameters() if p.grad is not None}
    return sum(storages.values()), grads, loss.item()


def test_gradient_checkpointing_keeps_less_and_gives_the_same_gradients() -> None:
    kept, grads, loss = _saved_bytes_and_grads(False)
    kept_gc, grads_gc, loss_gc = _saved_bytes_and_grads(True)
    assert kept_gc < kept / 2
    assert loss_gc == pytest.approx(loss, abs=1e-6)
    assert grads.keys() == grads_gc.keys() and any("lora_A" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_gc[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_trial_with_gradient_checkpointing_gives_the_same_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    base = {"synthetic_n": 80, "batch_size": 16, "n_boot": 0, "eval_batch_size": 40, "epochs": 1}
    losses = {}
    for checkpointing in (False, True):
        reports: list[dict[str, float]] = []
        run_trial(
            TrialConfig(gradient_checkpointing=checkpointing, **base),
            report=lambda metrics, folder, reports=reports: reports.append(metrics),
        )
        losses[checkpointing] = (reports[-1]["train_loss"], reports[-1]["loss"], reports[-1]["acc"])
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gradient_checkpointing": "yes"}, r"^gradient_checkpointing: 'yes' must be true or false$"),
        ({"gradient_checkpointing": 1}, r"^gradient_checkpointing: 1 must be true or false$"),
    ],
)
def test_bad_gradient_checkpointing_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(FairsearchError, match=message):
        TrialConfig.from_dict(values)


def _space(tmp_path: Path, body: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            "search: {gradient_checkpointing: [true, false]}\n",
            "search.gradient_checkpointing: not a searchable parameter",
        ),
        (
            "fixed: {gradient_checkpointing: maybe}\n",
            "fixed.gradient_checkpointing: 'maybe' must be true or false",
        ),
        ("resources: {gpu_memory_gb: 0}\n", "resources.gpu_memory_gb: 0 must be the memory of one GPU in GB"),
        (
            "resources: {gpu_memory_gb: 80GB}\n",
            "resources.gpu_memory_gb: '80GB' must be the memory of one GPU",
        ),
        ("resources: {gpu_memory_gb: true}\n", "resources.gpu_memory_gb: True must be the memory of one GPU"),
        (
            "resources: {vram: 80}\n",
            "resources.vram: unknown key; allowed are ['cpus', 'gpus', 'gpu_memory_gb']",
        ),
    ],
)
def test_bad_memory_settings_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, fragment: str
) -> None:
    space = _space(tmp_path, body)
    refused(capsys, tmp_path, ["plan", "--space", str(space)], fragment)


def test_plan_refuses_a_gpu_without_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = _space(tmp_path, "fixed: {epochs: 1}\n")
    refused(capsys, tmp_path, ["plan", "--space", str(space), "--gpu-memory", "0"], "--gpu-memory 0: must be")


# ------------------------------------------------------------------------------------ plan and the refusal
@pytest.fixture(scope="module")
def model_3b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Qwen2.5-VL-3B model folder without weights: config, tokenizer, image processor."""
    folder = tmp_path_factory.mktemp("qwen2.5-vl-3b")
    qwen2_5_vl_3b_config().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fundus_512(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small FairVLMed-layout folder of 512×512 images (324 image tokens each)."""
    folder = tmp_path_factory.mktemp("data") / "fundus"
    write_synthetic(folder, n=40, seed=0, image_size=512)
    return folder


def _space_3b(tmp_path: Path, model: Path, data: Path, resources: str, fixed: str = "") -> Path:
    return _space(
        tmp_path,
        f"name: big\nmodel: {model}\ndata: {data}\n"
        "search: {method: [vanilla, gr], batch_size: [4, 16], lora_rank: [16, 32]}\n"
        f"fixed: {{epochs: 1, eval_batch_size: 8{fixed}}}\nresources: {resources}\n",
    )


def test_plan_prints_the_largest_trials_parts_and_how_many_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_3b: Path, fundus_512: Path
) -> None:
    space = _space_3b(tmp_path, model_3b, fundus_512, "{gpus: 0.5}")
    capsys.readouterr()
    assert main(["plan", "--space", str(space), "--gpu-memory", "141"]) == 0
    out = capsys.readouterr().out
    rows = {
        line[:28].strip(): float(line[28:])
        for line in out.splitlines()
        if len(line) > 28 and line[28:].strip().replace(".", "").isdigit()
    }
    assert rows["base weights"] == pytest.approx(3_754_622_976 * 2 / GIB, abs=1e-3)  # bf16
    lora = 36 * 32 * (6 * 2048 + 2 * 256) + 2048 * 2 + 2  # r = 32 (the largest) on 36 layers + the head
    assert rows["LoRA + head + AdamW"] == pytest.approx(lora * 16 / GIB, abs=1e-3)
    assert "batch_size 16 × " in out and "324 image tokens of 512×512 images" in out
    parts = ("base weights", "LoRA + head + AdamW", "CUDA context (allowance)")
    transient = max(rows["activations"] + rows["backward workspace"], rows["evaluation (no grad)"])
    assert rows["total per trial"] == pytest.approx(sum(rows[p] for p in parts) + transient, abs=2e-3)
    fit = math.floor(141 / rows["total per trial"])
    assert f"one 141 GB GPU holds {fit} such trial" in out
    assert f"resources.gpus 0.5 puts 2 on each GPU: {'fits' if fit >= 2 else 'does NOT fit'}" in out


def test_run_refuses_trials_that_do_not_fit_their_share_and_names_what_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_3b: Path, fundus_512: Path
) -> None:
    space = _space_3b(tmp_path, model_3b, fundus_512, "{gpus: 0.5, gpu_memory_gb: 48}")
    plan = largest_trial(load_space(space))
    assert plan.per_trial > 24 * GIB  # two per 48 GB GPU cannot fit: the refusal is not vacuous
    results = tmp_path / "results"
    err = refused(capsys, tmp_path, ["run", "--space", str(space), "--results", str(results)], "needs")
    assert "2 trials share each GPU (resources.gpus: 0.5), so each has 24.0 GiB of a 48 GB GPU" in err
    assert "resources.gpu_memory_gb: 48" in err
    batch = int(err.split("batch_size at most ")[1].split()[0].rstrip(","))
    shape = plan.shape
    fits = [
        trial_memory(plan.arch, TrialShape(**{**shape.__dict__, "batch_size": b})).total + CUDA_CONTEXT_BYTES
        <= 24 * GIB
        for b in (batch, batch + 1)
    ]
    assert fits == [True, False]
    assert "gradient_checkpointing: true" in err
    assert not results.exists()


def test_checkpointing_makes_the_same_space_fit(tmp_path: Path, model_3b: Path, fundus_512: Path) -> None:
    space = _space_3b(
        tmp_path, model_3b, fundus_512, "{gpus: 0.5, gpu_memory_gb: 48}", ", gradient_checkpointing: true"
    )
    plan = check_fits(load_space(space), 48, 0.5, "resources.gpu_memory_gb: 48")
    assert plan.shape.gradient_checkpointing and plan.per_trial <= 24 * GIB


def test_weights_alone_too_large_say_so(tmp_path: Path, model_3b: Path, fundus_512: Path) -> None:
    spec = load_space(_space_3b(tmp_path, model_3b, fundus_512, "{gpus: 0.25}"))
    with pytest.raises(FairsearchError, match=r"4 trials share each GPU .*not even batch_size 1"):
        check_fits(spec, 24, 0.25, "the cluster's L4")


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"GPU": 8.0, "accelerator_type:H100": 1.0}, (80, "H100")),
        ({"GPU": 2.0, "accelerator_type:H100": 1.0, "accelerator_type:L4": 1.0}, (24, "L4")),
        ({"GPU": 1.0, "accelerator_type:A100": 1.0}, (None, "accelerator type A100 is not known here")),
        ({"GPU": 1.0, "CPU": 4.0}, (None, "the cluster reports no accelerator type")),
    ],
)
def test_gpu_memory_is_read_from_the_clusters_accelerator(
    resources: dict[str, float], expected: tuple[Any, str]
) -> None:
    memory, why = cluster_gpu_memory(resources)
    assert memory == expected[0]
    assert expected[1] in why
