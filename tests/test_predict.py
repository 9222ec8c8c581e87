"""``fairsearch predict``: an export's scores for a FairVLMed split are the trial's own stored test scores,
its decisions follow ``thresholds.json`` (one threshold, or one per group); the same images as PNG or
``.npz`` files score the same; groups come from the data or a ``--groups`` CSV; bad input is refused
with nothing written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from refusals import refused
from test_export import _sweep_of_one_trial

from fairsearch.cli import main
from fairsearch.export.card import decisions_of
from fairsearch.export.choice import ExportChoice, choose_export
from fairsearch.train.checkpoint import read_scores_at
from fairsearch.train.trial import load_splits

TOLERANCE = 1e-5
"""The most predict's p(glaucoma) may differ from the trial's stored test score (fp32, CPU)."""


@dataclass(frozen=True)
class Exported:
    """One trained trial exported three ways, and what it was tested on."""

    exports: dict[str, Path]  # "none", "single", "group" -> export folder
    data: Path  # the FairVLMed folder of the trial's data
    images: np.ndarray  # uint8 [N, H, W, 3]: the test split's images, in its order
    names: list[str]  # the test split's files relative to data
    scores: np.ndarray  # float64 [N]: the trial's stored test scores
    groups: list[str]  # each test image's group of the trial's grouping
    group_choice: ExportChoice


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """A 2-epoch trial of the tiny model (test_export's), exported with each kind of thresholds (~10 s)."""
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRSEARCH_CACHE", str(root / "cache"))
        folder = _sweep_of_one_trial(root)
        exports = {kind: root / "exports" / kind for kind in ("none", "single", "group")}
        for kind, out in exports.items():
            assert main(["export", str(folder), "--trial", "0", "--thresholds", kind, "--out", str(out)]) == 0
        choice = choose_export(folder, 0, thresholds="group")
        test = load_splits(choice.config)["test"]
        arrays = read_scores_at(str(root / "checkpoint"))
        assert arrays is not None
        names = choice.scores.group_names
        yield Exported(
            exports=exports,
            data=test.root,
            images=np.stack([test.image(i) for i in range(len(test))]),
            names=[p.relative_to(test.root).as_posix() for p in test.paths],
            scores=np.asarray(arrays["test_score"], dtype=np.float64),
            groups=[names[g] for g in choice.scores.test.group],
            group_choice=choice,
        )


def _predict(export: Path, data: Path, out: Path, *extra: str) -> pd.DataFrame:
    assert (
        main(["predict", str(export), "--data", str(data), "--out", str(out), "--device", "cpu", *extra]) == 0
    )
    return pd.read_parquet(out)


def _as_files(images: np.ndarray, folder: Path, suffix: str) -> list[str]:
    """Writes each image as ``folder/eyes/<i>.png`` or ``.npz`` (key ``slo_fundus``); their names."""
    names = []
    for i, image in enumerate(images):
        path = folder / "eyes" / f"{i:03d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            Image.fromarray(image).save(path)
        else:
            np.savez(path, slo_fundus=image)
        names.append(path.relative_to(folder).as_posix())
    return names


def test_a_fairvlmed_split_scores_as_the_trial_did_and_decides_by_thresholds_json(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for kind, export in exported.exports.items():
        table = _predict(export, exported.data, tmp_path / f"{kind}.parquet")
        assert list(table.columns) == (
            [
                "image",
                "split",
                "label",
                *(["group"] if kind == "group" else []),
                "p_glaucoma",
                "threshold",
                "decision",
            ]
        )
        assert table["image"].tolist() == exported.names and set(table["split"]) == {"test"}
        difference = float(np.abs(table["p_glaucoma"].to_numpy() - exported.scores).max())
        print(f"{kind}: max |p(glaucoma) − stored test score| = {difference:.3g}")
        assert difference <= TOLERANCE
        rule = json.loads((export / "thresholds.json").read_text())
        if kind == "group":
            assert table["group"].tolist() == exported.groups
            expected_threshold = np.array([rule["thresholds"][g] for g in exported.groups])
        else:
            expected_threshold = np.full(len(table), rule["thresholds"]["all"])
        assert np.array_equal(table["threshold"].to_numpy(), expected_threshold)
        p = table["p_glaucoma"].to_numpy()
        assert np.array_equal(table["decision"].to_numpy(), (p >= expected_threshold).astype(np.int64))
        if kind != "none":  # the chosen thresholds decide both ways here (the untuned 0.5 calls no one)
            assert 0 < table["decision"].sum() < len(table)
        out = capsys.readouterr().out
        assert f"{len(table)} images of {exported.data}" in out and f"predictions in {tmp_path}" in out
    # the group export decides as fairsearch's own thresholded row does (but on a hair's breadth)
    theirs = decisions_of(exported.group_choice)
    cut = np.array([exported.group_choice.thresholds[g] for g in exported.groups])
    clear = np.abs(exported.scores - cut) > TOLERANCE
    assert clear.sum() > 0.9 * len(clear) and np.array_equal(
        table["decision"].to_numpy()[clear], theirs[clear]
    )


def test_the_same_images_as_png_or_npz_files_score_the_same(exported: Exported, tmp_path: Path) -> None:
    reference = _predict(exported.exports["none"], exported.data, tmp_path / "fairvlmed.parquet")
    for suffix in (".png", ".npz"):
        folder = tmp_path / suffix[1:]
        names = _as_files(exported.images, folder, suffix)
        if suffix == ".png":  # a PNG keeps uint8 pixels exactly
            with Image.open(folder / names[0]) as im:
                assert np.array_equal(np.asarray(im), exported.images[0])
        table = _predict(exported.exports["none"], folder, tmp_path / f"{suffix[1:]}.parquet")
        assert list(table.columns) == ["image", "p_glaucoma", "threshold", "decision"]
        assert table["image"].tolist() == names
        assert np.array_equal(table["p_glaucoma"].to_numpy(), reference["p_glaucoma"].to_numpy())
        assert np.array_equal(table["decision"].to_numpy(), reference["decision"].to_numpy())


def test_group_thresholds_read_each_images_group_from_a_csv(exported: Exported, tmp_path: Path) -> None:
    folder = tmp_path / "png"
    names = _as_files(exported.images, folder, ".png")
    groups = pd.DataFrame({"image": names, "group": exported.groups}).iloc[::-1]  # any order
    extra = pd.DataFrame({"image": ["elsewhere/x.png"], "group": ["not a group"]})  # no image: left out
    pd.concat([groups, extra]).to_csv(tmp_path / "groups.csv", index=False)
    export = exported.exports["group"]
    table = _predict(export, folder, tmp_path / "out.parquet", "--groups", str(tmp_path / "groups.csv"))
    reference = _predict(export, exported.data, tmp_path / "fairvlmed.parquet")
    assert table["group"].tolist() == exported.groups
    for column in ("p_glaucoma", "threshold", "decision"):
        assert np.array_equal(table[column].to_numpy(), reference[column].to_numpy()), column
    # a CSV for a FairVLMed folder wins over its attributes: everyone in one group, one threshold
    one = exported.groups[0]
    pd.DataFrame({"image": exported.names, "group": one}).to_csv(tmp_path / "one.csv", index=False)
    table = _predict(export, exported.data, tmp_path / "one.parquet", "--groups", str(tmp_path / "one.csv"))
    rule = json.loads((export / "thresholds.json").read_text())
    assert set(table["group"]) == {one} and set(table["threshold"]) == {rule["thresholds"][one]}


def test_all_splits_and_force(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "all.parquet"
    out.write_text("an older file")
    table = _predict(exported.exports["single"], exported.data, out, "--split", "all", "--force")
    assert set(table["split"]) == {"train", "val", "test"}
    assert table.loc[table["split"] == "test", "image"].tolist() == exported.names
    assert all(name.split("/")[0] in ("Training", "Validation", "Test") for name in table["image"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.parquet"]  # no temporary file left


def _bad_inputs(root: Path, exported: Exported) -> None:
    """The folders the refusal table points at, under ``root``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 24, 24, 3), dtype=np.uint8)
    _as_files(images, root / "pngs", ".png")
    pd.DataFrame({"image": ["eyes/000.png"], "group": ["Hispanic"]}).to_csv(root / "one_row.csv", index=False)
    pd.DataFrame({"image": ["eyes/000.png", "eyes/001.png"], "group": ["Hispanic", "Martian"]}).to_csv(
        root / "martian.csv", index=False
    )
    pd.DataFrame(
        {"image": ["eyes/000.png", "eyes/000.png", "eyes/001.png"], "group": ["Hispanic"] * 3}
    ).to_csv(root / "twice.csv", index=False)
    pd.DataFrame({"image": ["eyes/000.png", "eyes/001.png"]}).to_csv(root / "no_group.csv", index=False)
    (root / "empty" / "sub").mkdir(parents=True)
    (root / "empty" / "notes.txt").write_text("no images here")
    (root / "empty" / ".hidden.png").write_bytes(b"not looked at")
    _as_files(images, root / "garbage", ".png")
    (root / "garbage" / "eyes" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    _as_files(images, root / "flipped", ".png")
    damaged = bytearray((root / "flipped" / "eyes" / "001.png").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # a byte of the pixel data: the chunk's checksum no longer matches
    (root / "flipped" / "eyes" / "001.png").write_bytes(bytes(damaged))
    (root / "deep").mkdir()
    Image.fromarray(np.full((8, 8), 300, dtype=np.uint16)).save(root / "deep" / "a.png")
    (root / "objects").mkdir()
    objects = np.empty((2, 2), dtype=object)
    objects[:] = [[object(), object()], [object(), object()]]
    np.savez(root / "objects" / "a.npz", slo_fundus=objects)  # numpy pickles an object array
    (root / "no_image").mkdir()
    np.savez(root / "no_image" / "a.npz", pixels=images[0])
    (root / "not_zip").mkdir()
    (root / "not_zip" / "a.npz").write_bytes(b"not a zip file")
    shutil.copytree(exported.data / "Test", root / "only_test" / "Test")
    for name, damage in (("incomplete", "head"), ("future", "format")):
        copy = root / name
        shutil.copytree(exported.exports["group"], copy)
        if damage == "head":
            (copy / "head.safetensors").unlink()
        else:
            spec = json.loads((copy / "classifier.json").read_text())
            (copy / "classifier.json").write_text(json.dumps(spec | {"format": 2}))
    shutil.copytree(exported.exports["single"], root / "bad_rule")
    (root / "bad_rule" / "thresholds.json").write_text(
        json.dumps({"kind": "threshold", "thresholds": {"a": 1}})
    )
    (root / "exists.parquet").write_text("an older file")
    (root / "a_folder.parquet").mkdir()


@pytest.mark.parametrize(
    ("export", "argv", "fragment"),
    [
        ("{root}/pngs", [], "{root}/pngs: not a fairsearch export (no classifier.json)"),
        ("{root}/nowhere", [], "{root}/nowhere: no such folder"),
        ("{root}/incomplete", [], "an incomplete export, missing ['head.safetensors']"),
        ("{root}/future", [], "export format 2; this fairsearch reads format 1"),
        ("{root}/bad_rule", [], "kind 'threshold' without the threshold 'all'"),
        ("group", ["--data", "{root}/missing"], "--data {root}/missing: no such folder"),
        ("none", ["--data", "{root}/empty"], "--data {root}/empty: no PNG, JPEG or .npz files"),
        ("none", ["--data", "{root}/garbage"], "{root}/garbage/eyes/001.png: not a readable PNG or JPEG"),
        ("none", ["--data", "{root}/flipped"], "{root}/flipped/eyes/001.png: not a readable PNG or JPEG"),
        ("none", ["--data", "{root}/deep"], "a PNG of mode I;16 (16-bit or floating point)"),
        ("none", ["--data", "{root}/objects"], "{root}/objects/a.npz: key 'slo_fundus' has dtype object"),
        ("none", ["--data", "{root}/no_image"], "{root}/no_image/a.npz: no image key"),
        ("none", ["--data", "{root}/not_zip"], "{root}/not_zip/a.npz: cannot read this .npz file"),
        ("none", ["--data", "{root}/only_test"], "missing split folder(s) Training/, Validation/"),
        ("group", [], "--data {root}/pngs is a folder of images without attributes: give each image's group"),
        (
            "group",
            ["--groups", "{root}/one_row.csv"],
            "1 of the 2 images of --data have no row, e.g. 'eyes/001.png'",
        ),
        ("group", ["--groups", "{root}/martian.csv"], "group(s) 'Martian' are not the export's"),
        ("group", ["--groups", "{root}/twice.csv"], "1 images listed more than once: 'eyes/000.png'"),
        ("group", ["--groups", "{root}/no_group.csv"], "no column(s) ['group']"),
        ("group", ["--groups", "{root}/nowhere.csv"], "--groups {root}/nowhere.csv: cannot read the CSV"),
        ("single", ["--groups", "{root}/martian.csv"], "groups are only read for per-group thresholds"),
        ("none", ["--out", "{root}/no/such/p.parquet"], "no folder {root}/no/such; create it first"),
        ("none", ["--out", "{root}/exists.parquet"], "the file exists; give a new name, or --force"),
        ("none", ["--out", "{root}/a_folder.parquet"], "a folder; give a file name"),
        ("none", ["--batch-size", "0"], "--batch-size 0: must be an integer from 1 to 4096"),
        ("none", ["--split", "dev"], "invalid choice: 'dev'"),
        ("none", ["--device", "gpu7"], "--device gpu7: not a torch device"),
    ],
)
def test_bad_predict_input_is_refused_with_nothing_written(
    exported: Exported,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    export: str,
    argv: list[str],
    fragment: str,
) -> None:
    _bad_inputs(tmp_path, exported)
    args = [a.format(root=tmp_path) for a in argv]
    args += [] if "--data" in args else ["--data", str(tmp_path / "pngs")]
    args += [] if "--out" in args else ["--out", str(tmp_path / "p.parquet")]
    folder = exported.exports.get(export) or Path(export.format(root=tmp_path))
    refused(capsys, tmp_path, ["predict", str(folder), *args], fragment.format(root=tmp_path))


def test_an_image_over_the_pixel_bound_is_refused_before_it_is_decoded(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fairsearch.export.images.IMAGE_MAX_PIXELS", 24 * 24 - 1)
    _as_files(np.zeros((1, 24, 24, 3), dtype=np.uint8), tmp_path / "pngs", ".png")
    argv = [
        "predict",
        str(exported.exports["none"]),
        "--data",
        str(tmp_path / "pngs"),
        "--out",
        str(tmp_path / "p"),
    ]
    refused(
        capsys, tmp_path, argv, "eyes/000.png: 24×24 pixels, over the 575 fairsearch decodes of one image"
    )
