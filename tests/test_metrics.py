"""ConfusionMatrix: unit behaviour, and agreement with the official cityscapesscripts evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
from PIL import Image

from model.class_sets import CITYSCAPES_CLASSES, label_id_lut, train_id_to_label_id_lut
from training.evaluation import ConfusionMatrix

LABELS = Path("pix2pixHD/datasets/cityscapes")


# --------------------------------------------------------------------------- unit behaviour


def test_small_matrix_by_hand() -> None:
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 255]])  # 255 is allowed where the target is ignored
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    # rows = gt, cols = pred: gt0 -> {0: 1, 1: 1}; gt1 -> {1: 2}; gt2 -> {1: 1}; class 3 never seen
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 1] = 1, 1, 2, 1
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.matrix.dtype == np.int64
    # IoU_0 = 1 / (2 + 1 - 1) = 1/2; IoU_1 = 2 / (2 + 4 - 2) = 1/2; IoU_2 = 0 / (1 + 0 - 0) = 0; IoU_3 NaN
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [0.5, 0.5, 0.0])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx(100 / 3)
    assert cm.miou(classes=[0, 1]) == pytest.approx(50.0)
    assert math.isnan(cm.miou(classes=[3]))


def test_whole_set_accumulation_not_per_image_mean() -> None:
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]))  # image 1: IoU (3/4, 0)
    cm.update(np.array([1]), np.array([1]))  # image 2: IoU (nan, 1)
    # whole set: class 0: 3 / 4, class 1: 1 / (2 + 1 - 1) = 1/2
    np.testing.assert_allclose(cm.iou(), [0.75, 0.5])
    assert cm.miou() == pytest.approx(62.5)


def test_validation_errors() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="predictions"):
        cm.update(np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="predictions"):
        cm.update(np.array([-1, 0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="predictions"):
        cm.update(torch.tensor([0, 255]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target"):
        cm.update(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros(4, int))
    with pytest.raises(TypeError, match="integer"):
        cm.update(np.zeros(4), np.zeros(4, int))
    assert cm.matrix.sum() == 0  # failed updates add nothing
    cm.update(np.array([5, 9]), np.array([255, 255]))  # all ignored: nothing counted, no error
    assert cm.matrix.sum() == 0


def test_torch_and_numpy_inputs_agree() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 19, (2, 64, 64)).astype(np.uint8)
    target[:, :10] = 255
    pred = rng.integers(0, 19, (2, 64, 64)).astype(np.uint8)
    a, b, c = ConfusionMatrix(19), ConfusionMatrix(19), ConfusionMatrix(19)
    a.update(pred, target)
    b.update(torch.from_numpy(pred).long(), torch.from_numpy(target))
    c.update(torch.from_numpy(pred), target)  # mixed: counted with torch
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.matrix, c.matrix)
    assert a.matrix.sum() == (target != 255).sum()
    a.reset()
    assert a.matrix.sum() == 0


def test_markdown_and_json() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    names = ["road", "sky", "car"]
    table = cm.to_markdown(names)
    assert table.splitlines()[0] == "| class | IoU (%) |"
    assert "| road | 50.00 |" in table and "| sky | 50.00 |" in table and "| car | n/a |" in table
    assert table.splitlines()[-1] == "| **mIoU** | **50.00** |"
    data = json.loads(json.dumps(cm.to_json(names)))
    assert data["iou"] == {"road": 50.0, "sky": 50.0, "car": None}
    assert data["miou"] == 50.0 and data["num_pixels"] == 3
    assert data["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="class names"):
        cm.to_markdown(["road"])


# --------------------------------------------------------------------------- official script


@pytest.fixture(scope="module")
def gt_files(fixtures_dir: Path) -> dict[str, Path]:
    files = sorted((fixtures_dir / LABELS / "train_label").glob("*_gtFine_labelIds.png"))
    files += sorted((fixtures_dir / LABELS / "test_label").glob("*_gtFine_labelIds.png"))
    assert len(files) == 20
    return {p.name.replace("_gtFine_labelIds.png", ""): p for p in files}


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return label_id_lut()[label_ids]


def read_train_ids(path: Path) -> np.ndarray:
    return to_train_ids(np.asarray(Image.open(path)))


def fill_ignored(pred: np.ndarray, value: int) -> np.ndarray:
    """Predictions are always a class: replace 255 (copied from an ignored GT) by `value`."""
    return np.where(pred == 255, value, pred).astype(np.uint8)


def swap_classes(gt: np.ndarray, _: dict[str, Path]) -> np.ndarray:
    pred = gt.copy()
    left = np.zeros_like(gt, dtype=bool)
    left[:, : gt.shape[1] // 2] = True
    pred[left & (gt == 13)] = 14  # car -> truck in the left half
    pred[gt == 11] = 12  # person -> rider everywhere
    pred[gt == 10] = 8  # sky -> vegetation everywhere
    return fill_ignored(pred, 0)


def shift_map(gt: np.ndarray, _: dict[str, Path]) -> np.ndarray:
    return fill_ignored(np.roll(gt, (23, -57), axis=(0, 1)), 2)


def other_frame(_: np.ndarray, files: dict[str, Path]) -> np.ndarray:
    return fill_ignored(read_train_ids(files["frankfurt_000000_001236"]), 8)


def noise_10_percent(gt: np.ndarray, _: dict[str, Path]) -> np.ndarray:
    rng = np.random.default_rng(0)
    pred = gt.copy()
    noisy = rng.random(gt.shape) < 0.10
    pred[noisy] = rng.integers(0, 19, int(noisy.sum()))
    return fill_ignored(pred, 5)


def exact(gt: np.ndarray, _: dict[str, Path]) -> np.ndarray:
    return fill_ignored(gt, 0)


Corruption = Callable[[np.ndarray, dict[str, Path]], np.ndarray]
SCENARIOS: dict[str, list[tuple[str, Corruption]]] = {
    "exact": [("frankfurt_000001_047552", exact)],
    "swap": [("aachen_000000_000019", swap_classes)],
    "shift": [("aachen_000001_000019", shift_map)],
    "other_frame": [("frankfurt_000000_000576", other_frame)],
    "noise": [("frankfurt_000001_013710", noise_10_percent)],
    "all_four": [
        ("aachen_000000_000019", swap_classes),
        ("aachen_000001_000019", shift_map),
        ("frankfurt_000000_000576", other_frame),
        ("frankfurt_000001_013710", noise_10_percent),
    ],
}


def official_scores(
    monkeypatch: pytest.MonkeyPatch, predictions: list[Path], ground_truths: list[Path]
) -> dict:
    """Run the installed official evaluation (pure-Python path here) on explicit file lists."""
    for name, value in {
        "evalInstLevelScore": False,
        "evalPixelAccuracy": False,
        "JSONOutput": False,
        "quiet": True,
        "colorized": False,
        "evalLabels": [],
    }.items():
        monkeypatch.setattr(official.args, name, value)
    return official.evaluateImgLists(
        [str(p) for p in predictions], [str(p) for p in ground_truths], official.args
    )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_matches_official_cityscapes_evaluation(
    scenario: str, gt_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cm = ConfusionMatrix(19)
    predictions, ground_truths = [], []
    for stem, corrupt in SCENARIOS[scenario]:
        gt = read_train_ids(gt_files[stem])
        pred = corrupt(gt, gt_files)
        assert pred.shape == (1024, 2048) and pred.max() < 19
        cm.update(pred, gt)
        path = tmp_path / f"{stem}_pred.png"
        Image.fromarray(train_id_to_label_id_lut()[pred], mode="L").save(path)
        predictions.append(path)
        ground_truths.append(gt_files[stem])  # read in place from the shared fixtures

    result = official_scores(monkeypatch, predictions, ground_truths)
    ours = cm.iou()
    theirs = np.array([result["classScores"][name] for name in CITYSCAPES_CLASSES])
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours[~np.isnan(ours)], theirs[~np.isnan(theirs)], rtol=0, atol=1e-9)
    assert cm.miou() / 100 == pytest.approx(result["averageScoreClasses"], abs=1e-9)

    present = ours[~np.isnan(ours)]
    if scenario == "exact":
        assert np.all(present == 1.0) and np.isnan(ours).any()  # absent classes dropped from the mean
    else:
        assert 0.05 < cm.miou() / 100 < 0.99  # a non-trivial confusion
    if scenario == "other_frame":
        assert (present == 0).any()  # predicted but absent from GT: IoU 0, kept in the mean
    if scenario == "all_four":
        per_image = [_single_miou(gt_files, stem, fn) for stem, fn in SCENARIOS[scenario]]
        assert abs(cm.miou() - np.mean(per_image)) > 0.5  # whole-set IoU, not a per-image mean


def _single_miou(files: dict[str, Path], stem: str, corrupt: Corruption) -> float:
    gt = read_train_ids(files[stem])
    cm = ConfusionMatrix(19)
    cm.update(corrupt(gt, files), gt)
    return cm.miou()


def test_synthia_reports_carry_miou13_beside_miou16(tmp_path):
    """mIoU13 = the 16-class mean without wall, fence and pole, hand-computed on a small case."""
    from model.class_sets import CLASS_SETS
    from training.evaluation.evaluate import write_report

    names = list(CLASS_SETS["synthia16"].names)
    cm = ConfusionMatrix(16)
    target = np.arange(16).repeat(4)  # 4 pixels of every class
    pred = target.copy()
    pred[: 4 * 6] = np.where(np.arange(24) % 2 == 0, pred[:24], 0)  # classes 0..5: half right (0 absorbs)
    cm.update(pred, target)
    iou = cm.iou()
    keep = [i for i, n in enumerate(names) if n not in ("wall", "fence", "pole")]
    assert len(keep) == 13
    report = write_report(cm, names, tmp_path, "eval")
    assert report["miou"] == pytest.approx(100 * iou.mean())
    assert report["miou13"] == pytest.approx(100 * iou[keep].mean())
    assert report["miou13"] != pytest.approx(report["miou"])
    assert "mIoU13" in (tmp_path / "eval.md").read_text()
    cityscapes = write_report(ConfusionMatrix(19), list(CLASS_SETS["cityscapes"].names), tmp_path, "cs")
    assert "miou13" not in cityscapes
