"""Seeded labeled/unlabeled splits of the target training set, and their JSON files.

No official split lists exist (docs/method.md 2.1): draw `num_labeled` names uniformly at random with
a fixed seed from the sorted name list; the rest is unlabeled. The JSON file freezes the draw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def make_split(names: Sequence[str], num_labeled: int, seed: int) -> tuple[list[str], list[str]]:
    """Return (labeled, unlabeled), both sorted, disjoint, covering `names`.

    The input is sorted first, so the result depends only on the set of names, `num_labeled`
    and `seed`. Raises ValueError for duplicate names or `num_labeled` outside [0, len(names)].
    """
    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        raise ValueError("names must be unique")
    if not 0 <= num_labeled <= len(ordered):
        raise ValueError(f"num_labeled={num_labeled} is outside [0, {len(ordered)}]")
    chosen = np.random.default_rng(seed).permutation(len(ordered))[:num_labeled]
    mask = np.zeros(len(ordered), dtype=bool)
    mask[chosen] = True
    labeled = [n for n, m in zip(ordered, mask) if m]
    unlabeled = [n for n, m in zip(ordered, mask) if not m]
    return labeled, unlabeled


def write_split(
    path: str | Path,
    labeled: Sequence[str],
    unlabeled: Sequence[str],
    seed: int | None = None,
    *,
    held_out: Sequence[str] = (),
) -> None:
    """Write {"seed", "num_labeled", "labeled", "unlabeled"} (and "held_out", the frames evaluated
    instead of val, when there are any) as JSON to `path`."""
    data = {
        "seed": seed,
        "num_labeled": len(labeled),
        "labeled": list(labeled),
        "unlabeled": list(unlabeled),
    }
    if held_out:
        data["held_out"] = list(held_out)
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_split(path: str | Path) -> tuple[list[str], list[str]]:
    """Read (labeled, unlabeled) written by `write_split`; ValueError naming `path` if malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        labeled, unlabeled = data["labeled"], data["unlabeled"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a split file ({exc})") from exc
    if not isinstance(labeled, list) or not isinstance(unlabeled, list):
        raise ValueError(f"{path}: 'labeled' and 'unlabeled' must be lists")
    if not all(isinstance(n, str) for n in [*labeled, *unlabeled]):
        raise ValueError(f"{path}: split names must be strings")
    if len(set(labeled) | set(unlabeled)) != len(labeled) + len(unlabeled):
        raise ValueError(f"{path}: labeled and unlabeled names must be unique and disjoint")
    return list(labeled), list(unlabeled)
