"""Dynamic Cross-Entropy (DyCE), docs/method.md section 2.3.

Over the valid pixels P (target != ignore_index), S = |P|, with per-pixel CE l_i = -log p_{i,y_i}:

    H   = the ceil(h * S) pixels of P with the largest l_i       (hard-pixel mining), f_H = |H|
    f_c = number of pixels of class c in H
    L   = -(1 / f_H^omega) * sum_c (1 / f_c^(1 - omega)) * sum_{i in H, y_i = c} log p_{i,c}

H, f_c and f_H are constants (no gradient through the selection or the counts), so for i in H
with label c: dL/dz_{i,k} = (p_{i,k} - y_{i,k}) / (f_H^omega * f_c^(1 - omega)), and 0 outside H.
omega = 1 is OHEM (mean CE over H); h = 1, omega = 1 is plain mean cross-entropy.

L is a sum over the classes present in H (L = sum_c (f_c / f_H)^omega * mean CE of class c in H), so
its magnitude grows like sqrt(#classes) for omega = 0.5. `normalize=True` (our option, not the
paper's) divides by sum_c (f_c / f_H)^omega, a constant per batch: the class weights keep their
ratios and L becomes a weighted mean of per-class CEs, on the scale of the consistency loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ceil(h * S) is taken with this absolute slack so that float noise (0.07 * 100 = 7.000000000000001)
# does not add a pixel.
_CEIL_SLACK = 1e-6


def num_hard_pixels(num_valid: int, hard_fraction: float) -> int:
    """|H| = ceil(hard_fraction * num_valid), within [1, num_valid] (0 if there is no valid pixel)."""
    if num_valid == 0:
        return 0
    return min(num_valid, max(1, math.ceil(hard_fraction * num_valid - _CEIL_SLACK)))


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _check_args(hard_fraction: float, omega: float) -> None:
    if not 0.0 < hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in (0, 1], got {hard_fraction}")
    if not 0.0 <= omega <= 1.0:
        raise ValueError(f"omega must be in [0, 1], got {omega}")


def _check_inputs(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or target.ndim != 3:
        raise ValueError(f"expected logits [B,K,H,W] and target [B,H,W], got {logits.shape}, {target.shape}")
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor, got {target.dtype}")


def dyce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    hard_fraction: float = 0.2,
    omega: float = 0.5,
    ignore_index: int = 255,
    normalize: bool = False,
) -> torch.Tensor:
    """DyCE loss (see module docstring).

    Args:
        logits: [B, K, H, W] float; fp16/bf16 (e.g. under autocast) is upcast so CE is computed
            in fp32 (fp64 stays fp64).
        target: [B, H, W] integer class ids in [0, K) or `ignore_index`.
        hard_fraction: h, the fraction of valid pixels mined as H, in (0, 1].
        omega: the volume/class weighting exponent, in [0, 1].
        ignore_index: label of pixels that take no part in the loss.
        normalize: divide by sum_c (f_c / f_H)^omega (no gradient through it), see module docstring.

    Returns:
        A float32 (float64 for fp64 logits) scalar. With no valid pixel it is 0 and still
        attached to `logits` (zero gradient).
    """
    _check_args(hard_fraction, omega)
    _check_inputs(logits, target)
    num_classes = logits.shape[1]
    flat_target = target.reshape(-1).long()
    valid_idx = torch.nonzero(flat_target != ignore_index).squeeze(1)
    num_valid = valid_idx.numel()
    if num_valid == 0:
        return _at_least_fp32(logits).reshape(-1)[:0].sum()
    valid_target = flat_target[valid_idx]
    if int(valid_target.min()) < 0 or int(valid_target.max()) >= num_classes:
        raise ValueError(f"target has ids outside [0, {num_classes}) that are not ignore_index")

    # Per-pixel CE in fp32 (fp64 kept), [B, H, W] with ignored pixels 0.
    with torch.autocast(device_type=logits.device.type, enabled=False):
        pixel_ce = F.cross_entropy(
            _at_least_fp32(logits), target.long(), ignore_index=ignore_index, reduction="none"
        )
    valid_ce = pixel_ce.reshape(-1)[valid_idx]

    num_hard = num_hard_pixels(num_valid, hard_fraction)
    hard_pos = torch.topk(valid_ce.detach(), num_hard, sorted=False).indices
    hard_ce = valid_ce[hard_pos]
    hard_class = valid_target[hard_pos]

    class_count = torch.bincount(hard_class, minlength=num_classes).to(hard_ce.dtype)  # f_c
    weight = class_count[hard_class].pow(-(1.0 - omega)) * (float(num_hard) ** -omega)
    loss = (weight * hard_ce).sum()
    if normalize:
        present = class_count[class_count > 0]
        loss = loss / (present / float(num_hard)).pow(omega).sum()
    return loss


class DyCELoss(nn.Module):
    """`dyce_loss` as a module: `DyCELoss(h, omega, ignore_index)(logits[B,K,H,W], target[B,H,W])`."""

    def __init__(
        self, hard_fraction: float = 0.2, omega: float = 0.5, ignore_index: int = 255, normalize: bool = False
    ) -> None:
        super().__init__()
        _check_args(hard_fraction, omega)
        self.hard_fraction = hard_fraction
        self.omega = omega
        self.ignore_index = ignore_index
        self.normalize = normalize

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dyce_loss(logits, target, self.hard_fraction, self.omega, self.ignore_index, self.normalize)

    def extra_repr(self) -> str:
        return (
            f"hard_fraction={self.hard_fraction}, omega={self.omega}, ignore_index={self.ignore_index}, "
            f"normalize={self.normalize}"
        )
