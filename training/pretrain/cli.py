"""`python -m training.pretrain`: arguments -> `PretrainConfig` -> `pretrain`, then the gates printed."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from training.pretrain.run import OBJECTIVES, PretrainConfig, pretrain


def build_parser() -> argparse.ArgumentParser:
    """Every PretrainConfig field as an option, with its default shown."""
    p = argparse.ArgumentParser(
        prog="python -m training.pretrain",
        description=(
            "Mini vision-language pre-training of a model config's open_clip towers on synthetic "
            "crop-caption pairs in a third look (generated on first use, minutes). Resumable: run the "
            "same command again. Writes <out>/clip.safetensors (for model.pretrained), report.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="run folder (state, weights, report)")
    defaults = PretrainConfig()
    for field in dataclasses.fields(PretrainConfig):
        value = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, tuple):
            p.add_argument(flag, type=int, nargs=len(value), default=list(value), metavar=("H", "W"))
        elif field.name == "objective":
            p.add_argument(
                flag,
                choices=OBJECTIVES,
                default=value,
                help="clip: both towers, ClipLoss; vision: multi-label",
            )
        else:
            p.add_argument(flag, type=type(value), default=value)
    p.add_argument("--workers", type=int, default=0, help="corpus rendering processes (0 = one per CPU)")
    p.add_argument("--no-progress", action="store_true", help="print nothing but the final gates")
    return p


def _print_gates(report: dict[str, Any]) -> None:
    for name, gate in report.get("gates", {}).items():
        verdict = "pass" if gate["pass"] else "FAIL"
        print(f"{name}: {gate['value']:.3f} (threshold {gate['threshold']}) {verdict}")
    for key in ("random", "trained"):
        r = report.get(key, {})
        zs = r.get("zero_shot", {}).get("miou", float("nan"))
        print(
            f"{key}: prompt cosine {r['prompt_cosine']['mean']:.3f}, retrieval R@1 {100 * r['retrieval']['r1']:.2f} % "
            f"(chance {100 * r['retrieval']['chance']:.2f} %), zero-shot mIoU {zs:.2f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for bad input, with the file and problem named)."""
    args = vars(build_parser().parse_args(argv))
    out, workers, quiet = args.pop("out"), args.pop("workers"), args.pop("no_progress")
    args["val_size"] = tuple(args["val_size"])
    try:
        report = pretrain(PretrainConfig(**args), out, progress=not quiet, workers=workers)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_gates(report)
    return 0
