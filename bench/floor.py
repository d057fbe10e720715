"""The floor: this machine's matrix-product throughput and the plain open_clip visual tower.

- Matrix products: `torch.mm` of square n x n matrices in fp32 and bf16 (2 n^3 FLOPs each); the
  best median over the sizes tried is the machine's measured throughput, the denominator of the
  "backbone achieves >= 50 % of bf16 matmul throughput" target.
- Plain open_clip visual tower: open_clip's own `VisionTransformer` (`open_clip.model._build_vision_tower`)
  with the config's width/depth/patch, built for the working size (no positional-embedding resize
  at run time) and run as open_clip runs it (pooled embedding), eager, `torch.inference_mode()`,
  fp32 or bf16 autocast. The segmentation graph's time is compared with it ("<= 1.25x").
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch

import model  # noqa: F401  (offline env defaults and the torchvision shim before open_clip)
from bench.common import median_time
from bench.flops import attention_flop_mapping, count_flops

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_throughput(
    sizes: Sequence[int],
    precisions: Sequence[str],
    repeats: int,
    warmup: int,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """FLOP/s of torch.mm per precision and size; `best` per precision is the max over sizes (medians).

    On CUDA each call is timed to the end of its kernel (synchronised)."""
    g = torch.Generator().manual_seed(seed)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    runs = []
    for precision in precisions:
        dtype = DTYPES[precision]
        for n in sizes:
            a = torch.randn(n, n, generator=g).to(device, dtype)
            b = torch.randn(n, n, generator=g).to(device, dtype)
            out = torch.empty(n, n, dtype=dtype, device=device)

            def mm(a: torch.Tensor = a, b: torch.Tensor = b, out: torch.Tensor = out) -> None:
                torch.mm(a, b, out=out)
                sync()

            stat = median_time(mm, repeats, warmup)
            flops = 2 * n**3
            runs.append(
                {
                    "precision": precision,
                    "n": n,
                    "time": stat,
                    "flops": flops,
                    "flops_per_s": flops / stat["median"],
                    "flops_per_s_max": flops / stat["min"],
                    "flops_per_s_min": flops / stat["max"],
                }
            )
            del a, b, out
    best = {}
    for precision in precisions:
        mine = [r for r in runs if r["precision"] == precision]
        if mine:
            top = max(mine, key=lambda r: r["flops_per_s"])
            best[precision] = {"flops_per_s": top["flops_per_s"], "n": top["n"]}
    return {"runs": runs, "best": best}


def plain_visual_tower(config: str, size: tuple[int, int], seed: int = 0) -> torch.nn.Module:
    """open_clip's VisionTransformer with the config's architecture at `size` (random weights)."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    from model.config import get_model_config

    cfg = get_model_config(config)
    vision = cfg.clip.vision
    vision_cfg = CLIPVisionCfg(
        layers=vision.layers,
        width=vision.width,
        head_width=vision.head_width,
        mlp_ratio=vision.mlp_ratio,
        patch_size=vision.patch_size,
        image_size=tuple(size),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = _build_vision_tower(cfg.clip.embed_dim, vision_cfg, quick_gelu=cfg.clip.quick_gelu)
    return tower.eval()


@contextlib.contextmanager
def mha_fastpath(enabled: bool) -> Iterator[None]:
    """Switch nn.MultiheadAttention's inference fast path inside the block.

    FLOPs are counted with it off: the fast path (`_native_multi_head_attention`, taken in
    inference mode) fuses the q/k/v and output projections and the attention into one op that
    FlopCounterMode does not see, which made the plain tower's count 234 instead of 505 GFLOP at
    512x1024. Timing runs with it on, as open_clip runs.
    """
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def visual_tower_runs(
    configs: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    precisions: Sequence[str],
    repeats: int,
    warmup: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    custom = attention_flop_mapping()
    rows = []
    for config in configs:
        for size in sizes:
            tower = plain_visual_tower(config, size, seed)
            g = torch.Generator().manual_seed(seed)
            with torch.inference_mode(), mha_fastpath(False):
                one = torch.randn(1, 3, *size, generator=g)
                flops = count_flops(lambda one=one, tower=tower: tower(one), custom)["flops"]
            for batch in batches:
                images = torch.randn(batch, 3, *size, generator=g)
                for precision in precisions:
                    print(
                        f"[floor] open_clip visual {config} {size[0]}x{size[1]} batch {batch} {precision}",
                        file=sys.stderr,
                        flush=True,
                    )
                    with (
                        torch.inference_mode(),
                        torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"),
                    ):
                        stat = median_time(lambda images=images, tower=tower: tower(images), repeats, warmup)
                    rows.append(
                        {
                            "config": config,
                            "size": list(size),
                            "batch": batch,
                            "precision": precision,
                            "time": stat,
                            "flops": flops * batch,
                        }
                    )
            tower = None
            gc.collect()
    return rows


def run(
    configs: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    precisions: Sequence[str],
    matmul_sizes: Sequence[int],
    repeats: int,
    warmup: int,
    seed: int = 0,
) -> dict[str, Any]:
    print("[floor] matrix-product throughput ...", file=sys.stderr, flush=True)
    matmul = matmul_throughput(matmul_sizes, ("fp32", "bf16"), max(repeats, 3), max(warmup, 1), seed)
    towers = visual_tower_runs(configs, sizes, batches, precisions, repeats, warmup, seed)
    return {"matmul": matmul, "visual": towers, "threads": torch.get_num_threads()}
