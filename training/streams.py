"""Deterministic training streams: which sample, which augmentation, for every (step, slot).

The sample order is a per-epoch permutation seeded by (seed, stream, epoch); the augmentation
RNG is seeded by (seed, stream, step, slot). Training is therefore a pure function of the seed
and the step, which is what makes a run killed with SIGKILL resume exactly, with any number of
loader workers, and what keeps DDP ranks on disjoint slices of one global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.augment import strong_augment, weak_augment
from training.schema import MethodSection

STREAM_IDS = {"source": 1, "labeled": 2, "unlabeled": 3}
Key = tuple[int, int, int]  # (dataset index, step, slot)


class StepBatchSampler(Sampler[list[Key]]):
    """Yields, for steps start..total-1, this rank's `batch` keys of the global batch."""

    def __init__(
        self,
        size: int,
        batch: int,
        seed: int,
        stream: str,
        start_step: int,
        total_steps: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if size <= 0:
            raise ValueError(f"stream {stream!r} has no samples")
        self.size, self.batch, self.seed = size, batch, seed
        self.stream_id = STREAM_IDS[stream]
        self.start, self.total = start_step, total_steps
        self.rank, self.world = rank, world
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return max(self.total - self.start, 0)

    def index_at(self, position: int) -> int:
        """Dataset index at a global stream position (epoch permutations laid end to end)."""
        epoch, offset = divmod(position, self.size)
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, self.stream_id, epoch])
            self._perm, self._perm_epoch = rng.permutation(self.size), epoch
        return int(self._perm[offset])

    def keys_for_step(self, step: int) -> list[Key]:
        first = (step * self.world + self.rank) * self.batch
        return [(self.index_at(first + j), step, self.rank * self.batch + j) for j in range(self.batch)]

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start, self.total):
            yield self.keys_for_step(step)


class TrainStream(Dataset):
    """Wraps a dataset; item `(index, step, slot)` -> augmented tensors.

    Returns {"image": uint8 [3, h, w], "valid": bool [h, w], "caption": str, "name": str} plus
    "label": int64 [h, w] (labeled streams) or "strong": uint8 [3, h, w] (unlabeled stream: the
    same crop with strong photometric augmentation for the student).

    `scale` (lo, hi): random rescale of the dataset's image before cropping (None: none).
    `aug.sup_photometric_p`: probability that a labeled stream's image gets the strong
    photometric augmentation too (0: never, and no random number is drawn for it).
    """

    def __init__(
        self,
        dataset: Dataset,
        stream: str,
        crop: tuple[int, int],
        aug: MethodSection,
        seed: int,
        scale: tuple[float, float] | None = None,
    ) -> None:
        self.dataset, self.stream, self.aug, self.seed = dataset, stream, aug, seed
        self.crop = cast("tuple[int, int]", tuple(crop))
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # torch's Dataset declares no __len__

    def __getitem__(self, key: Key) -> dict[str, Any]:
        index, step, slot = key
        rng = np.random.default_rng([self.seed, STREAM_IDS[self.stream], step, slot])
        example = self.dataset[index]
        label = example.get("label") if self.stream != "unlabeled" else None
        image, label, valid = weak_augment(
            example["image"],
            label,
            self.crop,
            rng,
            self.aug.hflip_p,
            self.scale,
            class_crop_p=self.aug.class_crop_p,
        )
        sup_p = self.aug.sup_photometric_p
        if label is not None and sup_p > 0 and rng.random() < sup_p:
            image = strong_augment(image, rng, self.aug)
        out: dict[str, Any] = {
            "image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
            "valid": torch.from_numpy(valid),
            "caption": example["caption"],
            "name": example["name"],
            "caption_drop": bool(rng.random() < self.aug.caption_dropout),
        }
        if label is not None:
            out["label"] = torch.from_numpy(label.astype(np.int64))
        if self.stream == "unlabeled":
            strong = strong_augment(image, rng, self.aug)
            out["strong"] = torch.from_numpy(strong).permute(2, 0, 1).contiguous()
            out["cutmix_u"] = float(rng.random())
            out["cutmix_seed"] = int(rng.integers(0, 2**31 - 1))
        return out
