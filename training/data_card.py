"""What a run was trained on, for checkpoint headers: the data card plus the frame counts.

A data card (`training/data_cards/*.yaml`, named by the run config's `data.card`) says in words what
the data is, where it came from and under which terms; the counts come from the run's own
datasets (the same builders the trainer used), so they cannot drift from what was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from training.data.build import build_source, build_target_train, unlabeled_stream_names
from training.data.splits import read_split
from training.data.views import ViewsDataset
from training.schema import RunConfig

CARD_KEYS = ("name", "source_domain", "target_domain", "val", "sources", "terms")


class DataCardError(ValueError):
    """A data card file is missing or malformed; the message names the file."""


def load_card(path: str | Path) -> dict[str, str]:
    """Read a data card YAML with exactly the CARD_KEYS as strings."""
    path = Path(path)
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataCardError(f"{path}: data card not found") from err
    except (OSError, yaml.YAMLError) as err:
        raise DataCardError(f"{path}: cannot read the data card ({err})") from err
    if (
        not isinstance(card, dict)
        or set(card) != set(CARD_KEYS)
        or not all(isinstance(v, str) for v in card.values())
    ):
        raise DataCardError(f"{path}: a data card maps exactly {list(CARD_KEYS)} to strings")
    return {k: " ".join(card[k].split()) for k in CARD_KEYS}


def stream_counts(config: RunConfig, run_dir: Path) -> dict[str, int]:
    """Images per training stream of a run: {"source": n, "labeled": n, "unlabeled": n} (used ones),
    and "propagated": n when the labelled frames bring n views with propagated labels."""
    streams = set(config.method.streams)
    counts: dict[str, int] = {}
    if "source" in streams:
        counts["source"] = len(build_source(config))
    if {"labeled", "unlabeled"} & streams:
        labeled, unlabeled = read_split(run_dir / "split.json")
        if "labeled" in streams:
            counts["labeled"] = len(labeled)
            dataset = build_target_train(config, labeled, labeled=True)
            if isinstance(dataset, ViewsDataset) and dataset.num_views:
                counts["propagated"] = dataset.num_views
        if "unlabeled" in streams:
            names = unlabeled_stream_names(config, labeled, unlabeled)
            counts["unlabeled"] = len(build_target_train(config, names, labeled=False))
    return counts


def summary_line(card: dict[str, str] | None, counts: dict[str, int]) -> str:
    """One line for people: what the model saw, e.g. for the demo's header."""
    parts = []
    if "labeled" in counts or "unlabeled" in counts:
        target = card["target_domain"].split(" (")[0] if card else "target frames"
        views = counts.get("propagated", 0)
        extra = f" (+ {views} sequence frames with labels propagated from them)" if views else ""
        parts.append(
            f"{counts.get('labeled', 0)} labelled{extra} + {counts.get('unlabeled', 0)} unlabelled {target}"
        )
    if "source" in counts:
        source = card["source_domain"].split(" (")[0] if card else "source images"
        parts.append(f"{counts['source']} images of {source}")
    return "; ".join(parts)


def training_data(config: RunConfig, run_dir: Path, card_path: str | Path | None = None) -> dict[str, Any]:
    """The header block `trained_on`: the card (if any), the stream counts and a one-line summary."""
    path = card_path or config.data.card
    card = load_card(path) if path else None
    counts = stream_counts(config, run_dir)
    return {**(card or {}), "images": counts, "summary": summary_line(card, counts)}
