"""CLI: generate the synthetic driving-scene benchmark (GTA5-layout source, Cityscapes-layout target).

    python -m training.synthetic.generate --out data/synthetic [--seed 0] [--source 1000]
        [--target-train 500] [--target-val 200] [--height 256 --width 512] [--workers N]

Re-running with identical settings does nothing; other settings regenerate the folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from training.synthetic.writer import GENERATOR_VERSION, generate_benchmark


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every option documented in --help)."""
    p = argparse.ArgumentParser(
        prog="python -m training.synthetic.generate",
        description=(
            "Generate the synthetic domain-shift benchmark: a 'source' domain (game-engine look, GTA5 "
            "layout: source/images, source/labels, source/captions.json) and a 'target' domain (camera "
            "look, Cityscapes layout: target/leftImg8bit, target/gtFine, target/captions_{train,val}.json), "
            f"plus meta.json. Generator version {GENERATOR_VERSION}."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder (created); only source/, target/ and meta.json inside it are written",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="benchmark seed; every image is a pure function of (seed, domain, split, index)",
    )
    p.add_argument("--source", type=int, default=1000, help="number of source-domain (train) images")
    p.add_argument(
        "--target-train",
        type=int,
        default=500,
        help="number of target train images (the trainer splits them into labeled and unlabeled)",
    )
    p.add_argument("--target-val", type=int, default=200, help="number of target validation images")
    p.add_argument("--height", type=int, default=256, help="image height in pixels")
    p.add_argument("--width", type=int, default=512, help="image width in pixels")
    p.add_argument(
        "--workers", type=int, default=0, help="worker processes (0 = one per CPU, 1 = no subprocesses)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="regenerate even if a complete benchmark with the same settings exists",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        meta = generate_benchmark(
            args.out,
            seed=args.seed,
            source=args.source,
            target_train=args.target_train,
            target_val=args.target_val,
            height=args.height,
            width=args.width,
            workers=args.workers,
            force=args.force,
            progress=not args.no_progress,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in meta["counts"].items())
    print(
        f"synthetic benchmark in {args.out}: {counts} ({meta['settings']['height']}x{meta['settings']['width']})"
    )
    shares = meta["pixel_share"]["target/train"] if args.target_train else meta["pixel_share"]["source/train"]
    print("pixel share (%):", ", ".join(f"{k} {100 * v:.2f}" for k, v in shares.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
