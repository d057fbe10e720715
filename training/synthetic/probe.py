"""Domain-shift probe: is the source -> target gap real, and is the target learnable?

    python -m training.synthetic.probe [--n 400] [--steps 400] [--height 64 --width 128] [--realism R]

Trains a small from-scratch U-Net on source images only and, separately, on labeled target
images only (same steps), then reports mIoU on both domains' `select` split plus the main
confusions of the source-only model. A sanity check of the generator (re-run it after changing
the looks; `--realism` tries another `appearance.GAME_REALISM`), not one of the paper's
experiments: those use `training/run.py`. The `select` split (split code 3) is neither the
benchmark's train nor its val split, so generator choices made with the probe never see the
scenes the benchmark reports on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.class_sets import CITYSCAPES_CLASSES
from training.synthetic import appearance
from training.synthetic.render import DOMAIN_CODES, render_scene
from training.synthetic.writer import seed_tuple

Data = tuple[torch.Tensor, torch.Tensor]


SELECT_SPLIT = 3  # the benchmark writes split codes 0 (train) and 1 (val); the corpus uses 2


def make_data(domain: str, split: str, n: int, height: int, width: int, seed: int = 0) -> Data:
    """(images float (N, 3, H, W) in [0, 1], labels long (N, H, W)) of one benchmark stream
    (`split` "train" or "val") or of the probe's own "select" split."""
    images, labels = [], []
    for i in range(n):
        key = (
            (seed, DOMAIN_CODES[domain], SELECT_SPLIT, i)
            if split == "select"
            else seed_tuple(seed, domain, split, i)
        )
        image, ids, _ = render_scene(key, domain, height, width)
        images.append(image)
        labels.append(ids)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.from_numpy(np.stack(labels)).long()


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip


class TinyUNet(nn.Module):
    """Three-level U-Net (about 0.3 M parameters): (B, 3, H, W) -> (B, 19, H, W) logits."""

    def __init__(self, classes: int = 19) -> None:
        super().__init__()
        self.e1, self.e2, self.e3 = _block(3, 24), _block(24, 48), _block(48, 96)
        self.d2, self.d1 = _block(96 + 48, 48), _block(48 + 24, 24)
        self.head = nn.Conv2d(24, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.e1(x)
        b = self.e2(F.max_pool2d(a, 2))
        c = self.e3(F.max_pool2d(b, 2))
        d = self.d2(torch.cat([F.interpolate(c, size=b.shape[-2:]), b], 1))
        return self.head(self.d1(torch.cat([F.interpolate(d, size=a.shape[-2:]), a], 1)))


def train(data: Data, steps: int, batch: int = 12, seed: int = 0) -> TinyUNet:
    """AdamW, random horizontal flips; returns the trained net."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = TinyUNet()
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(data[0]), (batch,), generator=gen)
        x, y = data[0][idx], data[1][idx]
        if torch.rand(1, generator=gen).item() < 0.5:
            x, y = x.flip(3), y.flip(2)
        loss = F.cross_entropy(net.train()(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@torch.no_grad()
def confusion(net: nn.Module, data: Data, classes: int = 19) -> torch.Tensor:
    """(classes, classes) pixel counts, rows = truth, columns = prediction."""
    net.eval()
    cm = torch.zeros(classes, classes, dtype=torch.long)
    for i in range(0, len(data[0]), 50):
        pred = net(data[0][i : i + 50]).argmax(1)
        cm += torch.bincount(
            data[1][i : i + 50].flatten() * classes + pred.flatten(), minlength=classes**2
        ).view(classes, classes)
    return cm


def miou(cm: torch.Tensor) -> float:
    """Mean IoU over the classes present in the ground truth."""
    iou = cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag()).clamp(min=1)
    return float(iou[cm.sum(1) > 0].mean())


def main(argv: Sequence[str] | None = None) -> None:
    """Train both probes and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=400, help="training images per domain")
    p.add_argument("--val", type=int, default=150, help="validation images per domain")
    p.add_argument("--steps", type=int, default=400, help="optimisation steps per model")
    p.add_argument("--height", type=int, default=64, help="image height (px)")
    p.add_argument("--width", type=int, default=128, help="image width (px)")
    p.add_argument("--realism", type=float, help="GAME_REALISM to try (default: the generator's)")
    args = p.parse_args(argv)
    if args.realism is not None:  # this process only: the source look the probe renders
        appearance.LOOKS["source"] = appearance.game_look(args.realism)
    size = (args.height, args.width)
    source, target = make_data("source", "train", args.n, *size), make_data("target", "train", args.n, *size)
    val_t, val_s = (
        make_data("target", "select", args.val, *size),
        make_data("source", "select", args.val, *size),
    )
    realism = args.realism if args.realism is not None else appearance.GAME_REALISM
    print(
        f"{args.n} train / {args.val} select images per domain at {size[0]}x{size[1]}, {args.steps} steps, "
        f"game realism {realism}"
    )
    for name, data in (("source-only", source), ("target-only", target)):
        started = time.perf_counter()
        net = train(data, args.steps)
        cm_t, cm_s = confusion(net, val_t), confusion(net, val_s)
        print(
            f"{name}: target select mIoU {100 * miou(cm_t):.1f}, source select mIoU {100 * miou(cm_s):.1f} ({time.perf_counter() - started:.0f} s)"
        )
        if name == "source-only":
            rates = cm_t.float() / cm_t.sum(1, keepdim=True).clamp(min=1)
            for c, row in enumerate(rates):
                top = torch.topk(row, 2)
                pairs = ", ".join(
                    f"{CITYSCAPES_CLASSES[j]} {100 * v:.0f}%"
                    for v, j in zip(top.values.tolist(), top.indices.tolist())
                )
                print(f"  target {CITYSCAPES_CLASSES[c]:13s} predicted as {pairs}")


if __name__ == "__main__":
    main()
