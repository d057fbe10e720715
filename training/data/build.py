"""Datasets of a run config: source, labeled/unlabeled target (seeded split) and target val."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from model.class_sets import get_class_set
from training.data.cityscapes import CityscapesDataset, discover_cityscapes
from training.data.errors import DatasetError
from training.data.gta5 import GTA5Dataset
from training.data.splits import make_split
from training.data.synthia import SynthiaDataset
from training.data.views import ViewsDataset, load_views
from training.schema import DatasetBlock, RunConfig


def class_set_name(config: RunConfig) -> str:
    return "cityscapes" if config.data.num_classes == 19 else "synthia16"


def class_names_for(config: RunConfig) -> list[str]:
    return list(get_class_set(class_set_name(config)).names)


def class_prompts_for(config: RunConfig) -> list[list[str]]:
    return get_class_set(class_set_name(config)).prompts()


def _captions(block: DatasetBlock, name: str | None, config: RunConfig) -> Path | None:
    """A dataset block's captions file `name` (relative to its root), or None without captions."""
    if not config.data.use_captions or not name:
        return None
    path = Path(name)
    path = path if path.is_absolute() else Path(block.root) / path
    if not path.is_file():
        raise DatasetError(
            f"{path}: captions file not found; run `python -m training.captions --root {block.root} ...` "
            "to make it, or set data.use_captions=false"
        )
    return path


def shuffle_captions(dataset: Any, config: RunConfig, stream: str) -> Any:
    """The shuffled-captions control (`data.shuffle_captions`): the dataset's captions permuted
    across its images (a seeded derangement: no image keeps its own), in place; returns it.

    Caption words then say nothing about their image, so any gain of the full row over this
    control is what caption content adds.
    """
    if not config.data.shuffle_captions or len(dataset.captions) < 2:
        return dataset
    names = sorted(dataset.captions)
    rng = np.random.default_rng([int(config.data.split_seed), zlib.crc32(stream.encode())])
    order = rng.permutation(len(names))
    shifted = np.roll(order, 1)  # a cyclic shift of a random order: every name gets another's caption
    old = dict(dataset.captions)
    dataset.captions = {names[i]: old[names[j]] for i, j in zip(order, shifted, strict=True)}
    return dataset


def stream_scale(block: DatasetBlock) -> tuple[float, float] | None:
    """The random-scale range (lo, hi) of a dataset block's training stream, or None."""
    value = block.scale
    if value is None:
        return None
    lo, hi = float(value[0]), float(value[1])
    if not 0 < lo <= hi:
        raise DatasetError(f"scale must be [lo, hi] with 0 < lo <= hi, got {value!r}")
    return lo, hi


def build_source(config: RunConfig) -> Any:
    block = config.data.source
    common: dict[str, Any] = {
        "resize": block.resize,
        "captions_file": _captions(block, block.captions, config),
        "cache": block.cache,
    }
    if block.type == "gta5":
        if config.data.num_classes != 19:
            raise DatasetError("GTA5 source needs data.num_classes=19")
        return shuffle_captions(GTA5Dataset(block.root, **common), config, "source")
    if block.type == "synthia":
        data = SynthiaDataset(block.root, num_classes=config.data.num_classes, **common)
        return shuffle_captions(data, config, "source")
    raise DatasetError(f"unknown source dataset type {block.type!r} (gta5 or synthia)")


def _target_check(block: DatasetBlock) -> None:
    if block.type != "cityscapes":
        raise DatasetError(f"unknown target dataset type {block.type!r} (cityscapes)")


def target_split(config: RunConfig) -> tuple[list[str], list[str]]:
    """(labeled, unlabeled) names of the target train set for `data.num_labeled`, `data.split_seed`.

    Frames held out for model selection (`data.holdout`, `holdout_names`) are in neither list.
    """
    labeled, unlabeled, _ = _split_with_holdout(config)
    return labeled, unlabeled


def holdout_names(config: RunConfig) -> list[str]:
    """Labeled train frames held out of training and evaluated instead of the val split.

    `data.holdout: K` (default 0) draws K frames from the labeled side with the split's seed, so
    that choices (schedule, size) are made on frames the reported val numbers never see. Without
    a holdout nothing is read (a root holding only the val split still evaluates).
    """
    return _split_with_holdout(config)[2] if config.data.holdout else []


def _split_with_holdout(config: RunConfig) -> tuple[list[str], list[str], list[str]]:
    block, data = config.data.target, config.data
    _target_check(block)
    names = [s.name for s in discover_cityscapes(Path(block.root), "train", labeled=False)]
    holdout, seed = data.holdout, data.split_seed
    if holdout < 0:
        raise DatasetError(f"data.holdout must be >= 0, got {holdout}")
    labeled, unlabeled = make_split(names, data.num_labeled + holdout, seed)
    labeled, held = make_split(labeled, data.num_labeled, seed) if holdout else (labeled, [])
    return labeled, unlabeled, held


def build_target_train(
    config: RunConfig, names: list[str], labeled: bool
) -> CityscapesDataset | ViewsDataset:
    """Labeled or unlabeled target train frames; the unlabeled set adds `target.unlabeled_dirs`, the
    labeled set the propagated views of its frames (`target.propagated`, within
    `target.propagated_radius` frames; held-out frames are not in `names`, so neither are theirs)."""
    block = config.data.target
    data = CityscapesDataset(
        block.root,
        "train",
        config.data.num_classes,
        labeled=labeled,
        names=names,
        extra_dirs=() if labeled else block.unlabeled_dirs,
        resize=block.resize,
        captions_file=_captions(block, block.captions_train, config),
        cache=block.cache,
    )
    data = shuffle_captions(data, config, "target_labeled" if labeled else "target_unlabeled")
    if not labeled or not block.propagated or block.propagated_radius <= 0:
        return data
    views = load_views(block.propagated, block.propagated_radius)
    return ViewsDataset(data, views, config.data.num_classes, resize=block.resize, cache=block.cache)


def unlabeled_stream_names(config: RunConfig, labeled: list[str], unlabeled: list[str]) -> list[str]:
    """Names of the unlabeled stream's split frames (`build_target_train` adds `unlabeled_dirs`).

    A fully labeled target (the 2975 row) with no other unlabeled folders runs consistency on its
    labeled frames; otherwise the split's unlabeled side.
    """
    if unlabeled or config.data.target.unlabeled_dirs:
        return unlabeled
    return labeled


def build_val_dataset(config: RunConfig) -> CityscapesDataset:
    """Target val at its native size (inference resizes to eval.size; labels stay full-res); the
    held-out train frames instead when `data.holdout` > 0."""
    block = config.data.target
    _target_check(block)
    held = holdout_names(config)
    data = CityscapesDataset(
        block.root,
        "train" if held else "val",
        config.data.num_classes,
        names=held or None,
        captions_file=_captions(block, block.captions_train if held else block.captions_val, config),
    )
    return shuffle_captions(data, config, "target_val")
