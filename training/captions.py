"""Caption a whole dataset once, offline, into the captions file training reads (docs/method.md 1.4).

    python -m training.captions --layout gta5 --root data/gta5 --out data/gta5/captions.json
    python -m training.captions --layout cityscapes --split train --root data/cityscapes \\
        --out data/cityscapes/captions_train.json --shard 0/4     # 4 processes, one shard each
    python -m training.captions --merge data/cityscapes/captions_train.json --shards 4

Batched; resumable (a shard file is rewritten atomically every --save-every images and images
already in it are skipped); sharded across processes by a stable hash of the sample name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image
from tqdm import tqdm

import model  # noqa: F401  (offline env defaults before transformers)
from model.atomic import atomic_write_text
from model.captioner import CaptionerLike
from training.data.base import SampleFiles
from training.data.cityscapes import discover_cityscapes


def discover(layout: str, root: Path, split: str) -> list[SampleFiles]:
    """Images of a dataset in its on-disk layout (labels not needed)."""
    if layout == "cityscapes":
        return discover_cityscapes(root, split, labeled=False)
    folder = {"gta5": root / "images", "synthia": root / "RGB"}.get(layout)
    if folder is None:
        raise ValueError(f"unknown layout {layout!r} (gta5, synthia, cityscapes)")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    return [SampleFiles(p.stem, p, None) for p in sorted(folder.glob("*.png"))]


def in_shard(name: str, shard: int, num_shards: int) -> bool:
    """Stable assignment of a sample to one of `num_shards` shards (independent of file order)."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % num_shards == shard


def shard_path(out: Path, shard: int, num_shards: int) -> Path:
    return out if num_shards == 1 else out.with_name(f"{out.stem}.shard{shard}of{num_shards}{out.suffix}")


def write_json_atomic(data: dict[str, str], path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=0, sort_keys=True, ensure_ascii=False))


def read_json(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.is_file() else {}


def caption_dataset(
    samples: list[SampleFiles],
    captioner: CaptionerLike,
    out: Path,
    batch_size: int = 8,
    save_every: int = 64,
    progress: bool = True,
) -> dict[str, str]:
    """Caption every sample not yet in `out`, saving atomically as it goes; returns all captions."""
    done = read_json(out)
    todo = [s for s in samples if s.name not in done]
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=out.name, disable=not progress)
    since_save = 0
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        images = [Image.open(s.image).convert("RGB") for s in chunk]
        for s, result in zip(chunk, captioner.caption(images)):
            done[s.name] = result.text
        since_save += len(chunk)
        bar.update(len(chunk))
        if since_save >= save_every:
            write_json_atomic(done, out)
            since_save = 0
    write_json_atomic(done, out)
    bar.close()
    return done


def merge_shards(out: Path, num_shards: int) -> dict[str, str]:
    """Join shard files into `out`; a missing shard is an error naming it."""
    merged: dict[str, str] = {}
    for shard in range(num_shards):
        path = shard_path(out, shard, num_shards)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard {shard} of {num_shards} is missing")
        merged.update(read_json(path))
    write_json_atomic(merged, out)
    return merged


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=["gta5", "synthia", "cityscapes"], help="dataset layout under --root")
    p.add_argument("--root", type=Path, help="dataset root folder")
    p.add_argument("--split", default="train", help="cityscapes split (train or val)")
    p.add_argument("--out", type=Path, help="captions JSON to write ({sample name: caption})")
    p.add_argument("--captioner", default="blip2", choices=["blip2", "blip"], help="captioning model family")
    p.add_argument(
        "--model", default=None, help="hub id or local folder of the captioner (default: the family's)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=8, help="images per generate() call")
    p.add_argument("--max-new-tokens", type=int, default=30, help="caption length limit in tokens")
    p.add_argument("--save-every", type=int, default=64, help="images between atomic saves (resume points)")
    p.add_argument("--shard", default="0/1", help="i/n: caption only shard i of n (run n processes)")
    p.add_argument("--merge", type=Path, help="merge the shard files of this output and exit")
    p.add_argument("--shards", type=int, default=1, help="with --merge: the number of shards")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        print(f"{len(merge_shards(args.merge, args.shards))} captions -> {args.merge}")
        return 0
    if not (args.layout and args.root and args.out):
        print("error: --layout, --root and --out are required", file=sys.stderr)
        return 2
    from model.captioner import create_captioner
    from model.hardware import resolve_device

    shard, num_shards = (int(x) for x in args.shard.split("/"))
    samples = [s for s in discover(args.layout, args.root, args.split) if in_shard(s.name, shard, num_shards)]
    captioner = create_captioner(
        args.captioner,
        args.model,
        str(resolve_device(args.device)),
        None,
        args.max_new_tokens,
        args.batch_size,
    )
    out = shard_path(args.out, shard, num_shards)
    captions = caption_dataset(samples, captioner, out, args.batch_size, args.save_every)
    print(f"{len(captions)} captions -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
