"""The synthetic driving-scene benchmark: a procedural GTA5/SYNTHIA -> Cityscapes stand-in.

`render_scene` draws one deterministic scene in the "source" (game engine) or "target" (camera)
look; `generate_benchmark` writes source train, target train and target val in the GTA5 and
Cityscapes layouts read by `training.data`; `python -m training.synthetic.generate` is its CLI.
"""

from training.synthetic.render import Rendered, render, render_scene
from training.synthetic.writer import generate_benchmark, read_meta

__all__ = ["Rendered", "generate_benchmark", "read_meta", "render", "render_scene"]
