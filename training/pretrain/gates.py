"""Gates of pre-trained CLIP towers: what they must show before the segmentation rows use them.

- `prompt_cosine`: mean and max off-diagonal cosine of the class-prompt embeddings (the decoder's
  class queries); a random text tower gives ~0.9, so classes are not told apart.
- `retrieval`: caption -> image R@1 on held-out pairs, against chance 1/N.
- `zero_shot_miou`: dense zero-shot segmentation through the MaskCLIP value path
  (`model.zero_shot.ZeroShotGraph`: class-prompt embeddings x dense features, no segmentation
  training) on a labelled set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from model.config import ModelConfig, get_model_config
from model.factory import dense_visual
from model.text import ClipTextEncoder, TextEmbedder
from model.zero_shot import DEFAULT_DENSE_PATH, ZeroShotGraph
from training.evaluation.evaluate import evaluate
from training.schema import EvalSection

if TYPE_CHECKING:  # open_clip ships no type information: this name types as Any
    from open_clip.model import CLIP


def text_embedder(clip: nn.Module) -> TextEmbedder:
    """The model's TextEmbedder over an open_clip CLIP's text tower.

    ClipTextEncoder freezes the tower it wraps (weights are shared), so the flags are restored:
    the gates run in the middle of a pre-training.
    """
    flags = {name: p.requires_grad for name, p in clip.named_parameters()}
    encoder = ClipTextEncoder(clip)
    for name, p in clip.named_parameters():
        p.requires_grad_(flags[name])
    return TextEmbedder(encoder)


def class_embeddings(clip: nn.Module, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
    """Concept-averaged class embeddings of an open_clip CLIP, as the model computes them: [K, c]."""
    with torch.inference_mode():
        return text_embedder(clip).embed_classes(prompts)


def prompt_cosine(class_embeds: torch.Tensor) -> dict[str, float]:
    """Mean and max off-diagonal cosine of L2-normalised class embeddings [K, c]."""
    sim = class_embeds @ class_embeds.T
    off = sim[~torch.eye(sim.shape[0], dtype=torch.bool)]
    return {"mean": float(off.mean()), "max": float(off.max())}


@torch.inference_mode()
def retrieval(clip: CLIP, images: torch.Tensor, tokens: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """Caption -> image retrieval over N held-out pairs (pair i's caption should find image i).

    images: [N, 3, S, S] CLIP-normalised; tokens: [N, T] ids. -> {"r1", "r5", "chance", "n"}.
    """
    img = torch.cat(
        [clip.encode_image(images[i : i + batch], normalize=True) for i in range(0, len(images), batch)]
    )
    txt = torch.cat(
        [clip.encode_text(tokens[i : i + batch], normalize=True) for i in range(0, len(tokens), batch)]
    )
    ranks = (txt @ img.T).argsort(dim=1, descending=True)
    target = torch.arange(len(images)).unsqueeze(1)
    return {
        "r1": float((ranks[:, :1] == target).any(1).float().mean()),
        "r5": float((ranks[:, :5] == target).any(1).float().mean()),
        "chance": 1.0 / len(images),
        "n": len(images),
    }


def zero_shot_miou(
    clip: nn.Module,
    model: str | ModelConfig,
    class_embeds: torch.Tensor,
    dataset: Any,
    size: Sequence[int],
    max_images: int,
    dense_path: str = DEFAULT_DENSE_PATH,
) -> dict[str, object]:
    """Dense zero-shot mIoU (%) of `clip` (the towers of config `model`) on a labelled dataset (items
    with "image", "label" in train ids, 255 = ignore), through the project's evaluator at `size`,
    whole-image: -> {"miou", "pixel_acc" (%), "iou": per class % or None where never seen}."""
    # the config's own dense wrapper, without skips; a conv tower has one dense reading (its
    # per-location projection), dense_path picks a ViT's
    cfg = model if isinstance(model, ModelConfig) else get_model_config(model)
    visual = dense_visual(clip.visual, cfg, skip_layers=())
    graph = ZeroShotGraph(visual, dense_path=dense_path)
    eval_cfg = EvalSection.whole((int(size[0]), int(size[1])), max_images)
    cm = evaluate(graph, text_embedder(clip), class_embeds, dataset, eval_cfg, progress=False)
    acc = 100.0 * np.trace(cm.matrix) / max(int(cm.matrix.sum()), 1)
    iou = [None if np.isnan(v) else round(100.0 * float(v), 2) for v in cm.iou()]
    return {"miou": cm.miou(), "pixel_acc": float(acc), "iou": iou}
