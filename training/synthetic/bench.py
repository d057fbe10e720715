"""Measure generation speed: `python -m training.synthetic.bench [--n 50] [--height 256 --width 512]`.

Prints wall-clock and CPU milliseconds per image for each domain (render only, no file I/O), with
the machine and settings beside them, so the number in the docs can be re-measured anywhere.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence

import cv2
import numpy as np

from training.synthetic.render import render_scene


def measure(domain: str, n: int, height: int, width: int, seed: int = 0) -> tuple[float, float]:
    """(wall ms, CPU ms) per image, averaged over n scenes after one warm-up render."""
    render_scene((seed, 99, 0), domain, height, width)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        render_scene((seed, 99, i), domain, height, width)
    return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print one line per domain."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50, help="scenes per domain")
    p.add_argument("--height", type=int, default=256, help="image height (px)")
    p.add_argument("--width", type=int, default=512, help="image width (px)")
    p.add_argument("--threads", type=int, default=1, help="OpenCV threads (the writer's workers use 1)")
    args = p.parse_args(argv)
    cv2.setNumThreads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f}, "
        f"numpy {np.__version__}, opencv {cv2.__version__}, {args.height}x{args.width}, n={args.n}, "
        f"cv2 threads {args.threads}"
    )
    for domain in ("source", "target"):
        wall, cpu = measure(domain, args.n, args.height, args.width)
        print(f"{domain:6s}: {wall:6.1f} ms/image wall, {cpu:6.1f} ms/image CPU")


if __name__ == "__main__":
    main()
