"""Optional per-image captions: a JSON object {sample name: caption}."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from training.data.errors import DatasetError


def load_captions(path: Path) -> dict[str, str]:
    """Read a captions JSON file; raises DatasetError if it is missing, invalid or not str -> str."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: captions file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read captions JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise DatasetError(f"{path}: captions file must be a JSON object mapping names to strings")
    return data


def check_coverage(captions: dict[str, str], names: Iterable[str], path: Path) -> None:
    """Raise DatasetError naming `path` and the first missing names if any name has no caption."""
    missing = [name for name in names if name not in captions]
    if missing:
        shown = ", ".join(missing[:5])
        raise DatasetError(f"{path}: no caption for {len(missing)} image(s), e.g. {shown}")
