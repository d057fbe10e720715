"""Whole-set evaluation: confusion matrix, per-class IoU, mIoU (docs/method.md 3).

`python -m training.evaluation.evaluate --checkpoint run/model.safetensors --config run/config.yaml`
evaluates a checkpoint on the run config's target val set; the trainer calls `evaluate` directly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model.class_sets import CLASS_SETS, MIOU13_EXCLUDED
from model.inference import slide_inference, whole_inference
from model.preprocess import numpy_to_model_input
from model.text import TextEmbedder
from training.evaluation.metrics import ConfusionMatrix
from training.schema import EvalSection


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    embedder: TextEmbedder,
    class_embeds: torch.Tensor,
    image: np.ndarray,
    caption: str,
    eval_cfg: EvalSection,
    autocast: bool = False,
) -> torch.Tensor:
    """Logits [K, H, W] at the image's own size for one uint8 HxWx3 image (whole or slide mode)."""
    device = class_embeds.device
    x = numpy_to_model_input([image], device)
    h, w = image.shape[:2]
    size = eval_cfg.size
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if (h, w) != size else x
    feats, mask = embedder.caption_features([caption])

    def fn(crops: torch.Tensor) -> torch.Tensor:
        n = crops.shape[0]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(crops, feats.expand(n, -1, -1), mask.expand(n, -1), class_embeds)

    k = class_embeds.shape[0]
    if eval_cfg.mode == "slide":
        logits = slide_inference(fn, x, k, eval_cfg.window, eval_cfg.stride)
    else:
        logits = whole_inference(fn, x)
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]


def evaluate(
    model: nn.Module,
    embedder: TextEmbedder,
    class_embeds: torch.Tensor,
    dataset: Any,
    eval_cfg: EvalSection,
    autocast: bool = False,
    progress: bool = True,
) -> ConfusionMatrix:
    """Accumulate the confusion matrix over `dataset` (items with image, label, caption)."""
    model.eval()
    cm = ConfusionMatrix(class_embeds.shape[0])
    limit = eval_cfg.max_images or len(dataset)
    for i in tqdm(range(min(limit, len(dataset))), desc="eval", disable=not progress, leave=False):
        ex = dataset[i]
        logits = predict_logits(model, embedder, class_embeds, ex["image"], ex["caption"], eval_cfg, autocast)
        cm.update(logits.argmax(0).cpu().numpy(), ex["label"])
    return cm


def write_report(cm: ConfusionMatrix, class_names: list[str], out_dir: Path, tag: str) -> dict[str, Any]:
    """Write `<tag>.md` (per-class IoU table) and `<tag>.json`; returns the JSON dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = cm.to_json(class_names)
    markdown = cm.to_markdown(class_names)
    keep13 = miou13_classes(class_names)
    if keep13 is not None:  # SYNTHIA: mIoU16 (report["miou"]) and mIoU13 side by side
        miou13 = cm.miou(keep13)
        report["miou13"] = None if np.isnan(miou13) else miou13
        markdown += f"\n| **mIoU13** (no {', '.join(MIOU13_EXCLUDED)}) | **{'n/a' if np.isnan(miou13) else f'{miou13:.2f}'}** |"
    (out_dir / f"{tag}.json").write_text(json.dumps(report, indent=2))
    (out_dir / f"{tag}.md").write_text(markdown + "\n")
    return report


def miou13_classes(class_names: list[str]) -> list[int] | None:
    """Channel indices of the mIoU13 classes when `class_names` is the SYNTHIA 16-class set, else None."""
    if tuple(class_names) != CLASS_SETS["synthia16"].names:
        return None
    return [i for i, name in enumerate(class_names) if name not in MIOU13_EXCLUDED]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Evaluate a SemiDAViL checkpoint on a run config's target val set."
    )
    parser.add_argument("--checkpoint", required=True, help="SemiDAViL checkpoint (.safetensors)")
    parser.add_argument("--config", required=True, help="run config YAML (e.g. <run>/config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--mode", choices=["whole", "slide"], help="override eval.mode")
    parser.add_argument("--out", help="output folder (default: next to the checkpoint)")
    args = parser.parse_args(argv)

    from model.checkpoint import load_model
    from model.hardware import fast_bf16, resolve_device
    from training.config import load_config
    from training.data.build import build_val_dataset, class_names_for

    config = load_config(args.config, [*args.set, *([f"eval.mode={args.mode}"] if args.mode else [])])
    device = resolve_device(config.device)
    model, _ = load_model(args.checkpoint, map_location=str(device))
    embedder = TextEmbedder(model.text)
    names = class_names_for(config)
    from training.data.build import class_prompts_for

    class_embeds = embedder.class_embeddings(class_prompts_for(config))
    amp = config.optim.amp != "off" and fast_bf16(device)
    cm = evaluate(model, embedder, class_embeds, build_val_dataset(config), config.eval, amp)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    report = write_report(cm, names, out, f"eval_{config.eval.mode}")
    print(cm.to_markdown(names))
    print(f"mIoU {report['miou']:.2f}")


if __name__ == "__main__":
    main()
