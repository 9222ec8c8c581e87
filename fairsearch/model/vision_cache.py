"""Image embeddings from the frozen vision tower, computed once per (model, image settings, split).

The vision encoder is frozen, so an image's embeddings are the same in every epoch of every trial. The
first trial on a node computes them for a whole split and writes them to a shared folder; every later
trial (and epoch) reads them memory-mapped and never runs the vision tower.

Layout of ``<root>/<key>/`` (written to a temporary folder and renamed into place under a file lock):

- ``embeddings.bin``: the rows of all images, concatenated, raw, in the model's dtype (bfloat16 stored
  as its 16 bits), shape [Σ tokens_i, hidden];
- ``offsets.npy``: int64 [N + 1], image i holds rows offsets[i]:offsets[i+1];
- ``grid_thw.npy``: int64 [N, 3], each image's (t, h, w) patch grid (the text side needs it);
- ``index.json``: dtype, shape and what the key was made of.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from filelock import FileLock
from torch import Tensor

from fairsearch.bounded import ArraySpec, load_npy, read_json
from fairsearch.cache import cache_root
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.model.backbone import Backbone
from fairsearch.model.inputs import InputBuilder

__all__ = ["ImageSplit", "SplitEmbeddings", "VisionCache", "default_cache_root"]

logger = logging.getLogger(__name__)

_FORMAT = 1
# numpy has no bfloat16: its 16 bits are stored as int16 and viewed back.
_STORAGE = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}
_DTYPES = {str(dtype): dtype for dtype in _STORAGE}


class ImageSplit(Protocol):
    """What the cache needs from a split (`fairsearch.data.Split` has it)."""

    @property
    def fingerprint(self) -> str:
        """Hash of the split's images that changes when any of their bytes change (`fairsearch.data.Split`
        hashes every file's bytes), so an image corrupted or replaced in place never gets the cached
        embeddings of the old one."""
        ...

    def __len__(self) -> int: ...

    def image(self, i: int) -> np.ndarray:
        """Image i, uint8 [H, W, 3]."""
        ...


def default_cache_root() -> Path:
    """``$FAIRSEARCH_CACHE/vision``, else ``~/.cache/fairsearch/vision``."""
    return cache_root("vision")


class SplitEmbeddings:
    """Memory-mapped image embeddings of one split, read from a cache folder.

    Every file of the entry is checked against the split's ``n`` images before it is read: the index
    within :data:`~fairsearch.bounded.JSON_MAX_BYTES`, the offsets and grids from their ``.npy`` headers,
    the rows file's size against the index's shape.

    Args:
        folder: A complete cache entry.
        n: The number of images of the split it was computed for.

    Raises:
        FairsearchError: the entry is damaged or does not match ``n``; the message says to delete it.
    """

    def __init__(self, folder: str | Path, n: int) -> None:
        self.folder = Path(folder)
        try:
            self.index: dict[str, Any] = read_json(self.folder / "index.json")
            self.dtype: torch.dtype = _DTYPES[self.index["dtype"]]
            self.offsets: np.ndarray = load_npy(
                self.folder / "offsets.npy", ArraySpec("iu", 1, n + 1), shape=(n + 1,)
            )
            #: int64 [N, 3] patch grid of every image.
            self.grid_thw: Tensor = torch.from_numpy(
                load_npy(self.folder / "grid_thw.npy", ArraySpec("iu", 2, 3 * n), shape=(n, 3)).astype(
                    np.int64
                )
            )
            rows, hidden = (int(x) for x in self.index["shape"])
            storage = np.dtype(_STORAGE[self.dtype])
            size = (self.folder / "embeddings.bin").stat().st_size
            if size != rows * hidden * storage.itemsize or self.offsets[0] != 0 or self.offsets[-1] != rows:
                raise ValueError(
                    f"embeddings.bin holds {size} bytes; the index says [{rows}, {hidden}] {storage}"
                )
            if np.any(np.diff(self.offsets) < 0):
                raise ValueError("offsets.npy is not ascending")
        except (OSError, ValueError, KeyError, TypeError, FairsearchError) as err:
            raise FairsearchError(
                f"vision cache entry {self.folder} is damaged ({clip_value(str(err), 300)}); delete it and "
                "it is computed again"
            ) from None
        self._rows = np.memmap(self.folder / "embeddings.bin", dtype=storage, mode="r", shape=(rows, hidden))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, indices: int | Sequence[int] | np.ndarray | Tensor) -> list[Tensor]:
        """Embeddings of these images, in order: one [tokens_i, hidden] CPU tensor each.

        Args:
            indices: Sample indices into the split (an int gives a one-element list).

        Returns:
            Tensors in the model's dtype, ready for `GlaucomaClassifier.forward(image_embeds=...)`.
        """
        out = []
        for i in np.atleast_1d(np.asarray(indices, dtype=np.int64)):
            rows = np.array(self._rows[self.offsets[i] : self.offsets[i + 1]])
            out.append(torch.from_numpy(rows).view(self.dtype))
        return out

    def grid(self, i: int) -> Tensor:
        """int64 [3] patch grid (t, h, w) of image i."""
        return self.grid_thw[int(i)]

    def grids(self, indices: int | Sequence[int] | np.ndarray | Tensor) -> Tensor:
        """int64 [n, 3] patch grids of these images, for `InputBuilder.text_inputs`."""
        return self.grid_thw[torch.as_tensor(np.atleast_1d(np.asarray(indices, dtype=np.int64)))]


class VisionCache:
    """A folder of `SplitEmbeddings`, shared by the trials on a node.

    Args:
        root: Where entries live; `default_cache_root()` when None.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    def key(self, backbone: Backbone, builder: InputBuilder, split: ImageSplit) -> str:
        """The entry name: a hash of the backbone fingerprint and dtype, image settings and the split's
        fingerprint (of its files' bytes: any changed byte gives a new entry)."""
        return _digest(self._key_parts(backbone, builder, split))

    def embeddings(
        self, backbone: Backbone, builder: InputBuilder, split: ImageSplit, *, batch_size: int = 16
    ) -> SplitEmbeddings:
        """The split's image embeddings: read if cached, else computed once (other processes wait).

        Args:
            backbone: Its vision tower computes the embeddings (in eval mode, no gradients), on its device.
            builder: Decides the pixels (resizing, normalisation).
            split: The images.
            batch_size: Images per vision-tower call while computing.

        Returns:
            The embeddings, memory-mapped.
        """
        parts = self._key_parts(backbone, builder, split)
        folder = self.root / _digest(parts)
        if (folder / "index.json").is_file():
            return SplitEmbeddings(folder, len(split))
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if (folder / "index.json").is_file():  # another process wrote it while we waited
                return SplitEmbeddings(folder, len(split))
            tmp = self.root / f".{folder.name}.{uuid.uuid4().hex}.tmp"
            try:
                _compute(tmp, backbone, builder, split, batch_size, parts)
                if folder.exists():  # an incomplete entry (no index.json): replace it
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return SplitEmbeddings(folder, len(split))

    @staticmethod
    def _key_parts(backbone: Backbone, builder: InputBuilder, split: ImageSplit) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "backbone": backbone.fingerprint,
            "dtype": str(backbone.dtype),
            "image": builder.image_settings,
            "split": split.fingerprint,
            "n": len(split),
        }


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@torch.inference_mode()
def _compute(
    folder: Path,
    backbone: Backbone,
    builder: InputBuilder,
    split: ImageSplit,
    batch_size: int,
    parts: dict[str, Any],
) -> None:
    n = len(split)
    if n == 0:
        raise ValueError("cannot cache the image embeddings of an empty split")
    dtype = backbone.dtype
    if dtype not in _STORAGE:
        raise ValueError(f"cannot cache embeddings of dtype {dtype}")
    folder.mkdir(parents=True)
    model = backbone.model
    was_training = model.training
    model.eval()
    start_time = time.monotonic()
    logger.info("computing image embeddings of %d images once (cache %s)", n, folder.parent)
    offsets = [0]
    grids: list[Tensor] = []
    hidden = 0
    try:
        with open(folder / "embeddings.bin", "wb") as rows_file:
            for start in range(0, n, batch_size):
                encoded = [
                    builder.encode_image(split.image(i)) for i in range(start, min(n, start + batch_size))
                ]
                pixels = torch.cat([p for p, _ in encoded]).to(backbone.device)
                grid = torch.stack([g for _, g in encoded])
                outputs = model.get_image_features(pixels, grid.to(backbone.device))
                for embeds in outputs.pooler_output:
                    rows = embeds.to(dtype).cpu().contiguous()
                    storage = rows.view(torch.int16) if dtype == torch.bfloat16 else rows
                    rows_file.write(storage.numpy().tobytes())
                    offsets.append(offsets[-1] + rows.shape[0])
                    hidden = rows.shape[1]
                grids.append(grid)
    finally:
        model.train(was_training)
    np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(folder / "grid_thw.npy", torch.cat(grids).numpy().astype(np.int64))
    index = {"dtype": str(dtype), "shape": [offsets[-1], hidden], "key": parts}
    (folder / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    logger.info("image embeddings of %d images in %.1f s", n, time.monotonic() - start_time)
