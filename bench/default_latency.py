"""Latency of the served model on a real 2048x1024 photo, stage by stage, in process.

    python -m bench.default_latency [--checkpoint PATH] [--backend eager-fp32] [--repeats 15]

Loads the checkpoint the service would serve (default: the embedded one), segments one real
2048x1024 Cityscapes val frame (../shared/fixtures/real) repeatedly with the predictor the service
uses, and reports the median (min-max) of each stage: decode, preprocess (resize to the working
size), forward, postprocess (full-size upsample + argmax) and the total. Writes the
`default-model-latency` section of BENCHMARKS.md with the machine. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common import format_machine, machine_info, markdown_table, summarize, write_section

ROOT = Path(__file__).resolve().parents[1]

FRAME = (
    ROOT.parent
    / "shared/fixtures/real/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000576_leftImg8bit.png"
)
STAGES = ("decode", "preprocess", "text", "forward", "postprocess", "total")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the embedded default)")
    p.add_argument("--backend", default="eager-fp32", help="serving backend (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats after 3 warm-ups")
    p.add_argument("--frame", type=Path, default=FRAME, help="a 2048x1024 photo")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="Markdown file (a section)")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], str, tuple[int, int]]:
    """Median/min/max milliseconds per stage over `repeats` predictions of the frame, with the
    served model's name and working size."""
    from serving.predictor import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, backend=args.backend, captioner="none")
    data = args.frame.read_bytes()
    for _ in range(3):
        predictor.predict(data, caption="")
    runs = [predictor.predict(data, caption="").timings_ms for _ in range(args.repeats)]
    stages = [s for s in STAGES if s in runs[0]]
    return {s: summarize([r[s] for r in runs]) for s in stages}, predictor.served.name, predictor.working_size


def main(argv: list[str] | None = None) -> int:
    import model  # noqa: F401  (offline env defaults)

    args = parse_args(argv)
    result, name, size = measure(args)
    rows = [[s, f"{v['median']:.1f}", f"{v['min']:.1f}-{v['max']:.1f}"] for s, v in result.items()]
    body = "\n".join([
        "## The served model on a real 2048x1024 photo",
        "",
        f"`{name}` ({'embedded default' if args.checkpoint is None else Path(args.checkpoint).name}),"
        f" backend `{args.backend}`, working size {size[0]}x{size[1]}, frame `{args.frame.name}`,"
        f" {args.repeats} timed repeats after 3 warm-ups, in process, no caption.",
        "",
        f"Command: `python -m bench.default_latency --backend {args.backend} --repeats {args.repeats}`",
        "",
        markdown_table(["stage", "median ms", "min-max ms"], rows),
        "",
        format_machine(machine_info()),
    ])  # fmt: skip
    write_section(args.out, "default-model-latency", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
