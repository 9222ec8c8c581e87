"""Pre-train the built-in tiny Qwen2.5-VL on a task other than glaucoma, and write it as a model folder.

The built-in ``tiny`` backbone has random weights. This script starts from exactly those weights (same
config, tokenizer and seeded init) and fine-tunes all of them (vision tower + language model) with a
12-class linear head on the last token, on :func:`fairsearch.data.synthetic.pretext_images`: fundus-like
images labelled by where their optic disc is (left, centre, right), how large it is (two sizes) and
whether their retina carries a pigment mosaic (at a random angle). The images are generated here with their own seed; the glaucoma set, its labels and its
groups are never read. It then writes a Qwen2.5-VL folder (``config.json``, ``model.safetensors``,
tokenizer and image-processor files; the lm_head is the seeded random init, never trained) that
``model: tiny-pretrained`` names when written into the package's folder, with ``pretraining.json`` (the
settings, the first losses, the accuracy, the weights' sha256) and a README rendered from it.

Deterministic for given arguments and thread count: the same run writes the same bytes.

    .venv/bin/python scripts/pretrain_tiny.py                    # into fairsearch/model/pretrained_tiny/
    .venv/bin/python scripts/pretrain_tiny.py --out /tmp/pt --steps 300

It lives in scripts/ beside ``setup``: it makes a file the package ships, it measures nothing (the
benchmark that uses the folder is ``benchmarks/fair_methods.py --model tiny-pretrained``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import Qwen2_5_VLForConditionalGeneration

from fairsearch.data.synthetic import PRETEXT_CLASSES, pretext_images
from fairsearch.model.backbone import PRETRAINED_TINY_FOLDER, TINY_SEED, Backbone, load_backbone
from fairsearch.model.classifier import last_token_pool
from fairsearch.model.inputs import InputBuilder

logger = logging.getLogger("pretrain_tiny")

#: The question asked about every pretext image (the glaucoma task asks its own).
PRETEXT_PROMPT = (
    "Where is the optic disc of this fundus image, how large is it, and is the retina tessellated?"
)
RECORD_FILE = "pretraining.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class Settings:
    """Everything that decides the weights (with the thread count).

    Attributes:
        data_seed: Seed of the pretext images (the glaucoma set's generator seeds are 0 and up).
        train_images: Pretext training images (indices 0 to this), cycled through in a seeded order.
        val_images: Held-out pretext images for the reported accuracy (the indices after the training ones).
        steps: Optimizer steps.
        batch_size: Images per step.
        lr: Peak AdamW learning rate (linear warm-up over 5 % of the steps, then cosine to 0).
        weight_decay: AdamW weight decay.
        head_seed: Seed of the 12-class head's init and of the batch order.
    """

    data_seed: int = 20260101
    train_images: int = 4800
    val_images: int = 1200
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    head_seed: int = 1


@dataclass
class Pretrained:
    """The result of :func:`pretrain`: the fine-tuned backbone and the record of how it was made."""

    backbone: Backbone
    head: nn.Linear
    losses: list[float]
    seconds: float


def model_inputs(builder: InputBuilder, images: np.ndarray) -> dict[str, Tensor]:
    """The backbone's keyword inputs for a batch of grey images ([B, H, W] uint8)."""
    batch = builder.collate(list(images))
    return {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw")} | {
        "pixel_values": batch["pixel_values"]
    }


def features(backbone: Backbone, inputs: dict[str, Tensor]) -> Tensor:
    """Last-token hidden states [B, hidden]: what the glaucoma classifier's head reads too."""
    hidden = backbone.model(**inputs, use_cache=False).last_hidden_state
    return last_token_pool(hidden, inputs["attention_mask"])


def pretrain(settings: Settings, *, on_step: Callable[[int, float], bool] | None = None) -> Pretrained:
    """Fine-tune every weight of the tiny backbone and a head on the pretext task.

    Args:
        settings: What decides the weights.
        on_step: Called after each step with (step, loss); returning False stops there (tests run the
            first steps only).

    Returns:
        The backbone (in eval mode), the head and each step's loss.
    """
    start = time.perf_counter()
    train_images = np.zeros((settings.train_images, 112, 112), dtype=np.uint8)
    drawn = np.zeros(settings.train_images, dtype=bool)  # each training image is rendered when first used
    backbone = load_backbone("tiny")
    builder = InputBuilder(backbone.tokenizer, backbone.image_processor, prompt=PRETEXT_PROMPT)
    hidden = int(backbone.config.get_text_config().hidden_size)
    generator = torch.Generator().manual_seed(settings.head_seed)
    head = nn.Linear(hidden, len(PRETEXT_CLASSES))
    with torch.no_grad():
        bound = 1.0 / hidden**0.5
        head.weight.copy_(torch.empty_like(head.weight).uniform_(-bound, bound, generator=generator))
        head.bias.zero_()
    parameters = [*backbone.model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, settings.steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + float(np.cos(np.pi * (step - warmup) / max(1, settings.steps - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    order = np.random.default_rng(settings.head_seed)
    queue: list[int] = []
    losses: list[float] = []
    backbone.model.train()
    for step in range(settings.steps):
        while len(queue) < settings.batch_size:
            queue.extend(order.permutation(settings.train_images).tolist())
        index, queue = np.array(queue[: settings.batch_size]), queue[settings.batch_size :]
        new = np.unique(index[~drawn[index]])
        if len(new):
            train_images[new], drawn[new] = pretext_images(new, seed=settings.data_seed)[0], True
        logits = head(features(backbone, model_inputs(builder, train_images[index])))
        labels = torch.from_numpy(index % len(PRETEXT_CLASSES))
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0 or step == settings.steps - 1:
            logger.info("step %d/%d: loss %.4f", step + 1, settings.steps, losses[-1])
        if on_step is not None and not on_step(step, losses[-1]):
            break
    backbone.model.eval()
    return Pretrained(backbone, head, losses, time.perf_counter() - start)


@torch.no_grad()
def accuracy(result: Pretrained, settings: Settings, batch_size: int = 100) -> float:
    """The pretext accuracy of the backbone and head on the held-out images (those after the training
    images' indices)."""
    builder = InputBuilder(result.backbone.tokenizer, result.backbone.image_processor, prompt=PRETEXT_PROMPT)
    right = 0
    for start in range(settings.train_images, settings.train_images + settings.val_images, batch_size):
        stop = min(start + batch_size, settings.train_images + settings.val_images)
        images, labels = pretext_images(np.arange(start, stop), seed=settings.data_seed)
        logits = result.head(features(result.backbone, model_inputs(builder, images)))
        right += int((logits.argmax(dim=1).numpy() == labels).sum())
    return right / settings.val_images


def write_folder(out: Path, result: Pretrained, record: dict[str, Any]) -> str:
    """Write the model folder (with the seeded random lm_head of a full Qwen2.5-VL checkpoint), its
    ``pretraining.json`` and README; returns the weights' sha256."""
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        full = Qwen2_5_VLForConditionalGeneration(result.backbone.config)
    full.model.load_state_dict(result.backbone.model.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    full.save_pretrained(tmp)
    result.backbone.tokenizer.save_pretrained(tmp)
    result.backbone.image_processor.save_pretrained(tmp)
    sha256 = hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest()
    record = record | {"weights_sha256": sha256, "weights_bytes": (tmp / WEIGHTS_FILE).stat().st_size}
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    (tmp / "README.md").write_text(readme(record))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return sha256


def readme(record: dict[str, Any]) -> str:
    """The folder's README, every figure taken from its ``pretraining.json``."""
    settings = record["settings"]
    classes = "\n".join(f"  {i}. {name}" for i, name in enumerate(PRETEXT_CLASSES))
    return f"""# tiny-pretrained: the built-in tiny Qwen2.5-VL, pre-trained on a task other than glaucoma

`model: tiny-pretrained` in a space file (or `--model tiny-pretrained`) loads this folder through the
ordinary local-folder path (`fairsearch.model.load_backbone`; trust_remote_code off). Made by

    {record["command"]}

from the built-in `tiny` model's architecture, tokenizer and seeded random weights (seed {TINY_SEED}):
every weight of the vision tower and the language model fine-tuned (AdamW, lr {settings["lr"]} with 5 %
warm-up and cosine decay, weight decay {settings["weight_decay"]}, batch {settings["batch_size"]},
{settings["steps"]} steps, gradient norm clipped at 1, {record["threads"]} CPU thread(s), {record["seconds"]:.0f} s)
with a {len(PRETEXT_CLASSES)}-class linear head on the last token (not shipped) on
`fairsearch.data.synthetic.pretext_images` (seed {settings["data_seed"]}, {settings["train_images"]}
training images): fundus-like images labelled by their optic disc's place (left, centre, right) and size
(radius 0.2–0.28 or 0.38–0.46 of the half-width) and whether their retina carries a pigment mosaic (period
8–12 px, at a random angle), prompted "{record["prompt"]}" Classes:

{classes}

It never saw the glaucoma task: not its images, labels or groups (the pretext images draw their
cup-to-disc ratio whatever their label and have no demographics).

- Accuracy on {settings["val_images"]} held-out pretext images: **{100 * record["val_accuracy"]:.1f} %** (chance
  {100 / len(PRETEXT_CLASSES):.1f} %).
- Loss of the first steps (checked by `tests/test_pretrained_tiny.py`): {record["first_losses"]}; of the last:
  {record["last_loss"]:.4f}.
- `model.safetensors` ({record["weights_bytes"] / 2**20:.1f} MiB, fp32) sha256:
  `{record["weights_sha256"]}`. The lm_head in it is the seeded random init of a full Qwen2.5-VL, never
  trained, kept so that the folder is a complete Qwen2.5-VL checkpoint.

Files: `config.json`, `generation_config.json`, `model.safetensors`, `tokenizer.json`,
`tokenizer_config.json`, `chat_template.jinja`, `preprocessor_config.json`, `pretraining.json` (these figures),
this README (rendered from it by the script).
"""


def main(argv: list[str] | None = None) -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=PRETRAINED_TINY_FOLDER, help="model folder to write")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (part of what decides bytes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("fairsearch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    settings = Settings(steps=args.steps)
    result = pretrain(settings)
    val_accuracy = accuracy(result, settings)
    logger.info("pretext accuracy on %d held-out images: %.3f", settings.val_images, val_accuracy)
    record = {  # the command without --out: where the folder goes changes none of its bytes
        "command": f".venv/bin/python scripts/pretrain_tiny.py --steps {args.steps} --threads {args.threads}",
        "settings": asdict(settings),
        "prompt": PRETEXT_PROMPT,
        "classes": list(PRETEXT_CLASSES),
        "threads": args.threads,
        "seconds": round(result.seconds, 1),
        "first_losses": [round(loss, 4) for loss in result.losses[:3]],
        "last_loss": round(result.losses[-1], 4),
        "val_accuracy": round(val_accuracy, 4),
        "torch": torch.__version__,
    }
    sha256 = write_folder(args.out, result, record)
    logger.info("wrote %s (model.safetensors sha256 %s)", args.out, sha256)


if __name__ == "__main__":
    main()
