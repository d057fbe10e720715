"""The served upsample + argmax (cell method) against the reference full upsample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from serving.postprocess import labels_and_confidence, reference_labels_and_confidence, upsample


def smooth_logits(k: int, h: int, w: int, seed: int, noise: float = 0.3) -> torch.Tensor:
    """[K, h, w] logits with regions (a coarse random field upsampled) plus per-pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, k, max(2, h // 8), max(2, w // 8), generator=g) * 5
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    return field + noise * torch.randn(k, h, w, generator=g)


def class_means(labels: np.ndarray, confidence: np.ndarray, k: int) -> np.ndarray:
    sums = np.bincount(labels.ravel(), confidence.ravel().astype(np.float64), minlength=k)
    return sums / np.maximum(np.bincount(labels.ravel(), minlength=k), 1)


def reference_margin(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    up = F.interpolate(logits[None].double(), size=size, mode="bilinear", align_corners=False)[0]
    top2 = up.topk(2, dim=0).values
    return (top2[0] - top2[1]).numpy()


@pytest.mark.parametrize(
    ("k", "h", "w", "size", "seed"),
    [
        (19, 64, 128, (512, 1024), 0),  # 8x, the served case
        (19, 37, 53, (300, 413), 1),  # non-integer scales
        (5, 8, 8, (64, 64), 2),
        (3, 10, 20, (40, 81), 3),
        (19, 1, 1, (16, 16), 4),  # one logit pixel
        (7, 16, 16, (20, 200), 5),  # upscaled along one side only
        (7, 16, 16, (200, 12), 7),  # upscaled along one side, downscaled along the other
        (4, 3, 5, (97, 31), 8),  # long runs of output pixels per cell (about 32 x 6)
    ],
)
def test_cell_method_gives_the_reference_labels(k, h, w, size, seed):
    logits = smooth_logits(k, h, w, seed)
    ref_labels, ref_conf = reference_labels_and_confidence(logits, size)
    labels, conf = labels_and_confidence(logits, size)
    assert labels.shape == size and labels.dtype == np.uint8 and conf.dtype == np.float16
    differ = labels != ref_labels
    # only float-rounding ties may differ (none do in practice)
    assert not differ.any() or reference_margin(logits, size)[differ].max() < 1e-4
    assert np.abs(class_means(labels, conf, k) - class_means(ref_labels, ref_conf, k)).max() < 0.02
    assert ((conf > 0) & (conf <= 1)).all()


def test_cell_method_is_exact_at_class_boundaries():
    """A two-class image with a boundary: labels equal, and the boundary cells' confidence is the
    reference's (only the unanimous cells' confidence is interpolated)."""
    logits = torch.zeros(2, 4, 4)
    logits[0, :, :2], logits[1, :, 2:] = 3.0, 3.0
    ref_labels, ref_conf = reference_labels_and_confidence(logits, (32, 32))
    labels, conf = labels_and_confidence(logits, (32, 32))
    assert (labels == ref_labels).all()
    boundary = slice(12, 20)  # output columns between logit columns 1 and 2
    np.testing.assert_allclose(conf[:, boundary], ref_conf[:, boundary], atol=2e-3)


def test_ties_fall_back_to_the_full_path():
    """Equal logits everywhere: every cell is a tie, the full path picks the first class as the
    reference does."""
    logits = torch.ones(4, 6, 6)
    labels, conf = labels_and_confidence(logits, (48, 48))
    ref_labels, _ = reference_labels_and_confidence(logits, (48, 48))
    assert (labels == ref_labels).all() and (labels == 0).all()
    np.testing.assert_allclose(conf.astype(np.float32), 0.25, atol=1e-3)


def test_small_outputs_use_the_reference():
    logits = smooth_logits(19, 64, 128, 6)
    for size in [(64, 128), (32, 64), (96, 160)]:
        labels, conf = labels_and_confidence(logits, size)
        ref_labels, ref_conf = reference_labels_and_confidence(logits, size)
        assert (labels == ref_labels).all() and (conf == ref_conf).all()


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"\[K, h, w\]"):
        labels_and_confidence(torch.zeros(1, 3, 4, 4), (8, 8))


def test_confidence_is_computed_only_when_asked_for():
    """A label PNG needs only the labels: `upsample` leaves the confidence (exp, sum, full-size
    resize) until first use, then keeps it; it equals the eager result."""
    logits = smooth_logits(19, 32, 64, 9)
    result = upsample(logits, (128, 256))
    assert not result.confidence_computed
    labels, conf = labels_and_confidence(logits, (128, 256))
    assert (result.labels == labels).all()
    assert result.confidence is result.confidence and (result.confidence == conf).all()


def test_boundary_cells_in_many_chunks_give_the_same_result(monkeypatch):
    """The full path's chunking (by output pixels) does not change labels or confidence."""
    import serving.postprocess as postprocess

    logits = smooth_logits(19, 16, 32, 10)
    labels, conf = labels_and_confidence(logits, (64, 128))
    monkeypatch.setattr(postprocess, "_FULL_PATH_PIXELS", 20)  # a cell of 4x4 pixels per chunk
    chunked_labels, chunked_conf = labels_and_confidence(logits, (64, 128))
    assert (chunked_labels == labels).all() and (chunked_conf == conf).all()
