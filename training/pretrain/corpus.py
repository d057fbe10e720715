"""The mini-VLP corpus: synthetic street scenes in the third ("web") look, cut into crop-caption pairs.

    <root>/chunk_0000.npy    uint8 [n, H, W, 3] scenes (read memory-mapped)
    <root>/chunk_0000.json   {"pairs": [[scene_in_chunk, y0, x0, side, caption, [train ids present]], ...]}
    <root>/meta.json         settings and counts (written last: a corpus without it is incomplete)

Each scene gives `scene_crops` square scene crops (captions name the classes covering the crop)
and up to `object_crops` object-centred crops (one object each, classes sampled evenly so tail
classes get their pairs). Scenes are seeded with (seed, web domain code, split 2, index), a split
code the benchmark never uses, so no scene is a target validation scene. Generation is per chunk
and resumable: a chunk is complete once its JSON exists (the JSON is renamed into place after the
array). The last `holdout` scenes are kept out of training for the retrieval gate.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from model.atomic import atomic_path, atomic_write_text
from model.class_sets import CITYSCAPES_CLASSES
from training.pretrain.captions import THINGS, object_caption, scene_caption
from training.synthetic.render import DOMAIN_CODES, render

CORPUS_VERSION = "1"
PRETRAIN_SPLIT = 2  # the benchmark writer uses 0 (train) and 1 (val)
NUM_CLASSES = len(CITYSCAPES_CLASSES)
# Objects worth a crop of their own: things plus the confusable surfaces wall and fence.
OBJECT_CLASSES = THINGS | {CITYSCAPES_CLASSES.index("wall"), CITYSCAPES_CLASSES.index("fence")}
MIN_OBJECT_PIXELS = 60
PRESENT_SHARE = 0.02


class CorpusError(ValueError):
    """The corpus folder is incomplete, foreign or unreadable; the message names the file."""


@dataclass(frozen=True)
class CorpusSettings:
    """Everything that determines the corpus files (compared when a corpus is reused)."""

    seed: int = 0
    scenes: int = 10000
    height: int = 256
    width: int = 512
    scene_crops: int = 3
    object_crops: int = 7
    chunk: int = 250
    holdout: int = 500
    version: str = CORPUS_VERSION

    def chunks(self) -> int:
        return -(-self.scenes // self.chunk)


def _scene_crop(
    ids: np.ndarray, inst: np.ndarray, inst_class: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """A random square crop: (y0, x0, side, class share [19], visible instances per class [19]).

    inst_class: [num_instances] train id of each instance; an instance counts when at least 12
    of its pixels are inside the crop.
    """
    h, w = ids.shape
    side = int(rng.uniform(0.5, 1.0) * h)
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop_inst = inst[y0 : y0 + side, x0 : x0 + side].ravel()
    share = class_share(ids, y0, x0, side)
    seen, pixels = np.unique(crop_inst[crop_inst >= 0], return_counts=True)
    counts = np.bincount(inst_class[seen[pixels >= 12]], minlength=NUM_CLASSES)[:NUM_CLASSES]
    return y0, x0, side, share, counts


def _object_box(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A square box around a mask's bounding box, 1.3-2x its longer side, inside the image."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    side = int(np.clip(extent * rng.uniform(1.3, 2.0), 32, h))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    return y0, x0, side


def class_share(ids: np.ndarray, y0: int, x0: int, side: int) -> np.ndarray:
    """[19] share of the square crop's pixels per train id (undrawn pixels count, in no class)."""
    crop = ids[y0 : y0 + side, x0 : x0 + side].ravel()
    return np.bincount(crop[crop < NUM_CLASSES], minlength=NUM_CLASSES)[:NUM_CLASSES] / crop.size


def _present(share: np.ndarray) -> list[int]:
    """Train ids whose share of a crop is at least PRESENT_SHARE."""
    return [int(k) for k in np.nonzero(share >= PRESENT_SHARE)[0]]


def scene_pairs(index: int, s: CorpusSettings) -> tuple[np.ndarray, list[list]]:
    """Render scene `index` and cut its pairs: -> (image uint8 [H, W, 3], pairs).

    A pair is [y0, x0, side, caption, train ids present in the crop (pixel share >= 2 %)].
    """
    out = render((s.seed, DOMAIN_CODES["web"], PRETRAIN_SPLIT, index), "web", s.height, s.width)
    rng = np.random.default_rng([s.seed, index, 7])
    ids, inst = out.raster.train_ids, out.raster.instance_map
    inst_class = np.asarray([i.class_id for i in out.raster.instances], np.int64)
    pairs: list[list] = []
    for _ in range(s.scene_crops):
        y0, x0, side, share, counts = _scene_crop(ids, inst, inst_class, rng)
        pairs.append([y0, x0, side, scene_caption(share, counts, rng), _present(share)])
    pixels = out.raster.instance_pixels
    by_class: dict[int, list[int]] = {}
    for i, instance in enumerate(out.raster.instances):
        if instance.class_id in OBJECT_CLASSES and pixels[i] >= MIN_OBJECT_PIXELS:
            by_class.setdefault(instance.class_id, []).append(i)
    classes = list(by_class)
    rng.shuffle(classes)
    for k in range(min(s.object_crops, sum(len(v) for v in by_class.values()))):
        cls = classes[k % len(classes)]
        pool = by_class[cls]
        if not pool:
            continue
        i = pool.pop(int(rng.integers(0, len(pool))))
        mask = inst == i
        y0, x0, side = _object_box(mask, rng)
        caption = object_caption(cls, out.image[mask].mean(0), rng)
        pairs.append([y0, x0, side, caption, sorted({cls, *_present(class_share(ids, y0, x0, side))})])
    return out.image, pairs


def _write_chunk(root: str, chunk: int, s: CorpusSettings) -> int:
    """Render one chunk's scenes and write its two files (array first, JSON last); -> pair count."""
    cv2.setNumThreads(1)
    start, stop = chunk * s.chunk, min((chunk + 1) * s.chunk, s.scenes)
    images = np.zeros((stop - start, s.height, s.width, 3), np.uint8)
    pairs: list[list] = []
    for j, index in enumerate(range(start, stop)):
        images[j], scene = scene_pairs(index, s)
        pairs += [[j, *p] for p in scene]
    base = Path(root) / f"chunk_{chunk:04d}"
    with atomic_path(f"{base}.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, images)
    atomic_write_text(f"{base}.json", json.dumps({"pairs": pairs}))  # last: it marks the chunk done
    return len(pairs)


def build_corpus(
    root: str | Path, s: CorpusSettings, workers: int = 0, log: Callable[[str], None] = print
) -> dict:
    """Generate (or finish) the corpus in `root`; a complete corpus with equal settings is reused."""
    root = Path(root)
    meta_path = root / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == asdict(s):
            return meta
        raise CorpusError(
            f"{meta_path}: a corpus with other settings is there; choose another --corpus folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    todo = [c for c in range(s.chunks()) if not (root / f"chunk_{c:04d}.json").is_file()]
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    log(f"corpus: rendering {len(todo)} of {s.chunks()} chunks ({s.scenes} scenes) into {root}")
    args = ([str(root)] * len(todo), todo, [s] * len(todo))
    # spawn, not fork: a forked worker of a process with torch's threads can deadlock
    pool = (
        None
        if workers == 1
        else ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    )
    try:
        done = pool.map(_write_chunk, *args) if pool else map(_write_chunk, *args)
        for n, _ in enumerate(done, 1):
            rate = n / (time.perf_counter() - t0)
            log(f"corpus: chunk {n}/{len(todo)} done, {(len(todo) - n) / rate:.0f} s left")
    finally:
        if pool:
            pool.shutdown()
    counts = [len(json.loads((root / f"chunk_{c:04d}.json").read_text())["pairs"]) for c in range(s.chunks())]
    meta = {"settings": asdict(s), "pairs": sum(counts), "scenes": s.scenes}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


class Corpus:
    """A complete corpus on disk: pair look-ups and crops.

    `crop(i, size)` -> uint8 [size, size, 3]; `captions[i]`; `present` [P, 19] bool;
    `scene` [P] global scene index (the hold-out split is by scene); `is_scene_crop` [P] bool.
    """

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise CorpusError(f"{meta_path}: missing (corpus not generated, or generation unfinished)")
        meta = json.loads(meta_path.read_text())
        self.settings = CorpusSettings(**meta["settings"])
        self.images: list[np.ndarray] = []
        rows: list[list] = []
        for c in range(self.settings.chunks()):
            path = root / f"chunk_{c:04d}.npy"
            try:
                self.images.append(np.load(path, mmap_mode="r"))
                pairs = json.loads((root / f"chunk_{c:04d}.json").read_text())["pairs"]
            except (OSError, ValueError) as err:
                raise CorpusError(f"{path}: unreadable corpus chunk: {err}") from err
            rows += [[c, *p] for p in pairs]
        self.chunk = np.asarray([r[0] for r in rows], np.int64)
        self.local = np.asarray([r[1] for r in rows], np.int64)
        self.boxes = np.asarray([r[2:5] for r in rows], np.int64)
        self.captions = [r[5] for r in rows]
        self.present = np.zeros((len(rows), NUM_CLASSES), bool)
        for i, r in enumerate(rows):
            self.present[i, r[6]] = True
        self.scene = self.chunk * self.settings.chunk + self.local
        # each scene's first `scene_crops` pairs are its scene crops, the rest object crops
        first = np.r_[0, np.nonzero(np.diff(self.scene))[0] + 1]
        rank = np.arange(len(rows)) - np.repeat(first, np.diff(np.r_[first, len(rows)]))
        self.is_scene_crop = rank < self.settings.scene_crops

    def __len__(self) -> int:
        return len(self.captions)

    def split(self, holdout: bool) -> np.ndarray:
        """Pair indices of the training scenes (holdout=False) or the held-out last scenes."""
        cut = self.settings.scenes - self.settings.holdout
        return np.nonzero((self.scene >= cut) if holdout else (self.scene < cut))[0]

    def crop(self, i: int, size: int, flip: bool = False) -> np.ndarray:
        """Pair i's crop resized to size x size (area filter when shrinking), optionally mirrored."""
        y0, x0, side = self.boxes[i]
        patch = np.asarray(self.images[self.chunk[i]][self.local[i], y0 : y0 + side, x0 : x0 + side])
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        patch = cv2.resize(patch, (size, size), interpolation=interp)
        return patch[:, ::-1] if flip else patch
