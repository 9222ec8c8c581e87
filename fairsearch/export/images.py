"""The images ``fairsearch predict`` scores, and each one's group: found and checked before any is scored.

``--data`` is one of:

- a FairVLMed folder (split folders ``Training/``, ``Validation/``, ``Test/`` or a ``data_summary.csv``),
  read by :func:`fairsearch.data.load_fairvlmed`: the images of one split (``--split``, default ``test``)
  or of all three, with their labels and attributes;
- a folder of PNG, JPEG and ``.npz`` files, searched through its sub-folders (names starting with ``.``
  left out). An ``.npz`` is read as a FairVLMed sample's image is (:func:`fairsearch.data.npz.read_image`:
  ``allow_pickle=False``, the ``slo_fundus``/``fundus_slo`` key); a PNG or JPEG by Pillow, an 8-bit one
  only, its size bounded (:data:`~fairsearch.bounded.IMAGE_FILE_MAX_BYTES`) and its header's pixels
  (:data:`~fairsearch.bounded.IMAGE_MAX_PIXELS`) before it is decoded.

An image is named by its path relative to ``--data`` (``Test/data_00001.npz``, ``eye/left.png``). With
per-group thresholds each image needs the group of ``thresholds.json``'s grouping: from a FairVLMed
folder's attributes, or from a ``--groups`` CSV (columns ``image,group``) for any folder.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from fairsearch.bounded import (
    DATA_CSV_MAX_BYTES,
    IMAGE_FILE_MAX_BYTES,
    IMAGE_MAX_PIXELS,
    MAX_SPLIT_SAMPLES,
    read_bytes,
    size_text,
)
from fairsearch.data import ATTRIBUTE_VALUES, SPLIT_FOLDERS, SPLITS, load_fairvlmed
from fairsearch.data.fairvlmed import SUMMARY_CSV
from fairsearch.data.npz import image_key, open_npz, read_image
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.judge.fairness import encode_groups

__all__ = ["IMAGE_SUFFIXES", "PredictImages", "find_images", "groups_from_attributes", "groups_from_csv"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz")
"""The files of a plain folder that are scored (in any case)."""
PIL_FORMATS = ("PNG", "JPEG")
PIL_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")
"""8-bit modes, turned into RGB by Pillow's ``convert`` (a grey image repeated, alpha dropped)."""
MAX_LISTED = 5
"""How many names a refusal lists of many."""


@dataclass(frozen=True, eq=False)
class PredictImages:
    """The images of ``--data``, in the order their rows are written.

    Attributes:
        root: the ``--data`` folder.
        paths: one file per image.
        names: each image's path relative to ``root``, with ``/``.
        split: the FairVLMed split of each image (``train``/``val``/``test``), or None for a plain folder.
        label: int64 ``[N]`` 1 = glaucoma, from a FairVLMed folder; None for a plain folder.
        attributes: int64 codes ``[N]`` per attribute, from a FairVLMed folder; None for a plain folder.
    """

    root: Path
    paths: list[Path]
    names: list[str]
    split: list[str] | None = None
    label: np.ndarray | None = None
    attributes: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        """Number of images."""
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        """Image ``i``, uint8 ``[H, W, 3]``.

        Raises:
            FairsearchError: the file cannot be read or decoded (it changed since it was checked).
        """
        path = self.paths[i]
        if path.suffix.lower() == ".npz":
            return read_image(path)
        try:
            with Image.open(path, formats=PIL_FORMATS) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise FairsearchError(f"{path}: cannot decode this image ({clip_value(str(err))})") from None


def is_fairvlmed(data: Path) -> bool:
    """A FairVLMed folder holds a ``data_summary.csv`` or a split folder (any case)."""
    folders = {name.lower() for name in SPLIT_FOLDERS.values()}
    return (data / SUMMARY_CSV).is_file() or any(
        p.is_dir() and p.name.lower() in folders for p in data.iterdir()
    )


def find_images(data: str | Path, split: str) -> PredictImages:
    """Every image of ``--data``, each checked readable (headers only; no pixels decoded).

    Args:
        data: a FairVLMed folder or a folder of PNG, JPEG and ``.npz`` files.
        split: a FairVLMed folder's split: ``train``, ``val``, ``test`` or ``all``; unused otherwise.

    Raises:
        FairsearchError: the folder is missing or holds no image; a file is over its bound, not an 8-bit
            PNG or JPEG, or an ``.npz`` without a usable image; a FairVLMed folder is refused by its reader.
    """
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FairsearchError(f"--data {root}: no such folder (a FairVLMed folder or a folder of images)")
    if is_fairvlmed(root):
        return _fairvlmed_images(root, split)
    paths = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not paths:
        raise FairsearchError(
            f"--data {root}: no PNG, JPEG or .npz files in it or its sub-folders (nor a FairVLMed folder's "
            f"{', '.join(f'{n}/' for n in SPLIT_FOLDERS.values())} or {SUMMARY_CSV})"
        )
    if len(paths) > MAX_SPLIT_SAMPLES:
        raise FairsearchError(f"--data {root}: {len(paths)} images; at most {MAX_SPLIT_SAMPLES} at once")
    for path in paths:
        _check_file(path)
    return PredictImages(root, paths, [p.relative_to(root).as_posix() for p in paths])


def _fairvlmed_images(root: Path, split: str) -> PredictImages:
    splits = load_fairvlmed(root)
    chosen = [splits[s] for s in (SPLITS if split == "all" else (split,))]
    paths = [p for s in chosen for p in s.paths]
    return PredictImages(
        root=root,
        paths=paths,
        names=[p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name for p in paths],
        split=[s.name for s in chosen for _ in s.paths],
        label=np.concatenate([s.labels for s in chosen]),
        attributes={a: np.concatenate([s.attributes[a] for s in chosen]) for a in ATTRIBUTE_VALUES},
    )


def _check_file(path: Path) -> None:
    """An ``.npz``'s image header, or a PNG's or JPEG's size, format, mode and pixels (and a PNG's chunk
    checksums, by Pillow's ``verify``)."""
    if path.suffix.lower() == ".npz":
        with open_npz(path) as npz:
            image_key(npz)
        return
    size = path.stat().st_size
    if size > IMAGE_FILE_MAX_BYTES:
        raise FairsearchError(
            f"{path}: {size_text(size)}, over the {size_text(IMAGE_FILE_MAX_BYTES)} fairsearch reads of one image"
        )
    try:
        with Image.open(path, formats=PIL_FORMATS) as im:
            width, height = im.size
            mode, kind = im.mode, im.format
            if width * height > IMAGE_MAX_PIXELS:
                raise FairsearchError(
                    f"{path}: {width}×{height} pixels, over the {IMAGE_MAX_PIXELS:,} fairsearch decodes of one "
                    "image; scale it down first"
                )
            im.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise FairsearchError(
            f"{path}: not a readable PNG or JPEG ({clip_value(str(err))}); re-save or remove it"
        ) from None
    if mode not in PIL_MODES:
        raise FairsearchError(
            f"{path}: a {kind} of mode {mode} (16-bit or floating point); predict reads 8-bit images: save it "
            "as an 8-bit PNG, or as an .npz under 'slo_fundus'"
        )


def groups_from_attributes(
    images: PredictImages, group_by: str, groups: Sequence[str], no_group: str | None
) -> list[str]:
    """Each image's group name of ``thresholds.json``'s grouping, from a FairVLMed folder's attributes.

    The grouping's unknown samples are its group ``unknown`` when ``groups`` holds it, else ``no_group``
    (the trial excluded them, ``exclude_unknown``).

    Raises:
        FairsearchError: the grouping's names are not ``groups`` (another dataset's grouping), or an image
            is in no group and the thresholds have none for that.
    """
    if images.attributes is None:
        raise ValueError("groups_from_attributes needs a FairVLMed folder's images")
    for exclude_unknown in (False, True):
        grouping = encode_groups(
            images.attributes, group_by, ATTRIBUTE_VALUES, exclude_unknown=exclude_unknown
        )
        if list(grouping.names) == list(groups):
            break
    else:
        raise FairsearchError(
            f"thresholds.json: its groups {clip_value(list(groups))} are not those of grouping {group_by!r} "
            f"of FairVLMed's attributes ({list(grouping.names)}); give each image's group with --groups"
        )
    outside = grouping.ids < 0
    if outside.any() and no_group is None:
        named = [images.names[i] for i in np.flatnonzero(outside)[:MAX_LISTED]]
        raise FairsearchError(
            f"--data {images.root}: {int(outside.sum())} images are in no group of {group_by!r} (e.g. {named}) "
            "and thresholds.json has no threshold for them; give their groups with --groups"
        )
    return [grouping.names[g] if g >= 0 else str(no_group) for g in grouping.ids]


def groups_from_csv(path: str | Path, images: PredictImages, allowed: Sequence[str]) -> list[str]:
    """Each image's group from a CSV of columns ``image`` (path relative to ``--data``) and ``group``.

    Rows for other images are left out (and counted in a log line).

    Raises:
        FairsearchError: the CSV cannot be read, lacks a column, lists an image twice, names a group not in
            ``allowed``, or has no row for some image; the message lists a few of them.
    """
    path = Path(path).expanduser()
    try:
        table = pd.read_csv(
            io.BytesIO(read_bytes(path, DATA_CSV_MAX_BYTES)), dtype=str, keep_default_na=False
        )
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FairsearchError(f"--groups {path}: cannot read the CSV ({clip_value(str(err))})") from None
    missing_columns = [c for c in ("image", "group") if c not in table.columns]
    if missing_columns:
        raise FairsearchError(
            f"--groups {path}: no column(s) {missing_columns}; expected 'image' (the path relative to --data) "
            f"and 'group'; it has {clip_value(list(table.columns))}"
        )
    names = table["image"].str.strip().str.removeprefix("./")
    group = table["group"].str.strip()
    twice = names[names.duplicated()].unique().tolist()
    if twice:
        raise FairsearchError(f"--groups {path}: {len(twice)} images listed more than once: {_few(twice)}")
    by_name: Mapping[str, Any] = dict(zip(names, group, strict=True))
    present = set(images.names)
    unknown = sorted({g for n, g in by_name.items() if n in present} - set(allowed))
    if unknown:
        raise FairsearchError(
            f"--groups {path}: group(s) {_few(unknown)} are not the export's; its groups are "
            f"{clip_value(list(allowed))}"
        )
    without = [n for n in images.names if n not in by_name]
    if without:
        raise FairsearchError(
            f"--groups {path}: {len(without)} of the {len(images)} images of --data have no row, e.g. "
            f"{_few(without)} (the 'image' column holds paths relative to {images.root})"
        )
    ignored = len(by_name) - len(images)
    if ignored:
        logger.info("--groups %s: %d rows name no image of --data and are left out", path, ignored)
    return [str(by_name[n]) for n in images.names]


def _few(items: Sequence[str]) -> str:
    shown = ", ".join(repr(clip_value(x, 80)) for x in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")
