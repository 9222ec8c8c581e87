"""Whether a space's largest trial fits the GPUs it will run on: ``fairsearch plan`` and the sweep's check.

Ray's ``num_gpus`` is a scheduling label, not a memory limit: trials given ``gpus: 0.5`` share a GPU two
by two, each with its own copy of the base model. A space whose trials cannot fit their share fails
hours in, with an out-of-memory error per trial; this module says so before anything runs. The memory of
a trial is :func:`fairsearch.model.memory.trial_memory`'s arithmetic on the model's configuration and
the space's largest settings (largest batch, LoRA rank, evaluation batch and image size), in bf16 as a
trial on a GPU loads it, plus :data:`CUDA_CONTEXT_BYTES` per trial process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from fairsearch.data.synthetic import BUILTIN_IMAGE_SIZE
from fairsearch.errors import FairsearchError
from fairsearch.model.memory import Architecture, MemoryEstimate, TrialShape, gib, trial_memory
from fairsearch.spec.config import TrialConfig
from fairsearch.spec.space import SweepSpec

__all__ = [
    "ACCELERATOR_MEMORY_GB",
    "CUDA_CONTEXT_BYTES",
    "FAIRVLMED_IMAGE",
    "TrialPlan",
    "check_fits",
    "cluster_gpu_memory",
    "format_plan",
    "largest_trial",
]

logger = logging.getLogger("fairsearch.search.sweep")  # its lines are the sweep's

GPU_WEIGHT_BYTES = 2
"""A trial on a GPU loads the model in bf16 (``fairsearch.model.backbone.default_dtype``)."""
CUDA_CONTEXT_BYTES = 1 << 30
"""Per trial process, beside its tensors: the CUDA context, cuBLAS workspaces and the caching allocator's
slack, none of which ``torch.cuda.max_memory_allocated`` counts. An allowance, not a measurement."""
FAIRVLMED_IMAGE = (664, 512)
"""Height and width of Harvard-FairVLMed's SLO fundus images, assumed for data only a trial can read."""
ACCELERATOR_MEMORY_GB: Mapping[str, float] = {
    "H100": 80,
    "H200": 141,
    "L4": 24,
    "L40S": 48,
    "A10G": 24,
    "T4": 16,
    "AMD-Instinct-MI300X-OAM": 192,
}
"""Memory of one GPU by the accelerator type Ray reports (``accelerator_type:<type>`` in
``ray.cluster_resources()``), in GB as the vendor states it (read as GiB). Types sold with several
memory sizes (A100: 40 or 80, V100: 16 or 32) are left out: state ``resources: {gpu_memory_gb: N}``."""


@dataclass(frozen=True)
class TrialPlan:
    """The memory of a space's largest trial, and what it was computed from.

    Attributes:
        model: the space's model (``tiny``, a hub id or a folder).
        arch: the model's numbers.
        shape: the largest trial's settings.
        image: the image size (height, width) the tokens were counted for, and where it came from.
        max_pixels: the largest ``max_pixels`` (``None``: the model's processor's own).
        estimate: the memory by component, without the per-process allowance.
    """

    model: str
    arch: Architecture
    shape: TrialShape
    image: tuple[int, int, str]
    max_pixels: int | None
    estimate: MemoryEstimate

    @property
    def per_trial(self) -> int:
        """Bytes one trial needs on its GPU: the estimate's peak plus :data:`CUDA_CONTEXT_BYTES`."""
        return self.estimate.total + CUDA_CONTEXT_BYTES


def largest_trial(spec: SweepSpec, *, overrides: Mapping[str, Any] | None = None) -> TrialPlan:
    """The memory of the largest trial a space can run: its largest batch, LoRA rank, evaluation batch
    and ``max_pixels``, with its fixed ``gradient_checkpointing``, on images of its data's size.

    Args:
        spec: the space.
        overrides: settings to use instead of the space's (``batch_size``, ``eval_batch_size``,
            ``gradient_checkpointing``), to find one that fits.

    Raises:
        FairsearchError: the model is not on this machine.
    """
    from fairsearch.model import InputBuilder, load_model_parts

    model = str(spec.fixed.get("model", TrialConfig.model))
    parts = load_model_parts(model)
    arch = Architecture.from_config(parts.config.to_dict())
    max_pixels = spec.largest("max_pixels")
    builder = InputBuilder(parts.tokenizer, parts.image_processor, max_pixels=max_pixels)
    height, width, source = _image_size(spec)
    values = {
        "batch_size": int(spec.largest("batch_size")),
        "eval_batch_size": int(spec.largest("eval_batch_size")),
        "gradient_checkpointing": bool(spec.fixed.get("gradient_checkpointing", False)),
        **(overrides or {}),
    }
    image_tokens = builder.num_image_tokens(height, width)
    shape = TrialShape(
        batch_size=int(values["batch_size"]),
        tokens_per_sample=builder.sequence_length(height, width),
        lora_rank=int(spec.largest("lora_rank")),
        gradient_checkpointing=bool(values["gradient_checkpointing"]),
        weight_bytes=GPU_WEIGHT_BYTES,
        eval_batch_size=int(values["eval_batch_size"]),
        patches_per_image=image_tokens * arch.merge_size**2
        if spec.fixed.get("vision_cache", TrialConfig.vision_cache)
        else 0,
    )
    return TrialPlan(model, arch, shape, (height, width, source), max_pixels, trial_memory(arch, shape))


def _image_size(spec: SweepSpec) -> tuple[int, int, str]:
    """(height, width, where from) of the space's images: the built-in set's, a FairVLMed folder's first
    training image, or FairVLMed's size for data at a URI."""
    data = spec.fixed.get("data")
    if data is None:
        return BUILTIN_IMAGE_SIZE, BUILTIN_IMAGE_SIZE, "the built-in synthetic set"
    if "://" in str(data):
        return (*FAIRVLMED_IMAGE, "FairVLMed's SLO fundus size (the data is read by the trials)")
    from fairsearch.data import load_fairvlmed

    image = load_fairvlmed(data)["train"].image(0)
    return int(image.shape[0]), int(image.shape[1]), f"{data}'s first training image"


def trials_per_gpu(gpus: float) -> int:
    """How many trials Ray puts on one GPU when each asks for ``gpus`` of one (1 for a whole GPU or more)."""
    return max(math.floor(1 / gpus + 1e-9), 1) if gpus > 0 else 0


def check_fits(spec: SweepSpec, gpu_memory_gb: float, gpus: float, where: str) -> TrialPlan:
    """Refuses a space whose largest trial, times the trials that share one GPU, does not fit its memory,
    naming the largest ``batch_size``, the ``eval_batch_size`` or the ``gradient_checkpointing`` setting
    that would.

    Args:
        spec: the space.
        gpu_memory_gb: the memory of one GPU.
        gpus: GPUs per trial (``resources.gpus``; fractions share a GPU).
        where: how the message names the memory's source (``resources.gpu_memory_gb: 24``).

    Returns:
        The largest trial's plan.

    Raises:
        FairsearchError: it does not fit.
    """
    plan = largest_trial(spec)
    sharing = trials_per_gpu(gpus)
    budget = gpu_memory_gb * 2**30 / sharing
    if plan.per_trial <= budget:
        logger.info(
            "memory: the largest trial needs %.1f GiB; %d per %g GiB GPU (%s) fit",
            gib(plan.per_trial),
            sharing,
            gpu_memory_gb,
            where,
        )
        return plan
    shared = (
        f"{sharing} trials share each GPU (resources.gpus: {gpus:g}), so each has"
        if sharing > 1
        else "a trial has"
    )
    fixes = _fixes(spec, plan, budget)
    advice = (
        "; it would fit with " + ", or ".join(fixes)
        if fixes
        else "; not even batch_size 1 with gradient_checkpointing fits: give each trial more of a GPU "
        "(a larger resources.gpus) or use larger GPUs"
    )
    raise FairsearchError(
        f"{spec.source}: the largest trial (batch_size {plan.shape.batch_size}, lora_rank "
        f"{plan.shape.lora_rank}, {plan.shape.tokens_per_sample} tokens per sample, gradient_checkpointing "
        f"{str(plan.shape.gradient_checkpointing).lower()}) needs {gib(plan.per_trial):.1f} GiB, and "
        f"{shared} {gib(budget):.1f} GiB of a {gpu_memory_gb:g} GB GPU ({where}){advice} "
        f"(fairsearch plan --space {spec.source} shows the parts)"
    )


def _fixes(spec: SweepSpec, plan: TrialPlan, budget: float) -> list[str]:
    """The settings that would make the largest trial fit ``budget`` bytes, as a message names them."""
    fixes: list[str] = []

    def fits(**changes: Any) -> bool:
        shape = replace(plan.shape, **changes)
        return trial_memory(plan.arch, shape).total + CUDA_CONTEXT_BYTES <= budget

    gc = plan.shape.gradient_checkpointing
    batch = _largest(lambda b: fits(batch_size=b), plan.shape.batch_size - 1)
    if batch:
        fixes.append(f"batch_size at most {batch}")
    if not gc and fits(gradient_checkpointing=True):
        fixes.append("gradient_checkpointing: true")
    elif not gc:
        batch_gc = _largest(
            lambda b: fits(batch_size=b, gradient_checkpointing=True), plan.shape.batch_size - 1
        )
        if batch_gc:
            fixes.append(f"gradient_checkpointing: true and batch_size at most {batch_gc}")
    if plan.estimate.evaluation >= plan.estimate.training_step:
        eval_batch = _largest(lambda b: fits(eval_batch_size=b), plan.shape.eval_batch_size - 1)
        if eval_batch:
            fixes.append(f"eval_batch_size at most {eval_batch}")
    return fixes


def _largest(fits: Any, high: int) -> int:
    """The largest n in [1, high] for which ``fits(n)`` (memory grows with n), or 0."""
    low, best = 1, 0
    while low <= high:
        middle = (low + high) // 2
        if fits(middle):
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best


def cluster_gpu_memory(resources: Mapping[str, float]) -> tuple[float | None, str]:
    """The memory of the smallest GPU of a Ray cluster, from its reported accelerator types.

    Args:
        resources: ``ray.cluster_resources()``.

    Returns:
        (GB, its accelerator type), or (None, why not: no type reported, or one not in
        :data:`ACCELERATOR_MEMORY_GB`).
    """
    types = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
    if not types:
        return None, "the cluster reports no accelerator type"
    unknown = [t for t in types if t not in ACCELERATOR_MEMORY_GB]
    if unknown:
        return None, f"the memory of accelerator type {', '.join(unknown)} is not known here"
    smallest = min(types, key=lambda t: ACCELERATOR_MEMORY_GB[t])
    return ACCELERATOR_MEMORY_GB[smallest], smallest


def _count(n: int) -> str:
    """``3.75 B``, ``348 k``."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


def format_plan(plan: TrialPlan, gpu_memory_gb: float, gpus: float | None) -> str:
    """``fairsearch plan``'s table: the largest trial's memory by component, and how many fit one GPU.

    Args:
        plan: from `largest_trial`.
        gpu_memory_gb: the memory of one GPU.
        gpus: the space's ``resources.gpus`` (``None``: auto, one GPU per trial).
    """
    shape, arch = plan.shape, plan.arch
    height, width, source = plan.image
    image_tokens = arch.image_tokens(shape.patches_per_image) if shape.patches_per_image else None
    lines = [
        f"largest trial of model {plan.model}: {_count(arch.parameters)} parameters "
        f"(LLM hidden {arch.hidden_size}, {arch.num_layers} layers), bf16 on a GPU",
        f"  batch_size {shape.batch_size} × {shape.tokens_per_sample} tokens per sample "
        f"({f'{image_tokens} image tokens of ' if image_tokens else ''}{height}×{width} images, {source}; "
        f"max_pixels {plan.max_pixels if plan.max_pixels is not None else 'the model default'}), lora_rank "
        f"{shape.lora_rank} ({plan.estimate.trainable:,} trainable), gradient_checkpointing "
        f"{str(shape.gradient_checkpointing).lower()}, eval_batch_size {shape.eval_batch_size}",
        "",
        f"{'component':28}{'GiB':>10}",
    ]
    components = dict(plan.estimate.components())
    total = components.pop("total (peak)")
    for label, value in components.items():
        lines.append(f"{label:28}{gib(value):>10.3f}")
    lines.append(f"{'CUDA context (allowance)':28}{gib(CUDA_CONTEXT_BYTES):>10.3f}")
    lines.append(f"{'total per trial':28}{gib(total + CUDA_CONTEXT_BYTES):>10.3f}")
    lines.append(
        "  (the peak: weights, LoRA + AdamW, and the largest of activations + workspace, evaluation and "
        "cache fill)"
    )
    fit = max(math.floor(gpu_memory_gb * 2**30 / plan.per_trial), 0)
    lines.append("")
    lines.append(f"one {gpu_memory_gb:g} GB GPU holds {fit} such trial{'s' if fit != 1 else ''} side by side")
    if gpus is not None and gpus > 0:
        sharing = trials_per_gpu(gpus)
        verdict = "fits" if sharing <= fit else "does NOT fit"
        lines.append(f"resources.gpus {gpus:g} puts {sharing} on each GPU: {verdict}")
    return "\n".join(lines)
