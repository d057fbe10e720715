"""The agreement gate: a candidate backend must reproduce eager-fp32 argmax labels before it serves.

Every compiled artefact (torch.compile, ONNX, TensorRT) is compared with the eager fp32 reference on
the same inputs at build time and refused (`AgreementError`) if its per-pixel argmax agreement is
below the threshold (default 0.995, the issue's rule).

Near-ties: where the reference's top-2 logit margin is tiny (random weights give many such
pixels), either label is "right" and low-precision backends legitimately flip them. `margin` > 0
restricts the gate to pixels whose reference margin exceeds it; the report always carries the
agreement over all pixels too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from serving.backends.base import Backend, Inputs, ShapeProfile

DEFAULT_THRESHOLD = 0.995
RANDOM_WEIGHTS_MARGIN = 0.01  # random logits are near-ties almost everywhere: gate only clear pixels


def default_margin(random_weights: bool) -> float:
    """The gate's top-2 margin: 0 (every pixel) for trained weights, RANDOM_WEIGHTS_MARGIN otherwise."""
    return RANDOM_WEIGHTS_MARGIN if random_weights else 0.0


@dataclass(frozen=True)
class AgreementReport:
    """Candidate vs reference logits over all inputs.

    argmax_agreement: fraction of compared pixels (reference top-2 margin > margin) with the same
    argmax; argmax_agreement_all: the same over every pixel; max/mean_abs_error: logits difference
    (NaN if the candidate produced NaN/inf); passed: argmax_agreement >= threshold and errors finite.
    """

    candidate: str
    reference: str
    argmax_agreement: float
    argmax_agreement_all: float
    max_abs_error: float
    mean_abs_error: float
    num_pixels: int
    num_compared: int
    threshold: float
    margin: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.candidate} vs {self.reference}: argmax agreement {self.argmax_agreement:.4%} "
            f"(threshold {self.threshold:.2%}, margin {self.margin}, {self.num_compared}/{self.num_pixels} "
            f"pixels; all pixels {self.argmax_agreement_all:.4%}), max abs error {self.max_abs_error:.3g}, "
            f"mean abs error {self.mean_abs_error:.3g}"
        )


class AgreementError(RuntimeError):
    """A candidate backend disagrees with eager fp32; the message names the numbers."""

    def __init__(self, report: AgreementReport) -> None:
        super().__init__(f"refused: {report.summary()}")
        self.report = report


def _top2_margin(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] < 2:
        return torch.full_like(logits[:, 0], math.inf)
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def compare_logits(
    candidate: Sequence[torch.Tensor],
    reference: Sequence[torch.Tensor],
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = 0.0,
    names: tuple[str, str] = ("candidate", "reference"),
) -> AgreementReport:
    """Aggregate agreement over pairs of logits [B, K, H, W] (each pair of equal shape)."""
    same = same_all = compared = total = 0
    max_err, sum_err, count = 0.0, 0.0, 0
    for cand, ref in zip(candidate, reference, strict=True):
        cand, ref = cand.detach().float().cpu(), ref.detach().float().cpu()
        if cand.shape != ref.shape:
            raise ValueError(f"logits shapes differ: {tuple(cand.shape)} vs {tuple(ref.shape)}")
        equal = cand.argmax(1) == ref.argmax(1)
        keep = _top2_margin(ref) > margin
        same_all += int(equal.sum())
        same += int((equal & keep).sum())
        compared += int(keep.sum())
        total += equal.numel()
        err = (cand - ref).abs()
        max_err = max(max_err, float(err.max()))
        sum_err += float(err.double().sum())
        count += err.numel()
    agreement = same / compared if compared else 1.0
    mean_err = sum_err / max(count, 1)
    finite = math.isfinite(max_err) and math.isfinite(mean_err)
    return AgreementReport(
        candidate=names[0],
        reference=names[1],
        argmax_agreement=agreement,
        argmax_agreement_all=same_all / max(total, 1),
        max_abs_error=max_err,
        mean_abs_error=mean_err,
        num_pixels=total,
        num_compared=compared,
        threshold=threshold,
        margin=margin,
        passed=finite and agreement >= threshold,
    )


def check_agreement(
    candidate: Backend,
    reference: Backend,
    inputs: Sequence[Inputs],
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = 0.0,
    raise_on_failure: bool = True,
) -> AgreementReport:
    """Run both backends on every input batch and compare; AgreementError if the gate fails."""
    if not inputs:
        raise ValueError("check_agreement needs at least one input batch")
    cand = [candidate(*batch) for batch in inputs]
    ref = [reference(*batch) for batch in inputs]
    report = compare_logits(cand, ref, threshold, margin, (candidate.name, reference.name))
    if raise_on_failure and not report.passed:
        raise AgreementError(report)
    return report


def smooth_images(batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Image-like CLIP-normalised inputs: low-frequency colour fields plus a little noise."""
    coarse = torch.randn(batch, 3, max(height // 16, 2), max(width // 16, 2), generator=generator)
    images = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return images + 0.1 * torch.randn(batch, 3, height, width, generator=generator)


def synthetic_inputs(
    profile: ShapeProfile,
    embed_dim: int,
    class_embeds: torch.Tensor | None = None,
    batches: Sequence[int] = (1, 3),
    seed: int = 0,
) -> list[Inputs]:
    """Deterministic agreement inputs: one tuple per batch size (clipped to max_batch).

    Captions have varied lengths, and the last image of every batch has none (all-False mask), so
    the empty-caption path is checked too. `class_embeds` [K, c] default: random unit vectors.
    """
    g = torch.Generator().manual_seed(seed)
    length, k = profile.caption_length, profile.num_classes
    if class_embeds is None:
        class_embeds = F.normalize(torch.randn(k, embed_dim, generator=g), dim=-1)
    out: list[Inputs] = []
    for b in sorted({min(max(1, b), profile.max_batch) for b in batches}):
        images = smooth_images(b, profile.height, profile.width, g)
        lengths = torch.randint(2, min(length, 20) + 1, (b,), generator=g)
        if b > 1:
            lengths[-1] = 0
        mask = torch.arange(length)[None] < lengths[:, None]
        feats = F.normalize(torch.randn(b, length, embed_dim, generator=g), dim=-1) * mask[..., None]
        out.append((images, feats, mask, class_embeds))
    return out


def images_to_inputs(
    images: Sequence[np.ndarray],
    caption_feats: torch.Tensor,
    caption_mask: torch.Tensor,
    class_embeds: torch.Tensor,
) -> Inputs:
    """Real images (uint8 [H, W, 3], already at the working size) -> one input tuple."""
    from model.preprocess import numpy_to_model_input

    return numpy_to_model_input(list(images)), caption_feats, caption_mask, class_embeds
