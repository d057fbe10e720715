"""Datasets and splits: real Cityscapes fixtures read in place, synthetic GTA5/SYNTHIA layouts."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from model.class_sets import SYNTHIA16_TRAIN_IDS, SYNTHIA_ID_TO_TRAIN_ID
from training.data import (
    CityscapesDataset,
    DatasetError,
    GTA5Dataset,
    SynthiaDataset,
    cityscapes_from_pairs,
    make_split,
    read_split,
    write_split,
)

PIX2PIX = Path("pix2pixHD/datasets/cityscapes")
MMSEG = Path("mmsegmentation/tests/data/pseudo_cityscapes_dataset")
MMSEG_STEM = "frankfurt_000000_000294"
TRAIN_STEMS = [f"aachen_{i:06d}_000019" for i in range(5)]


def csv_label_to_train_id(fixtures_dir: Path) -> dict[int, int]:
    """Label id -> train id read from cityscapes_labels.csv (trainId -1 or 255 -> 255)."""
    table = {}
    with (fixtures_dir / "cityscapes_labels.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            label_id, train_id = int(row["id"]), int(row["trainId"])
            if label_id >= 0:
                table[label_id] = 255 if train_id in (-1, 255) else train_id
    return table


def train_pairs(fixtures_dir: Path) -> list[tuple[Path, Path]]:
    root = fixtures_dir / PIX2PIX
    return [
        (root / "train_img" / f"{s}_leftImg8bit.png", root / "train_label" / f"{s}_gtFine_labelIds.png")
        for s in TRAIN_STEMS
    ]


def cityscapes_layout(fixtures_dir: Path, root: Path, split: str = "train") -> Path:
    """The 5 pix2pixHD train pairs as symlinks in the official leftImg8bit/gtFine layout."""
    img_dir = root / "leftImg8bit" / split / "aachen"
    lbl_dir = root / "gtFine" / split / "aachen"
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    for img, lbl in train_pairs(fixtures_dir):
        (img_dir / img.name).symlink_to(img)
        (lbl_dir / lbl.name).symlink_to(lbl)
    return root


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


# --------------------------------------------------------------------------- Cityscapes, real files


@pytest.fixture(scope="module")
def pix2pix_examples(fixtures_dir: Path) -> list[dict]:
    dataset = cityscapes_from_pairs(train_pairs(fixtures_dir))
    return [dataset[i] for i in range(len(dataset))]


def test_pix2pix_pairs_label_ids_map_to_train_ids(fixtures_dir: Path, pix2pix_examples: list[dict]) -> None:
    table = csv_label_to_train_id(fixtures_dir)
    assert [e["name"] for e in pix2pix_examples] == TRAIN_STEMS
    for (img_path, lbl_path), example in zip(train_pairs(fixtures_dir), pix2pix_examples):
        raw = np.asarray(Image.open(lbl_path))
        label = example["label"]
        assert label.dtype == np.uint8 and label.shape == raw.shape == (1024, 2048)
        present = np.unique(raw)
        for label_id in present:  # hand loop over every label id in the file
            assert np.all(label[raw == label_id] == table[int(label_id)]), (lbl_path.name, label_id)
        assert set(np.unique(label).tolist()) == {table[int(i)] for i in present}
        # spot checks of the table itself (road, sky, car, ego vehicle, polegroup)
        assert (table[7], table[23], table[26], table[1], table[18]) == (0, 10, 13, 255, 255)
        image = example["image"]
        assert image.dtype == np.uint8 and image.shape == (1024, 2048, 3)
        np.testing.assert_array_equal(image, cv2.imread(str(img_path), cv2.IMREAD_COLOR)[:, :, ::-1])
        assert example["caption"] == ""


def test_mmseg_fixture_official_layout_matches_its_train_id_file(fixtures_dir: Path) -> None:
    dataset = CityscapesDataset(fixtures_dir / MMSEG, split="val")
    assert dataset.names == [MMSEG_STEM]
    example = dataset[0]
    label_dir = fixtures_dir / MMSEG / "gtFine" / "val" / "frankfurt"
    reference = np.asarray(Image.open(label_dir / f"{MMSEG_STEM}_gtFine_labelTrainIds.png"))
    assert example["image"].shape == (128, 256, 3)
    differ = example["label"] != reference
    # The fixture's trainId map was downscaled separately: 77 boundary pixels differ (README).
    assert differ.sum() <= 100
    assert (~differ).mean() >= 0.995
    kernel = np.ones((3, 3), np.uint8)

    def boundary(a: np.ndarray) -> np.ndarray:
        return cv2.dilate(a, kernel) != cv2.erode(a, kernel)

    assert not np.any(differ & ~(boundary(reference) | boundary(example["label"])))


def test_cityscapes_16_class_protocol(fixtures_dir: Path) -> None:
    label19 = CityscapesDataset(fixtures_dir / MMSEG, "val", num_classes=19)[0]["label"]
    label16 = CityscapesDataset(fixtures_dir / MMSEG, "val", num_classes=16)[0]["label"]
    for train_id in range(19):
        expected = SYNTHIA16_TRAIN_IDS.index(train_id) if train_id in SYNTHIA16_TRAIN_IDS else 255
        assert np.all(label16[label19 == train_id] == expected)
    assert np.all(label16[label19 == 255] == 255)
    assert set(np.unique(label16).tolist()) <= set(range(16)) | {255}
    # terrain (22), truck (27), train (31) label ids are ignored in the 16-class protocol
    raw = np.array([[22, 27, 31, 7, 33]], dtype=np.uint8)
    lut = CityscapesDataset(fixtures_dir / MMSEG, "val", num_classes=16).label_lut
    assert lut[raw].tolist() == [[255, 255, 255, 0, 15]]


def test_palette_photo_is_read_as_rgb(fixtures_dir: Path) -> None:
    demo = fixtures_dir / "mmsegmentation" / "demo" / "demo.png"
    assert Image.open(demo).mode == "P"
    dataset = cityscapes_from_pairs([(demo, None)])
    example = dataset[0]
    assert "label" not in example and example["name"] == "demo"
    image = example["image"]
    assert image.shape == (512, 1024, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, cv2.imread(str(demo), cv2.IMREAD_COLOR)[:, :, ::-1])
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # colours, not palette indices


def test_official_layout_with_symlinks_and_resize(fixtures_dir: Path, tmp_path: Path) -> None:
    root = cityscapes_layout(fixtures_dir, tmp_path / "cs")
    dataset = CityscapesDataset(root, "train", resize=(256, 512))
    assert dataset.names == TRAIN_STEMS and len(dataset) == 5
    example = dataset[2]
    full = cityscapes_from_pairs(train_pairs(fixtures_dir)[2:3])[0]
    assert example["image"].shape == (256, 512, 3) and example["label"].shape == (256, 512)
    np.testing.assert_array_equal(
        example["image"], cv2.resize(full["image"], (512, 256), interpolation=cv2.INTER_LINEAR)
    )
    np.testing.assert_array_equal(
        example["label"], cv2.resize(full["label"], (512, 256), interpolation=cv2.INTER_NEAREST)
    )
    subset = CityscapesDataset(root, "train", names=[TRAIN_STEMS[3], TRAIN_STEMS[1]], labeled=False)
    assert subset.names == [TRAIN_STEMS[3], TRAIN_STEMS[1]] and "label" not in subset[0]
    with pytest.raises(DatasetError, match="not in the dataset"):
        CityscapesDataset(root, "train", names=["nowhere_000000_000000"])


def test_cityscapes_errors_name_the_file(fixtures_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing"):
        CityscapesDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="split"):
        CityscapesDataset(tmp_path, split="test")
    (tmp_path / "empty" / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no .*images"):
        CityscapesDataset(tmp_path / "empty", "val")

    root = cityscapes_layout(fixtures_dir, tmp_path / "cs")
    label = root / "gtFine" / "train" / "aachen" / f"{TRAIN_STEMS[1]}_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{TRAIN_STEMS[1]}_leftImg8bit.png")):
        CityscapesDataset(root, "train")
    assert len(CityscapesDataset(root, "train", labeled=False)) == 5  # labels not needed

    # a label without its image is not silently ignored either
    label.symlink_to(train_pairs(fixtures_dir)[1][1])
    (root / "leftImg8bit" / "train" / "aachen" / f"{TRAIN_STEMS[4]}_leftImg8bit.png").unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{TRAIN_STEMS[4]}_gtFine_labelIds.png")):
        CityscapesDataset(root, "train")


def test_corrupt_and_mismatched_files_fail_at_getitem(fixtures_dir: Path, tmp_path: Path) -> None:
    img, lbl = train_pairs(fixtures_dir)[0]
    corrupt = tmp_path / "corrupt_000000_000000_leftImg8bit.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    dataset = cityscapes_from_pairs([(corrupt, lbl)])  # construction only checks existence
    with pytest.raises(DatasetError, match=re.escape(corrupt.name)):
        dataset[0]

    truncated = tmp_path / "trunc_000000_000000_leftImg8bit.png"
    truncated.write_bytes(img.read_bytes()[:50_000])
    with pytest.raises(DatasetError, match=re.escape(truncated.name)):
        cityscapes_from_pairs([(truncated, lbl)])[0]

    small = tmp_path / "small_gtFine_labelIds.png"
    Image.fromarray(np.full((512, 1024), 7, np.uint8), mode="L").save(small)
    with pytest.raises(DatasetError, match=re.escape(small.name)) as info:
        cityscapes_from_pairs([(img, small)])[0]
    assert "1024x512" in str(info.value) and "2048x1024" in str(info.value)

    colour = tmp_path / "colour_gtFine_labelIds.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8), mode="RGB").save(colour)
    with pytest.raises(DatasetError, match=re.escape(colour.name)):
        cityscapes_from_pairs([(img, colour)]).load_label(colour)

    with pytest.raises(DatasetError, match=re.escape("nothere.png")):
        cityscapes_from_pairs([(img, tmp_path / "nothere.png")])
    with pytest.raises(DatasetError, match="mix"):
        cityscapes_from_pairs([(img, lbl), (train_pairs(fixtures_dir)[1][0], None)])
    with pytest.raises(DatasetError, match="duplicate"):
        cityscapes_from_pairs([(img, lbl), (img, lbl)])


def test_captions(fixtures_dir: Path, tmp_path: Path) -> None:
    pairs = train_pairs(fixtures_dir)[:2]
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({TRAIN_STEMS[0]: "a street", TRAIN_STEMS[1]: "cars", "other": "x"}))
    dataset = cityscapes_from_pairs(pairs, captions_file=captions)
    assert dataset.captions[TRAIN_STEMS[1]] == "cars"
    assert dataset[0]["caption"] == "a street"

    captions.write_text(json.dumps({TRAIN_STEMS[0]: "a street"}))
    with pytest.raises(DatasetError, match=rf"captions\.json.*{TRAIN_STEMS[1]}"):
        cityscapes_from_pairs(pairs, captions_file=captions)
    captions.write_text("{not json")
    with pytest.raises(DatasetError, match=re.escape("captions.json")):
        cityscapes_from_pairs(pairs, captions_file=captions)
    with pytest.raises(DatasetError, match=re.escape("nocaps.json")):
        cityscapes_from_pairs(pairs, captions_file=tmp_path / "nocaps.json")


# --------------------------------------------------------------------------- GTA5 and SYNTHIA layouts

GTA_IDS = np.array([0, 1, 4, 7, 8, 11, 17, 21, 23, 24, 26, 27, 31, 33, 34], dtype=np.uint8)


def gta5_root(tmp_path: Path, count: int = 2) -> tuple[Path, list[np.ndarray]]:
    """GTA5 layout: P-mode labels whose indices are label ids and whose palette is scrambled."""
    rng = np.random.default_rng(0)
    palette = [(255 - i, (i * 7) % 256, (i * 13 + 5) % 256) for i in range(256)]
    flat_palette = [c for rgb in palette for c in rgb]
    images, labels = tmp_path / "gta" / "images", tmp_path / "gta" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    indices = []
    for i in range(count):
        name = f"{i + 1:05d}.png"
        Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8), mode="RGB").save(images / name)
        index = rng.choice(GTA_IDS, size=(24, 40)).astype(np.uint8)
        label = Image.fromarray(index, mode="P")
        label.putpalette(flat_palette)
        label.save(labels / name)
        indices.append(index)
    return tmp_path / "gta", indices


def test_gta5_reads_palette_indices_not_colours(tmp_path: Path, fixtures_dir: Path) -> None:
    root, indices = gta5_root(tmp_path)
    table = csv_label_to_train_id(fixtures_dir)
    table[34] = 255  # 34 is not a Cityscapes label id: must be ignored, not wrapped
    dataset = GTA5Dataset(root)
    assert dataset.names == ["00001", "00002"]
    for example, index in zip(dataset, indices):
        assert Image.open(root / "labels" / f"{example['name']}.png").mode == "P"
        expected = np.vectorize(table.__getitem__)(index).astype(np.uint8)
        np.testing.assert_array_equal(example["label"], expected)
        assert example["image"].shape == (24, 40, 3)
    resized = GTA5Dataset(root, resize=(12, 20))[0]
    assert resized["image"].shape == (12, 20, 3) and resized["label"].shape == (12, 20)


def test_gta5_errors(tmp_path: Path) -> None:
    root, _ = gta5_root(tmp_path, count=3)
    with pytest.raises(DatasetError, match="GTA5 root"):
        GTA5Dataset(tmp_path / "nope")
    (root / "labels" / "00002.png").rename(root / "labels" / "00009.png")
    with pytest.raises(DatasetError, match=re.escape("00002.png")):
        GTA5Dataset(root)
    (root / "labels" / "00009.png").rename(root / "labels" / "00002.png")
    (root / "images" / "00003.png").unlink()
    with pytest.raises(DatasetError, match=r"00003\.png.*without its image"):
        GTA5Dataset(root)
    (root / "labels" / "00003.png").unlink()
    (root / "labels" / "00002.png").write_bytes(b"garbage")
    dataset = GTA5Dataset(root)
    dataset[0]
    with pytest.raises(DatasetError, match=re.escape("00002.png")):
        dataset[1]


def synthia_root(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    """SYNTHIA layout: 16-bit 3-channel labels, class id in R (cv2 channel 2), garbage in G and B."""
    rng = np.random.default_rng(1)
    ids = np.array([0, *SYNTHIA_ID_TO_TRAIN_ID, 13, 14, 22], dtype=np.uint16)
    classes = []
    for i in range(2):
        name = f"{i:07d}.png"
        write_png(tmp_path / "synthia" / "RGB" / name, rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
        class_id = rng.choice(ids, size=(20, 30)).astype(np.uint16)
        bgr = np.stack(
            [
                rng.integers(300, 65535, (20, 30)).astype(np.uint16),  # B: garbage
                rng.integers(1000, 65535, (20, 30)).astype(np.uint16),  # G: garbage (instance-like)
                class_id,  # R: the class id
            ],
            axis=-1,
        )
        write_png(tmp_path / "synthia" / "GT" / "LABELS" / name, bgr)
        classes.append(class_id)
    return tmp_path / "synthia", classes


def test_synthia_16_and_19_classes(tmp_path: Path) -> None:
    root, classes = synthia_root(tmp_path)
    label_file = root / "GT" / "LABELS" / "0000000.png"
    check = cv2.imread(str(label_file), cv2.IMREAD_UNCHANGED)
    assert check.dtype == np.uint16 and check.shape == (20, 30, 3)
    for num_classes in (16, 19):
        dataset = SynthiaDataset(root, num_classes=num_classes)
        assert dataset.names == ["0000000", "0000001"]
        for example, class_id in zip(dataset, classes):
            for synthia_id in np.unique(class_id):
                train_id = SYNTHIA_ID_TO_TRAIN_ID.get(int(synthia_id), 255)
                if num_classes == 16:
                    train_id = SYNTHIA16_TRAIN_IDS.index(train_id) if train_id in SYNTHIA16_TRAIN_IDS else 255
                assert np.all(example["label"][class_id == synthia_id] == train_id), (num_classes, synthia_id)
    assert SynthiaDataset(root)[0]["label"].max() == 255
    with pytest.raises(ValueError, match="num_classes"):
        SynthiaDataset(root, num_classes=18)


def test_synthia_corrupt_and_size_mismatch(tmp_path: Path) -> None:
    root, _ = synthia_root(tmp_path)
    (root / "GT" / "LABELS" / "0000000.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    write_png(root / "GT" / "LABELS" / "0000001.png", np.zeros((10, 30, 3), np.uint16))
    dataset = SynthiaDataset(root)
    with pytest.raises(DatasetError, match=re.escape("0000000.png")):
        dataset[0]
    with pytest.raises(DatasetError, match=r"0000001\.png.*differs"):
        dataset[1]


# --------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_order_free(tmp_path: Path) -> None:
    names = [f"city_{i:06d}_000019" for i in range(50)]
    labeled, unlabeled = make_split(names, 10, seed=0)
    assert len(labeled) == 10 and len(unlabeled) == 40
    assert not set(labeled) & set(unlabeled) and sorted(labeled + unlabeled) == names
    assert labeled == sorted(labeled) and unlabeled == sorted(unlabeled)
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    assert make_split(shuffled, 10, seed=0) == (labeled, unlabeled)
    assert make_split(names, 10, seed=1)[0] != labeled
    # Golden draw: changes if the sampling algorithm (or numpy's PCG64 stream) changes.
    assert make_split([f"n{i:02d}" for i in range(10)], 3, seed=0)[0] == GOLDEN_SEED0
    assert make_split(names, 0, 5) == ([], names)
    assert make_split(names, 50, 5) == (names, [])
    with pytest.raises(ValueError, match="outside"):
        make_split(names, 51, 0)
    with pytest.raises(ValueError, match="outside"):
        make_split(names, -1, 0)
    with pytest.raises(ValueError, match="unique"):
        make_split([*names, names[0]], 1, 0)

    path = tmp_path / "split.json"
    write_split(path, labeled, unlabeled, seed=0)
    assert read_split(path) == (labeled, unlabeled)
    assert json.loads(path.read_text())["seed"] == 0 and "held_out" not in json.loads(path.read_text())
    write_split(path, labeled[1:], unlabeled, seed=0, held_out=labeled[:1])
    assert read_split(path) == (labeled[1:], unlabeled)
    assert json.loads(path.read_text())["held_out"] == labeled[:1]
    path.write_text(json.dumps({"labeled": ["a"], "unlabeled": ["a"]}))
    with pytest.raises(ValueError, match="disjoint"):
        read_split(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match=re.escape("split.json")):
        read_split(path)


GOLDEN_SEED0 = ["n02", "n04", "n06"]


def test_shuffled_captions_control_really_permutes_captions_across_images() -> None:
    """data.shuffle_captions: the same captions, none at its own image, seeded; off by default."""
    from types import SimpleNamespace

    from training.config import config_from_dict
    from training.data.build import shuffle_captions

    captions = {f"img{i:02d}": f"caption {i}" for i in range(20)}
    config = config_from_dict({"data": {"shuffle_captions": True, "split_seed": 0}})
    shuffled = shuffle_captions(SimpleNamespace(captions=dict(captions)), config, "source").captions
    assert sorted(shuffled.values()) == sorted(captions.values()) and set(shuffled) == set(captions)
    assert all(shuffled[n] != captions[n] for n in captions)
    again = shuffle_captions(SimpleNamespace(captions=dict(captions)), config, "source").captions
    other = shuffle_captions(SimpleNamespace(captions=dict(captions)), config, "target_val").captions
    assert again == shuffled and other != shuffled
    off = config_from_dict({"data": {"shuffle_captions": False, "split_seed": 0}})
    assert shuffle_captions(SimpleNamespace(captions=dict(captions)), off, "source").captions == captions
