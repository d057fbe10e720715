"""The demo's example scenes (ui/examples/*.png + examples.json): the project's own synthetic
driving scenes, never dataset images. They are rendered by
`python -m training.synthetic.demo_examples --out ui/examples`; the demo only reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
INDEX_FILE = "examples.json"


def load_examples(examples_dir: Path = EXAMPLES_DIR) -> list[tuple[str, str]]:
    """[(png path, caption)] from examples.json; [] when the examples were not generated."""
    index_path = examples_dir / INDEX_FILE
    if not index_path.is_file():
        return []
    entries = json.loads(index_path.read_text())
    return [
        (str(examples_dir / e["file"]), str(e.get("caption", "")))
        for e in entries
        if (examples_dir / e["file"]).is_file()
    ]
