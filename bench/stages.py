"""Per-stage latency of one segmentation request, measured side by side in one process.

Request stages (per image, independent of the model size):
  decode        serving.decode.decode_image of a real 2048x1024 Cityscapes PNG (limits checked first)
  caption       a tiny random BLIP captioner (cache miss) and the caption cache hit; real BLIP /
                BLIP-2 cost is in bench/captioner_bench.py
  PNG encode    serving.encode.label_png of a 2048x1024 label map (zlib level 1)
Model stages (per config, working size, batch and precision; eager, `torch.inference_mode()`,
bf16 = `torch.autocast` over `model.fast.inference_copy`, as the eager-bf16 backend runs it):
  text (cold)   caption token features through the frozen CLIP text tower, cache miss
  text (cached) the same caption again (LRU hit)
  backbone      seg.features (ViT dense value path + skips)
  DLG           seg.dlg
  decoder       seg.decoder
  upsample      in-graph bilinear upsample of the logits to the working size
  whole graph   seg(...) end to end (what the backends run)
  upsample/argmax   serving.postprocess.labels_and_confidence: logits at the working size ->
                labels + confidence at 2048x1024 (the fixture's size), per image
Backbone GFLOPs (FlopCounterMode at batch 1, x B) give the achieved FLOP/s that bench/report.py
compares with the matrix-product throughput from bench/floor.py.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import model
from bench.common import fixture_images, median_time, synthetic_inputs
from bench.flops import attention_flop_mapping, count_flops, stage_fns
from model.fast import inference_copy
from model.segmentor import SegmentationGraph
from serving.loading import random_model

CAPTION = "a city street with cars parked along the road, trees and tall buildings under a cloudy sky"
LOG = "[stages]"


def _log(msg: str) -> None:
    print(f"{LOG} {msg}", file=sys.stderr, flush=True)


def _autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def request_stages(image_path: Path | None, repeats: int, warmup: int) -> dict[str, Any]:
    """decode, caption (tiny BLIP, miss and hit) and PNG encode of one fixture image."""
    from PIL import Image

    from model.captioner import CaptionCache, Captioner
    from serving.decode import Limits, decode_image
    from serving.encode import label_png

    if image_path is None:
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
        import io

        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        data, source = buf.getvalue(), "random-noise 2048x1024 PNG (fixtures not found)"
    else:
        data, source = image_path.read_bytes(), str(image_path)
    limits = Limits(max_body_bytes=1 << 28, max_pixels=1 << 26)
    decoded = decode_image(data, limits)
    out: dict[str, Any] = {"image": source, "image_size": list(decoded.rgb.shape[:2]), "bytes": len(data)}
    out["decode"] = median_time(lambda: decode_image(data, limits), repeats, warmup)
    labels = np.random.default_rng(0).integers(0, 19, decoded.rgb.shape[:2], dtype=np.uint8)
    out["png_encode"] = median_time(lambda: label_png(labels), repeats, warmup)
    try:
        from testkit.tiny_captioners import tiny_blip

        net, processor = tiny_blip()
        cache = CaptionCache(max_entries=1)
        captioner = Captioner.from_pretrained_objects("blip", net, processor, max_new_tokens=20, cache=cache)
        image = Image.fromarray(decoded.rgb)

        def miss() -> None:
            cache.clear()
            captioner.caption([image])

        out["caption_miss"] = median_time(miss, repeats, warmup)
        captioner.caption([image])
        out["caption_hit"] = median_time(lambda: captioner.caption([image]), repeats, warmup)
        out["captioner"] = "tiny random BLIP (testkit/tiny_captioners.py), 20 new tokens"
    except Exception as err:  # transformers missing or API drift: report, do not abort the suite
        out["caption_error"] = f"{type(err).__name__}: {err}"
    return out


def text_stages(net: model.SemiDAViL, repeats: int, warmup: int) -> dict[str, Any]:
    """Caption token features: cold (a new caption every call) and cached (the same caption)."""
    from model.text import TextEmbedder

    embedder = TextEmbedder(net.text)
    counter = itertools.count()
    cold = median_time(lambda: embedder.caption_tokens(f"{CAPTION} {next(counter)}"), repeats, warmup)
    embedder.caption_tokens(CAPTION)
    cached = median_time(lambda: embedder.caption_tokens(CAPTION), repeats, warmup)
    return {"text_cold": cold, "text_cached": cached}


def graph_stages(
    graph: SegmentationGraph,
    embed_dim: int,
    size: tuple[int, int],
    batch: int,
    precision: str,
    repeats: int,
    warmup: int,
    caption_length: int,
    num_classes: int,
    out_size: tuple[int, int],
    seed: int = 0,
) -> dict[str, Any]:
    """backbone / DLG / decoder / in-graph upsample / whole graph at one setting, plus upsample+argmax.

    `graph` is what the eager backend of `precision` runs: the fp32 graph, or its bf16 inference copy.
    """
    from serving.postprocess import labels_and_confidence

    inputs = synthetic_inputs(batch, *size, num_classes, caption_length, embed_dim, seed=seed)
    times: dict[str, Any] = {}
    with torch.inference_mode(), _autocast(precision):
        fns, whole = stage_fns(graph, *inputs)
        for stage, fn in fns.items():
            times[stage] = median_time(fn, repeats, warmup)
        times["whole"] = median_time(whole, repeats, warmup)
        logits = whole().float()
    one = logits[0].contiguous()
    times["upsample_argmax"] = median_time(lambda: labels_and_confidence(one, out_size), repeats, warmup)
    del fns, whole, inputs, logits
    gc.collect()
    return times


def backbone_flops(net: model.SemiDAViL, size: tuple[int, int], caption_length: int, num_classes: int) -> int:
    """FLOPs (2 x MACs) of seg.features at batch 1 (fp32 trace; the count does not depend on dtype)."""
    custom = attention_flop_mapping()
    inputs = synthetic_inputs(1, *size, num_classes, caption_length, net.config.embed_dim)
    with torch.inference_mode():
        counted = count_flops(lambda: net.seg.features(inputs[0]), custom)
    return int(counted["flops"])


def run(
    configs: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    precisions: Sequence[str],
    repeats: int,
    warmup: int,
    caption_length: int = 20,
    num_classes: int = 19,
    fixtures: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every stage at every setting; returns {"request": {...}, "rows": [...]} (times in seconds)."""
    images = fixture_images(fixtures)
    full_res = next((p for p in images if "leftImg8bit" in p.name), None)
    _log("request stages (decode, caption, PNG encode) ...")
    request = request_stages(full_res, repeats, warmup)
    out_size = tuple(request["image_size"])
    rows = []
    for name in configs:
        net = random_model(name, seed)
        graphs = {"fp32": net.seg, "bf16": inference_copy(net.seg)}  # as the eager backends run them
        text = text_stages(net, repeats, warmup)
        for size in sizes:
            flops = backbone_flops(net, size, caption_length, num_classes)
            for batch, precision in itertools.product(batches, precisions):
                _log(f"{name} {size[0]}x{size[1]} batch {batch} {precision} ...")
                times = graph_stages(
                    graphs[precision],
                    net.config.embed_dim,
                    size,
                    batch,
                    precision,
                    repeats,
                    warmup,
                    caption_length,
                    num_classes,
                    out_size,  # type: ignore[arg-type]
                    seed,
                )
                rows.append(
                    {
                        "config": name,
                        "size": list(size),
                        "batch": batch,
                        "precision": precision,
                        "times": {**times, **text},
                        "backbone_flops": flops * batch,
                    }
                )
        del net, graphs
        gc.collect()
    return {
        "request": request,
        "rows": rows,
        "settings": {
            "caption_length": caption_length,
            "num_classes": num_classes,
            "repeats": repeats,
            "warmup": warmup,
            "threads": torch.get_num_threads(),
        },
    }
