"""Render the demo's example scenes: the project's own synthetic driving scenes, never dataset images.

    python -m training.synthetic.demo_examples --out ui/examples   # *.png and examples.json

Each example is a "target" (camera-look) scene from `training.synthetic.render`, 256x512, saved as
an optimised PNG (100-250 KB each), with the caption the generator wrote for it. The seeds were
picked for variety (city, suburban, highway; sun, cloud, evening). Rendering is deterministic, so
re-running reproduces the same pixels.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import model  # noqa: F401  (offline env defaults first)

INDEX_FILE = "examples.json"  # the file ui/examples.py reads
HEIGHT, WIDTH = 256, 512
MAX_BYTES = 300 * 1024

# (file stem, seed tuple): rendered in the "target" look.
EXAMPLES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("city_sunny", (7100, 0)),
    ("suburban_sunny", (7100, 4)),
    ("highway_cloudy", (7100, 7)),
    ("city_evening", (7100, 8)),
)


def render_examples(out_dir: Path) -> list[dict]:
    """Render every example into `out_dir`; returns the index entries written to examples.json."""
    from PIL import Image

    from training.synthetic.render import render

    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for stem, seed in EXAMPLES:
        scene = render(seed, "target", HEIGHT, WIDTH)
        path = out_dir / f"{stem}.png"
        Image.fromarray(scene.image).save(path, format="PNG", optimize=True)
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise RuntimeError(f"{path} is {size} bytes, over the {MAX_BYTES} byte budget for examples")
        index.append(
            {
                "file": path.name,
                "caption": scene.caption,
                "seed": list(seed),
                "domain": "target",
                "kind": scene.scene.street.kind,
                "size": [HEIGHT, WIDTH],
            }
        )
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (the demo reads ui/examples)")
    args = parser.parse_args(argv)
    for entry in render_examples(args.out):
        size_kb = (args.out / entry["file"]).stat().st_size / 1024
        print(f"{entry['file']:<22} {size_kb:6.0f} KB  {entry['caption']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
