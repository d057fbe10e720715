"""The inputs of the agreement gate: real class embeddings and caption features from the model's
text tower, images from the caller (e.g. the shared fixtures) or smooth synthetic ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.class_sets import ClassSet
from model.segmentor import SemiDAViL
from model.text import TextEmbedder
from serving.agreement import images_to_inputs, smooth_images
from serving.backends.base import Inputs, ShapeProfile

AGREEMENT_CAPTIONS = (
    "a city street with cars parked along the road and tall buildings on both sides",
    "a road through green trees under a blue sky",
    "",
)


def agreement_inputs(
    model: SemiDAViL,
    profile: ShapeProfile,
    class_set: ClassSet | None = None,
    images: Sequence[np.ndarray] | None = None,
    embedder: TextEmbedder | None = None,
    batches: Sequence[int] = (1, 3),
    seed: int = 0,
) -> list[Inputs]:
    """Inputs for the gate: real class embeddings and caption features from the model's text tower.

    Images: `images` (uint8 [H, W, 3] at the working size, e.g. the shared fixtures) cycled, else
    smooth synthetic ones. Class embeddings: `class_set` if it has `profile.num_classes` classes,
    else random unit vectors. Captions cycle through AGREEMENT_CAPTIONS (one is empty).
    """
    embedder = embedder or TextEmbedder(model.text)
    g = torch.Generator().manual_seed(seed)
    if class_set is not None and len(class_set) == profile.num_classes:
        class_embeds = embedder.class_embeddings(class_set.prompts()).cpu()
    else:
        dim = model.config.embed_dim
        class_embeds = torch.nn.functional.normalize(
            torch.randn(profile.num_classes, dim, generator=g), dim=-1
        )
    out: list[Inputs] = []
    offset = 0
    for b in sorted({min(max(1, b), profile.max_batch) for b in batches}):
        captions = [AGREEMENT_CAPTIONS[(offset + i) % len(AGREEMENT_CAPTIONS)] for i in range(b)]
        length = profile.caption_length
        feats, mask = embedder.caption_features(captions, min_length=length, max_length=length)
        if images:
            picked = [images[(offset + i) % len(images)] for i in range(b)]
            out.append(images_to_inputs(picked, feats.cpu(), mask.cpu(), class_embeds))
        else:
            out.append(
                (smooth_images(b, profile.height, profile.width, g), feats.cpu(), mask.cpu(), class_embeds)
            )
        offset += b
    return out
