"""Publish a finished run's model as a serving checkpoint (the embedded default is made this way).

    python -m training.publish runs/real/real_full \
        [--out serving/default_checkpoint.safetensors] [--max-mb 20] [--card training/data_cards/x.yaml]

Reads `<run>/model.safetensors` (integrity-checked by `model.load_model`), `<run>/eval_final.json`
and `<run>/wall_seconds.json`, and writes a new checkpoint whose header `metrics` hold the final
evaluation (mIoU, per-class IoU, eval mode and size, which weights were evaluated), the experiment
name, the training wall time, the number of iterations, the commit of this repository, and
`trained_on`: the run's data card (`data.card` or `--card`: what the data is, its sources and
terms) with the number of images of every training stream. The tensors are written unchanged
(or cast to float16 with `--storage float16`).
A file over `--max-mb` is refused (the default checkpoint ships in the repository and the Bento);
`--storage float16` halves it (the embedded default is published so).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from model import load_model, save_checkpoint
from model.atomic import atomic_path
from model.checkpoint import read_header
from training.config import config_from_dict
from training.data_card import training_data
from training.trainer import MODEL_FILE

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "serving" / "default_checkpoint.safetensors"


class PublishError(RuntimeError):
    """The run folder is unfinished or the result would not be a valid serving checkpoint."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PublishError(f"{path}: missing (is the run finished?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PublishError(f"{path}: not valid JSON: {err}") from err


def _relative(path: str) -> str:
    """A data path relative to the repository when it lies inside it (headers must not leak host paths)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def _strip_host_paths(node: Any) -> Any:
    """The training config with absolute paths inside the repository made relative to it."""
    if isinstance(node, dict):
        return {k: _strip_host_paths(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_strip_host_paths(v) for v in node]
    if isinstance(node, str) and node.startswith(str(ROOT) + os.sep):
        return _relative(node)
    return node


def git_commit() -> str:
    """This repository's commit (with `-dirty` for uncommitted changes), or "unknown"."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def published_metrics(run_dir: Path, header: dict[str, Any], card: Path | None = None) -> dict[str, Any]:
    """The header `metrics` of a published checkpoint, from the run folder's final evaluation."""
    evaluation = _read_json(run_dir / "eval_final.json")
    training = header.get("training_config", {})
    wall = run_dir / "wall_seconds.json"
    old = header.get("metrics", {})
    trained_on = training_data(config_from_dict(training), run_dir, card)
    metrics = {
        "experiment": training.get("experiment", run_dir.name),
        "benchmark": trained_on.get("val")
        or "synthetic driving-scene benchmark, target val (see RESULTS.md)",
        "miou": evaluation["miou"],
        "iou": evaluation["iou"],
        "num_classes": evaluation["num_classes"],
        "iters": training.get("optim", {}).get("iters"),
        "eval": old.get("eval", {}),
        "dataset": _relative(old["dataset"]) if old.get("dataset") else "",
        "trained_on": trained_on,
        "commit": git_commit(),
    }
    if wall.is_file():
        metrics["train_wall_minutes"] = round(_read_json(wall)["seconds"] / 60.0, 1)
    return metrics


def publish(
    run_dir: Path,
    out: Path = DEFAULT_OUT,
    max_mb: float = 20.0,
    card: Path | None = None,
    storage: str = "float32",
) -> dict[str, Any]:
    """Write the run's model to `out` with its metrics in the header; returns the new header.

    `storage` "float16" halves the file; the header's metrics stay the fp32 run's evaluation."""
    source = run_dir / MODEL_FILE
    model, header = load_model(source)
    metrics = published_metrics(run_dir, header, card)
    training = _strip_host_paths(header.get("training_config") or {})
    with atomic_path(out) as tmp:  # `out` is replaced only when every check below passes
        new_header = save_checkpoint(tmp, model, header["class_names"], training, metrics, storage=storage)
        size_mb = tmp.stat().st_size / 2**20
        if size_mb > max_mb:
            raise PublishError(f"{out}: {size_mb:.1f} MB is over the {max_mb} MB limit")
        read_header(tmp)
        os.chmod(tmp, 0o644)  # a shipped file: readable by whoever serves it (the temporary file was 0600)
    return new_header


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "run_dir", type=Path, help="a finished run folder (holds model.safetensors, eval_final.json)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint to write (default: %(default)s)")
    p.add_argument("--max-mb", type=float, default=20.0, help="refuse a larger file (default: %(default)s)")
    p.add_argument(
        "--card", type=Path, default=None, help="data card YAML (default: the run config's data.card, if any)"
    )
    p.add_argument(
        "--storage",
        choices=("float32", "float16"),
        default="float32",
        help="tensor storage dtype: float16 halves the file; loading restores fp32 (default: %(default)s)",
    )
    args = p.parse_args(argv)
    header = publish(args.run_dir, args.out, args.max_mb, args.card, args.storage)
    m = header["metrics"]
    print(f"wrote {args.out}: {m['experiment']}, mIoU {m['miou']:.1f} ({m['benchmark']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
