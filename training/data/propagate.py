"""Label propagation along video sequences: more labelled views of each labelled frame.

Cityscapes labels frame 19 of each 30-frame snippet; the other frames (`leftImg8bit_sequence`)
show the same street a few centimetres to metres later. Warping the label along dense optical flow
to the neighbouring frames gives new, slightly noisy labelled views (Zhu et al., CVPR 2019,
"Improving Semantic Segmentation via Video Propagation and Label Relaxation", propagate with a
learned model; here OpenCV's Farneback optical flow, frame to frame). A pixel whose forward and backward
flows disagree (occlusion, disocclusion, failed match) becomes ignore (255), and so does every
pixel the chain has already marked, so errors are dropped rather than propagated.

    python -m training.data.propagate --root ../shared/fixtures/real/cityscapes \
        --out data/real_propagated --radius 4

writes `<out>/<city>/<frame>_gtFine_labelTrainIds.png` for each neighbour within `radius` frames of
every labelled train frame that has a sequence, and `<out>/propagated.json` (the manifest
`training.data.views.load_views` reads). The files are derived from the research-only frames: keep them outside the
repository (the default `data/` is ignored by git).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np

from model.atomic import atomic_write_bytes, atomic_write_text
from model.class_sets import IGNORE_INDEX
from training.data.base import SampleFiles
from training.data.cityscapes import discover_cityscapes, discover_images
from training.data.errors import DatasetError
from training.data.io import read_image, read_index_label
from training.data.labels import cityscapes_label_lut
from training.data.views import MANIFEST, View

LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
SEQUENCE_DIR = "leftImg8bit_sequence"
_FRAME = re.compile(r"^(?P<seq>.+)_(?P<frame>\d{6})$")
# Flow is computed at this width (the label is warped at full size). Farneback's smooth polynomial
# flow at 512 px passed the forward-backward check on 81 % of an aachen frame pair (79-86 % of the
# road, which moves ~40 px a frame) against DIS's 65-69 % (36-48 % of the road) at 512 or 1024 px.
FLOW_WIDTH = 512
# A pixel that fails the flow check keeps its label inside a one-label region at least this wide
# (flow-resolution pixels) around where it came from.
UNIFORM_RADIUS = 4


def split_frame(name: str) -> tuple[str, int] | None:
    """`aachen_000001_000019` -> (`aachen_000001`, 19); None for a name without a frame number."""
    match = _FRAME.match(name)
    return None if match is None else (match["seq"], int(match["frame"]))


def dense_flow(frm: np.ndarray, to: np.ndarray, width: int = FLOW_WIDTH) -> np.ndarray:
    """Farneback optical flow from RGB `frm` to RGB `to` (same (H, W)): float32 (H, W, 2) in pixels of
    the full frame; `frm[y, x]` moves to `to[y + f[..., 1], x + f[..., 0]]`."""
    h, w = frm.shape[:2]
    scale = min(1.0, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = [
        cv2.resize(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA) for x in (frm, to)
    ]
    # 6 pyramid levels of a 0.5 scale reach the road's large motion; a 31 px window smooths
    # over its missing texture
    flow = np.zeros((size[1], size[0], 2), np.float32)  # the output (no initial flow is used)
    flow = cv2.calcOpticalFlowFarneback(
        grey[0], grey[1], flow, 0.5, 6, 31, 8, 7, 1.5, cv2.OPTFLOW_FARNEBACK_GAUSSIAN
    )
    if scale == 1.0:
        return flow
    return cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) / scale


def _flow_pixel(width: int) -> float:
    """Full-resolution pixels per flow pixel for a frame `width` pixels wide (thresholds below are
    set in flow pixels)."""
    return max(1.0, width / FLOW_WIDTH)


def _sample(field: np.ndarray, flow: np.ndarray, interpolation: int) -> np.ndarray:
    """`field` read at (x + flow_x, y + flow_y) for every pixel; outside the frame -> 255 / 0."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    border = IGNORE_INDEX if field.dtype == np.uint8 else 0
    return cv2.remap(
        field,
        grid_x + flow[..., 0],
        grid_y + flow[..., 1],
        interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )


def flow_error(back: np.ndarray, fwd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward check (Sundaram et al., ECCV 2010) in the new frame.

    `back` maps the new frame to the labelled one, `fwd` the labelled frame to the new one.
    -> (squared distance (H, W) between a pixel and where `back` then `fwd` return it,
    its bound alpha * (|back|^2 + |fwd|^2) + beta^2 with alpha 0.01 and beta 0.5 flow pixels).
    """
    fwd_at = _sample(fwd, back, cv2.INTER_LINEAR)
    error = np.sum((back + fwd_at) ** 2, axis=-1)
    beta = 0.5 * _flow_pixel(back.shape[1])
    bound = 0.01 * (np.sum(back**2, -1) + np.sum(fwd_at**2, -1)) + beta**2
    return error, bound


def uniform_label(label: np.ndarray, radius: int) -> np.ndarray:
    """uint8 (H, W): 1 where every label within `radius` pixels (a square) equals the pixel's own."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return (cv2.erode(label, kernel) == cv2.dilate(label, kernel)).astype(np.uint8)


def propagate_step(label: np.ndarray, image: np.ndarray, new_image: np.ndarray) -> np.ndarray:
    """Warp uint8 (H, W) train ids from `image` to `new_image` (both RGB (H, W, 3)).

    A pixel keeps its warped label when the flows pass the forward-backward check, or when they
    miss it by less than UNIFORM_RADIUS pixels inside a region of one label (textureless road
    and sky fail the check but cannot take a wrong label from a small error); else 255.
    """
    back = dense_flow(new_image, image)
    fwd = dense_flow(image, new_image)
    warped = _sample(label, back, cv2.INTER_NEAREST)
    error, bound = flow_error(back, fwd)
    radius = round(UNIFORM_RADIUS * _flow_pixel(label.shape[1]))
    inside = _sample(uniform_label(label, radius), back, cv2.INTER_NEAREST) == 1
    keep = (error <= bound) | (inside & (error <= radius**2))
    warped[~keep] = IGNORE_INDEX
    return warped


def _sequence_frames(root: Path) -> dict[str, dict[int, Path]]:
    """{sequence: {frame number: image}} of `<root>/leftImg8bit_sequence/train`; {} without it."""
    if not (root / SEQUENCE_DIR / "train").is_dir():
        return {}
    frames: dict[str, dict[int, Path]] = {}
    for sample in discover_images(root, "train", SEQUENCE_DIR):
        parts = split_frame(sample.name)
        if parts is not None:
            frames.setdefault(parts[0], {})[parts[1]] = sample.image
    return frames


def _chain(
    labelled: SampleFiles, frames: dict[int, Path], start: int, step: int, radius: int
) -> list[tuple[int, np.ndarray]]:
    """Propagate `labelled`'s label frame by frame in direction `step` (+1 / -1) for up to `radius`
    frames; stops at a gap in the sequence. -> [(offset, uint8 (H, W) train ids)]."""
    assert labelled.label is not None
    label = cityscapes_label_lut(19)[read_index_label(labelled.label)]
    image = read_image(labelled.image)
    out = []
    for offset in range(step, step * (radius + 1), step):
        path = frames.get(start + offset)
        if path is None:
            break
        new_image = read_image(path)
        if new_image.shape != image.shape:
            raise DatasetError(
                f"{path}: size {new_image.shape[1]}x{new_image.shape[0]} differs from the frame before it"
            )
        label, image = propagate_step(label, image, new_image), new_image
        out.append((offset, label))
    return out


def propagate_root(root: Path, out: Path, radius: int) -> dict[str, list[View]]:
    """Propagate every labelled train frame of `root` to its sequence neighbours within `radius`;
    write the labels and the manifest under `out`. -> {labelled frame name: its views}."""
    root, out = root.resolve(), out.resolve()  # the manifest's paths work from any folder
    frames = _sequence_frames(root)
    views: dict[str, list[View]] = {}
    for sample in discover_cityscapes(root, "train"):
        parts = split_frame(sample.name)
        if parts is None or parts[0] not in frames:
            continue
        seq, number = parts
        for step in (-1, 1):
            for offset, label in _chain(sample, frames[seq], number, step, radius):
                name = f"{seq}_{number + offset:06d}"
                path = out / sample.image.parent.name / f"{name}{LABEL_SUFFIX}"
                ok, png = cv2.imencode(".png", label)
                if not ok:
                    raise OSError(f"{path}: cannot encode the label as PNG")
                atomic_write_bytes(path, png.tobytes())
                kept = float(np.mean(label != IGNORE_INDEX))
                views.setdefault(sample.name, []).append(
                    View(name, frames[seq][number + offset], path, offset, kept)
                )
    write_manifest(out, root, radius, views)
    return views


def write_manifest(out: Path, root: Path, radius: int, views: dict[str, list[View]]) -> None:
    """`<out>/propagated.json`: the root, radius and every view (paths as written)."""
    data = {
        "root": str(root),
        "radius": radius,
        "views": {
            name: [
                {
                    "name": v.name,
                    "image": str(v.image),
                    "label": str(v.label),
                    "offset": v.offset,
                    "kept": round(v.kept, 4),
                }
                for v in vs
            ]
            for name, vs in sorted(views.items())
        },
    }
    atomic_write_text(out / MANIFEST, json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("../shared/fixtures/real/cityscapes"))
    parser.add_argument("--out", type=Path, default=Path("data/real_propagated"))
    parser.add_argument("--radius", type=int, default=4, help="frames on each side of a labelled frame")
    args = parser.parse_args(argv)
    if args.radius < 1:
        parser.error("--radius must be >= 1")
    views = propagate_root(args.root, args.out, args.radius)
    for name, vs in views.items():
        kept = ", ".join(f"{v.offset:+d}: {v.kept:.0%}" for v in sorted(vs, key=lambda v: v.offset))
        print(f"{name}: {kept}")
    print(f"{sum(len(vs) for vs in views.values())} views of {len(views)} frames -> {args.out}")


if __name__ == "__main__":
    main()
