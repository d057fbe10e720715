"""The caption precompute command: batched, resumable, sharded, read back by the loaders."""

from __future__ import annotations

import contextlib
import functools
import json
import operator

from model.captioner import CaptionResult
from testkit.tiny_captioners import save_tiny_captioner
from testkit.tiny_data import write_tiny_benchmark
from training.captions import caption_dataset, discover, in_shard, main
from training.data.gta5 import GTA5Dataset


class CountingCaptioner:
    """Captions an image by its mean colour; counts images seen."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.seen = 0
        self.fail_after = fail_after

    def caption(self, images):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt  # simulates the process being stopped
        self.seen += len(images)
        return [
            CaptionResult(f"mean {sum(im.resize((1, 1)).getpixel((0, 0)))}", "captioner") for im in images
        ]


def test_resumes_where_it_stopped(tmp_path):
    root = write_tiny_benchmark(tmp_path / "b", n_source=10)
    samples = discover("gta5", root / "source", "train")
    out = tmp_path / "caps.json"
    stopped = CountingCaptioner(fail_after=4)
    with contextlib.suppress(KeyboardInterrupt):
        caption_dataset(samples, stopped, out, batch_size=2, save_every=2, progress=False)
    partial = json.loads(out.read_text())
    assert len(partial) == 4
    resumed = CountingCaptioner()
    full = caption_dataset(samples, resumed, out, batch_size=2, save_every=2, progress=False)
    assert resumed.seen == 6, "already captioned images must be skipped"
    assert set(full) == {s.name for s in samples}
    assert all(full[k] == v for k, v in partial.items())


def test_shards_partition_the_dataset_and_merge(tmp_path):
    root = write_tiny_benchmark(tmp_path / "b", n_source=12)
    names = [s.name for s in discover("gta5", root / "source", "train")]
    shards = [[n for n in names if in_shard(n, i, 3)] for i in range(3)]
    assert sorted(functools.reduce(operator.iadd, shards, [])) == sorted(names)
    assert all(not set(a) & set(b) for i, a in enumerate(shards) for b in shards[i + 1 :])


def test_cli_with_a_real_tiny_captioner_end_to_end(tmp_path):
    root = write_tiny_benchmark(tmp_path / "b", n_source=5)
    model_dir = save_tiny_captioner("blip", tmp_path / "blip")
    out = root / "source" / "captions_blip.json"
    for shard in range(2):
        args = ["--layout", "gta5", "--root", str(root / "source"), "--out", str(out), "--captioner", "blip"]
        assert main([*args, "--model", str(model_dir), "--batch-size", "2", "--shard", f"{shard}/2"]) == 0
    assert main(["--merge", str(out), "--shards", "2"]) == 0
    captions = json.loads(out.read_text())
    assert len(captions) == 5 and all(isinstance(c, str) for c in captions.values())
    dataset = GTA5Dataset(root / "source", captions_file=out)
    assert dataset[0]["caption"] == captions[dataset[0]["name"]]
