"""Loaders on the real-frames fixture layout (../shared/fixtures/real/cityscapes), read in place."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import fixed_batch_losses
from training.augment import weak_augment
from training.config import RunConfig, config_from_dict
from training.data import CityscapesDataset, DatasetError
from training.data.build import build_target_train, build_val_dataset, stream_scale, target_split
from training.schema import DatasetBlock

REAL = Path("real/cityscapes")
SEQUENCE, UNLABELED = "leftImg8bit_sequence", "leftImg8bit_unlabeled"


@pytest.fixture(scope="module")
def real_root(fixtures_dir: Path) -> Path:
    root = fixtures_dir / REAL
    if not root.is_dir():
        pytest.skip(f"real-frames fixtures not found at {root}")
    return root


def link_layout(real_root: Path, root: Path, stems: dict[str, str]) -> Path:
    """Symlink some labeled train frames ({stem: city}) into a fresh official layout under `root`."""
    for stem, city in stems.items():
        for kind, suffix in (("leftImg8bit", "_leftImg8bit"), ("gtFine", "_gtFine_labelIds")):
            src = next((real_root / kind / "train" / city).glob(f"{stem}{suffix}.*"))
            dst = root / kind / "train" / city / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    return root


def test_labeled_frames_of_every_size_load_at_their_own_size(real_root: Path) -> None:
    train = CityscapesDataset(real_root, "train")
    assert len(train) == 8
    sizes = {}
    for i, name in enumerate(train.names):
        ex = train[i]
        assert ex["label"].shape == ex["image"].shape[:2]
        assert ex["label"].dtype == np.uint8 and ex["label"].max() <= 255
        sizes[name] = ex["image"].shape[:2]
    assert sizes["ulm_000088_000019"] == (256, 512)
    assert sizes["hanover_000000_027998"] == (320, 640)
    assert sizes["aachen_000000_000019"] == (1024, 2048)


def test_jpeg_val_frame(real_root: Path) -> None:
    val = CityscapesDataset(real_root, "val")
    assert val.names == [f"frankfurt_000000_{n}" for n in ("000576", "011810", "012868")]
    jpeg = val.samples[1]
    assert jpeg.image.suffix == ".jpg"
    ex = val[1]
    assert ex["image"].shape == (512, 1024, 3) and ex["label"].shape == (512, 1024)
    # the label is real annotation: road and car, not one value
    assert {0, 13} <= set(np.unique(ex["label"]).tolist())


def test_unlabeled_stream_reads_sequence_and_unlabeled_folders(real_root: Path) -> None:
    extra = CityscapesDataset(real_root, "train", labeled=False, names=[], extra_dirs=(SEQUENCE, UNLABELED))
    assert len(extra) == 170
    suffixes = {s.image.suffix for s in extra.samples}
    assert suffixes == {".png", ".jpg"}
    assert not any(s.label for s in extra.samples) and "label" not in extra[0]
    assert "aachen_000000_000019" not in extra.names  # the labeled frame is not in its own sequence
    with pytest.raises(ValueError, match="extra_dirs"):
        CityscapesDataset(real_root, "train", extra_dirs=(SEQUENCE,))


def test_config_builds_the_unlabeled_stream_with_resize(real_root: Path) -> None:
    target = {
        "type": "cityscapes",
        "root": str(real_root),
        "resize": [64, 128],
        "cache": True,
        "captions_train": None,
    }
    config = config_from_dict({"data": {"target": {**target, "unlabeled_dirs": [UNLABELED]}}})
    unlabeled = build_target_train(config, [], labeled=False)
    assert len(unlabeled) == 25 and unlabeled[3]["image"].shape == (64, 128, 3)
    labeled = build_target_train(config, ["ulm_000088_000019"], labeled=True)
    assert labeled[0]["label"].shape == (64, 128)


def test_holdout_frames_leave_training_and_become_the_eval_set(real_root: Path) -> None:
    def config(num_labeled: int, holdout: int) -> RunConfig:
        target = {"type": "cityscapes", "root": str(real_root), "unlabeled_dirs": [UNLABELED]}
        data = {"num_classes": 19, "num_labeled": num_labeled, "holdout": holdout, "split_seed": 0}
        data["use_captions"] = False
        return config_from_dict({"data": {**data, "target": target}})

    labeled, unlabeled = target_split(config(6, 2))
    held = [build_val_dataset(config(6, 2))[i]["name"] for i in range(2)]
    all_labeled, _ = target_split(config(8, 0))
    assert len(labeled) == 6 and len(held) == 2 and not set(held) & set(labeled + unlabeled)
    assert sorted(labeled + held) == sorted(all_labeled)
    # no holdout: the eval set is the val split (3 frankfurt frames)
    val = build_val_dataset(config(8, 0))
    assert len(val) == 3 and all(val[i]["name"].startswith("frankfurt") for i in range(3))
    with pytest.raises(DatasetError, match="holdout"):
        target_split(config(6, -1))


def test_missing_label_is_named(real_root: Path, tmp_path: Path) -> None:
    root = link_layout(
        real_root, tmp_path / "cs", {"ulm_000088_000019": "ulm", "hanover_000000_027998": "hanover"}
    )
    (root / "gtFine/train/hanover/hanover_000000_027998_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match=re.escape("hanover_000000_027998_gtFine_labelIds.png")):
        CityscapesDataset(root, "train")


def test_label_of_the_wrong_size_is_refused_when_built(real_root: Path, tmp_path: Path) -> None:
    root = link_layout(real_root, tmp_path / "cs", {"ulm_000088_000019": "ulm"})
    label = root / "gtFine/train/ulm/ulm_000088_000019_gtFine_labelIds.png"
    label.unlink()
    label.symlink_to(real_root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
    with pytest.raises(DatasetError, match=re.escape(label.name)) as info:
        CityscapesDataset(root, "train")
    assert "2048x1024" in str(info.value) and "512x256" in str(info.value)


def test_cache_returns_equal_items_that_callers_cannot_corrupt(real_root: Path) -> None:
    train = CityscapesDataset(real_root, "train", names=["ulm_000088_000019"], cache=True)
    first = train[0]
    first["image"] = None  # replacing a key of the returned dict leaves the cache alone
    again, fresh = train[0], CityscapesDataset(real_root, "train", names=["ulm_000088_000019"])[0]
    np.testing.assert_array_equal(again["image"], fresh["image"])
    np.testing.assert_array_equal(again["label"], fresh["label"])
    rng = np.random.default_rng(0)
    image, _, _ = weak_augment(again["image"], again["label"], (256, 512), rng, hflip_p=0.0)
    image[:] = 0  # the crop is a copy: writing it does not touch the cached frame
    assert train[0]["image"].any()


def test_random_scale_then_crop(real_root: Path) -> None:
    ex = CityscapesDataset(real_root, "train", names=["ulm_000088_000019"])[0]  # 512x256
    crops = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        image, label, valid = weak_augment(ex["image"], ex["label"], (200, 200), rng, 0.5, scale=(0.25, 0.5))
        assert image.shape == (200, 200, 3) and label.shape == valid.shape == (200, 200)
        # at most half size (128 high): the crop is padded below and padding is ignore/invalid
        assert not valid[150:].any() and (label[150:] == 255).all()
        crops.append(image)
    again, _, _ = weak_augment(
        ex["image"], ex["label"], (200, 200), np.random.default_rng(0), 0.5, (0.25, 0.5)
    )
    np.testing.assert_array_equal(again, crops[0])
    block = DatasetBlock("cityscapes", "frames")
    assert stream_scale(block) is None
    assert stream_scale(dataclasses.replace(block, scale=(0.5, 2.0))) == (0.5, 2.0)
    with pytest.raises(DatasetError, match="scale"):
        stream_scale(dataclasses.replace(block, scale=(2.0, 1.0)))


def test_short_real_target_run_lowers_the_loss(real_root: Path, tmp_path: Path) -> None:
    """The real rows' config and model (semidavil-small-cnn under the committed mini-VLP text
    tower) on the real frames (tiny crops, no source: CI has no synthetic data): trainer steps on
    one fixed batch of real crops lower the supervised loss; CT runs on real frames."""
    from training.config import load_config
    from training.distributed import DistInfo
    from training.trainer import Trainer

    overrides = [
        f"data.target.root={real_root}",
        "data.target.resize=[128,256]",
        "data.crop=[64,64]",
        "data.batch.labeled=2",
        "data.batch.unlabeled=1",
        "method.streams=[labeled,unlabeled]",
        "method.dyce=false",
        "method.caption_dropout=0.0",
        "method.threshold=0.0",  # every pixel counts for the consistency loss from step 0
        f"output_dir={tmp_path}",
    ]
    cfg = load_config(Path(__file__).parents[1] / "training/configs/real_full.yaml", overrides)
    trainer = Trainer(cfg, tmp_path, DistInfo(), progress=False)
    assert len(trainer.streams["labeled"]) == 8 and len(trainer.streams["unlabeled"]) == 170
    assert next(trainer._loaders(0, 1)["labeled"])["image"].shape == (2, 3, 64, 64)
    losses, logs = fixed_batch_losses(trainer, 40)
    assert logs["coverage"] > 0 and np.isfinite(logs["ct"])
    # from ln(19) = 2.94 at random init; a clear fall (measured 0.54x after 40 steps)
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses
