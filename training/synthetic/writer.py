"""Write the synthetic benchmark to disk in the layouts the real loaders read unchanged.

    <out>/source/images/00001.png            RGB, GTA5 layout (training.data.gta5.GTA5Dataset)
    <out>/source/labels/00001.png            'P' PNG, pixel indices = Cityscapes label ids
    <out>/source/captions.json               {"00001": caption, ...}
    <out>/target/leftImg8bit/{train,val}/<city>/<city>_<seq:06d>_000019_leftImg8bit.png
    <out>/target/gtFine/{train,val}/<city>/<city>_<seq:06d>_000019_gtFine_labelIds.png  ('L')
    <out>/target/captions_{train,val}.json   {"<city>_<seq>_000019": caption, ...}
    <out>/meta.json                          settings, counts, class frequencies (written LAST)

`<out>/.synthetic-benchmark` (written first, kept) marks the folder as ours; a run is complete
only when meta.json (written last) exists and matches the settings. A second call with identical
settings is a no-op; different settings or an interrupted run (no meta.json) regenerate. Only
`source/`, `target/`, `meta.json` and the marker inside `out` are touched; source/ or target/
folders without the marker are never deleted.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from model.atomic import atomic_write_text
from model.class_sets import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    TRAIN_ID_TO_LABEL_ID,
    train_id_to_label_id_lut,
)
from training.synthetic.render import DOMAIN_CODES, render_scene

# Bump whenever the pixels, labels or captions produced for a given seed change, so that
# existing benchmarks on disk are regenerated instead of being silently reused.
GENERATOR_VERSION = "2"
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
TARGET_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("arcadia", "bellmont", "corvale"),
    "val": ("dunmore", "elmhaven"),
}
FRAME = "000019"  # Cityscapes' annotated frame number, kept for familiar names
MARKER = ".synthetic-benchmark"
META = "meta.json"
STREAMS: tuple[tuple[str, str], ...] = (("source", "train"), ("target", "train"), ("target", "val"))


@dataclass(frozen=True)
class Settings:
    """Everything that determines the generated files (compared for idempotency)."""

    seed: int = 0
    source: int = 1000
    target_train: int = 500
    target_val: int = 200
    height: int = 256
    width: int = 512
    version: str = GENERATOR_VERSION

    def count(self, domain: str, split: str) -> int:
        """Number of images of one (domain, split) stream."""
        return {
            ("source", "train"): self.source,
            ("target", "train"): self.target_train,
            ("target", "val"): self.target_val,
        }[(domain, split)]

    def validate(self) -> None:
        """Raise ValueError for negative counts, a negative seed or a size below 16x16."""
        if min(self.source, self.target_train, self.target_val) < 0 or self.seed < 0:
            raise ValueError("seed and image counts must be non-negative")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"image size must be at least 16x16, got {self.height}x{self.width}")


@dataclass(frozen=True)
class Job:
    """One image to render and where to write it."""

    domain: str
    split: str
    index: int
    name: str
    image: Path
    label: Path


def seed_tuple(seed: int, domain: str, split: str, index: int) -> tuple[int, int, int, int]:
    """The per-image seed tuple (seed, domain code, split code, index) used by the benchmark."""
    return (seed, DOMAIN_CODES[domain], SPLIT_CODES[split], index)


def sample_names(domain: str, split: str, n: int) -> list[str]:
    """Sample names in index order: `00001`... (source) or `<city>_<seq>_000019` (target)."""
    if domain == "source":
        width = max(5, len(str(n)))
        return [f"{i + 1:0{width}d}" for i in range(n)]
    cities = TARGET_CITIES[split]
    names, seq = [], dict.fromkeys(cities, 0)
    for i in range(n):
        city = cities[i * len(cities) // n]
        names.append(f"{city}_{seq[city]:06d}_{FRAME}")
        seq[city] += 1
    return names


def plan_jobs(out: Path, settings: Settings) -> list[Job]:
    """All images of the benchmark, source train first, then target train and val."""
    jobs = []
    for domain, split in STREAMS:
        for i, name in enumerate(sample_names(domain, split, settings.count(domain, split))):
            if domain == "source":
                image, label = (
                    out / "source" / "images" / f"{name}.png",
                    out / "source" / "labels" / f"{name}.png",
                )
            else:
                city = name.split("_")[0]
                image = out / "target" / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
                label = out / "target" / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
            jobs.append(Job(domain, split, i, name, image, label))
    return jobs


def captions_path(out: Path, domain: str, split: str) -> Path:
    """Where the captions of a stream live (the `captions_file` argument of its dataset)."""
    return (
        out / "source" / "captions.json" if domain == "source" else out / "target" / f"captions_{split}.json"
    )


def _gta5_palette() -> list[int]:
    """768-entry palette: each Cityscapes label id gets its class colour (for viewing only)."""
    palette = [0] * 768
    for train_id, label_id in enumerate(TRAIN_ID_TO_LABEL_ID):
        palette[3 * label_id : 3 * label_id + 3] = CITYSCAPES_PALETTE[train_id]
    return palette


_LABEL_LUT = train_id_to_label_id_lut()
_PALETTE = _gta5_palette()


def write_label(path: Path, train_ids: np.ndarray, palette_mode: bool) -> None:
    """Write train ids as Cityscapes label ids: 'P' PNG (GTA5) or 'L' PNG (Cityscapes gtFine)."""
    label_ids = np.ascontiguousarray(_LABEL_LUT[train_ids])
    h, w = label_ids.shape
    img = Image.frombuffer(
        "P" if palette_mode else "L", (w, h), label_ids.tobytes(), "raw", "P" if palette_mode else "L", 0, 1
    )
    if palette_mode:
        img.putpalette(_PALETTE)
    img.save(path, compress_level=3)


def run_job(job: Job, settings: Settings) -> tuple[Job, str, np.ndarray]:
    """Render and write one image; returns (job, caption, per-class pixel counts int64[19])."""
    seed = seed_tuple(settings.seed, job.domain, job.split, job.index)
    image, train_ids, caption = render_scene(seed, job.domain, settings.height, settings.width)
    job.image.parent.mkdir(parents=True, exist_ok=True)
    job.label.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(job.image), image[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"{job.image}: cannot write image")
    write_label(job.label, train_ids, palette_mode=job.domain == "source")
    return job, caption, np.bincount(train_ids.ravel(), minlength=256)[:19].astype(np.int64)


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _run_chunk(args: tuple[list[Job], Settings]) -> list[tuple[Job, str, np.ndarray]]:
    jobs, settings = args
    return [run_job(job, settings) for job in jobs]


def _execute(
    jobs: list[Job], settings: Settings, workers: int
) -> Iterator[list[tuple[Job, str, np.ndarray]]]:
    """Yield results in chunks, serially (workers == 1) or from a process pool."""
    chunk = 8
    batches = [(jobs[i : i + chunk], settings) for i in range(0, len(jobs), chunk)]
    if workers <= 1:
        for batch in batches:
            yield _run_chunk(batch)
        return
    # "spawn", not fork: forking a process whose OpenCV/torch thread pools hold locks deadlocks.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        yield from pool.map(_run_chunk, batches)


def read_meta(out: str | Path) -> dict | None:
    """The meta.json of a completed benchmark in `out`, or None when absent or unreadable."""
    try:
        meta = json.loads((Path(out) / META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_complete(out: Path, meta: dict | None, settings: Settings) -> bool:
    if meta is None or meta.get("settings") != asdict(settings):
        return False
    return all(job.image.is_file() and job.label.is_file() for job in plan_jobs(out, settings)) and all(
        captions_path(out, d, s).is_file() for d, s in STREAMS if settings.count(d, s) > 0
    )


def _clear(out: Path) -> None:
    """Remove a previous (complete or interrupted) benchmark from `out`, refusing foreign data."""
    ours = (out / META).exists() or (out / MARKER).exists()
    present = [p for p in (out / "source", out / "target") if p.exists()]
    if present and not ours:
        raise FileExistsError(
            f"{present[0]} exists but {out} holds no synthetic benchmark ({META} or {MARKER}); "
            "refusing to overwrite it: choose another --out"
        )
    (out / META).unlink(missing_ok=True)
    for path in present:
        shutil.rmtree(path)


def _share(counts: np.ndarray) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    return {name: round(float(c) / total, 6) for name, c in zip(CITYSCAPES_CLASSES, counts)}


def _write_json(path: Path, data: object) -> None:
    """Write JSON atomically (model/atomic.py)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def generate_benchmark(
    out: str | Path,
    *,
    seed: int = 0,
    source: int = 1000,
    target_train: int = 500,
    target_val: int = 200,
    height: int = 256,
    width: int = 512,
    workers: int = 0,
    force: bool = False,
    progress: Callable[[int], object] | bool = False,
) -> dict:
    """Generate (or reuse) the benchmark in `out`; returns its meta dict (also in meta.json).

    Args:
        out: output folder (created); only its source/, target/, meta.json and marker are written.
        seed: benchmark seed; counts: images per stream; height, width: image size (px).
        workers: processes (0 = all CPUs, 1 = in this process).
        force: regenerate even if a complete benchmark with the same settings exists.
        progress: True for a tqdm bar, or a callable receiving the number of images just done.

    Raises:
        ValueError for invalid settings; FileExistsError if `out` holds foreign source/target
        folders.
    """
    settings = Settings(seed, source, target_train, target_val, height, width)
    settings.validate()
    out = Path(out)
    meta = read_meta(out)
    if not force and _is_complete(out, meta, settings):
        return meta  # type: ignore[return-value]
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    (out / MARKER).write_text(
        "synthetic benchmark folder; complete only when meta.json exists\n", encoding="utf-8"
    )
    started = time.perf_counter()
    jobs = plan_jobs(out, settings)
    captions: dict[tuple[str, str], dict[str, str]] = {s: {} for s in STREAMS}
    pixels = {s: np.zeros(19, np.int64) for s in STREAMS}
    present = {s: np.zeros(19, np.int64) for s in STREAMS}
    workers = workers or os.cpu_count() or 1
    with _progress_bar(progress, len(jobs)) as update:
        for results in _execute(jobs, settings, workers):
            for job, caption, counts in results:
                key = (job.domain, job.split)
                captions[key][job.name] = caption
                pixels[key] += counts
                present[key] += counts > 0
            update(len(results))
    for key in STREAMS:
        if settings.count(*key) > 0:
            _write_json(captions_path(out, *key), captions[key])
    elapsed = time.perf_counter() - started
    meta = _meta(settings, pixels, present, elapsed)
    _write_json(out / META, meta)
    return meta


def _meta(settings: Settings, pixels: dict, present: dict, elapsed: float) -> dict:
    def stream(d: str, s: str) -> str:
        return f"{d}/{s}"

    return {
        "generator": "training.synthetic",
        "version": GENERATOR_VERSION,
        "settings": asdict(settings),
        "counts": {stream(*k): settings.count(*k) for k in STREAMS},
        "layout": {
            "source": {"root": "source", "format": "gta5", "captions": "source/captions.json"},
            "target": {
                "root": "target",
                "format": "cityscapes",
                "captions": {s: f"target/captions_{s}.json" for s in SPLIT_CODES},
            },
        },
        "classes": list(CITYSCAPES_CLASSES),
        "pixel_share": {stream(*k): _share(pixels[k]) for k in STREAMS},
        "image_share": {
            stream(*k): {
                n: round(float(c) / max(settings.count(*k), 1), 4)
                for n, c in zip(CITYSCAPES_CLASSES, present[k])
            }
            for k in STREAMS
        },
        "seconds": round(elapsed, 2),
    }


@contextlib.contextmanager
def _progress_bar(progress: Callable[[int], object] | bool, total: int) -> Iterator[Callable[[int], object]]:
    """Yield an `update(n)` callable: a tqdm bar (progress=True), the user's callback, or a no-op."""
    if progress is True:
        from tqdm import tqdm

        with tqdm(total=total, unit="img", desc="synthetic benchmark") as bar:
            yield bar.update
    elif callable(progress):
        yield progress
    else:
        yield lambda n: None
