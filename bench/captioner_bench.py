"""The captioner's cost: tiny random BLIP / BLIP-2 through the real Captioner, and BLIP / BLIP-2
sized random models for what the real ones would cost here.

- tiny: testkit/tiny_captioners.py models through `model.captioner.Captioner` (processor, greedy
  generate, decode, cache) on a real fixture frame: batch 1 and batch 4 with the cache cleared
  (miss) and the cache hit. Their captions are noise; only the code path and its overhead count.
- sized (full mode): `BlipForConditionalGeneration` with transformers' default BlipConfig (ViT-B/16
  at 384 + BERT-base decoder, the size of Salesforce/blip-image-captioning-base) and
  `Blip2ForConditionalGeneration` with ViT-g/14 at 224, the Q-Former and OPT-2.7B (the size of
  Salesforce/blip2-opt-2.7b), random weights in bf16 (BLIP-2 would need ~15 GB in fp32). Cost =
  parameters and `generate(pixel_values)` latency with exactly `tokens` new tokens (min = max),
  greedy, batch 1; weights do not change the cost of a fixed-length generation.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import model  # noqa: F401  (offline env defaults before transformers)
from bench.common import fixture_images, median_time


def _log(msg: str) -> None:
    print(f"[captioner] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _image(fixtures: str | Path | None) -> Any:
    import numpy as np
    from PIL import Image

    paths = fixture_images(fixtures)
    if paths:
        with Image.open(paths[0]) as img:
            return img.convert("RGB")
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 1024, 3), dtype=np.uint8))


def tiny_runs(repeats: int, warmup: int, fixtures: str | Path | None = None) -> list[dict[str, Any]]:
    from model.captioner import CaptionCache, Captioner
    from testkit.tiny_captioners import tiny_blip, tiny_blip2

    image = _image(fixtures)
    rows = []
    for kind, build in (("blip", tiny_blip), ("blip2", tiny_blip2)):
        _log(f"tiny {kind} ...")
        net, processor = build()
        cache = CaptionCache(max_entries=64)
        captioner = Captioner.from_pretrained_objects(kind, net, processor, max_new_tokens=20, cache=cache)
        row: dict[str, Any] = {
            "kind": kind,
            "size": "tiny",
            "params": sum(p.numel() for p in net.parameters()),
        }
        for batch in (1, 4):
            # distinct images so a batch is not deduplicated by the content-hash cache
            images = [image.rotate(i * 90, expand=True) if i else image for i in range(batch)]

            def miss(images: list[Any] = images, cache: Any = cache, captioner: Any = captioner) -> None:
                cache.clear()
                captioner.caption(images)

            row[f"miss_b{batch}"] = median_time(miss, repeats, warmup)
        captioner.caption([image])
        row["hit_b1"] = median_time(lambda c=captioner: c.caption([image]), repeats, warmup)
        rows.append(row)
    return rows


def sized_model(kind: str) -> tuple[Any, int]:
    """(model in bf16 with random weights, image side) at the real checkpoint's architecture."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        BlipConfig,
        BlipForConditionalGeneration,
        OPTConfig,
    )

    with default_dtype(torch.bfloat16), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if kind == "blip":
            config = BlipConfig()  # ViT-B/16 at 384 + BERT-base text decoder (blip-image-captioning-base)
            config.vision_config.image_size = 384
            return BlipForConditionalGeneration(config).eval(), 384
        text = OPTConfig(
            hidden_size=2560,
            ffn_dim=10240,
            num_hidden_layers=32,
            num_attention_heads=32,
            word_embed_proj_dim=2560,
            vocab_size=50272,
        )
        # ViT-g/14 at 224, Q-Former; transformers 5 expects the query positions as image tokens in
        # input_ids (the processor inserts them): the last vocabulary id stands in for "<image>".
        config = Blip2Config(
            text_config=text.to_dict(), num_query_tokens=32, image_token_index=text.vocab_size - 1
        )
        return Blip2ForConditionalGeneration(config).eval(), config.vision_config.image_size


def generate_inputs(net: Any, side: int) -> dict[str, torch.Tensor]:
    """pixel_values (and, for BLIP-2, input_ids holding the query tokens' image placeholders)."""
    inputs = {"pixel_values": torch.randn(1, 3, side, side, dtype=torch.bfloat16)}
    config = net.config
    if getattr(config, "image_token_index", None) is not None and hasattr(config, "num_query_tokens"):
        inputs["input_ids"] = torch.full((1, config.num_query_tokens), config.image_token_index)
    return inputs


def sized_runs(kinds: Sequence[str], tokens: int, repeats: int, warmup: int) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        _log(f"{kind}-sized random model (bf16) ...")
        try:
            net, side = sized_model(kind)
            inputs = generate_inputs(net, side)
            params = sum(p.numel() for p in net.parameters())

            def generate(net: Any = net, inputs: dict[str, torch.Tensor] = inputs) -> None:
                with torch.inference_mode():
                    net.generate(
                        **inputs,
                        do_sample=False,
                        num_beams=1,
                        max_new_tokens=tokens,
                        min_new_tokens=tokens,
                    )

            stat = median_time(generate, repeats, warmup)
            rows.append({"kind": kind, "size": "real-sized", "params": params, "tokens": tokens, "b1": stat})
            net = None
        except Exception as err:  # memory or API drift: a result, not a crash
            rows.append(
                {"kind": kind, "size": "real-sized", "error": f"{type(err).__name__}: {str(err)[:300]}"}
            )
        gc.collect()
    return rows


def run(
    repeats: int,
    warmup: int,
    sized: Sequence[str] = (),
    tokens: int = 20,
    sized_repeats: int = 3,
    fixtures: str | Path | None = None,
) -> dict[str, Any]:
    return {
        "tiny": tiny_runs(repeats, warmup, fixtures),
        "sized": sized_runs(sized, tokens, sized_repeats, 1) if sized else [],
        "tokens": tokens,
        "threads": torch.get_num_threads(),
    }
