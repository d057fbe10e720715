"""Training speed: iterations per second and peak memory of the real trainer (training/trainer.py).

One iteration = what `Trainer.train` does per optimizer step with accum_steps = 1: next batch from
every stream (source, labeled, unlabeled; data loading included, workers = 0), teacher pseudo-labels
and CutMix, student forward (bf16 autocast where the config's amp says so), losses, backward,
optimizer step and EMA teacher update. Data: a small generated dataset in the GTA5 / Cityscapes
layouts (testkit/tiny_data.py) in a temporary folder. Warm-up iterations are excluded.

Memory: on CPU, the process's resident set size sampled every 5 ms while the timed iterations run
(peak, and peak minus the RSS just before); on CUDA, torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import torch
import yaml

import model  # noqa: F401  (offline env defaults and the torchvision shim before open_clip)
from bench.common import summarize

if TYPE_CHECKING:
    from training.schema import RunConfig

# The paper's crop and per-step batch (training/configs/default.yaml) for semidavil-vitb16.
PAPER = {"crop": [512, 512], "batch": {"source": 2, "labeled": 2, "unlabeled": 2}, "image": (512, 1024)}
# The synthetic benchmark's tiny setting (training/configs/synthetic_base.yaml).
TINY = {"crop": [128, 128], "batch": {"source": 4, "labeled": 4, "unlabeled": 4}, "image": (128, 256)}


@contextlib.contextmanager
def rss_sampler(period_s: float = 0.005) -> Iterator[dict[str, int]]:
    """Peak RSS of this process while the block runs: {'start', 'peak'} in bytes."""
    proc = psutil.Process()
    stats = {"start": proc.memory_info().rss, "peak": 0}
    stats["peak"] = stats["start"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            stats["peak"] = max(stats["peak"], proc.memory_info().rss)
            stop.wait(period_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join()
        stats["peak"] = max(stats["peak"], proc.memory_info().rss)


def _config(root: Path, out: Path, name: str, setting: dict[str, Any], amp: str) -> RunConfig:
    from testkit.tiny_data import tiny_run_config
    from training.config import load_config

    cfg = tiny_run_config(
        root, out, model=name, num_labeled=4, crop=setting["crop"], batch=setting["batch"],
        eval_size=list(setting["image"]), experiment="bench",
    )  # fmt: skip
    cfg["optim"] = {"iters": 1000, "amp": amp}
    cfg["log"] = {"every": 1000, "checkpoint_every": 1000}
    path = out / "config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def measure(
    name: str, setting: dict[str, Any], iters: int, warmup: int, device: str, amp: str
) -> dict[str, Any]:
    from testkit.tiny_data import write_tiny_benchmark
    from training.distributed import DistInfo
    from training.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="semidavil-train-bench-") as tmp:
        root = write_tiny_benchmark(Path(tmp) / "data", n_source=8, n_train=8, n_val=1, size=setting["image"])
        cfg = _config(root, Path(tmp) / "runs", name, setting, amp)
        info = DistInfo(device=torch.device(device))
        run_dir = Path(tmp) / "runs" / "bench"
        run_dir.mkdir(parents=True)
        trainer = Trainer(cfg, run_dir, info, progress=False)
        trainer.student.train()
        loaders = trainer._loaders(0, iters + warmup)
        cuda = trainer.device.type == "cuda"

        def step(i: int) -> None:
            loss, _ = trainer.step_loss({k: next(v) for k, v in loaders.items()}, i)
            loss.backward()
            trainer._optimizer_step(i)
            if cuda:
                torch.cuda.synchronize()

        for i in range(warmup):
            step(i)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        with rss_sampler() as rss:
            for i in range(warmup, warmup + iters):
                start = time.perf_counter()
                step(i)
                times.append(time.perf_counter() - start)
        stat = summarize(times)
        out = {
            "config": name,
            "device": str(trainer.device),
            "amp": "bf16" if trainer.amp else "off",
            "crop": setting["crop"],
            "batch": setting["batch"],
            "iters": iters,
            "warmup": warmup,
            "step_s": stat,
            "it_per_s": 1.0 / stat["median"],
            "it_per_s_range": [1.0 / stat["max"], 1.0 / stat["min"]],
            "rss_peak_bytes": rss["peak"],
            "rss_increase_bytes": rss["peak"] - rss["start"],
        }
        if cuda:
            out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
        trainer = loaders = None  # free before the temporary folder goes
    return out


def run(iters: int, warmup: int, gpu_iters: int = 20) -> dict[str, Any]:
    print("[training] semidavil-tiny on CPU ...", file=sys.stderr, flush=True)
    rows = [measure("semidavil-tiny", TINY, iters, warmup, "cpu", "auto")]
    gpu = torch.cuda.is_available()
    if gpu:
        print(
            "[training] semidavil-vitb16 on CUDA at the paper's crop and batch ...",
            file=sys.stderr,
            flush=True,
        )
        try:
            rows.append(measure("semidavil-vitb16", PAPER, gpu_iters, 3, "cuda", "auto"))
        except Exception as err:  # report, do not abort the suite
            rows.append(
                {"config": "semidavil-vitb16", "device": "cuda", "error": f"{type(err).__name__}: {err}"}
            )
    return {
        "rows": rows,
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "paper_setting": PAPER,
        "tiny_setting": TINY,
    }
