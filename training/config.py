"""Run configs: YAML files merged over `configs/default.yaml`, then `--set key=value` overrides.

A config may name parents with `_base_: [file.yaml, ...]` (paths relative to it); later files and
keys win. Every key must exist in the default config, so a typo is an error, not a silent no-op.
The merged dict becomes a typed `RunConfig` (training/schema.py), whose values are type-checked.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from training.schema import ConfigError, RunConfig

__all__ = ["CONFIG_DIR", "ConfigError", "RunConfig", "config_from_dict", "dump", "load_config"]

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
# The source and target blocks have different keys; schema.DatasetBlock checks them.
FREE_FORM_KEYS = ("data.source", "data.target")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def merge(
    base: dict[str, Any], update: dict[str, Any], strict: bool = True, prefix: str = ""
) -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base`; with `strict`, unknown keys raise ConfigError."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = f"{prefix}{key}"
        if strict and key not in out and not name.startswith(FREE_FORM_KEYS):
            raise ConfigError(f"unknown config key {name!r}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, strict, f"{name}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its `_base_` parents resolved (not yet merged over the defaults)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular _base_")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge(merged, load_file(path.parent / base, (*_seen, path)), strict=False)
    return merge(merged, data, strict=False)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], yaml-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
    return key.strip().split("."), value


def apply_override(config: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set a dotted key in place; the path must exist except inside free-form dataset blocks."""
    node = config
    for i, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            raise ConfigError(f"unknown config key {'.'.join(keys[: i + 1])!r}")
        node = node[key]
    dotted = ".".join(keys)
    if keys[-1] not in node and not dotted.startswith(FREE_FORM_KEYS):
        raise ConfigError(f"unknown config key {dotted!r}")
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- experiment file (with its bases) <- overrides; typed and validated."""
    config = _read_yaml(DEFAULT_CONFIG)
    if path is not None:
        config = merge(config, load_file(path))
    for item in overrides or []:
        apply_override(config, *parse_override(item))
    return _typed(config)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A resolved config stored as a plain dict (a run folder's config.yaml, a checkpoint header)
    merged over today's defaults, so a run written before a key existed still reads."""
    return _typed(merge(_read_yaml(DEFAULT_CONFIG), data))


def _typed(config: dict[str, Any]) -> RunConfig:
    _normalise_off(config)
    run_config = RunConfig.from_dict(config)
    validate(run_config)
    return run_config


def _normalise_off(config: dict[str, Any]) -> None:
    """YAML 1.1 reads a bare `off` as False; these keys mean the string "off"."""
    for section, key in (("model", "dlg"), ("optim", "amp")):
        if config[section][key] is False:
            config[section][key] = "off"


def validate(config: RunConfig) -> None:
    """Check value ranges that would otherwise fail deep inside a run."""
    m, o, d = config.method, config.optim, config.data
    checks = [
        (0.0 < m.dyce_h <= 1.0, "method.dyce_h must be in (0, 1]"),
        (0.0 <= m.dyce_omega <= 1.0, "method.dyce_omega must be in [0, 1]"),
        (m.dyce_warmup_iters >= 0, "method.dyce_warmup_iters must be >= 0"),
        (0.0 <= m.ema < 1.0, "method.ema must be in [0, 1)"),
        (0.0 <= m.threshold <= 1.0, "method.threshold must be in [0, 1]"),
        (0.0 <= m.caption_dropout <= 1.0, "method.caption_dropout must be in [0, 1]"),
        (set(m.streams) <= {"source", "labeled", "unlabeled"} and bool(m.streams), "method.streams"),
        (o.iters > 0 and o.lr > 0, "optim.iters and optim.lr must be positive"),
        (o.accum_steps >= 1, "optim.accum_steps must be >= 1"),
        (o.amp in ("auto", "bf16", "off"), "optim.amp must be auto, bf16 or off"),
        (d.num_classes in (16, 19), "data.num_classes must be 16 or 19"),
        (config.model.dlg in ("residual", "literal", "repo", "off"), "model.dlg"),
        (config.eval.mode in ("whole", "slide"), "eval.mode must be whole or slide"),
        (config.eval.model in ("teacher", "student"), "eval.model must be teacher or student"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"invalid config: {message}")
    if m.ct and "unlabeled" not in m.streams:
        raise ConfigError("invalid config: method.ct needs the 'unlabeled' stream")


def dump(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
