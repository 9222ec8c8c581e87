"""Load Qwen2.5-VL (without its lm_head) with its tokenizer and image processor, offline only.

A model is named by a hub id (``Qwen/Qwen2.5-VL-7B-Instruct``, read from the local Hugging Face cache), a
local folder, ``"tiny"``: a small random Qwen2.5-VL built from config, identical in every process, or
``"tiny-pretrained"``: the same model pre-trained on another synthetic task, a folder the package ships.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLModel,
    Qwen2VLImageProcessorPil,
)
from transformers.utils import logging as hf_logging

from fairsearch.errors import FairsearchError, clip_value
from fairsearch.model.configs import QWEN_SPECIAL_TOKENS, tiny_config
from fairsearch.model.tiny import QWEN2_5_VL_CHAT_TEMPLATE, tiny_image_processor, tiny_tokenizer

__all__ = [
    "PRETRAINED_TINY_FOLDER",
    "TINY",
    "TINY_PRETRAINED",
    "Backbone",
    "ModelParts",
    "default_dtype",
    "load_backbone",
    "load_model_parts",
    "random_backbone",
]

logger = logging.getLogger(__name__)

#: The name of the built-in tiny model.
TINY = "tiny"
#: The name of the tiny model pre-trained on a task other than glaucoma, shipped as a model folder.
TINY_PRETRAINED = "tiny-pretrained"
#: That folder, made by ``scripts/pretrain_tiny.py`` (its README says how).
PRETRAINED_TINY_FOLDER = Path(__file__).with_name("pretrained_tiny")
#: Seed of the tiny model's weights: every process builds the same model.
TINY_SEED = 20251203

# Checkpoints hold `model.layers.*` + `visual.*` (the hub's Qwen2.5-VL files, and what transformers 5
# writes) or `model.language_model.*` + `model.visual.*` (written by transformers 4.52-4.57). Loaded as
# Qwen2_5_VLModel in transformers 5.23, the second layout's `model.visual.*` is renamed to
# `language_model.visual.*` and the vision tower is left random (measured; the test loads both layouts).
# This renaming runs before transformers' own and is a no-op for the first layout.
_VISUAL_KEY_MAPPING = {r"^model\.visual\.": "visual."}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_EXAMPLE_HUB_ID = "Qwen/Qwen2.5-VL-7B-Instruct"


@dataclass
class Backbone:
    """A frozen-to-be Qwen2.5-VL with what turns an image and a prompt into its inputs.

    Attributes:
        model: The vision tower + language model, no lm_head.
        tokenizer: The model's tokenizer; has a chat template.
        image_processor: Qwen2-VL's PIL image processor (no torchvision).
        name: ``"tiny"``, a hub id or a folder, as given.
        fingerprint: Stable id of the weights and config, for cache keys: equal fingerprints mean the same
            vision tower output for the same pixels.
    """

    model: Qwen2_5_VLModel
    tokenizer: PreTrainedTokenizerBase
    image_processor: Qwen2VLImageProcessorPil
    name: str
    fingerprint: str

    @property
    def config(self) -> Qwen2_5_VLConfig:
        """The model's configuration."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Device of the model's weights."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's weights."""
        return next(self.model.parameters()).dtype


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 on CUDA, float32 elsewhere.

    Args:
        device: Where the model will run.

    Returns:
        The dtype to load weights in.
    """
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_backbone(
    name_or_path: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Backbone:
    """Load Qwen2.5-VL without lm_head, its tokenizer and image processor, from local files only.

    Args:
        name_or_path: ``"tiny"``, ``"tiny-pretrained"`` (the shipped folder), a hub id found in the local
            Hugging Face cache, or a model folder.
        device: Where to put the model.
        dtype: Weight dtype; `default_dtype(device)` when None (bf16 on CUDA, fp32 on CPU).

    Returns:
        The backbone in eval mode with SDPA attention.

    Raises:
        FairsearchError: The model is not on this machine (the message says where it looked and how to
            fetch it on a connected machine), or its folder is incomplete.
    """
    dtype = dtype if dtype is not None else default_dtype(device)
    if name_or_path == TINY:
        return tiny_backbone(device=device, dtype=dtype)
    folder = resolve_model_folder(name_or_path)
    logger.info("loading %s from %s (%s, %s)", name_or_path, folder, device, dtype)
    try:
        # The lm_head in the checkpoint is skipped on purpose (545 M parameters for 7B); transformers'
        # load report would flag it as unexpected, so it is silenced and missing/other keys checked here.
        with _transformers_verbosity(hf_logging.ERROR):
            loaded = Qwen2_5_VLModel.from_pretrained(
                folder,
                local_files_only=True,
                trust_remote_code=False,
                dtype=dtype,
                attn_implementation="sdpa",
                device_map=torch.device(device),
                output_loading_info=True,
                key_mapping=_VISUAL_KEY_MAPPING,
            )
        model, info = cast(tuple[Qwen2_5_VLModel, dict[str, Any]], loaded)
        tokenizer, image_processor = _processors(folder)
    except OSError as err:
        raise FairsearchError(f"model folder '{folder}' ({name_or_path}) is incomplete: {err}") from err
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise FairsearchError(
            f"model folder '{folder}' lacks {len(missing)} weights of Qwen2.5-VL (e.g. {missing[:3]}): "
            "is it a Qwen2.5-VL checkpoint?"
        )
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.startswith("lm_head"))
    if unexpected:
        logger.warning("%s: %d checkpoint weights not used, e.g. %s", folder, len(unexpected), unexpected[:3])
    model.eval()
    return Backbone(
        model=model,
        tokenizer=tokenizer,
        image_processor=image_processor,
        name=name_or_path,
        fingerprint=_folder_fingerprint(name_or_path, folder),
    )


@dataclass
class ModelParts:
    """What a model is without its weights: its configuration and what turns an image and a prompt into
    its inputs (enough to count its parameters and its tokens per sample).

    Attributes:
        config: The Qwen2.5-VL configuration.
        tokenizer: The model's tokenizer, with a chat template.
        image_processor: Qwen2-VL's PIL image processor.
    """

    config: Qwen2_5_VLConfig
    tokenizer: PreTrainedTokenizerBase
    image_processor: Qwen2VLImageProcessorPil


def load_model_parts(name_or_path: str) -> ModelParts:
    """The configuration, tokenizer and image processor of a model, from local files, without its weights.

    Args:
        name_or_path: As for `load_backbone`.

    Returns:
        The parts.

    Raises:
        FairsearchError: The model is not on this machine, or its folder is incomplete.
    """
    if name_or_path == TINY:
        tokenizer = tiny_tokenizer()
        config = tiny_config({t: token_id(tokenizer, t) for t in QWEN_SPECIAL_TOKENS})
        return ModelParts(config, tokenizer, tiny_image_processor())
    folder = resolve_model_folder(name_or_path)
    try:
        config = Qwen2_5_VLConfig.from_pretrained(folder, local_files_only=True)
        tokenizer, image_processor = _processors(folder)
    except (OSError, ValueError) as err:
        raise FairsearchError(f"model folder '{folder}' ({name_or_path}) is incomplete: {err}") from err
    return ModelParts(config, tokenizer, image_processor)


def _processors(folder: Path) -> tuple[PreTrainedTokenizerBase, Qwen2VLImageProcessorPil]:
    """A model folder's tokenizer (given Qwen2.5-VL's chat template when it has none) and image processor."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer, Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)


def tiny_backbone(*, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Backbone:
    """The built-in tiny random Qwen2.5-VL: the same weights and tokenizer in every process.

    Args:
        device: Where to put the model (built on the CPU, then moved).
        dtype: Weight dtype.

    Returns:
        The backbone in eval mode.
    """
    parts = load_model_parts(TINY)
    return random_backbone(
        parts.config, tokenizer=parts.tokenizer, name=TINY, seed=TINY_SEED, device=device, dtype=dtype
    )


def random_backbone(
    config: Qwen2_5_VLConfig,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    name: str,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    build_on_device: bool = False,
) -> Backbone:
    """A Qwen2.5-VL with random weights from a config (no download), seeded.

    Args:
        config: The architecture; its image/vision token ids must be the tokenizer's.
        tokenizer: Defaults to the tiny tokenizer.
        name: Name recorded in the backbone.
        seed: Weight seed. The caller's random state is left untouched.
        device: Where the model ends up.
        dtype: Weight dtype.
        build_on_device: Initialise directly on `device` in `dtype` (fast for a 7B model on a GPU, but the
            weights then depend on the device's generator); otherwise build in fp32 on the CPU and move.

    Returns:
        The backbone in eval mode; its fingerprint hashes config, tokenizer and weights.
    """
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    target = torch.device(device)
    cuda_devices = [target.index or 0] if build_on_device and target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        if build_on_device:
            with target:
                model = Qwen2_5_VLModel._from_config(config, dtype=dtype, attn_implementation="sdpa")
            model = model.to(target)  # a no-op: the device context already placed it
        else:
            model = Qwen2_5_VLModel._from_config(config, dtype=torch.float32, attn_implementation="sdpa")
            model = model.to(device=target, dtype=dtype)
    model.eval()
    digest = hashlib.sha256()
    digest.update(config.to_json_string(use_diff=False).encode())
    digest.update(tokenizer.backend_tokenizer.to_str().encode() if tokenizer.is_fast else b"")
    if not build_on_device:
        for key, tensor in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return Backbone(
        model=model,
        tokenizer=tokenizer,
        image_processor=tiny_image_processor(),
        name=name,
        fingerprint=f"{name}:{digest.hexdigest()[:16]}",
    )


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of one token; ValueError if the tokenizer does not know it."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int) or found == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {token} token: not a Qwen2.5-VL tokenizer")
    return found


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (HF_HUB_CACHE, HF_HOME, XDG)."""
    if explicit := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(explicit).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


_FETCH_FOLDER = (
    "fairsearch never downloads: make the folder on a machine with internet access with "
    f"`huggingface-cli download {_EXAMPLE_HUB_ID} --local-dir DIR` and copy it here"
)


def resolve_model_folder(name: str) -> Path:
    """The local folder of a model named by a folder path, a hub id in the local Hugging Face cache, or
    ``"tiny-pretrained"`` (:data:`PRETRAINED_TINY_FOLDER`, which the package ships).

    Raises:
        FairsearchError: no such folder, a folder without ``config.json``, or a hub id not in the cache;
            the message says where it looked and how to bring the model here.
    """
    path = PRETRAINED_TINY_FOLDER if name == TINY_PRETRAINED else Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FairsearchError(
                f"model folder '{clip_value(str(path))}' has no config.json, so it is not a Hugging Face "
                f"model folder; {_FETCH_FOLDER}"
            )
        return path
    if _HUB_ID.match(name):
        cache = hf_hub_cache()
        try:
            return Path(snapshot_download(name, local_files_only=True, cache_dir=cache))
        except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError) as err:
            raise FairsearchError(
                f"model '{name}' is not in the local Hugging Face cache (looked in {cache}; no folder "
                f"'{path}' either); fairsearch "
                f"never downloads: on a machine with internet access run `huggingface-cli download {name}`, "
                f"then copy that machine's ~/.cache/huggingface to this one, or set HF_HOME to the copied "
                f"folder (the one holding hub/)"
            ) from err
    raise FairsearchError(
        f"model folder '{clip_value(str(path))}' does not exist (and '{clip_value(name)}' is not '{TINY}', "
        f"'{TINY_PRETRAINED}' or a hub id like '{_EXAMPLE_HUB_ID}'); {_FETCH_FOLDER}"
    )


@contextmanager
def _transformers_verbosity(level: int) -> Iterator[None]:
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity(level)
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


#: Weights up to this many bytes in all are hashed whole for a folder's fingerprint (a few ms for a tiny
#: model, so one re-made in place, same sizes, gets a new one); larger ones by their names and sizes.
_HASHED_WEIGHTS_BYTES = 64 * 2**20


def _folder_fingerprint(name: str, folder: Path) -> str:
    digest = hashlib.sha256()
    digest.update((folder / "config.json").read_bytes())
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    sizes = [(w.name, w.stat().st_size) for w in weights]
    digest.update(json.dumps(sizes).encode())
    if sum(size for _, size in sizes) <= _HASHED_WEIGHTS_BYTES:
        for path in weights:
            digest.update(path.read_bytes())
    # A hub snapshot folder is named by its commit: different revisions get different fingerprints.
    digest.update(folder.resolve().name.encode())
    return f"{name}:{digest.hexdigest()[:16]}"
