"""Train one SemiDAViL experiment (one row of the paper, or of the synthetic benchmark).

    python training/run.py --config training/configs/gta5_cs_100.yaml [--set key=value ...]
    torchrun --nproc_per_node 4 training/run.py --config ...        # DDP, one process per GPU

The run folder <output_dir>/<experiment> holds the resolved config, the labeled/unlabeled split,
train.log, metrics.csv, state.safetensors (resumable), eval tables and model.safetensors. A run
whose folder already has a state resumes from it (exactly: same data order and augmentations).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python training/run.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: F401  (offline env defaults and torchvision shim before anything else)
from model.hardware import resolve_device
from training.config import ConfigError, dump, load_config
from training.distributed import cleanup, init_distributed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="experiment YAML (merged over training/configs/default.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.iters=1000 --set data.batch.source=4 (repeatable)",
    )
    p.add_argument("--fresh", action="store_true", help="delete the run folder's state and start from step 0")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: a progress line every log.every steps on stdout instead (also without a terminal)",
    )
    return p.parse_args(argv)


def setup_logging(run_dir: Path, is_main: bool, console: bool) -> None:
    """train.log on the main rank; with `console` the same lines on stdout too (every `log.every`
    steps a progress line), for runs without a progress bar (--no-progress, or no terminal)."""
    handlers: list[logging.Handler] = [logging.FileHandler(run_dir / "train.log")] if is_main else []
    if is_main and console:
        handlers.append(logging.StreamHandler(sys.stdout))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(__import__("yaml").safe_dump(config.to_dict(), sort_keys=False))
        return 0
    info = init_distributed(resolve_device(config.device))
    run_dir = Path(config.output_dir) / config.experiment
    if info.is_main:
        if args.fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        dump(config, run_dir / "config.yaml")
    from training.distributed import barrier
    from training.trainer import Trainer

    barrier(info)
    bar = not args.no_progress and sys.stderr.isatty()  # a bar only where someone watches it
    setup_logging(run_dir, info.is_main, console=not bar)
    try:
        trainer = Trainer(config, run_dir, info, progress=bar)
        trainer.resume_if_possible()
        report = trainer.train()
        if info.is_main and report:
            print(f"{config.experiment}: mIoU {report['miou']:.2f} -> {run_dir}")
    finally:
        cleanup(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
