"""Reader for Harvard-FairVLMed (FairCLIP): ``Training/``, ``Validation/``, ``Test/`` of ``data_*.npz``.

Two layouts are read:

* **npz variant**: the three split folders; every ``data_*.npz`` holds its image (``slo_fundus`` or
  ``fundus_slo``), its label (``glaucoma``) and its attributes (``race``, ``gender`` or ``male``,
  ``ethnicity``, ``language``, ``maritalstatus``) plus ``age`` and ``note``.
* **CSV variant**: a ``data_summary.csv`` in the root gives label (``glaucoma``: ``yes``/``no``), split
  (``use``: ``training``/``validation``/``test``) and attributes as strings (``white``, ``female``,
  ``non-hispanic``…); the ``.npz`` files then only supply the images and may sit in the root, in the split
  folders or in one sub-folder. When the CSV is present it wins over the values inside the files.

Images are never loaded here: a :class:`Split` keeps paths and the small per-sample arrays, and
:meth:`Split.image` reads one image on demand. Every ``.npz`` is opened with ``allow_pickle=False``; a key
that would need pickle is refused with a message, never executed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairsearch.bounded import DATA_CSV_MAX_BYTES, read_bytes
from fairsearch.data.npz import IMAGE_KEYS, image_key, open_npz, read_image
from fairsearch.errors import FairsearchError

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_VALUES",
    "IMAGE_KEYS",
    "SPLITS",
    "SPLIT_FOLDERS",
    "SUMMARY_CSV",
    "Split",
    "load_fairvlmed",
]

logger = logging.getLogger(__name__)

ATTRIBUTES: tuple[str, ...] = ("race", "gender", "ethnicity", "language", "maritalstatus")
"""The sensitive attributes FairVLMed records for every subject."""

ATTRIBUTE_VALUES: dict[str, dict[int, str]] = {
    "race": {0: "Asian", 1: "Black", 2: "White"},
    "gender": {0: "Female", 1: "Male"},
    "ethnicity": {0: "Non-Hispanic", 1: "Hispanic", -1: "unknown"},
    "language": {0: "English", 1: "Spanish", 2: "Other", -1: "unknown"},
    "maritalstatus": {
        0: "Marriage or Partnered",
        1: "Single",
        2: "Divorced",
        3: "Widowed",
        4: "Legally Separated",
        -1: "unknown",
    },
}
"""Integer code -> group name per attribute, as the dataset documents them; −1 is always ``unknown``."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FOLDERS: dict[str, str] = {"train": "Training", "val": "Validation", "test": "Test"}
LABEL_KEY = "glaucoma"
SUMMARY_CSV = "data_summary.csv"
CSV_USE: dict[str, str] = {"train": "training", "val": "validation", "test": "test"}
"""The summary CSV's ``use`` value for each split."""
FILE_PATTERN = "data_*.npz"
_ATTRIBUTE_KEYS: dict[str, tuple[str, ...]] = {a: (a,) for a in ATTRIBUTES} | {"gender": ("gender", "male")}
_CSV_COLUMNS = ("filename", LABEL_KEY, "use", *ATTRIBUTES)
_CSV_SPLITS = {"training": "train", "train": "train", "validation": "val", "val": "val", "test": "test"}
_LABEL_WORDS = {"yes": 1, "no": 0, "true": 1, "false": 0, "glaucoma": 1, "non glaucoma": 0}
_ALIASES: dict[str, dict[str, int]] = {
    "race": {"black or african american": 1, "african american": 1},
    "gender": {"f": 0, "m": 1},
    "ethnicity": {"not hispanic": 0, "nonhispanic": 0},
    "language": {"others": 2},
    "maritalstatus": {"married or partnered": 0, "married": 0, "partnered": 0, "widoled": 3, "separated": 4},
}


def _normalize(word: str) -> str:
    """Lower-case ``word`` and turn ``-``/``_`` and runs of spaces into one space."""
    return " ".join(word.strip().lower().replace("-", " ").replace("_", " ").split())


_WORD_CODES: dict[str, dict[str, int]] = {
    attribute: {_normalize(name): code for code, name in values.items()} | _ALIASES[attribute]
    for attribute, values in ATTRIBUTE_VALUES.items()
}


def _allowed(attribute: str) -> str:
    """``'0 (Asian), 1 (Black), 2 (White)'`` for an attribute."""
    return ", ".join(f"{code} ({name})" for code, name in ATTRIBUTE_VALUES[attribute].items())


@dataclass
class Split:
    """One split of the dataset; lazy: images are read from disk by :meth:`image`.

    Attributes:
        name: ``"train"``, ``"val"`` or ``"test"``.
        paths: One ``.npz`` file per sample, sorted by path.
        labels: int64 ``[N]``, 1 = glaucoma.
        attributes: int64 codes ``[N]`` per attribute in :data:`ATTRIBUTES` (see :data:`ATTRIBUTE_VALUES`).
        age: float64 ``[N]``; NaN where the file or CSV gives none.
        root: The dataset folder; :attr:`fingerprint` names the files relative to it.
    """

    name: str
    paths: list[Path]
    labels: np.ndarray
    attributes: dict[str, np.ndarray]
    age: np.ndarray
    root: Path = field(default=Path("."))
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.paths)

    def __repr__(self) -> str:
        """A one-line summary (never the arrays)."""
        return f"Split(name={self.name!r}, n={len(self)}, positives={int(self.labels.sum())})"

    @property
    def fingerprint(self) -> str:
        """Hash of the split's files, for cache keys (the vision cache's): their names relative to the
        dataset root and the sha256 of their bytes. Any changed byte changes it, even one the zip
        directory does not see (an image corrupted in place); moving the folder does not. Computed on
        first use, since it reads every file (0.12 s for the 2,400 default synthetic images, 0.31 s for
        6,000, from the page cache).
        """
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.root, self.paths)
        return self._fingerprint

    def image(self, i: int) -> np.ndarray:
        """Read sample ``i``'s image from disk.

        Args:
            i: Sample index in ``[0, len(self))``.

        Returns:
            uint8 ``[H, W, 3]``; a one-channel image is repeated into RGB.

        Raises:
            FairsearchError: If the file is unreadable or its image has an unusable shape.
        """
        return read_image(self.paths[i])


def _parse_label(value: Any, where: str) -> int:
    """0/1, a bool, or ``yes``/``no`` -> 0/1."""
    if isinstance(value, str):
        word = _normalize(value)
        if word in _LABEL_WORDS:
            return _LABEL_WORDS[word]
        value = _number(word)
    if isinstance(value, bool | int | float) and value in (0, 1):
        return int(value)
    raise FairsearchError(
        f"{where} has value {value!r}; expected 0 or 'no' (no glaucoma), 1 or 'yes' (glaucoma)"
    )


def _number(word: str) -> int | float | str:
    """``word`` as a number when it reads as one, else unchanged."""
    try:
        number = float(word)
    except ValueError:
        return word
    return int(number) if number.is_integer() else number


def _parse_code(value: Any, attribute: str, where: str) -> int:
    """A stored attribute value (code, bool or name) -> its integer code, checked against the domain."""
    if isinstance(value, str):
        word = _normalize(value)
        if word in _WORD_CODES[attribute]:
            return _WORD_CODES[attribute][word]
        if word in ("", "nan", "none") and -1 in ATTRIBUTE_VALUES[attribute]:
            return -1
        value = _number(word)
    if isinstance(value, float) and math.isnan(value) and -1 in ATTRIBUTE_VALUES[attribute]:
        return -1
    if isinstance(value, bool | int | float) and float(value).is_integer():
        code = int(value)
        if code in ATTRIBUTE_VALUES[attribute]:
            return code
    names = ", ".join(repr(_normalize(n)) for n in ATTRIBUTE_VALUES[attribute].values())
    raise FairsearchError(
        f"{where} has unknown {attribute} code {value!r}; allowed codes: {_allowed(attribute)} (or the names {names})"
    )


def _parse_age(value: Any) -> float:
    """Age as float; NaN when missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class _Record:
    """One sample before it is gathered into a :class:`Split`."""

    path: Path
    label: int
    codes: dict[str, int]
    age: float


def _read_record(path: Path) -> _Record:
    """Label, attributes and age of one npz-variant file; checks the image header, reads no pixels."""
    with open_npz(path) as npz:
        image_key(npz)
        if LABEL_KEY not in npz.keys:
            raise FairsearchError(f"{path}: no label key 'glaucoma'; the file has keys {sorted(npz.keys)}")
        label = _parse_label(npz.scalar(LABEL_KEY), f"{path}: key 'glaucoma'")
        codes = {}
        for attribute in ATTRIBUTES:
            key = next((k for k in _ATTRIBUTE_KEYS[attribute] if k in npz.keys), None)
            if key is None:
                spelled = " or ".join(repr(k) for k in _ATTRIBUTE_KEYS[attribute])
                raise FairsearchError(
                    f"{path}: no attribute key {spelled}; the file has keys {sorted(npz.keys)}"
                )
            codes[attribute] = _parse_code(npz.scalar(key), attribute, f"{path}: key {key!r}")
        age = _parse_age(npz.scalar("age")) if "age" in npz.keys else math.nan
    return _Record(path, label, codes, age)


def _split_folders(root: Path) -> dict[str, Path]:
    """The three split folders of ``root`` (exact names first, then case-insensitive)."""
    found = {p.name: p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    folders, missing = {}, []
    for split, name in SPLIT_FOLDERS.items():
        match = found.get(name) or next((p for n, p in found.items() if n.lower() == name.lower()), None)
        if match is None:
            missing.append(f"{name}/")
        else:
            folders[split] = match
    if missing:
        expected = ", ".join(f"{n}/" for n in SPLIT_FOLDERS.values())
        raise FairsearchError(
            f"{root}: missing split folder(s) {', '.join(missing)}; found folders {sorted(found) or 'none'}; "
            f"expected {expected} of data_*.npz files (or a {SUMMARY_CSV} with a 'use' column)"
        )
    return folders


def _records_from_folders(root: Path) -> dict[str, list[_Record]]:
    """npz variant: every ``data_*.npz`` of every split folder."""
    records: dict[str, list[_Record]] = {}
    for split, folder in _split_folders(root).items():
        paths = sorted(folder.glob(FILE_PATTERN))
        if not paths:
            others = len(list(folder.glob("*.npz")))
            raise FairsearchError(
                f"split {split!r}: folder {folder} holds no {FILE_PATTERN} files"
                + (f" ({others} other .npz files)" if others else "")
            )
        records[split] = [_read_record(p) for p in paths]
    return records


def _index_npz(root: Path) -> dict[str, list[Path]]:
    """``file name -> paths`` of every ``.npz`` in ``root`` and its immediate sub-folders."""
    index: dict[str, list[Path]] = {}
    for path in sorted([*root.glob("*.npz"), *root.glob("*/*.npz")]):
        index.setdefault(path.name, []).append(path)
    return index


def _records_from_csv(root: Path, csv_path: Path) -> dict[str, list[_Record]]:
    """CSV variant: labels, splits and attributes from ``data_summary.csv``; files checked for an image."""
    try:
        text = read_bytes(csv_path, DATA_CSV_MAX_BYTES)
        table = pd.read_csv(io.BytesIO(text), dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise FairsearchError(f"{csv_path}: cannot read the CSV ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in _CSV_COLUMNS if c not in table.columns]
    if missing:
        raise FairsearchError(
            f"{csv_path}: missing column(s) {missing}; the CSV has columns {list(table.columns)}"
        )
    index = _index_npz(root)
    records: dict[str, list[_Record]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for row_number, row in enumerate(table.to_dict("records"), start=1):
        name = row["filename"].strip()
        name = name if name.endswith(".npz") else name + ".npz"
        where = f"{csv_path} row {row_number} ({name}): column"
        split = _CSV_SPLITS.get(_normalize(row["use"]))
        if split is None:
            raise FairsearchError(
                f"{where} 'use' has value {row['use']!r}; expected training, validation or test"
            )
        if name in seen:
            raise FairsearchError(f"{csv_path} row {row_number}: file {name} is listed twice")
        seen.add(name)
        candidates = index.get(name, [])
        if not candidates:
            raise FairsearchError(
                f"{csv_path} row {row_number}: file {name} not found in {root} or its sub-folders"
            )
        folder = SPLIT_FOLDERS[split].lower()
        path = next((p for p in candidates if p.parent.name.lower() == folder), candidates[0])
        label = _parse_label(row[LABEL_KEY], f"{where} 'glaucoma'")
        codes = {a: _parse_code(row[a], a, f"{where} {a!r}") for a in ATTRIBUTES}
        records[split].append(_Record(path, label, codes, _parse_age(row.get("age"))))
    for split, split_records in records.items():
        if not split_records:
            raise FairsearchError(f"split {split!r}: {csv_path} has no rows with use={CSV_USE[split]!r}")
    unlisted = len({n for n in index if n.startswith("data_")} - seen)
    if unlisted:
        logger.warning(
            "%d data_*.npz files under %s are not listed in %s and are ignored", unlisted, root, csv_path
        )
    for split_records in records.values():
        for record in split_records:
            with open_npz(record.path) as npz:
                image_key(npz)
    return records


def _fingerprint(root: Path, paths: list[Path]) -> str:
    """sha256 over ``relative name, sha256 of the bytes`` of every file; 16 hex digits.

    Raises:
        FairsearchError: a file can no longer be read.
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as f:
                content = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as err:
            raise FairsearchError(f"{path}: cannot read this .npz file ({err.strerror or err})") from None
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        digest.update(f"{name}\t{content}\n".encode())
    return digest.hexdigest()[:16]


def _make_split(name: str, root: Path, records: list[_Record]) -> Split:
    """Gather records (sorted by path) into a :class:`Split`."""
    records = sorted(records, key=lambda r: r.path)
    paths = [r.path for r in records]
    return Split(
        name=name,
        paths=paths,
        labels=np.array([r.label for r in records], dtype=np.int64),
        attributes={a: np.array([r.codes[a] for r in records], dtype=np.int64) for a in ATTRIBUTES},
        age=np.array([r.age for r in records], dtype=np.float64),
        root=root,
    )


def _check_splits(splits: dict[str, Split], root: Path) -> None:
    """Both classes in every split; every attribute group seen in val/test also present in train."""
    for split in splits.values():
        classes = np.unique(split.labels)
        if len(classes) < 2:
            only = "glaucoma (1)" if classes[0] == 1 else "non-glaucoma (0)"
            raise FairsearchError(
                f"{root}: split {split.name!r} holds only {only} samples ({len(split)} files); "
                "training and evaluation need both classes in every split"
            )
    train = splits["train"]
    for attribute in ATTRIBUTES:
        for code, group in ATTRIBUTE_VALUES[attribute].items():
            if np.any(train.attributes[attribute] == code):
                continue
            for split in (splits["val"], splits["test"]):
                count = int(np.sum(split.attributes[attribute] == code))
                if count:
                    raise FairsearchError(
                        f"{root}: attribute {attribute!r} group {group!r} (code {code}) has {count} samples in "
                        f"split {split.name!r} but none in 'train'; the model could never learn it"
                    )


def load_fairvlmed(root: str | Path) -> dict[str, Split]:
    """Read a Harvard-FairVLMed folder (npz or CSV variant) without loading any image.

    Args:
        root: The folder holding ``Training/``, ``Validation/``, ``Test/`` and/or ``data_summary.csv``.

    Returns:
        ``{"train": Split, "val": Split, "test": Split}`` in that order.

    Raises:
        FairsearchError: On a missing folder, an empty split, a file without image or label, an image of
            the wrong rank, an unknown attribute code, a split with one class only, a group absent from
            training, a corrupt file, or a key that would need pickle.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FairsearchError(f"{root}: dataset folder does not exist (expected a FairVLMed root folder)")
    csv_path = root / SUMMARY_CSV
    records = _records_from_csv(root, csv_path) if csv_path.is_file() else _records_from_folders(root)
    splits = {name: _make_split(name, root, records[name]) for name in SPLITS}
    _check_splits(splits, root)
    logger.info(
        "FairVLMed %s (%s): %s",
        root,
        "data_summary.csv" if csv_path.is_file() else "npz files",
        ", ".join(f"{s.name} {len(s)}" for s in splits.values()),
    )
    return splits
