"""Mini-VLP: pre-train a config's open_clip towers on the synthetic "web" corpus (Table 3's VLP).

    python -m training.pretrain --model semidavil-tiny --out runs/vlp-tiny
    python -m training.pretrain --model semidavil-tiny --out runs/vision-tiny --objective vision

`clip` trains both towers with open_clip's `ClipLoss` on crop-caption pairs; `vision` trains the
visual tower alone with a multi-label "which classes are present" head (the ImageNet-style
vision-only pre-training of the "w/o VLP" rows; its text tower stays at its random init). The run
is resumable (re-run the same command), checkpoints every `--save-every` steps and writes:

    <out>/clip.safetensors   open_clip state dict: `model.pretrained: <out>/clip.safetensors`
    <out>/report.json        gates of the random and the trained towers (training.pretrain.gates)
    <out>/log.csv            step, loss, lr, seconds
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import model  # noqa: F401 - process defaults (offline hub, torchvision shim) before open_clip
from model.class_sets import get_class_set
from model.config import get_model_config
from model.factory import build_clip
from model.preprocess import numpy_to_model_input
from training.pretrain.corpus import NUM_CLASSES, Corpus, CorpusSettings, build_corpus
from training.pretrain.gates import class_embeddings, prompt_cosine, retrieval, zero_shot_miou
from training.state import StateError, apply_state, atomic_save, read_state, save_modules

if TYPE_CHECKING:  # open_clip ships no type information: this name types as Any
    from open_clip.model import CLIP

OBJECTIVES = ("clip", "vision")
WEIGHTS_KEY = "semidavil_pretrain"
# The gates a VLP run must pass (issue 13): ratios to the random towers / to chance, and a cosine.
GATE_ZERO_SHOT_RATIO = 3.0
GATE_PROMPT_COSINE = 0.5
GATE_RETRIEVAL_RATIO = 5.0


@dataclass(frozen=True)
class PretrainConfig:
    """One pre-training run; everything but `steps` must match when a run resumes."""

    model: str = "semidavil-tiny"
    objective: str = "clip"
    steps: int = 1200
    batch: int = 256
    lr: float = 1.0e-3
    weight_decay: float = 0.1
    warmup: int = 100
    crop: int = 112
    seed: int = 0
    save_every: int = 100
    corpus: str = "data/pretrain/web"
    scenes: int = 10000
    val_root: str = "data/synthetic/target"
    val_size: tuple[int, int] = (128, 256)
    val_images: int = 200
    retrieval_pairs: int = 1000


def corpus_settings(scenes: int) -> CorpusSettings:
    """The corpus of `scenes` scenes: 250-scene chunks, a tenth (at most 500) held out."""
    return CorpusSettings(scenes=scenes, chunk=min(250, scenes), holdout=min(500, max(1, scenes // 10)))


def build_towers(cfg: PretrainConfig) -> CLIP:
    """The config's open_clip CLIP with random weights, built at the crop size (seeded)."""
    torch.manual_seed(cfg.seed)
    return build_clip(dataclasses.replace(get_model_config(cfg.model), image_size=cfg.crop))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule: no weight decay on gains, biases, norms and the logit scale."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        exempt = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exempt else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up then cosine to 0: a pure function of the step, so resuming needs no scheduler."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Tokens:
    """Caption token ids, each distinct caption tokenised once: `of(indices)` -> [B, T] int64."""

    def __init__(self, captions: Sequence[str], context_length: int) -> None:
        import open_clip

        distinct = sorted(set(captions))
        position = {c: i for i, c in enumerate(distinct)}
        self.table = open_clip.SimpleTokenizer(context_length=context_length)(distinct)
        self.row = np.asarray([position[c] for c in captions], np.int64)

    def of(self, indices: np.ndarray) -> torch.Tensor:
        return self.table[torch.from_numpy(self.row[indices])]


def batch_indices(pool: np.ndarray, cfg: PretrainConfig, step: int) -> np.ndarray:
    """The pairs of one step: a pure function of (seed, step), so a resumed run sees the same data."""
    rng = np.random.default_rng([cfg.seed, step, 11])
    return rng.choice(pool, size=min(cfg.batch, len(pool)), replace=False)


def load_images(
    corpus: Corpus, indices: np.ndarray, size: int, rng: np.random.Generator | None
) -> torch.Tensor:
    """Crops of `indices`, CLIP-normalised [B, 3, size, size]; mirrored at random when rng is given."""
    flips = rng.random(len(indices)) < 0.5 if rng is not None else np.zeros(len(indices), bool)
    return numpy_to_model_input(
        [corpus.crop(int(i), size, bool(f)) for i, f in zip(indices, flips, strict=True)]
    )


class Objective(nn.Module):
    """The training loss of one objective; holds the parameters it adds (the vision head)."""

    def __init__(self, kind: str, embed_dim: int) -> None:
        super().__init__()
        if kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {kind!r}")
        self.kind = kind
        self.head = nn.Linear(embed_dim, NUM_CLASSES) if kind == "vision" else None
        from open_clip import ClipLoss  # after `model`: its torchvision shim must come first

        self.clip_loss = None if self.head is not None else ClipLoss()

    def forward(
        self, clip: CLIP, images: torch.Tensor, tokens: torch.Tensor, present: torch.Tensor
    ) -> torch.Tensor:
        if self.head is not None:
            logits = self.head(clip.encode_image(images))
            return nn.functional.binary_cross_entropy_with_logits(logits, present.float())
        img = clip.encode_image(images, normalize=True)
        txt = clip.encode_text(tokens, normalize=True)
        assert self.clip_loss is not None  # set whenever there is no head
        return self.clip_loss(img, txt, clip.logit_scale.exp())


def evaluate_gates(
    clip: nn.Module, objective: Objective, cfg: PretrainConfig, corpus: Corpus, tokens: Tokens
) -> dict[str, Any]:
    """Prompt cosine, held-out retrieval and dense zero-shot mIoU of `clip` (see gates.py)."""
    from training.data.cityscapes import CityscapesDataset

    clip.eval()
    embeds = class_embeddings(clip, get_class_set("cityscapes").prompts())
    held = corpus.split(holdout=True)
    # scene crops only: object crops repeat captions ("a photo of a car"), which makes R@1 ambiguous
    held = held[corpus.is_scene_crop[held]][: cfg.retrieval_pairs]
    report: dict[str, Any] = {
        "prompt_cosine": prompt_cosine(embeds),
        "retrieval": retrieval(clip, load_images(corpus, held, cfg.crop, None), tokens.of(held)),
    }
    if objective.head is not None:
        report["multilabel_ap"] = multilabel_ap(clip, objective.head, corpus, held, cfg.crop)
    val = Path(cfg.val_root)
    if val.is_dir():
        data = CityscapesDataset(val, "val")
        for key, path in (("zero_shot", "clearclip"), ("zero_shot_maskclip", "maskclip")):
            report[key] = zero_shot_miou(
                clip, cfg.model, embeds, data, tuple(cfg.val_size), cfg.val_images, path
            )
            report[key].update(root=str(val), dense_path=path)
    clip.train()
    return report


@torch.inference_mode()
def multilabel_ap(clip: CLIP, head: nn.Module, corpus: Corpus, held: np.ndarray, size: int) -> float:
    """Mean over classes of the average precision of "class present" on held-out crops (vision)."""
    scores = head(clip.encode_image(load_images(corpus, held, size, None))).numpy()
    truth = corpus.present[held]
    aps = []
    for k in np.nonzero(truth.any(0))[0]:
        hits = truth[np.argsort(-scores[:, k], kind="stable"), k]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float(precision[hits].mean()))  # average precision: mean precision at each hit
    return float(np.mean(aps))


def gate_verdicts(random: dict[str, Any], trained: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each gate's value, threshold and pass flag (zero-shot only when a val set was scored)."""
    r = trained["retrieval"]
    out = {
        "prompt_cosine": {
            "value": trained["prompt_cosine"]["mean"],
            "threshold": GATE_PROMPT_COSINE,
            "pass": trained["prompt_cosine"]["mean"] <= GATE_PROMPT_COSINE,
        },
        "retrieval_r1_over_chance": {
            "value": r["r1"] / r["chance"],
            "threshold": GATE_RETRIEVAL_RATIO,
            "pass": r["r1"] / r["chance"] >= GATE_RETRIEVAL_RATIO,
        },
    }
    if "zero_shot" in trained and "zero_shot" in random:
        # against the better of the random towers' two dense paths, so the path choice cannot inflate it
        baseline = max(random[k]["miou"] for k in ("zero_shot", "zero_shot_maskclip") if k in random)
        ratio = trained["zero_shot"]["miou"] / max(baseline, 1e-6)
        out["zero_shot_over_random"] = {
            "value": ratio,
            "threshold": GATE_ZERO_SHOT_RATIO,
            "pass": ratio >= GATE_ZERO_SHOT_RATIO,
        }
    return out


def export_weights(clip: nn.Module, cfg: PretrainConfig, path: Path, step: int) -> None:
    """The open_clip state dict as safetensors (what `open_clip.load_checkpoint` reads)."""
    tensors = {k: v.detach().contiguous() for k, v in clip.state_dict().items()}
    meta = {WEIGHTS_KEY: json.dumps({"config": asdict(cfg), "step": step})}
    atomic_save(tensors, meta, path)


def _resume(
    state: Path, cfg: PretrainConfig, modules: dict[str, nn.Module], opt: torch.optim.Optimizer
) -> tuple[int, float, float]:
    """-> (step, training wall seconds, training CPU seconds so far) after loading `state` (one
    read), or (0, 0.0, 0.0) without it."""
    if not state.is_file():
        return 0, 0.0, 0.0
    header, tensors = read_state(state)
    saved = {k: v for k, v in header["config"].items() if k != "steps"}
    now = {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items() if k != "steps"}
    if saved != now:
        diff = sorted(k for k in now if saved.get(k) != now[k])
        raise StateError(
            f"{state}: saved by a run with other settings ({', '.join(diff)}); use another --out"
        )
    apply_state(header, tensors, modules, opt)
    return int(header["step"]), float(header.get("seconds", 0.0)), float(header.get("cpu_seconds", 0.0))


def step_batch(
    corpus: Corpus, tokens: Tokens, pool: np.ndarray, cfg: PretrainConfig, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [B, 3, S, S], tokens [B, T], present [B, 19]) of one step, a pure function of it."""
    idx = batch_indices(pool, cfg, step)
    rng = np.random.default_rng([cfg.seed, step, 12])
    images = load_images(corpus, idx, cfg.crop, rng)
    return images, tokens.of(idx), torch.from_numpy(corpus.present[idx])


def train(
    cfg: PretrainConfig,
    out: Path,
    corpus: Corpus,
    tokens: Tokens,
    modules: dict[str, nn.Module],
    opt: torch.optim.Optimizer,
    log: Callable[[str], None],
) -> tuple[int, float, float]:
    """Resume from <out>/state.safetensors and train to `cfg.steps`; -> (last step, training wall
    seconds, training CPU seconds of this process, all threads). Wall time counts stretches where
    the process was stopped or shared the cores; CPU time says what the steps cost.

    The next step's crops are read in a thread while this step computes (OpenCV and the
    memory-mapped reads release the GIL).
    """
    clip: CLIP = modules["clip"]
    objective = modules["objective"]
    state = out / "state.safetensors"
    step, seconds, cpu_seconds = _resume(state, cfg, modules, opt)
    elapsed, cpu = seconds, cpu_seconds
    pool = corpus.split(holdout=False)
    first, t0, c0 = step, time.perf_counter(), time.process_time()
    with (out / "log.csv").open("a", newline="") as f, ThreadPoolExecutor(1) as reader:
        writer = csv.writer(f)
        if step == 0:
            writer.writerow(["step", "loss", "lr", "seconds"])
        ahead = reader.submit(step_batch, corpus, tokens, pool, cfg, step)
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            images, ids, present = ahead.result()
            if step + 1 < cfg.steps:
                ahead = reader.submit(step_batch, corpus, tokens, pool, cfg, step + 1)
            loss = objective(clip, images, ids, present)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # open_clip clamps the temperature at 100
                clip.logit_scale.clamp_(0, math.log(100))
            step += 1
            elapsed = seconds + time.perf_counter() - t0
            cpu = cpu_seconds + time.process_time() - c0
            writer.writerow([step, f"{loss.item():.4f}", f"{lr:.3g}", f"{elapsed:.1f}"])
            if step % cfg.save_every == 0 or step == cfg.steps:
                extra = {"config": asdict(cfg), "seconds": elapsed, "cpu_seconds": cpu}
                save_modules(state, step, modules, opt, extra)
                f.flush()
            if step % 25 == 0:
                per_step = (time.perf_counter() - t0) / (step - first)
                log(
                    f"step {step}/{cfg.steps} loss {loss.item():.3f} lr {lr:.2e} "
                    f"{per_step:.2f} s/step, {per_step * (cfg.steps - step) / 60:.1f} min left"
                )
    return step, elapsed, cpu


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True, workers: int = 0) -> dict[str, Any]:
    """Run (or resume) one pre-training; returns the report (also written to <out>/report.json)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = functools.partial(print, flush=True) if progress else (lambda _msg: None)
    build_corpus(cfg.corpus, corpus_settings(cfg.scenes), workers=workers, log=log)
    corpus = Corpus(cfg.corpus)
    clip = build_towers(cfg)
    objective = Objective(cfg.objective, int(clip.text_projection.shape[1]))  # the joint space c
    tokens = Tokens(corpus.captions, int(clip.positional_embedding.shape[0]))
    modules: dict[str, nn.Module] = {"clip": clip, "objective": objective}
    opt = torch.optim.AdamW(
        param_groups(nn.ModuleList([clip, objective]), cfg.weight_decay),
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if "random" not in report:
        log("gates of the random towers ...")
        report = {"config": asdict(cfg), "random": evaluate_gates(clip, objective, cfg, corpus, tokens)}
        report_path.write_text(json.dumps(report, indent=1))
    step, seconds, cpu_seconds = train(cfg, out, corpus, tokens, modules, opt, log)
    export_weights(clip, cfg, out / "clip.safetensors", step)
    if "trained" not in report or report.get("trained_step") != step:
        log("gates of the trained towers ...")
        report["trained"] = evaluate_gates(clip, objective, cfg, corpus, tokens)
        report["trained_step"] = step
        report["train_minutes"] = round(seconds / 60, 1)  # wall time, stops and shared cores included
        report["train_cpu_minutes"] = round(cpu_seconds / 60, 1)  # process CPU time, all threads
        report["gates"] = gate_verdicts(report["random"], report["trained"])
        report_path.write_text(json.dumps(report, indent=1))
    return report
