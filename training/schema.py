"""The run config as typed data: one frozen dataclass per section of `configs/default.yaml`.

`training.config.load_config` merges YAML files and overrides as plain dicts (strict: every key
must exist in the defaults), then builds a `RunConfig` here, which checks every value's type, so a
run fails at load with the key's name instead of deep inside a step. `to_dict()` gives the plain
dict back (the run folder's config.yaml, the training state and checkpoint headers hold that).

    cfg = load_config("training/configs/real_full.yaml")
    cfg.optim.lr, cfg.data.target.root, cfg.method.streams     # 0.001, '../shared/...', ('source', ...)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

Pair = tuple[int, int]


class ConfigError(ValueError):
    """An invalid run config; the message names the key or file."""


@dataclass(frozen=True)
class ModelSection:
    """model.*: which SemiDAViL variant and where its weights start from."""

    name: str
    pretrained: str | None
    init_checkpoint: str | None
    dlg: str
    vlp: bool
    visual_pretrained: str | None
    conv_skip_weights: str | None
    finetune: str
    text_finetune: str


@dataclass(frozen=True)
class DatasetBlock:
    """data.source / data.target: a dataset on disk and how its training stream is read.

    `captions` is the source's captions file; `captions_train` / `captions_val` the target's;
    `resize` (H, W) on load, `scale` (lo, hi) random rescale before cropping, `cache` decoded
    frames in memory, `unlabeled_dirs` extra unlabeled target folders beside leftImg8bit;
    `propagated` a folder of labels propagated along the sequences (`training.data.propagate`)
    whose views within `propagated_radius` frames join the labelled stream (0: none).
    """

    type: str
    root: str
    resize: Pair | None = None
    scale: tuple[float, float] | None = None
    cache: bool = False
    captions: str | None = None
    captions_train: str | None = None
    captions_val: str | None = None
    unlabeled_dirs: tuple[str, ...] = ()
    propagated: str | None = None
    propagated_radius: int = 0


@dataclass(frozen=True)
class BatchSizes:
    """data.batch: images per process and step of each stream."""

    source: int
    labeled: int
    unlabeled: int


@dataclass(frozen=True)
class DataSection:
    num_classes: int
    source: DatasetBlock
    target: DatasetBlock
    num_labeled: int
    split_seed: int
    holdout: int
    crop: Pair
    batch: BatchSizes
    workers: int
    use_captions: bool
    shuffle_captions: bool
    card: str | None


@dataclass(frozen=True)
class MethodSection:
    """method.*: the streams, consistency training, DyCE and the augmentations."""

    streams: tuple[str, ...]
    ct: bool
    dyce: bool
    dyce_h: float
    dyce_omega: float
    dyce_warmup_iters: int
    dyce_normalize: bool
    dyce_with_ce: bool
    ema: float
    threshold: float
    ct_normalize: str
    lambda_u: float
    caption_dropout: float
    cutmix_p: float
    cutmix_area: tuple[float, float]
    jitter: tuple[float, float, float, float]
    jitter_p: float
    grayscale_p: float
    blur_p: float
    blur_sigma: tuple[float, float]
    hflip_p: float
    sup_photometric_p: float
    class_crop_p: float


@dataclass(frozen=True)
class OptimSection:
    iters: int
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    poly_power: float
    warmup_iters: int
    lr_mult: dict[str, float]
    accum_steps: int
    amp: str
    grad_clip: float | None


@dataclass(frozen=True)
class EvalSection:
    every: int
    model: str
    mode: str
    size: Pair
    window: Pair
    stride: Pair
    batch_size: int
    max_images: int | None

    @classmethod
    def whole(cls, size: Pair, max_images: int | None = None) -> EvalSection:
        """Whole-image inference at `size` (H, W), for evaluations outside a run (the VLP gates)."""
        return cls(0, "student", "whole", size, size, size, 1, max_images)


@dataclass(frozen=True)
class LogSection:
    every: int
    checkpoint_every: int


@dataclass(frozen=True)
class RunConfig:
    """A whole resolved run: defaults <- experiment file <- overrides."""

    experiment: str
    seed: int
    output_dir: str
    device: str
    model: ModelSection
    data: DataSection
    method: MethodSection
    optim: OptimSection
    eval: EvalSection
    log: LogSection

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from the merged plain dict; a missing, unknown or ill-typed key is a ConfigError."""
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        """The plain dict (lists, not tuples), as YAML and JSON write it."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key {where.rstrip('.') or 'top level'!r} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {where + unknown[0]!r}")
    kwargs = {}
    for name, spec in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], where + name)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {where + name!r}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """`value` as type `tp` (dataclass, tuple, dict, Optional, bool/int/float/str), else ConfigError."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [t for t in options if t is not type(None)]
        return _coerce(inner, value, where)
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, where + ".")
    if origin is tuple:
        return _coerce_tuple(get_args(tp), value, where)
    if origin is dict:
        key_type, value_type = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"config key {where!r} must be a mapping, got {value!r}")
        return {_coerce(key_type, k, where): _coerce(value_type, v, f"{where}.{k}") for k, v in value.items()}
    return _coerce_scalar(tp, value, where)


def _coerce_tuple(args: tuple[Any, ...], value: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key {where!r} must be a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], v, where) for v in value)
    if len(value) != len(args):
        raise ConfigError(f"config key {where!r} must have {len(args)} values, got {list(value)!r}")
    return tuple(_coerce(t, v, where) for t, v in zip(args, value, strict=True))


def _coerce_scalar(tp: Any, value: Any, where: str) -> Any:
    # bool is an int in Python: never accept one for the other. An int is a fine float (`lr: 1`),
    # but YAML 1.1 reads `1e-4` (no dot) as a string: that is refused here, by name.
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"config key {where!r} must be {tp.__name__}, got {value!r}")
    return value
