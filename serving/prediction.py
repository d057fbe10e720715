"""What the predictor takes and returns: requests, caption provenance and predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from model.captioner import SOURCE_NONE as SOURCE_NONE  # re-exported: one definition of the sources
from model.captioner import CaptionerLike as CaptionerLike  # re-exported for serving's modules
from model.class_sets import ClassSet
from serving.decode import DecodedImage
from serving.postprocess import Upsampled, class_stats

# caption sources: the captioner's own (captioner, cache, none) plus the two the predictor adds
SOURCE_CALLER = "caller"
SOURCE_FAILED = "captioner_failed"

ImageInput = bytes | bytearray | memoryview | np.ndarray | Image.Image | DecodedImage


@dataclass(frozen=True)
class PredictRequest:
    """One image and its options (None: the predictor's defaults)."""

    image: ImageInput
    caption: str | None = None
    classes: str | Sequence[str] | None = None
    use_captioner: bool = True


@dataclass(frozen=True)
class CaptionInfo:
    """The caption used and its source: caller, captioner, cache, none, or captioner_failed (+ error)."""

    text: str
    source: str
    error: str | None = None


@dataclass
class Prediction:
    """The result for one image.

    upsampled: the logits at the input size, whose `label_map` (uint8 [H, W] class indices, train
    ids for the named sets) is computed and whose `confidence` (float16 [H, W], the max softmax
    probability) is computed on first use (a label PNG never needs it); rgb: the decoded input, uint8
    [H, W, 3]; timings_ms: decode, caption, text, preprocess, forward, postprocess, total (stages
    shared by a batch report the batch's time); backend/precision: what actually ran.
    """

    upsampled: Upsampled
    class_set: ClassSet
    caption: CaptionInfo
    timings_ms: dict[str, float]
    backend: str
    precision: str
    model_name: str
    checkpoint_sha256: str
    random_weights: bool
    rgb: np.ndarray
    image_format: str
    original_mode: str
    working_size: tuple[int, int]
    batch_size: int = 1
    lane: int = 0  # 0: every core; 1..n: a one-thread CPU stream (serving/compute.py)
    backend_note: str | None = None
    zero_shot: bool = False
    open_vocabulary: bool = True
    warnings: tuple[str, ...] = ()

    @property
    def label_map(self) -> np.ndarray:
        return self.upsampled.labels

    @property
    def confidence(self) -> np.ndarray:
        return self.upsampled.confidence

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.label_map.shape[0]), int(self.label_map.shape[1])

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_set.names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.class_set.palette

    def stats(self, include_absent: bool = False) -> list[dict[str, Any]]:
        return class_stats(self.label_map, self.confidence, self.class_set, include_absent)


def per_class_stats(prediction: Prediction, include_absent: bool = False) -> list[dict[str, Any]]:
    """[{class, index, pixel_fraction, mean_confidence}] of a prediction (fractions sum to 1)."""
    return prediction.stats(include_absent)
