"""DyCE loss (docs/method.md 2.3): hand-computed values, limits (OHEM, plain CE), ignore, gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.losses import DyCELoss, dyce_loss
from training.losses.dyce import num_hard_pixels

IGNORE = 255


def tiny_example() -> tuple[torch.Tensor, torch.Tensor]:
    """1x3x2x2 logits = log(p), so the softmax is exactly p (row-major pixels a, b, c, d):

    a: p = (0.5, 0.25, 0.25), y = 0 -> CE = ln 2    = 0.693
    b: p = (0.5, 0.25, 0.25), y = 1 -> CE = ln 4    = 1.386
    c: p = (0.1, 0.2, 0.7),   y = 0 -> CE = ln 10   = 2.303
    d: p = (0.8, 0.1, 0.1),   y = 0 -> CE = ln 1.25 = 0.223
    """
    probs = torch.tensor(
        [[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [0.8, 0.1, 0.1]], dtype=torch.float64
    )
    logits = probs.log().T.reshape(1, 3, 2, 2).contiguous()
    target = torch.tensor([[[0, 1], [0, 0]]])
    return logits, target


def test_hand_computed_all_valid() -> None:
    # S = 4, h = 0.75 -> |H| = ceil(3) = 3: the hardest are c (ln 10), b (ln 4), a (ln 2); d is out.
    # f_H = 3; in H class 0 has f_0 = 2 (a, c), class 1 has f_1 = 1 (b). omega = 0.5:
    # L = 3^-0.5 * [ 2^-0.5 * (ln 10 + ln 2) + 1^-0.5 * ln 4 ]
    #   = (2.99573 / 1.41421 + 1.38629) / 1.73205 = (2.11829 + 1.38629) / 1.73205 = 2.02338
    logits, target = tiny_example()
    expected = 3**-0.5 * (2**-0.5 * (math.log(10) + math.log(2)) + math.log(4))
    assert expected == pytest.approx(2.02338, abs=1e-5)
    loss = dyce_loss(logits, target, hard_fraction=0.75, omega=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_with_ignore() -> None:
    # d ignored: S = 3, h = 0.5 -> |H| = ceil(1.5) = 2: c (ln 10, class 0) and b (ln 4, class 1).
    # f_H = 2, f_0 = f_1 = 1: L = 2^-0.5 * (ln 10 + ln 4) = ln 40 / sqrt 2 = 3.68888 / 1.41421 = 2.60843
    logits, target = tiny_example()
    target[0, 1, 1] = IGNORE
    expected = math.log(40) / math.sqrt(2)
    assert expected == pytest.approx(2.60843, abs=1e-5)
    assert dyce_loss(logits, target, hard_fraction=0.5, omega=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_omega_zero() -> None:
    # h = 1: H = all 4 pixels; omega = 0 -> L = sum_c mean CE of class c in H
    #   = (ln 2 + ln 10 + ln 1.25) / 3 + ln 4 / 1 = ln 25 / 3 + ln 4 = 1.07296 + 1.38629 = 2.45925
    logits, target = tiny_example()
    expected = math.log(25) / 3 + math.log(4)
    assert expected == pytest.approx(2.45925, abs=1e-5)
    assert dyce_loss(logits, target, hard_fraction=1.0, omega=0.0).item() == pytest.approx(expected, rel=1e-6)


def random_batch(seed: int = 0, ignore_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (2, 6, 7), generator=gen)
    target[torch.rand(2, 6, 7, generator=gen) < ignore_fraction] = IGNORE
    return logits, target


def reference_selection(
    logits: torch.Tensor, target: torch.Tensor, h: float
) -> tuple[np.ndarray, np.ndarray]:
    """Independent numpy version: per-pixel CE over all pixels (NaN at ignored) and the mask of H."""
    logp = torch.log_softmax(logits, dim=1).detach().numpy()
    tgt = target.numpy()
    ce = np.full(tgt.shape, np.nan)
    for b, i, j in zip(*np.nonzero(tgt != IGNORE)):
        ce[b, i, j] = -logp[b, tgt[b, i, j], i, j]
    valid = np.flatnonzero(~np.isnan(ce))
    k = math.ceil(round(h * valid.size, 9))
    order = valid[np.argsort(-ce.reshape(-1)[valid], kind="stable")]
    hard = np.zeros(ce.size, dtype=bool)
    hard[order[:k]] = True
    return ce, hard.reshape(ce.shape)


@pytest.mark.parametrize("h", [0.1, 0.3, 1.0])
def test_omega_one_is_ohem(h: float) -> None:
    logits, target = random_batch(1)
    ce, hard = reference_selection(logits, target, h)
    assert dyce_loss(logits, target, h, omega=1.0).item() == pytest.approx(ce[hard].mean(), rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_full_fraction_and_omega_one_is_cross_entropy(dtype: torch.dtype) -> None:
    logits, target = random_batch(2)
    logits = logits.to(dtype)
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(dyce_loss(logits, target, hard_fraction=1.0, omega=1.0), expected)


def test_ignored_pixels_contribute_nothing() -> None:
    logits, target = random_batch(3, ignore_fraction=0.4)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    changed = logits.clone()
    changed[ignored] = torch.randn(int(ignored.sum()), dtype=torch.float64) * 100

    grads, losses = [], []
    for x in (logits, changed):
        x = x.clone().requires_grad_(True)
        loss = dyce_loss(x, target, hard_fraction=0.3, omega=0.5)
        loss.backward()
        grads.append(x.grad)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.all(grads[0][ignored] == 0)
    assert grads[0][~ignored].abs().sum() > 0


@pytest.mark.parametrize(("h", "omega"), [(0.3, 0.5), (0.2, 0.3), (1.0, 0.7)])
def test_gradient_matches_closed_form(h: float, omega: float) -> None:
    logits, target = random_batch(4)
    x = logits.clone().requires_grad_(True)
    dyce_loss(x, target, hard_fraction=h, omega=omega).backward()

    _, hard = reference_selection(logits, target, h)
    f_h = hard.sum()
    f_c = np.bincount(target.numpy()[hard], minlength=5)
    probs = torch.softmax(logits, dim=1).numpy()
    expected = np.zeros_like(probs)
    for b, i, j in zip(*np.nonzero(hard)):
        c = target[b, i, j].item()
        onehot = np.eye(5)[c]
        expected[b, :, i, j] = (probs[b, :, i, j] - onehot) / (f_h**omega * f_c[c] ** (1 - omega))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
    outside = ~hard[:, None].repeat(5, axis=1)
    assert np.all(x.grad.numpy()[outside] == 0)


def test_no_valid_pixel_gives_attached_zero() -> None:
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = dyce_loss(logits, torch.full((2, 3, 3), IGNORE))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_bf16_autocast_computes_in_fp32() -> None:
    torch.manual_seed(0)
    head = torch.nn.Conv2d(8, 6, 1)
    features = torch.randn(2, 8, 16, 16)
    target = torch.randint(0, 6, (2, 16, 16))
    target[:, :3] = IGNORE
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(features)
        assert logits.dtype == torch.bfloat16
        loss = dyce_loss(logits, target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, dyce_loss(logits.detach().float(), target))
    reference = dyce_loss(head(features), target)
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)
    loss.backward()
    assert torch.isfinite(head.weight.grad).all() and head.weight.grad.abs().sum() > 0


def test_hard_pixel_count() -> None:
    assert num_hard_pixels(100, 0.07) == 7  # 0.07 * 100 = 7.000000000000001 in floating point
    assert num_hard_pixels(30, 0.1) == 3
    assert num_hard_pixels(10, 0.2) == 2
    assert num_hard_pixels(3, 0.5) == 2
    assert num_hard_pixels(7, 0.01) == 1
    assert num_hard_pixels(7, 1.0) == 7
    assert num_hard_pixels(0, 0.2) == 0


def test_module_and_argument_checks() -> None:
    logits, target = random_batch(5)
    module = DyCELoss(hard_fraction=0.25, omega=0.4)
    assert module(logits, target).item() == dyce_loss(logits, target, 0.25, 0.4).item()
    assert "omega=0.4" in repr(module)
    with pytest.raises(ValueError, match="hard_fraction"):
        DyCELoss(hard_fraction=0.0)
    with pytest.raises(ValueError, match="omega"):
        dyce_loss(logits, target, omega=1.5)
    with pytest.raises(ValueError, match="outside"):
        dyce_loss(logits, torch.full_like(target, 7))
    with pytest.raises(ValueError, match="do not match"):
        dyce_loss(logits, target[:, :3])
    with pytest.raises(TypeError, match="integer"):
        dyce_loss(logits, target.float())


def test_normalized_is_weighted_mean_of_class_ces() -> None:
    # Same H as test_hand_computed_all_valid (a, b, c): class weights (f_c / f_H)^0.5 = (2/3)^0.5, (1/3)^0.5;
    # mean CE of class 0 in H = (ln 10 + ln 2) / 2, of class 1 = ln 4.
    # normalize: L = sum_c w_c * mean_c / sum_c w_c.
    logits, target = tiny_example()
    w0, w1 = (2 / 3) ** 0.5, (1 / 3) ** 0.5
    expected = (w0 * (math.log(10) + math.log(2)) / 2 + w1 * math.log(4)) / (w0 + w1)
    got = dyce_loss(logits, target, hard_fraction=0.75, omega=0.5, normalize=True)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    raw = dyce_loss(logits, target, hard_fraction=0.75, omega=0.5)
    assert got.item() == pytest.approx(raw.item() / (w0 + w1), rel=1e-12)


def test_normalized_omega_one_is_unchanged_ohem() -> None:
    # omega = 1: sum_c f_c / f_H = 1, so normalising changes nothing.
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    target = torch.randint(0, 4, (2, 5, 6))
    a = dyce_loss(logits, target, 0.3, omega=1.0)
    b = dyce_loss(logits, target, 0.3, omega=1.0, normalize=True)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("with_ce", [False, True])
def test_trainer_supervised_loss_warmup_and_dyce_with_ce(with_ce: bool) -> None:
    """Plain CE before the warm-up ends; then DyCE, plus CE over every pixel with dyce_with_ce."""
    from types import SimpleNamespace

    from training.trainer import Trainer

    method = {"dyce": True, "dyce_warmup_iters": 10, "dyce_h": 0.2, "dyce_omega": 0.5,
              "dyce_normalize": True, "dyce_with_ce": with_ce}  # fmt: skip
    fake = SimpleNamespace(cfg=SimpleNamespace(method=SimpleNamespace(**method)))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 6, generator=g)
    labels = torch.randint(0, 5, (2, 6, 6), generator=g)
    ce = F.cross_entropy(logits, labels, ignore_index=255)
    dyce = dyce_loss(logits, labels, 0.2, 0.5, normalize=True)
    assert torch.allclose(Trainer._supervised_loss(fake, logits, labels, 9), ce)
    after = Trainer._supervised_loss(fake, logits, labels, 10)
    assert torch.allclose(after, dyce + ce if with_ce else dyce)
