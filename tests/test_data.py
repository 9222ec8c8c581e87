"""fairsearch.data: FairVLMed reader (npz and CSV variants), bad-data messages, laziness, synthetic data."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import shutil
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fairsearch.data import (
    ATTRIBUTE_VALUES,
    ATTRIBUTES,
    SPLITS,
    builtin_synthetic,
    format_summary,
    load_fairvlmed,
    summarize,
    write_synthetic,
)
from fairsearch.data import synthetic as synthetic_module
from fairsearch.errors import FairsearchError

FOLDERS = {"train": "Training", "val": "Validation", "test": "Test"}
CSV_WORDS = {
    "race": {0: "asian", 1: "black", 2: "white"},
    "gender": {0: "female", 1: "male"},
    "ethnicity": {0: "non-hispanic", 1: "hispanic", -1: "unknown"},
    "language": {0: "english", 1: "spanish", 2: "other", -1: "unknown"},
    "maritalstatus": {
        0: "marriage or partnered",
        1: "single",
        2: "divorced",
        3: "widowed",
        4: "legally separated",
    }
    | {-1: "unknown"},
}


def _subject(label: int, race: Any = 2, **overrides: Any) -> dict[str, Any]:
    """The npz keys of one subject with a small one-channel image."""
    image = np.full((6, 5), 40 + 10 * label, dtype=np.uint8)
    keys: dict[str, Any] = {"slo_fundus": image, "glaucoma": np.array(label), "race": np.array(race)}
    keys |= {"gender": np.array(label), "ethnicity": np.array(0), "language": np.array(0)}
    keys |= {"maritalstatus": np.array(0), "age": np.array(60.5), "note": np.array("a note")}
    keys |= overrides
    return {k: v for k, v in keys.items() if v is not None}


def _fake_root(root: Path, subjects: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """A tiny npz-variant dataset; by default 4 subjects per split, both labels, races 1 and 2."""
    if subjects is None:
        subjects = {s: [_subject(0), _subject(1), _subject(0, race=1), _subject(1, race=1)] for s in SPLITS}
    number = 0
    for split, items in subjects.items():
        (root / FOLDERS[split]).mkdir(parents=True, exist_ok=True)
        for keys in items:
            number += 1
            np.savez(root / FOLDERS[split] / f"data_{number:05d}.npz", **keys)
    return root


def _file(root: Path, split: str, i: int = 0) -> Path:
    return sorted((root / FOLDERS[split]).glob("data_*.npz"))[i]


@pytest.fixture(scope="module")
def default_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The built-in synthetic set at its default size, generated into a temporary cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield builtin_synthetic()


# --- synthetic data -------------------------------------------------------------------------------------


def test_synthetic_round_trip_equals_written_files(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "syn", n=96, seed=5, image_size=32)
    splits = load_fairvlmed(root)
    assert [len(splits[s]) for s in SPLITS] == [20, 38, 38]  # 1200:2300:2300
    table = pd.read_csv(root / "data_summary.csv", dtype=str).set_index("filename")
    for split in splits.values():
        assert all(p.parent.name == FOLDERS[split.name] for p in split.paths)
        for i, path in enumerate(split.paths):
            with np.load(path, allow_pickle=False) as raw:
                assert raw["slo_fundus"].dtype == np.uint8 and raw["slo_fundus"].shape == (32, 32)
                np.testing.assert_array_equal(split.image(i), np.repeat(raw["slo_fundus"][:, :, None], 3, 2))
                assert split.labels[i] == raw["glaucoma"]
                assert split.age[i] == raw["age"]
                for attribute in ATTRIBUTES:
                    assert split.attributes[attribute][i] == raw[attribute]
            row = table.loc[path.name]
            assert row["glaucoma"] == ("yes" if split.labels[i] else "no")
            assert row["race"] == CSV_WORDS["race"][int(split.attributes["race"][i])]
            assert row["use"] == {"train": "training", "val": "validation", "test": "test"}[split.name]
    # The same folder without the CSV is read through the npz keys, with the same result.
    copy = Path(shutil.copytree(root, tmp_path / "npz-only"))
    (copy / "data_summary.csv").unlink()
    from_npz = load_fairvlmed(copy)
    for name in SPLITS:
        np.testing.assert_array_equal(from_npz[name].labels, splits[name].labels)
        for attribute in ATTRIBUTES:
            np.testing.assert_array_equal(
                from_npz[name].attributes[attribute], splits[name].attributes[attribute]
            )
        assert from_npz[name].fingerprint == splits[name].fingerprint  # relative names: root-independent


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.*")}


def test_synthetic_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = _digests(write_synthetic(tmp_path / "a", n=48, seed=3, image_size=24))
    again = _digests(write_synthetic(tmp_path / "b", n=48, seed=3, image_size=24))
    other = _digests(write_synthetic(tmp_path / "c", n=48, seed=4, image_size=24))
    assert len(first) == 49 and first == again
    assert sum(first[k] != other[k] for k in first) > 40
    # Same names and sizes, different pixels: the fingerprints (cache keys) must differ.
    fingerprints = [load_fairvlmed(tmp_path / d)["train"].fingerprint for d in "abc"]
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_default_synthetic_groups_imbalance_and_split_sizes(default_synthetic: Path) -> None:
    assert default_synthetic.name == "n5800-s0-px112-v3"
    splits = load_fairvlmed(default_synthetic)
    assert [len(splits[s]) for s in SPLITS] == [1200, 2300, 2300]
    for split in splits.values():
        ethnicity = split.attributes["ethnicity"]
        assert 19 <= np.sum(ethnicity == 0) / np.sum(ethnicity == 1) <= 23
        race_shares = [np.mean(split.attributes["race"] == code) for code in (2, 1, 0)]
        np.testing.assert_allclose(race_shares, [0.77, 0.15, 0.08], atol=0.01)
        assert 0.53 <= np.mean(split.attributes["gender"] == 0) <= 0.57
        assert 0.01 <= np.mean(split.attributes["language"] == -1) <= 0.06
        for attribute in ("race", "ethnicity"):  # prevalence stratified: 50 % ± 1 subject per group
            for code in ATTRIBUTE_VALUES[attribute]:
                labels = split.labels[split.attributes[attribute] == code]
                assert abs(labels.sum() - len(labels) / 2) <= 3, (split.name, attribute, code)
    # the minority is evaluated on more than 100 images in each of validation and test
    assert [int(np.sum(splits[s].attributes["ethnicity"] == 1)) for s in SPLITS] == [52, 101, 101]
    train = splits["train"]
    for attribute, values in ATTRIBUTE_VALUES.items():
        assert all(np.any(train.attributes[attribute] == code) for code in values), attribute


def _box_blur(image: np.ndarray) -> np.ndarray:
    """3×3 mean of a 2-D image (edges padded by reflection)."""
    padded = np.pad(image, 1, mode="reflect")
    h, w = image.shape
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def test_default_synthetic_minority_is_visible_and_its_cup_reads_smaller(default_synthetic: Path) -> None:
    """The group shift the fair methods are meant to handle is in the written files: the minority's
    retina carries a fine mosaic (not a darker fundus), and its glaucomatous cups are smaller."""
    train = load_fairvlmed(default_synthetic)["train"]
    images = np.stack([train.image(i)[:, :, 0] for i in range(len(train))]).astype(np.float64)
    ethnicity, race, labels = train.attributes["ethnicity"], train.attributes["race"], train.labels
    hispanic, majority = ethnicity == 1, (ethnicity == 0) & (race == 2)
    axis = (np.arange(112) + 0.5) / 112 * 2 - 1
    radius = np.hypot(*np.meshgrid(axis, axis, indexing="ij"))
    ring = (radius > 0.65) & (radius < 0.85)  # retina outside every disc, inside the field
    # fine texture: the retina's high-pass residual (pixel noise, plus the mosaic) separates the groups
    texture = np.array([np.std((image - _box_blur(image))[ring]) for image in images])
    assert texture[hispanic].min() > texture[majority].max()
    assert np.median(texture[hispanic]) > 1.2 * np.median(texture[majority])
    # ...but the same brightness: not a darker fundus
    retina = images[:, ring].mean(axis=1)
    assert abs(retina[hispanic].mean() / retina[majority].mean() - 1) < 0.03
    # the disease sign: bright cup pixels grow with the label in both groups, less so in the minority
    cup_area = (images > 200).mean(axis=(1, 2))
    mean_area = {
        (group, label): cup_area[mask & (labels == label)].mean()
        for group, mask in (("minority", hispanic), ("majority", majority))
        for label in (0, 1)
    }
    assert mean_area["majority", 1] > 2 * mean_area["majority", 0]
    assert mean_area["minority", 1] > 2 * mean_area["minority", 0]
    assert mean_area["minority", 1] < 0.75 * mean_area["majority", 1]
    # and Black subjects' fundus is darker than White ones' (the race shift)
    black = (ethnicity == 0) & (race == 1)
    centre = slice(28, 84)
    brightness = images[:, centre, centre].mean(axis=(1, 2))
    assert brightness[black].mean() < 0.95 * brightness[majority].mean()


def test_builtin_synthetic_is_cached_and_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path))
    calls = []
    real_write = synthetic_module.write_synthetic

    def counting_write(*args: Any, **kwargs: Any) -> Path:
        calls.append(args)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(synthetic_module, "write_synthetic", counting_write)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(builtin_synthetic(48, 1, 24))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 4
    assert results[0] == tmp_path / "synthetic" / "n48-s1-px24-v3"
    assert len(load_fairvlmed(results[0])["train"]) == 10
    assert builtin_synthetic(48, 1, 24) == results[0] and len(calls) == 1


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = []

    def failing_write(path: Path, arrays: dict[str, np.ndarray]) -> None:
        if len(written) == 10:
            raise KeyboardInterrupt
        written.append(path)
        path.write_bytes(b"partial")

    monkeypatch.setattr(synthetic_module, "_write_npz", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path / "syn", n=48)
    assert list(tmp_path.iterdir()) == []


def test_write_synthetic_refuses_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(FairsearchError, match=r"full: already exists and is not an empty folder"):
        write_synthetic(tmp_path / "full", n=48)
    with pytest.raises(FairsearchError, match=r"n=10, image_size=112; need n >= 30"):
        write_synthetic(tmp_path / "small", n=10)


# --- reading FairVLMed ------------------------------------------------------------------------------------


def test_npz_variant_key_spellings_string_race_and_image_formats(tmp_path: Path) -> None:
    rgb = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    unit = np.linspace(0.0, 1.0, 30, dtype=np.float32).reshape(6, 5)
    subjects = {
        "train": [
            _subject(0, slo_fundus=None, fundus_slo=unit),
            _subject(1, race=np.array("White"), gender=None, male=np.array(1)),
            _subject(0, race=np.array("black"), slo_fundus=rgb),
            _subject(1, race=1, slo_fundus=np.moveaxis(rgb, 2, 0)),
            _subject(1, slo_fundus=np.full((6, 5), 1000, dtype=np.uint16), ethnicity=np.array(-1), age=None),
        ],
        "val": [_subject(0), _subject(1)],
        "test": [_subject(0), _subject(1, race=np.array(b"Black"))],
    }
    splits = load_fairvlmed(_fake_root(tmp_path, subjects))
    train = splits["train"]
    assert train.labels.tolist() == [0, 1, 0, 1, 1]
    assert train.labels.dtype == np.int64 and train.attributes["race"].dtype == np.int64
    assert train.attributes["race"].tolist() == [2, 2, 1, 1, 2]
    assert train.attributes["gender"].tolist() == [0, 1, 0, 1, 1]
    assert train.attributes["ethnicity"].tolist() == [0, 0, 0, 0, -1]
    assert train.age[0] == 60.5 and np.isnan(train.age[4])
    assert splits["test"].attributes["race"].tolist() == [2, 1]
    image = train.image(0)
    assert image.dtype == np.uint8 and image.shape == (6, 5, 3)
    assert image[0, 0, 0] == 0 and image[-1, -1, 2] == 255  # [0, 1] floats scaled by 255
    np.testing.assert_array_equal(train.image(2), rgb)
    np.testing.assert_array_equal(train.image(3), rgb)  # channels-first moved last
    assert train.image(4).max() == round(1000 / 257)  # 16-bit scaled to 8-bit


def _write_csv(root: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["filename", "age", "gender", "race", "ethnicity", "language", "maritalstatus", "note"]
    pd.DataFrame(rows, columns=[*columns, "gpt4_summary", "glaucoma", "use"]).to_csv(
        root / "data_summary.csv", index=False
    )


def _csv_row(name: str, use: str, label: int, race: str = "white", **overrides: Any) -> dict[str, Any]:
    row = {"filename": name, "age": 70.25, "gender": "female", "race": race, "ethnicity": "non-hispanic"}
    row |= {"language": "english", "maritalstatus": "single", "note": "n", "gpt4_summary": "s"}
    row |= {"glaucoma": "yes" if label else "no", "use": use}
    return row | overrides


@pytest.mark.parametrize("in_split_folders", [False, True])
def test_csv_variant_labels_split_and_attributes_from_csv(tmp_path: Path, in_split_folders: bool) -> None:
    rows = []
    for number in range(1, 13):
        use = ["training", "validation", "test"][(number - 1) // 4]
        folder = tmp_path / (FOLDERS[SPLITS[(number - 1) // 4]] if in_split_folders else "data")
        folder.mkdir(exist_ok=True)
        # Images only: the CSV supplies label and attributes (the key is spelled fundus_slo here).
        np.savez(folder / f"data_{number:05d}.npz", fundus_slo=np.full((4, 3), number, dtype=np.uint8))
        race = ["White", "black", "Asian", "white"][number % 4]
        overrides = {"ethnicity": "hispanic", "language": "spanish", "maritalstatus": "legally separated"}
        rows.append(
            _csv_row(
                f"data_{number:05d}.npz", use, number % 2, race, **(overrides if number % 4 == 1 else {})
            )
        )
    rows[0] |= {"gender": "male", "age": ""}
    rows[1] |= {"language": "unknown"}
    _write_csv(tmp_path, rows)
    splits = load_fairvlmed(tmp_path)
    train = splits["train"]
    assert [p.name for p in train.paths] == [f"data_{i:05d}.npz" for i in range(1, 5)]
    assert train.labels.tolist() == [1, 0, 1, 0]
    assert train.attributes["race"].tolist() == [1, 0, 2, 2]
    assert train.attributes["gender"].tolist() == [1, 0, 0, 0]
    assert train.attributes["ethnicity"].tolist() == [1, 0, 0, 0]
    assert train.attributes["language"].tolist() == [1, -1, 0, 0]
    assert train.attributes["maritalstatus"].tolist() == [4, 1, 1, 1]
    assert np.isnan(train.age[0]) and train.age[1] == 70.25
    assert splits["test"].image(3)[0, 0].tolist() == [12, 12, 12]


# --- bad data ---------------------------------------------------------------------------------------------


def _break(root: Path, split: str, **overrides: Any) -> None:
    np.savez(_file(root, split), **(_subject(0) | overrides))


def _without(root: Path, split: str, key: str) -> None:
    keys = {k: v for k, v in _subject(0).items() if k != key}
    np.savez(_file(root, split), **keys)


class _Exploit:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (self.marker,)


BAD_DATA = {
    "missing split folder": (
        lambda root: shutil.rmtree(root / "Validation"),
        r"missing split folder\(s\) Validation/; found folders \['Test', 'Training'\]; "
        r"expected Training/, Validation/, Test/",
    ),
    "empty split": (
        lambda root: [p.unlink() for p in (root / "Test").iterdir()],
        r"split 'test': folder .*Test holds no data_\*\.npz files",
    ),
    "no image key": (
        lambda root: _without(root, "train", "slo_fundus"),
        r"data_00001\.npz: no image key: expected 'slo_fundus' or 'fundus_slo'; the file has keys \['age', ",
    ),
    "no label key": (
        lambda root: _without(root, "val", "glaucoma"),
        r"data_00005\.npz: no label key 'glaucoma'; the file has keys \['age', 'ethnicity', 'gender', ",
    ),
    "no attribute key": (
        lambda root: _without(root, "val", "gender"),
        r"data_00005\.npz: no attribute key 'gender' or 'male'; the file has keys",
    ),
    "image rank 4": (
        lambda root: _break(root, "train", slo_fundus=np.zeros((2, 3, 4, 5), np.uint8)),
        r"data_00001\.npz: key 'slo_fundus' has shape \(2, 3, 4, 5\) \(rank 4\); expected a one-channel image",
    ),
    "image rank 1": (
        lambda root: _break(root, "test", slo_fundus=np.zeros(7, np.uint8)),
        r"data_00009\.npz: key 'slo_fundus' has shape \(7,\) \(rank 1\)",
    ),
    "unknown race code": (
        lambda root: _break(root, "test", race=np.array(7)),
        r"data_00009\.npz: key 'race' has unknown race code 7; allowed codes: 0 \(Asian\), 1 \(Black\), 2 \(White\)",
    ),
    "unknown race name": (
        lambda root: _break(root, "test", race=np.array("Martian")),
        r"key 'race' has unknown race code 'martian'; allowed codes: 0 \(Asian\), 1 \(Black\), 2 \(White\) "
        r"\(or the names 'asian', 'black', 'white'\)",
    ),
    "unknown marital code": (
        lambda root: _break(root, "train", maritalstatus=np.array(9)),
        r"key 'maritalstatus' has unknown maritalstatus code 9; allowed codes: .*4 \(Legally Separated\), -1 \(unknown\)",
    ),
    "bad label": (
        lambda root: _break(root, "train", glaucoma=np.array(2)),
        r"data_00001\.npz: key 'glaucoma' has value 2; expected 0 or 'no' \(no glaucoma\), 1 or 'yes' \(glaucoma\)",
    ),
    "one class only": (
        lambda root: _only_negatives_in_val(root),
        r"split 'val' holds only non-glaucoma \(0\) samples \(4 files\); training and evaluation need both classes",
    ),
    "group only outside training": (
        lambda root: _break(root, "val", race=np.array(0)),
        r"attribute 'race' group 'Asian' \(code 0\) has 1 samples in split 'val' but none in 'train'",
    ),
    "truncated npz": (
        lambda root: _file(root, "val").write_bytes(_file(root, "val").read_bytes()[:200]),
        r"data_00005\.npz: cannot read this \.npz file, it looks corrupt or truncated \(BadZipFile",
    ),
    "not a zip at all": (
        lambda root: _file(root, "test").write_bytes(b"\x93NUMPY garbage"),
        r"data_00009\.npz: cannot read this \.npz file, it looks corrupt or truncated",
    ),
    "object array needs pickle": (
        lambda root: np.savez(
            _file(root, "train"), **(_subject(0) | {"race": np.array([_Exploit(root / "pwned")])})
        ),
        r"data_00001\.npz: key 'race' holds an object array \(object\) that needs pickle to load; fairsearch reads "
        r"\.npz files with allow_pickle=False",
    ),
}


def _only_negatives_in_val(root: Path) -> None:
    np.savez(_file(root, "val", 1), **_subject(0))
    np.savez(_file(root, "val", 3), **_subject(0, race=1))


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_message(tmp_path: Path, case: str) -> None:
    root = _fake_root(tmp_path / "root")
    load_fairvlmed(root)  # the untouched dataset is fine
    breaker, message = BAD_DATA[case]
    breaker(root)
    with pytest.raises(FairsearchError, match=message):
        load_fairvlmed(root)
    assert not (root / "pwned").exists()  # nothing was unpickled


CSV_BAD = {
    "missing column": (
        {"drop": "use"},
        r"data_summary\.csv: missing column\(s\) \['use'\]; the CSV has columns",
    ),
    "bad use": (
        {"use": "holdout"},
        r"row 1 \(data_00001\.npz\): column 'use' has value 'holdout'; expected training",
    ),
    "unknown race": (
        {"race": "purple"},
        r"row 1 \(data_00001\.npz\): column 'race' has unknown race code 'purple'",
    ),
    "unknown gender": (
        {"gender": ""},
        r"column 'gender' has unknown gender code ''; allowed codes: 0 \(Female\)",
    ),
    "bad label": ({"glaucoma": "maybe"}, r"column 'glaucoma' has value 'maybe'; expected 0 or 'no'"),
    "missing file": (
        {"filename": "data_09999.npz"},
        r"row 1: file data_09999\.npz not found in .* or its sub-folders",
    ),
}


@pytest.mark.parametrize("case", list(CSV_BAD))
def test_csv_bad_data_message(tmp_path: Path, case: str) -> None:
    rows = []
    for number in range(1, 7):
        np.savez(tmp_path / f"data_{number:05d}.npz", slo_fundus=np.zeros((4, 4), np.uint8))
        rows.append(
            _csv_row(
                f"data_{number:05d}.npz", ["training", "validation", "test"][(number - 1) // 2], number % 2
            )
        )
    change, message = CSV_BAD[case]
    rows[0] |= {k: v for k, v in change.items() if k != "drop"}
    _write_csv(tmp_path, rows)
    if "drop" in change:
        pd.read_csv(tmp_path / "data_summary.csv").drop(columns=change["drop"]).to_csv(
            tmp_path / "data_summary.csv", index=False
        )
    with pytest.raises(FairsearchError, match=message):
        load_fairvlmed(tmp_path)


def test_missing_root_and_empty_csv_split(tmp_path: Path) -> None:
    with pytest.raises(FairsearchError, match=r"nowhere: dataset folder does not exist"):
        load_fairvlmed(tmp_path / "nowhere")
    np.savez(tmp_path / "data_00001.npz", slo_fundus=np.zeros((4, 4), np.uint8))
    _write_csv(tmp_path, [_csv_row("data_00001.npz", "training", 1)])
    with pytest.raises(
        FairsearchError, match=r"split 'val': .*data_summary\.csv has no rows with use='validation'"
    ):
        load_fairvlmed(tmp_path)


def test_image_read_later_reports_a_file_broken_since_loading(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    split = load_fairvlmed(root)["train"]
    split.paths[1].write_bytes(b"not a zip")
    with pytest.raises(FairsearchError, match=r"data_00002\.npz: cannot read this \.npz file"):
        split.image(1)


# --- laziness, fingerprint, summary -------------------------------------------------------------------


def test_split_is_lazy_reads_images_on_demand(tmp_path: Path) -> None:
    full = np.zeros((664, 512), dtype=np.uint8)
    subjects = {s: [_subject(i % 2, race=1 + i % 2, slo_fundus=full) for i in range(12)] for s in SPLITS}
    root = _fake_root(tmp_path, subjects)  # 36 full-size images, 12 MB
    tracemalloc.start()
    try:
        splits = load_fairvlmed(root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # well below a single 340 KB image times the 36 files
    assert len(pickle.dumps(splits["train"])) < 10_000
    train = splits["train"]
    assert train.image(3).shape == (664, 512, 3) and train.image(3).max() == 0
    np.savez(train.paths[3], **_subject(1, race=2, slo_fundus=np.full((664, 512), 9, np.uint8)))
    assert train.image(3).min() == 9  # read from disk at access time, not cached


def test_fingerprint_is_stable_and_follows_file_sizes(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "a")
    first = load_fairvlmed(root)
    assert {s: first[s].fingerprint for s in SPLITS} == {
        s: load_fairvlmed(root)[s].fingerprint for s in SPLITS
    }
    assert len({first[s].fingerprint for s in SPLITS}) == 3
    np.savez(_file(root, "val"), **_subject(0, slo_fundus=np.zeros((9, 9), np.uint8)))
    changed = load_fairvlmed(root)
    assert changed["val"].fingerprint != first["val"].fingerprint
    assert changed["train"].fingerprint == first["train"].fingerprint
    np.savez(_file(root, "test"), **_subject(0, slo_fundus=np.full((6, 5), 99, np.uint8)))  # same size
    assert load_fairvlmed(root)["test"].fingerprint != first["test"].fingerprint
    moved = load_fairvlmed(shutil.copytree(root, tmp_path / "moved"))
    assert moved["train"].fingerprint == first["train"].fingerprint


def test_summary_counts_and_table(tmp_path: Path) -> None:
    splits = load_fairvlmed(_fake_root(tmp_path))
    table = summarize(splits)
    assert list(table.columns) == ["split", "attribute", "group", "label", "count"]
    assert table["count"].dtype == np.int64 and table["label"].dtype == np.int64
    groups = sum(len(v) for v in ATTRIBUTE_VALUES.values())
    assert len(table) == 3 * groups * 2
    per_split = table.groupby(["split", "attribute"])["count"].sum()
    assert (per_split == 4).all()
    black = table[(table.split == "train") & (table.attribute == "race") & (table.group == "Black")]
    assert black.set_index("label")["count"].to_dict() == {0: 1, 1: 1}
    asian = table[(table.attribute == "race") & (table.group == "Asian")]
    assert asian["count"].sum() == 0
    text = format_summary(table)
    lines = text.splitlines()
    assert "train" in lines[0] and "share" in lines[1] and "glaucoma" in lines[1]
    total = next(line for line in lines if line.startswith("(all)"))
    assert total.split()[2:5] == ["4", "100.0%", "50.0%"] and total.split()[-3:] == ["12", "100.0%", "50.0%"]
    black_row = next(line for line in lines if "Black" in line)
    assert black_row.split() == ["race", "Black", *["2", "50.0%", "50.0%"] * 3, "6", "50.0%", "50.0%"]
    assert "Asian" not in text  # groups empty everywhere are left out


def test_summary_of_default_synthetic(default_synthetic: Path) -> None:
    splits = load_fairvlmed(default_synthetic)
    table = summarize(splits)
    hispanic = (
        table[(table.attribute == "ethnicity") & (table.group == "Hispanic")].groupby("split")["count"].sum()
    )
    assert hispanic.to_dict() == {s: int(np.sum(splits[s].attributes["ethnicity"] == 1)) for s in SPLITS}
    assert "Legally Separated" in format_summary(table)
