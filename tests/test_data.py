"""Dataset readers on tiny fixtures built here, plus the real files' counts when the data is present."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import make_fer_npz, pattern_image, real_data, save_image

from expressnet.data import DataError, Preprocessing, detect_kind, load_dataset, prepare_split
from expressnet.data.base import stratified_indices
from expressnet.data.labels import FER2013_CLASSES, FERPLUS_CLASSES, canonical
from expressnet.data.rafdb import parse_rafdb_labels
from expressnet.data.registry import resolve
from expressnet.evaluate.data_report import data_report

RNG = np.random.default_rng(0)


def write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def pixels(label: int) -> str:
    return " ".join(map(str, pattern_image(label, RNG).ravel()))


def test_canonical_names():
    assert canonical("Happiness") == "happy" and canonical("anger") == "angry" and canonical("surprised") == "surprise"
    with pytest.raises(ValueError, match="unknown emotion"):
        canonical("bored")


def test_fer2013_csv(tmp_path):
    rows = [
        (0, pixels(0), "Training"),
        (3, pixels(3), "Training"),
        (6, pixels(6), "PublicTest"),
        (4, "1 2 3", "PrivateTest"),
        (5, pixels(5), "PrivateTest"),
    ]
    path = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], rows)
    assert detect_kind(path) == "fer2013-csv"
    ds = load_dataset(path)
    assert {k: len(v) for k, v in ds.splits.items()} == {"Training": 2, "PublicTest": 1, "PrivateTest": 1}
    assert ds.split("train").labels.tolist() == [0, 3]
    assert ds.split("test").labels.tolist() == [5]  # the malformed row is skipped, not relabelled
    skipped = {k: v for s in ds.splits.values() for k, v in s.skipped.items()}
    assert list(skipped) == ["fer2013.csv:5"] and "2304" in skipped["fer2013.csv:5"]
    assert ds.split("PublicTest+PrivateTest").labels.tolist() == [6, 5]
    assert load_dataset(tmp_path).name == "fer2013"  # a folder holding fer2013.csv

    bad = write_csv(tmp_path / "bad.csv", ["emotion", "pixels", "Usage"], [(9, pixels(0), "Training")])
    with pytest.raises(DataError, match=r"bad\.csv: line 2: unknown label 9"):
        load_dataset(bad)


def test_fer2013_npz(tmp_path):
    path = make_fer_npz(tmp_path / "f.npz", {"Training": 14, "PublicTest": 7, "PrivateTest": 7})
    assert detect_kind(path) == "fer2013-npz"
    ds = load_dataset(path)
    assert ds.roles == {
        "train": "Training",
        "val": "PublicTest",
        "test": "PrivateTest",
        "test-all": "PublicTest+PrivateTest",
    }
    assert len(ds.split("test-all")) == 14  # the paper's protocol: all test images
    assert ds.split("val").counts() == dict.fromkeys(FER2013_CLASSES, 1)
    with pytest.raises(DataError, match="no split 'Validation'"):
        ds.split("Validation")


def make_fer_folders(root, corrupt: bool = False):
    for i, cls in enumerate(FER2013_CLASSES):
        save_image(root / "train" / cls / f"Training_{i}.jpg", pattern_image(i, RNG))
        save_image(root / "train" / cls / f"Training_{i + 10}.jpg", pattern_image(i, RNG))
        save_image(root / "test" / cls / f"PublicTest_{i}.jpg", pattern_image(i, RNG))
        save_image(root / "test" / cls / f"PrivateTest_{i}.jpg", pattern_image(i, RNG))
    if corrupt:
        (root / "train" / "happy" / "Training_99.jpg").write_bytes(b"not a jpeg")


def test_fer2013_kaggle_folders_and_unreadable_images(tmp_path):
    make_fer_folders(tmp_path, corrupt=True)
    assert detect_kind(tmp_path) == "fer2013-folders"
    ds = load_dataset(tmp_path)
    assert {k: len(v) for k, v in ds.splits.items()} == {"Training": 15, "PublicTest": 7, "PrivateTest": 7}
    prepared = prepare_split(ds.split("train"), Preprocessing(48, 1))
    assert len(prepared) == 14 and prepared.images.shape == (14, 1, 48, 48)
    [(src, reason)] = prepared.skipped.items()
    assert src.endswith("Training_99.jpg") and "not an image" in reason
    assert prepared.labels.tolist().count(FER2013_CLASSES.index("happy")) == 2  # never relabelled


def test_unknown_class_folder_names_the_folder(tmp_path):
    save_image(tmp_path / "train" / "bored" / "a.png", pattern_image(0, RNG))
    save_image(tmp_path / "test" / "happy" / "b.png", pattern_image(0, RNG))
    with pytest.raises(DataError, match="bored"):
        load_dataset(tmp_path)


def test_ferplus_csv_votes_joined_to_fer2013(tmp_path):
    fer = write_csv(
        tmp_path / "fer2013.csv",
        ["emotion", "pixels", "Usage"],
        [
            (3, pixels(3), "Training"),
            (0, pixels(0), "Training"),
            (6, pixels(6), "Training"),
            (4, pixels(4), "PublicTest"),
            (5, pixels(5), "PrivateTest"),
        ],
    )
    header = [
        "Usage",
        "Image name",
        "neutral",
        "happiness",
        "surprise",
        "sadness",
        "anger",
        "disgust",
        "fear",
        "contempt",
        "unknown",
        "NF",
    ]
    votes = write_csv(
        tmp_path / "fer2013new.csv",
        header,
        [
            ["Training", "fer0000000.png", 0, 9, 1, 0, 0, 0, 0, 0, 0, 0],  # happy
            ["Training", "fer0000001.png", 2, 0, 0, 0, 2, 0, 0, 0, 6, 0],  # unknown dominates -> dropped
            ["Training", "", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no FER+ image -> skipped
            ["PublicTest", "fer0000003.png", 3, 0, 0, 5, 0, 0, 0, 0, 2, 0],  # sad
            ["PrivateTest", "fer0000004.png", 0, 0, 4, 0, 0, 0, 4, 2, 0, 0],  # tie surprise/fear: earlier column wins
        ],
    )
    assert detect_kind(votes) == "ferplus-csv"
    ds = load_dataset(votes)
    assert ds.class_names == FERPLUS_CLASSES
    train = ds.split("train")
    assert train.labels.tolist() == [FERPLUS_CLASSES.index("happy")]
    assert list(train.skipped.values()) == ["unknown/not-a-face votes dominate"]
    assert ds.split("val").labels.tolist() == [FERPLUS_CLASSES.index("sad")]
    assert ds.split("test").labels.tolist() == [FERPLUS_CLASSES.index("surprise")]
    np.testing.assert_allclose(ds.split("test").soft_labels[0], [0, 0, 0.4, 0, 0, 0, 0.4, 0.2])
    with fer.open() as f:
        val_pixels = np.array([int(v) for v in list(csv.reader(f))[4][1].split()], dtype=np.uint8)
    assert np.array_equal(ds.split("val").images[0], val_pixels.reshape(48, 48))  # joined by row
    with pytest.raises(DataError, match="FER-2013 pixels needed"):
        load_dataset(votes, images=tmp_path / "missing.csv")


def test_ferplus_npz(tmp_path, monkeypatch):
    votes = np.array(
        [
            [8, 1, 0, 0, 0, 0, 0, 0, 1, 0],  # neutral under both protocols
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: dropped by both
            [1, 1, 1, 5, 0, 0, 0, 0, 2, 0],  # sad; majority: the single votes go, 5 of 7 remain
            [3, 0, 0, 3, 0, 0, 0, 0, 2, 2],  # plurality: neutral (earlier column); majority: 3 of 10 -> dropped
        ]
    )
    path = tmp_path / "ferplus.npz"
    split = np.array(["Training", "Training", "PrivateTest", "PrivateTest"])
    np.savez_compressed(path, images=np.zeros((4, 48, 48), np.uint8), votes=votes, split=split)
    assert detect_kind(path) == "ferplus-npz"
    ds = load_dataset(path)
    assert ds.name == "ferplus"
    assert ds.split("train").labels.tolist() == [0] and len(ds.split("train").skipped) == 1
    assert ds.split("test").labels.tolist() == [FERPLUS_CLASSES.index("sad"), 0]
    np.testing.assert_allclose(ds.split("test").soft_labels.sum(axis=1), 1.0)
    monkeypatch.setenv("EXPRESSNET_DATA", str(tmp_path))
    strict = load_dataset("ferplus-majority")  # the known name implies protocol="majority"
    assert strict.name == "ferplus-majority"
    assert strict.split("train").labels.tolist() == [0]
    test = strict.split("test")
    assert test.labels.tolist() == [FERPLUS_CLASSES.index("sad")]
    np.testing.assert_allclose(test.soft_labels[0], np.eye(8)[FERPLUS_CLASSES.index("sad")])
    assert list(test.skipped.values()) == ["no emotion has more than half of the votes"]
    assert load_dataset(path, protocol="majority").split("test").labels.tolist() == test.labels.tolist()
    with pytest.raises(ValueError, match="unknown FER\\+ protocol 'mode'"):
        load_dataset(path, protocol="mode")


def test_rafdb_official_layout(tmp_path):
    lines = ["train_00001.jpg 4", "train_00002.jpg 1", "train_00003.jpg 7", "test_0001.jpg 6", "test_0002.jpg 3"]
    for i in range(4, 24):
        lines.append(f"train_{i:05d}.jpg {1 + i % 7}")
    (tmp_path / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        if line.startswith("test_0002"):
            continue  # this image is missing
        name = line.split()[0].replace(".jpg", "_aligned.jpg")
        save_image(tmp_path / "aligned" / name, RNG.integers(0, 255, (100, 100, 3), dtype=np.uint8))
    assert detect_kind(tmp_path) == "rafdb-official"
    ds = load_dataset(tmp_path)
    assert len(ds.split("train")) + len(ds.split("val")) == 23
    test = ds.split("test")
    assert [ds.class_names[y] for y in test.labels] == ["angry"] and len(test.skipped) == 1
    assert test.image(0).shape == (100, 100, 3)
    (tmp_path / "list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(DataError, match="line 1: unknown label 9"):
        load_dataset(tmp_path)


def make_rafdb_kaggle(root, n_train: int = 21, n_test: int = 7):
    """RAF-DB's Kaggle layout: ``DATASET/{train,test}/<1..7>/*_aligned.jpg`` and ``{train,test}_labels.csv``."""
    rows = {"train": [], "test": []}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            label = 1 + i % 7
            name = f"{split}_{i:05d}_aligned.jpg"
            image = RNG.integers(0, 255, (100, 100, 3), dtype=np.uint8)
            save_image(root / "DATASET" / split / str(label) / name, image)
            rows[split].append((name, label))
        write_csv(root / f"{split}_labels.csv", ["image", "label"], rows[split])
    return root


def test_rafdb_kaggle_layout(tmp_path):
    make_rafdb_kaggle(tmp_path)
    assert detect_kind(tmp_path) == "rafdb-kaggle"
    ds = load_dataset(tmp_path)
    assert ds.split("test").counts() == dict.fromkeys(ds.class_names, 1)
    assert ds.class_names[0] == "surprise" and ds.class_names[5] == "angry"


def test_rafdb_known_name_under_the_data_root(tmp_path, monkeypatch):
    make_rafdb_kaggle(tmp_path / "rafdb", n_train=70, n_test=14)
    monkeypatch.setenv("EXPRESSNET_DATA", str(tmp_path))
    assert resolve("rafdb") == tmp_path / "rafdb"
    ds = load_dataset("rafdb")
    assert ds.name == "rafdb" and ds.roles == {"train": "train-fit", "val": "train-val", "test": "test"}
    fit, val, test = (ds.split(r) for r in ("train", "val", "test"))
    # validation: a seeded, stratified 10 % of train (one per class here), disjoint from what is fitted
    assert (len(fit), len(val), len(test)) == (63, 7, 14) and val.counts() == dict.fromkeys(ds.class_names, 1)
    assert not set(fit.sources) & set(val.sources)
    assert load_dataset("rafdb").split("val").sources == val.sources  # the same split every time (seed 0)
    assert test.image(0).shape == (100, 100, 3)
    monkeypatch.setenv("EXPRESSNET_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="dataset 'rafdb' not found"):
        load_dataset("rafdb")


@pytest.mark.data
def test_real_rafdb_kaggle_folder_counts_and_protocol():
    from typer.testing import CliRunner

    from expressnet.cli import app

    real_data("rafdb")
    ds = load_dataset("rafdb")
    fit, val, test = (ds.split(r) for r in ("train", "val", "test"))
    assert len(fit) + len(val) == 12_271 and len(test) == 3_068
    assert (len(fit), len(val)) == (11_043, 1_228)
    assert list(test.counts().values()) == [329, 74, 160, 1185, 478, 162, 680]
    train = np.bincount(np.concatenate([fit.labels, val.labels]), minlength=7).tolist()
    assert train == [1290, 281, 717, 4772, 1982, 705, 2524]
    assert not any(s.skipped for s in ds.splits.values())
    result = CliRunner().invoke(app, ["data-report", "--data", "rafdb", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"] == {"test": 3_068, "train-fit": 11_043, "train-val": 1_228}


@pytest.mark.data
def test_rafdb_real_label_file_counts():
    entries = parse_rafdb_labels(real_data("rafdb_list_patition_label.txt"))
    train = np.bincount([y for _, y in entries["train"]], minlength=7).tolist()
    test = np.bincount([y for _, y in entries["test"]], minlength=7).tolist()
    assert train == [1290, 281, 717, 4772, 1982, 705, 2524] and sum(train) == 12_271
    assert test == [329, 74, 160, 1185, 478, 162, 680] and sum(test) == 3_068


def make_affectnet(root, per_class: int = 10):
    rows = []
    for cls in ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
        for i in range(per_class):
            rel = f"{cls}/image{i:05d}.png"
            save_image(root / rel, RNG.integers(0, 255, (96, 96, 3), dtype=np.uint8))
            rows.append((rel, cls))
    return write_csv(root / "labels.csv", ["pth", "label"], rows)


def test_affectnet_8_and_7_classes_with_the_papers_split(tmp_path):
    labels_csv = make_affectnet(tmp_path)
    assert detect_kind(tmp_path) == "affectnet"
    ds8 = load_dataset(tmp_path)
    assert len(ds8.class_names) == 8 and len(ds8.split("test")) == 16
    ds7 = load_dataset(labels_csv, num_classes=7)
    assert "contempt" not in ds7.class_names and len(ds7.split("test")) == 14
    # the paper's split: sklearn stratified 80/20 with random_state=52 over labels.csv rows
    labels = np.repeat(np.arange(8), 10)
    _, test_idx = stratified_indices(labels, 0.2, 52)
    with labels_csv.open() as f:
        rows = np.array([r[0] for r in csv.reader(f)][1:])
    assert sorted(ds8.split("test").sources) == sorted(str(tmp_path / p) for p in rows[test_idx])


def test_generic_class_folders(tmp_path):
    for cls in ("Happiness", "anger", "neutral"):
        for i in range(10):
            save_image(tmp_path / "ck" / cls / f"{i}.png", pattern_image(i % 7, RNG))
    ds = load_dataset(tmp_path / "ck")
    assert ds.class_names == ("angry", "happy", "neutral")
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == {"train": 24, "val": 3, "test": 3}
    for cls in ("happy", "sad"):
        for split in ("train", "test"):
            for i in range(5):
                save_image(tmp_path / "sp" / split / cls / f"{i}.png", pattern_image(i, RNG))
    ds = load_dataset(tmp_path / "sp")
    assert set(ds.roles) == {"train", "val", "test"} and len(ds.split("test")) == 10
    # the validation part is carved out of train: every image counted once (20 files, 20 rows)
    assert sorted(ds.splits) == ["test", "train-fit", "train-val"]
    assert sum(data_report(ds)["totals"].values()) == 20


def test_missing_paths_and_names():
    with pytest.raises(DataError, match="no such file"):
        load_dataset("/nonexistent/dataset")


@pytest.mark.data
def test_real_fer2013_counts_via_data_report(tmp_path):
    from typer.testing import CliRunner

    from expressnet.cli import app

    path = real_data("fer2013.npz")
    result = CliRunner().invoke(app, ["data-report", "--data", str(path), "--json", "-"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["totals"] == {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}
    assert report["splits"]["Training"] == {
        "angry": 3995,
        "disgust": 436,
        "fear": 4097,
        "happy": 7215,
        "sad": 4830,
        "surprise": 3171,
        "neutral": 4965,
    }
    assert report["splits"]["PrivateTest"]["happy"] == 879 and report["splits"]["PublicTest"]["disgust"] == 56


def vote_fixture(tmp_path):
    """A FER-2013 npz (images 0 and 2 identical, image 3 a PublicTest copy of image 1) and FER+ votes for it."""
    images = np.stack([np.full((48, 48), v, np.uint8) for v in (10, 20, 10, 20, 30)])
    fer = tmp_path / "fer2013.npz"
    split = np.array(["Training", "Training", "Training", "PublicTest", "Training"])
    np.savez_compressed(fer, images=images, labels=np.array([0, 3, 0, 3, 4]), split=split)
    votes = np.zeros((4, 10), np.int64)
    votes[0, 0] = 10  # Training image 0: all neutral
    votes[1, [1, 3]] = 5  # Training image 2 (same pixels as 0): happy and sad
    votes[2, 2] = 10  # the PublicTest copy of image 1: surprise; must not reach training
    votes[3, [7, 8]] = 5  # image 4: contempt and unknown only, nothing usable
    plus = tmp_path / "ferplus.npz"
    np.savez_compressed(
        plus,
        images=images[[0, 2, 3, 4]],
        votes=votes,
        kaggle_match_index=np.array([0, 2, 3, 4]),
        split=np.array(["Training", "Training", "PublicTest", "Training"]),
    )
    return fer, plus


def test_ferplus_vote_targets_blend_pool_and_stay_in_their_split(tmp_path):
    from expressnet.data.ferplus import with_vote_targets

    fer, plus = vote_fixture(tmp_path)
    train = load_dataset(fer).split("train")
    targets = with_vote_targets(train, fer, plus, 0.3).soft_labels
    c = {name: i for i, name in enumerate(FER2013_CLASSES)}
    pooled = np.zeros(7)
    pooled[[c["neutral"], c["happy"], c["sad"]]] = [10, 5, 5]
    expected_0 = 0.7 * np.eye(7)[c["angry"]] + 0.3 * pooled / 20  # duplicates pool their votes
    np.testing.assert_allclose(targets[0], expected_0, atol=1e-6)
    np.testing.assert_allclose(targets[2], expected_0, atol=1e-6)
    np.testing.assert_array_equal(targets[1], np.eye(7)[c["happy"]])  # only PublicTest votes: none used
    np.testing.assert_array_equal(targets[3], np.eye(7)[c["sad"]])  # contempt/unknown votes only
    assert train.soft_labels is None  # the input split is left as it was
    with pytest.raises(ValueError, match="vote weight"):
        with_vote_targets(train, fer, plus, 1.5)
    with pytest.raises(DataError, match="FER-2013's classes"):
        with_vote_targets(load_dataset(plus).split("train"), fer, plus, 0.3)


@pytest.mark.data
def test_real_ferplus_vote_targets_keep_the_fer2013_label_on_top():
    from expressnet.data.ferplus import with_vote_targets

    fer = real_data("fer2013.npz")
    train = load_dataset(fer).split("train")
    targets = with_vote_targets(train, fer, real_data("ferplus.npz"), 0.3).soft_labels
    assert (targets.argmax(axis=1) == train.labels).all()
    one_hot = np.eye(7)[train.labels]
    assert 0.7 < (np.abs(targets - one_hot).sum(axis=1) > 1e-6).mean() < 0.8  # 76 % get a vote-informed target
    label_share = targets[np.arange(len(targets)), train.labels]
    assert 0.15 < np.isclose(label_share, 0.7).mean() < 0.17  # 16 %: no FER+ rater chose the FER-2013 label


@pytest.mark.data
def test_real_ferplus_filtering():
    ds = load_dataset(real_data("ferplus.npz"))
    assert {k: len(v.skipped) for k, v in ds.splits.items()} == {"Training": 408, "PublicTest": 55, "PrivateTest": 53}
    assert len(ds.split("test")) == 3_573 - 53
    strict = load_dataset(real_data("ferplus.npz"), protocol="majority")  # microsoft/FERPlus majority mode
    assert [len(strict.split(r)) for r in ("val", "test")] == [3_199, 3_152]
    kept = [ds.split("test").sources.index(s) for s in strict.split("test").sources]
    assert np.array_equal(ds.split("test").labels[kept], strict.split("test").labels)  # a subset, same labels


@pytest.mark.data
def test_data_report_figures(tmp_path):
    data_report(load_dataset(real_data("fer2013.npz")), tmp_path, histogram_images=300, grid_per_class=4)
    for name in ("class_distribution.png", "intensity_Training.png", "examples.png"):
        assert (tmp_path / name).stat().st_size > 5000
    assert json.loads((tmp_path / "data_report.json").read_text())["totals"]["PublicTest"] == 3_589


def load_packer():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "pack_training_images.py"
    spec = importlib.util.spec_from_file_location("pack_training_images", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packed_training_images_read_back_as_the_dataset(tmp_path):
    packer = load_packer()
    make_rafdb_kaggle(tmp_path / "rafdb", n_train=70, n_test=14)
    assert packer.main(["--data", str(tmp_path / "rafdb"), "--kind", "rafdb", "--out", str(tmp_path / "p1")]) == 0
    packed, source = load_dataset(tmp_path / "p1"), load_dataset(tmp_path / "rafdb")
    assert detect_kind(tmp_path / "p1") == "rafdb-kaggle"
    for role in ("train", "val", "test"):  # the same files, byte for byte, so the same seeded validation split
        a, b = packed.split(role), source.split(role)
        assert a.labels.tolist() == b.labels.tolist()
        assert [p.split("/")[-1] for p in a.sources] == [p.split("/")[-1] for p in b.sources]
    np.testing.assert_array_equal(packed.split("test").image(3), source.split("test").image(3))
    fer = make_fer_npz(tmp_path / "fer.npz", {"Training": 70, "PublicTest": 14, "PrivateTest": 14})
    args = ["--data", str(fer), "--kind", "fer2013", "--out", str(tmp_path / "p2"), "--limit", "21"]
    assert packer.main(args) == 0
    ds = load_dataset(tmp_path / "p2")
    assert detect_kind(tmp_path / "p2") == "fer2013-folders"
    assert {k: len(v) for k, v in ds.splits.items()} == {"Training": 21, "PublicTest": 14, "PrivateTest": 14}
    assert ds.split("PublicTest").counts() == dict.fromkeys(FER2013_CLASSES, 2)
    image = ds.split("Training").image(0)  # files decode as RGB: gray replicated, native 48x48
    assert image.shape == (48, 48, 3) and (image == image[..., :1]).all()


def test_datasets_combine_split_by_split_in_the_first_ones_class_order(tmp_path, monkeypatch):
    from conftest import make_fer_npz

    make_rafdb_kaggle(tmp_path / "rafdb", n_train=70, n_test=14)
    make_fer_npz(tmp_path / "fer2013.npz", {"Training": 28, "PublicTest": 7, "PrivateTest": 14})
    monkeypatch.setenv("EXPRESSNET_DATA", str(tmp_path))
    fer, raf = load_dataset("fer2013"), load_dataset("rafdb")
    both = load_dataset("fer2013+rafdb")
    assert both.name == "fer2013+rafdb" and both.class_names == fer.class_names != raf.class_names
    assert both.roles["train"] == "fer2013:Training+rafdb:train-fit"
    assert both.roles["val"] == "fer2013:PublicTest+rafdb:train-val"
    assert both.roles["test"] == "fer2013:PrivateTest+rafdb:test"
    assert "test-all" not in both.roles  # only roles every dataset has are combined
    for role in ("train", "val", "test"):
        split, a, b = both.split(role), fer.split(role), raf.split(role)
        assert len(split) == len(a) + len(b) and split.sources == a.sources + b.sources
        # labels keep their class: RAF-DB's are re-indexed into FER-2013's order by name
        names = [both.class_names[y] for y in split.labels]
        assert names == [a.class_names[y] for y in a.labels] + [b.class_names[y] for y in b.labels]
        assert split.image(0).shape == (48, 48) and split.image(len(a)).shape == (100, 100, 3)
    with pytest.raises(DataError, match="cannot be given for a combination"):
        load_dataset("fer2013+rafdb", seed=1)
    with pytest.raises(DataError, match="dataset 'rafdb' is named twice"):
        load_dataset("rafdb+rafdb")
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset("fer2013+nothing-here")
