"""`python -m serving.compile`: build a compiled backend of a checkpoint, gate it, save it.

    python -m serving.compile --checkpoint run/model.safetensors --backend onnxruntime \
        --height 512 --width 1024 --max-batch 8 --out artifacts/

The artefact and its manifest go to --out (serving/artifacts.py); exit code 2 when the agreement
gate refuses it, 3 when the backend cannot run here.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.hardware import resolve_device
from serving.agreement import DEFAULT_THRESHOLD, RANDOM_WEIGHTS_MARGIN, AgreementError, default_margin
from serving.artifacts import build_backend
from serving.backends.base import BackendUnavailable, ShapeProfile
from serving.backends.factory import BACKEND_NAMES
from serving.gate_inputs import agreement_inputs
from serving.logs import configure_logging


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.compile",
        description="Build a compiled backend of a checkpoint's segmentation graph, check it against eager "
        "fp32 (argmax agreement gate) and save it with a JSON manifest.",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="SemiDAViL .safetensors checkpoint (default: the "
        "embedded default checkpoint, else random semidavil-tiny weights)",
    )
    parser.add_argument("--backend", required=True, choices=BACKEND_NAMES, help="backend to build")
    parser.add_argument(
        "--height", type=int, default=None, help="working height in pixels (default: checkpoint's)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="working width in pixels (default: checkpoint's)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="largest batch the artefact accepts (default 8)"
    )
    parser.add_argument("--opt-batch", type=int, default=None, help="batch TensorRT tunes for (default: max)")
    parser.add_argument("--caption-length", type=int, default=77, help="caption tokens L (default 77)")
    parser.add_argument(
        "--class-set",
        default=None,
        help="class set whose embeddings feed the check (default: the checkpoint's classes)",
    )
    parser.add_argument("--out", required=True, help="folder for the artefact and its manifest")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="min argmax agreement (0.995)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="compare only pixels whose fp32 top-2 logit margin exceeds this (default: 0, all pixels; "
        f"{RANDOM_WEIGHTS_MARGIN} for random weights, whose logits are near-ties everywhere)",
    )
    parser.add_argument(
        "--images",
        nargs="*",
        default=[],
        help="image files or globs for the check (default: synthetic images)",
    )
    return parser.parse_args(argv)


def _load_images(patterns: Sequence[str], size: tuple[int, int]) -> list[np.ndarray]:
    import cv2

    from serving.decode import Limits, decode_image

    files = sorted({f for p in patterns for f in glob.glob(p)})
    limits = Limits(max_body_bytes=1 << 30, max_pixels=1 << 28, max_side=1 << 16)
    return [
        cv2.resize(
            decode_image(Path(f).read_bytes(), limits).rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR
        )
        for f in files
    ]


def main(argv: Sequence[str] | None = None) -> int:
    from model.class_sets import get_class_set
    from serving.loading import default_class_set, load_serving_model, working_size_for

    args = parse_args(argv)
    configure_logging()
    served = load_serving_model(args.checkpoint)
    h, w = working_size_for(served)
    size = (args.height or h, args.width or w)
    class_set = get_class_set(args.class_set) if args.class_set else default_class_set(served.class_names)
    profile = ShapeProfile(
        size[0], size[1], args.caption_length, args.max_batch, len(class_set), args.opt_batch
    )
    device = resolve_device(args.device)
    served.model.to(device)
    inputs = agreement_inputs(served.model, profile, class_set, _load_images(args.images, size) or None)
    try:
        _, manifest = build_backend(
            served.model.seg,
            args.backend,
            profile,
            device,
            inputs,
            out_dir=args.out,
            checkpoint_sha256=served.checkpoint_sha256,
            model_name=served.name,
            threshold=args.threshold,
            margin=default_margin(served.random_weights) if args.margin is None else args.margin,
        )
    except AgreementError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BackendUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(json.dumps(manifest, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
