"""Language side (docs/method.md 1.4): class-name embeddings and per-token caption features.

`ClipTextEncoder` is the frozen CLIP text tower as a pure module (token ids in, features out).
`TextEmbedder` adds the CLIP BPE tokenizer and caches; its results are the `class_embeds` and
`caption_feats`/`caption_mask` inputs of the segmentation graph, computed outside that graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from model.lru import LRUCache

if TYPE_CHECKING:  # open_clip ships no type information: these names type as Any
    from open_clip.model import CLIP
    from open_clip.transformer import Transformer

Tokenizer = Callable[[list[str]], torch.Tensor]  # texts -> token ids [N, T] int64


class ClipTextEncoder(nn.Module):
    """Frozen CLIP text transformer taken from an open_clip `CLIP` (weights shared, not copied)."""

    # open_clip's modules, named so that they type as themselves, not as `Tensor | Module`
    token_embedding: nn.Embedding
    positional_embedding: nn.Parameter
    transformer: Transformer
    ln_final: nn.Module
    text_projection: nn.Parameter
    attn_mask: torch.Tensor

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask.clone(), persistent=False)
        self.requires_grad_(False)

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    def token_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Projected features of every position: tokens [N, T] int64 -> [N, T, c] (not normalised).

        ln_final and the text projection are applied to every token (the causal mask means only
        the EOT token sees the whole sentence).
        """
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        return self.ln_final(x) @ self.text_projection

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """EOT-pooled sentence embeddings as open_clip's `encode_text`: [N, T] -> [N, c]."""
        feats = self.token_features(tokens)
        return feats[torch.arange(tokens.shape[0], device=tokens.device), tokens.argmax(dim=-1)]


class TextEmbedder:
    """Tokenizer + frozen text tower + caches: class embeddings and caption token features.

    Class embeddings are cached per prompt list; caption features per caption string, so a
    caption seen before costs a dictionary look-up.
    """

    def __init__(
        self, encoder: ClipTextEncoder, tokenizer: Tokenizer | None = None, cache_size: int = 4096
    ) -> None:
        if tokenizer is None:
            import open_clip

            tokenizer = open_clip.SimpleTokenizer(context_length=encoder.context_length)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self._classes: LRUCache[object, torch.Tensor] = LRUCache(64)
        self._captions: LRUCache[object, torch.Tensor] = LRUCache(cache_size)

    @property
    def device(self) -> torch.device:
        return self.encoder.positional_embedding.device

    def _tokens(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    @torch.inference_mode()
    def class_embeddings(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """Concept-averaged class embeddings: K lists of prompts -> [K, c] fp32, L2-normalised.

        Each prompt is EOT-pooled; a class's raw prompt embeddings are averaged, then normalised
        (SemiVL's concept averaging; a one-prompt list is the single-template case).
        """
        key = tuple(tuple(p) for p in prompts)
        cached = self._classes.get(key)
        if cached is not None:
            return cached
        result = self.embed_classes(key)
        self._classes.put(key, result)
        return result

    def embed_classes(self, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """`class_embeddings` without the cache and with autograd: for training a text tower that
        starts from random weights (its class embeddings change every step). [K, c] fp32."""
        flat = [p for group in prompts for p in group]
        if not flat or any(not group for group in prompts):
            raise ValueError("every class needs at least one prompt")
        pooled = self.encoder.pooled(self._tokens(flat)).float()
        sizes = [len(group) for group in prompts]
        means = torch.stack([chunk.mean(0) for chunk in pooled.split(sizes)])
        return F.normalize(means, dim=-1)

    @torch.inference_mode()
    def caption_tokens(self, caption: str) -> torch.Tensor:
        """One caption -> [n, c] per-token features (SOT..EOT, L2-normalised); n = 0 for ''."""
        cached = self._captions.get(caption)
        if cached is not None:
            return cached
        c = self.encoder.text_projection.shape[1]
        if not caption.strip():
            feats = torch.zeros(0, c, device=self.device)
        else:
            tokens = self._tokens([caption])
            eot = int(tokens[0].argmax())
            feats = F.normalize(self.encoder.token_features(tokens)[0, : eot + 1].float(), dim=-1)
        self._captions.put(caption, feats)
        return feats

    def caption_features(
        self, captions: Sequence[str], min_length: int = 1, max_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (feats [B, L, c] fp32, mask [B, L] bool, True = real token).

        L is the longest caption's token count (SOT..EOT, at most the context length), at least
        `min_length`; shorter ones are zero-padded. An empty caption has no real token at all,
        which turns the language guidance off for that image. `max_length` cuts each caption's
        tokens (a compiled graph built for a fixed L takes exactly min_length = max_length = L).
        """
        per_caption = [self.caption_tokens(c)[:max_length] for c in captions]
        return pad_token_features(per_caption, min_length)

    def cache_stats(self) -> dict[str, int]:
        """Hit and miss counts of both caches."""
        return {
            "class_hits": self._classes.hits,
            "class_misses": self._classes.misses,
            "caption_hits": self._captions.hits,
            "caption_misses": self._captions.misses,
        }


def pad_token_features(
    per_caption: Sequence[torch.Tensor], min_length: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """B tensors [n_i, c] -> (feats [B, L, c] zero-padded, mask [B, L] bool), L = max(n_i, min_length)."""
    length = max([min_length, *(f.shape[0] for f in per_caption)])
    first = per_caption[0]
    feats = first.new_zeros(len(per_caption), length, first.shape[1])
    mask = torch.zeros(len(per_caption), length, dtype=torch.bool, device=first.device)
    for i, f in enumerate(per_caption):
        feats[i, : f.shape[0]] = f
        mask[i, : f.shape[0]] = True
    return feats, mask
