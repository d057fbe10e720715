"""The SemiDAViL training loop (docs/method.md 2.6): DyCE on source + labeled target, mean-teacher
consistency with CutMix on unlabeled target, AdamW + poly LR, EMA teacher, resumable."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from model import create_model, get_model_config, load_model, save_checkpoint
from model.config import DLGConfig
from model.hardware import fast_bf16
from model.preprocess import to_model_input
from model.segmentor import SemiDAViL
from model.text import TextEmbedder, pad_token_features
from training.augment import apply_cutmix, cutmix_box
from training.config import RunConfig, dump
from training.data.build import (
    build_source,
    build_target_train,
    build_val_dataset,
    class_names_for,
    class_prompts_for,
    holdout_names,
    stream_scale,
    target_split,
    unlabeled_stream_names,
)
from training.data.splits import write_split
from training.distributed import DistInfo, all_reduce_mean, barrier, replicas_in_sync
from training.ema import ema_decay, make_teacher, update_teacher
from training.evaluation.evaluate import evaluate, write_report
from training.losses.dyce import dyce_loss
from training.optim import build_optimizer, poly_lr, set_lr
from training.state import load_state, save_state
from training.streams import StepBatchSampler, TrainStream

log = logging.getLogger("semidavil.train")
STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"


def build_student(config: RunConfig) -> SemiDAViL:
    """The student model of a run config (model.* keys), optionally from a SemiDAViL checkpoint."""
    mc = config.model
    base = get_model_config(mc.name)
    cfg = get_model_config(mc.name, dlg=DLGConfig(mc.dlg, base.dlg.heads, base.dlg.max_tokens), vlp=mc.vlp)
    model = create_model(
        cfg,
        pretrained=mc.pretrained,
        finetune=mc.finetune if mc.vlp else "full",
        visual_pretrained=mc.visual_pretrained,
        conv_skip_weights=mc.conv_skip_weights,
    )
    if mc.init_checkpoint:
        init, _ = load_model(mc.init_checkpoint)
        model.load_state_dict(init.state_dict(), strict=True)
    if mc.text_finetune == "full":
        model.text.requires_grad_(True)
    elif mc.text_finetune != "frozen":
        raise ValueError(f"model.text_finetune must be frozen or full, got {mc.text_finetune!r}")
    return model


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings and flags as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


CT_NORMALIZE = ("valid", "confident")


def consistency_loss(
    logits: torch.Tensor,
    pseudo: torch.Tensor,
    conf: torch.Tensor,
    valid: torch.Tensor,
    threshold: float,
    normalize: str = "valid",
) -> tuple[torch.Tensor, float]:
    """Pseudo-label CE over confident pixels: -> (loss, coverage = confident / valid pixels).

    logits [B, K, H, W]; pseudo [B, H, W] int64; conf [B, H, W]; valid [B, H, W] bool.
    normalize "valid" (UniMatch, this project's default): the CE sum over all valid pixels, so the
    loss fades as pseudo-label coverage drops; "confident" (the authors' repository): the mean
    over confident pixels, as strong at 5 % coverage as at 95 %.
    """
    if normalize not in CT_NORMALIZE:
        raise ValueError(f"method.ct_normalize must be one of {CT_NORMALIZE}, got {normalize!r}")
    ce = F.cross_entropy(logits.float(), pseudo, reduction="none")
    confident = (conf >= threshold) & valid
    n_valid = valid.sum().clamp(min=1)
    n = n_valid if normalize == "valid" else confident.sum().clamp(min=1)
    return (ce * confident).sum() / n, float(confident.sum() / n_valid)


def progress_line(row: dict[str, float], total: int) -> str:
    """'step 250/2000 loss 1.2345 sup 0.9 ct 0.3 coverage 0.41 lr 9.8e-04 0.61 it/s ETA 47:49'."""
    parts = [f"step {int(row['step'])}/{total}"]
    parts += [f"{k} {row[k]:.4g}" for k in ("loss", "sup", "ct", "coverage", "miou") if k in row]
    parts.append(f"lr {row['lr']:.2e} {row['it_per_s']:.2f} it/s")
    left = (total - row["step"]) / max(row["it_per_s"], 1e-9)
    parts.append(f"ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}")
    return " ".join(parts)


class Trainer:
    """Owns models, data streams, optimizer and the run folder of one experiment."""

    def __init__(self, config: RunConfig, run_dir: Path, info: DistInfo, progress: bool = True) -> None:
        self.cfg, self.run_dir, self.info, self.progress = config, run_dir, info, progress and info.is_main
        self.device = info.device
        torch.manual_seed(config.seed)  # identical initialisation on every rank
        self.student = build_student(config).to(self.device)
        self.teacher = make_teacher(self.student)
        # A text tower that trains changes every step: no cached caption features, and class
        # embeddings recomputed (with autograd for the student, from the EMA tower for the teacher).
        self.text_trains = config.model.text_finetune == "full"
        if self.text_trains and info.enabled:
            raise ValueError(
                "model.text_finetune=full is not supported under DDP (the text tower is not wrapped)"
            )
        self.embedder = TextEmbedder(self.student.text, cache_size=0 if self.text_trains else 4096)
        self.teacher_embedder = (
            TextEmbedder(self.teacher.text, self.embedder.tokenizer, cache_size=0)
            if self.text_trains
            else self.embedder
        )
        self.prompts = class_prompts_for(config)
        self.class_embeds = self.embedder.class_embeddings(self.prompts)
        self.class_names = class_names_for(config)
        self.seg = (
            DistributedDataParallel(
                self.student.seg, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if info.enabled
            else self.student.seg
        )
        self.optimizer = build_optimizer(self.student, config.optim)
        amp = config.optim.amp
        self.amp = amp == "bf16" or (amp == "auto" and fast_bf16(self.device))
        self.streams = self._build_streams()
        self.start_step = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0  # training wall time summed over resumes (kept in the state file)
        self._clock = time.perf_counter()

    # ----------------------------------------------------------------------------- data
    def _build_streams(self) -> dict[str, TrainStream]:
        cfg, streams = self.cfg, self.cfg.method.streams
        aug = cfg.method  # augmentation probabilities and caption dropout live in method.*
        crop, seed = cfg.data.crop, cfg.seed
        labeled, unlabeled = target_split(cfg) if {"labeled", "unlabeled"} & set(streams) else ([], [])
        if self.info.is_main:
            held = holdout_names(cfg)
            write_split(
                self.run_dir / "split.json", labeled, unlabeled, seed=cfg.data.split_seed, held_out=held
            )
        source_scale, target_scale = stream_scale(cfg.data.source), stream_scale(cfg.data.target)
        out: dict[str, TrainStream] = {}
        if "source" in streams:
            out["source"] = TrainStream(build_source(cfg), "source", crop, aug, seed, source_scale)
        if "labeled" in streams:
            if not labeled:
                raise ValueError("method.streams has 'labeled' but data.num_labeled is 0")
            dataset = build_target_train(cfg, labeled, True)
            out["labeled"] = TrainStream(dataset, "labeled", crop, aug, seed, target_scale)
        if "unlabeled" in streams:
            dataset = build_target_train(cfg, unlabeled_stream_names(cfg, labeled, unlabeled), False)
            out["unlabeled"] = TrainStream(dataset, "unlabeled", crop, aug, seed, target_scale)
        return out

    def _batch_size(self, stream: str) -> int:
        b = self.cfg.data.batch
        return (
            2 * b.unlabeled if stream == "unlabeled" else getattr(b, stream)
        )  # unlabeled: main + CutMix partner

    def _loaders(self, start_micro: int, total_micro: int) -> dict[str, Iterator[dict[str, Any]]]:
        workers = self.cfg.data.workers
        loaders: dict[str, Iterator[dict[str, Any]]] = {}
        for name, stream in self.streams.items():
            sampler = StepBatchSampler(
                len(stream),
                self._batch_size(name),
                self.cfg.seed,
                name,
                start_micro,
                total_micro,
                self.info.rank,
                self.info.world,
            )
            loader = DataLoader(
                stream,
                batch_sampler=sampler,
                num_workers=workers,
                collate_fn=collate,
                persistent_workers=workers > 0,
                prefetch_factor=2 if workers > 0 else None,
            )
            loaders[name] = iter(loader)
        return loaders

    # ----------------------------------------------------------------------------- captions
    def _tokens(self, captions: list[str], drop: list[bool]) -> list[torch.Tensor]:
        return [self.embedder.caption_tokens("" if d else c) for c, d in zip(captions, drop)]

    def embedder_of(self, model: SemiDAViL) -> TextEmbedder:
        """The text embedder of the student or the teacher (one and the same while the tower is frozen)."""
        return self.embedder if model is self.student else self.teacher_embedder

    def frozen_class_embeds(self, model: SemiDAViL) -> torch.Tensor:
        """Class embeddings of `model`'s own text tower, without autograd: [K, c]."""
        if not self.text_trains:
            return self.class_embeds
        with torch.no_grad():
            return self.embedder_of(model).embed_classes(self.prompts)

    # ----------------------------------------------------------------------------- losses
    def _pseudo_labels(self, unl: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher on the weak views: -> (pseudo labels [2B, h, w] long, confidence [2B, h, w])."""
        images = to_model_input(unl["image"].to(self.device))
        feats, mask = pad_token_features(self._tokens(unl["caption"], [False] * len(unl["caption"])))
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            probs = (
                self.teacher(images, feats, mask, self.frozen_class_embeds(self.teacher)).float().softmax(1)
            )
        conf, pseudo = probs.max(1)
        return pseudo, conf

    def _mixed_view(self, unl: dict[str, Any], pseudo: torch.Tensor, conf: torch.Tensor) -> dict[str, Any]:
        """Strong view of the main half, CutMix'ed (p = cutmix_p) with the partner half."""
        n = len(unl["caption"]) // 2
        m = self.cfg.method
        h, w = pseudo.shape[-2:]
        boxes = []
        for i in range(n):
            use = unl["cutmix_u"][i] < m.cutmix_p
            rng = np.random.default_rng(unl["cutmix_seed"][i])
            box_np = cutmix_box(h, w, rng, m.cutmix_area) if use else np.zeros((h, w), dtype=bool)
            boxes.append(torch.from_numpy(box_np))
        box = torch.stack(boxes).to(self.device)
        strong = unl["strong"].to(self.device)
        valid = unl["valid"].to(self.device)
        tokens = self._tokens(unl["caption"], unl["caption_drop"])
        mixed_tokens = [
            torch.cat([tokens[i], tokens[n + i]]) if bool(box[i].any()) else tokens[i] for i in range(n)
        ]
        return {
            "image": apply_cutmix(box, strong[:n], strong[n:]),
            "pseudo": apply_cutmix(box, pseudo[:n], pseudo[n:]),
            "conf": apply_cutmix(box, conf[:n], conf[n:]),
            "valid": apply_cutmix(box, valid[:n], valid[n:]),
            "tokens": mixed_tokens,
        }

    def _supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        m = self.cfg.method
        if not (m.dyce and step >= m.dyce_warmup_iters):
            return F.cross_entropy(logits.float(), labels, ignore_index=255)
        dyce = dyce_loss(logits, labels, m.dyce_h, m.dyce_omega, normalize=m.dyce_normalize)
        if m.dyce_with_ce:
            return dyce + F.cross_entropy(logits.float(), labels, ignore_index=255)
        return dyce

    def _consistency_loss(self, logits: torch.Tensor, mix: dict[str, Any]) -> tuple[torch.Tensor, float]:
        m = self.cfg.method
        return consistency_loss(logits, mix["pseudo"], mix["conf"], mix["valid"], m.threshold, m.ct_normalize)

    def step_loss(
        self, batches: dict[str, dict[str, Any]], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One micro-batch at optimizer step `step`: -> (total loss, scalar logs)."""
        images, tokens, labels = [], [], []
        for name in ("source", "labeled"):
            if name in batches:
                b = batches[name]
                images.append(b["image"])
                tokens += self._tokens(b["caption"], b["caption_drop"])
                labels.append(b["label"])
        n_sup = sum(x.shape[0] for x in images)
        mix = None
        if "unlabeled" in batches and self.cfg.method.ct:
            mix = self._mixed_view(batches["unlabeled"], *self._pseudo_labels(batches["unlabeled"]))
            tokens += mix["tokens"]
        if mix is not None:
            images.append(mix["image"])
        x = to_model_input(torch.cat([i.to(self.device) for i in images]))
        feats, mask = pad_token_features(tokens)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            class_embeds = (
                self.embedder.embed_classes(self.prompts) if self.text_trains else self.class_embeds
            )
            logits = self.seg(x, feats, mask, class_embeds)
        logs: dict[str, float] = {}
        loss = logits.new_zeros(())
        if n_sup:
            sup = self._supervised_loss(logits[:n_sup], torch.cat(labels).to(self.device), step)
            loss = loss + sup
            logs["sup"] = sup.item()
        if mix is not None:
            ct, coverage = self._consistency_loss(logits[n_sup:], mix)
            loss = loss + self.cfg.method.lambda_u * ct
            logs.update(ct=ct.item(), coverage=coverage)
        logs["loss"] = loss.item()
        return loss, logs

    # ----------------------------------------------------------------------------- loop
    def resume_if_possible(self) -> None:
        path = self.run_dir / STATE_FILE
        if path.is_file():
            header = load_state(path, self.student, self.teacher, self.optimizer)
            self.start_step = int(header["step"])
            self.history = header["extra"].get("history", [])
            self.train_seconds = float(header["extra"].get("train_seconds", 0.0))
            log.info("resumed from %s at step %d", path, self.start_step)

    def _optimizer_step(self, step: int) -> None:
        o = self.cfg.optim
        if o.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), o.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        update_teacher(self.teacher, self.student, ema_decay(step, self.cfg.method.ema))

    def _lr(self, step: int) -> float:
        o = self.cfg.optim
        return poly_lr(step, o.lr, o.iters, o.poly_power, o.warmup_iters)

    def train(self) -> dict[str, Any]:
        """Run from `start_step` to `optim.iters`; returns the final evaluation report (rank 0)."""
        o, lg = self.cfg.optim, self.cfg.log
        accum, total = o.accum_steps, o.iters
        loaders = self._loaders(self.start_step * accum, total * accum)
        self._truncate_csv(self.start_step)
        bar = tqdm(total=total, initial=self.start_step, disable=not self.progress, desc=self.cfg.experiment)
        self.student.train()
        self._clock = time.perf_counter()  # set-up and data discovery are not training time
        t0, window = time.perf_counter(), []
        for step in range(self.start_step, total):
            set_lr(self.optimizer, self._lr(step))
            for _ in range(accum):
                loss, logs = self.step_loss({k: next(v) for k, v in loaders.items()}, step)
                (loss / accum).backward()
            self._optimizer_step(step)
            window.append(logs)
            done = step + 1
            if done % lg.every == 0 or done == total:
                self._log(done, window, time.perf_counter() - t0, bar)
                t0, window = time.perf_counter(), []
            bar.update(1)
            if done % lg.checkpoint_every == 0 or done == total:
                self.save(done)
            if self.cfg.eval.every and done % self.cfg.eval.every == 0 and done != total:
                self.run_eval(done, tag=f"eval_{done:06d}")
        bar.close()
        self.check_replicas()
        return self.finish()

    def check_replicas(self) -> None:
        """Under DDP, verify every rank holds the same student and teacher; raise if not."""
        if not self.info.enabled:
            return
        if not (replicas_in_sync(self.student, self.info) and replicas_in_sync(self.teacher, self.info)):
            raise RuntimeError("DDP replicas diverged: parameters differ between processes")
        log.info("replicas in sync across %d processes", self.info.world)

    def _log(self, step: int, window: list[dict[str, float]], seconds: float, bar: tqdm) -> None:
        keys = sorted({k for w in window for k in w})
        means = {k: float(np.mean([w[k] for w in window if k in w])) for k in keys}
        means = all_reduce_mean(means, self.info)
        row = {"step": step, "lr": self._lr(step - 1), "it_per_s": len(window) / max(seconds, 1e-9), **means}
        if self.info.is_main:
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False)
            self._append_csv(row)
            log.info("%s", progress_line(row, self.cfg.optim.iters))

    def _append_csv(self, row: dict[str, Any]) -> None:
        path = self.run_dir / "metrics.csv"
        fields = ["step", "lr", "it_per_s", "loss", "sup", "ct", "coverage", "miou"]
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _truncate_csv(self, step: int) -> None:
        """Drop log rows after the resumed step (they were written after the last checkpoint)."""
        path = self.run_dir / "metrics.csv"
        if not self.info.is_main or not path.exists():
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) != len(rows):
            path.unlink()
            for r in kept:
                self._append_csv(r)

    def _tick(self) -> float:
        """Add the wall time since the last tick to `train_seconds`; returns the total."""
        now = time.perf_counter()
        self.train_seconds += now - self._clock
        self._clock = now
        return self.train_seconds

    def save(self, step: int) -> None:
        if self.info.is_main:
            extra = {"history": self.history, "train_seconds": self._tick()}
            save_state(
                self.run_dir / STATE_FILE,
                step,
                self.student,
                self.teacher,
                self.optimizer,
                self.cfg.to_dict(),
                extra,
            )
        barrier(self.info)

    def eval_model(self) -> SemiDAViL:
        return self.teacher if self.cfg.eval.model == "teacher" else self.student

    def run_eval(self, step: int, tag: str) -> dict[str, Any] | None:
        """Evaluate on target val (rank 0); logs mIoU and writes `<tag>.md/json` in the run folder."""
        report = None
        if self.info.is_main:
            model = self.eval_model()
            cm = evaluate(
                model, self.embedder_of(model), self.frozen_class_embeds(model), build_val_dataset(self.cfg), self.cfg.eval,
                self.amp, self.progress,
            )  # fmt: skip
            report = write_report(cm, self.class_names, self.run_dir, tag)
            self.history.append({"step": step, "miou": report["miou"]})
            self._append_csv({"step": step, "miou": report["miou"]})
            extra = f" mIoU13 {report['miou13']:.2f}" if report.get("miou13") is not None else ""
            log.info("step %d eval mIoU %.2f%s", step, report["miou"] or float("nan"), extra)
        self.student.train()
        barrier(self.info)
        return report

    def finish(self) -> dict[str, Any]:
        """Final evaluation and the deployable checkpoint (eval model weights + metrics header)."""
        report = self.run_eval(self.cfg.optim.iters, tag="eval_final")
        if self.info.is_main and report is not None:
            wall = {"seconds": round(self._tick(), 1), "note": "training + evaluation, summed over resumes"}
            (self.run_dir / "wall_seconds.json").write_text(json.dumps(wall))
            metrics = {
                "miou": report["miou"],
                **({"miou13": report["miou13"]} if "miou13" in report else {}),
                "iou": report["iou"],
                "eval": {
                    "mode": self.cfg.eval.mode,
                    "size": list(self.cfg.eval.size),
                    "model": self.cfg.eval.model,
                },
                "dataset": self.cfg.data.target.root,
            }
            save_checkpoint(
                self.run_dir / MODEL_FILE, self.eval_model(), self.class_names, self.cfg.to_dict(), metrics
            )
            dump(self.cfg, self.run_dir / "config.yaml")
        barrier(self.info)
        return report or {}
