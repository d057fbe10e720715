"""The backend interface: one segmentation-graph forward, whatever runs it (eager, compiled, ORT, TRT)."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:  # a type only: model.segmentor imports open_clip, which this module must not pull in
    from model.segmentor import SegmentationGraph


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (package not installed, no CUDA, unsupported device)."""


@dataclass(frozen=True)
class ShapeProfile:
    """The fixed shapes a compiled graph is built for; only the batch varies, in [1, max_batch].

    height, width: working size in pixels (multiples of the patch size); caption_length: L, caption
    tokens per image (captions are padded to it with the key mask); num_classes: K; opt_batch:
    the batch TensorRT tunes for (default: max_batch).
    """

    height: int
    width: int
    caption_length: int = 77
    max_batch: int = 8
    num_classes: int = 19
    opt_batch: int | None = None

    def __post_init__(self) -> None:
        for name in ("height", "width", "caption_length", "max_batch", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ShapeProfile.{name} must be >= 1, got {getattr(self, name)}")
        if self.opt_batch is not None and not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"opt_batch {self.opt_batch} is outside [1, {self.max_batch}]")

    @property
    def optimal_batch(self) -> int:
        return self.opt_batch or self.max_batch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapeProfile:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class Backend(abc.ABC):
    """Runs `SegmentationGraph.forward` and returns fp32 logits.

    __call__(images [B, 3, H, W] fp32 CLIP-normalised, caption_feats [B, L, c] fp32,
             caption_mask [B, L] bool, class_embeds [K, c] fp32) -> logits [B, K, H, W] fp32,
    on `self.device`. `profile` is None for shape-agnostic backends (eager); otherwise H, W, L and
    K must match it. B must be <= `max_batch` (the predictor splits larger batches).
    `thread_safe`: concurrent calls are allowed (the predictor serialises calls otherwise).
    `torch_threads`: its CPU work runs on the calling thread's torch (OpenMP) threads, so a
    one-thread CPU stream (serving/compute.py) runs it on one thread.
    """

    name: str = "backend"
    precision: str = "fp32"
    thread_safe: bool = False
    torch_threads: bool = False
    # The registry's view (serving/backends/factory.py): the artefact file's suffix (None: the
    # backend keeps no file) and whether it is built for one ShapeProfile.
    artifact_suffix: ClassVar[str | None] = None
    fixed_shapes: ClassVar[bool] = True

    @classmethod
    def check_device(cls, device: torch.device) -> None:
        """BackendUnavailable when this backend cannot run on `device` (before anything is built);
        most run on any device torch runs on."""
        return None

    @classmethod
    def create(
        cls,
        graph: SegmentationGraph,
        profile: ShapeProfile | None,
        precision: str,
        device: torch.device,
        artifact: Path | None,
    ) -> Backend:
        """Build the backend for `graph` (exporting to `artifact` where it keeps a file); every
        class in the registry has one (a test double need not)."""
        raise NotImplementedError(f"{cls.__name__} cannot be created by name")

    @classmethod
    def reload(
        cls,
        artifact: Path | None,
        profile: ShapeProfile,
        precision: str,
        device: torch.device,
        graph: SegmentationGraph | None,
        manifest: dict[str, Any],
    ) -> Backend:
        """The backend again from its saved artefact and manifest; a backend that keeps no file
        (torch.compile) is re-created from `graph`."""
        if graph is None:
            raise ValueError(f"{cls.__name__} keeps no file; pass the graph to re-create it")
        return cls.create(graph, profile, precision, device, None)

    def __init__(self, device: torch.device, max_batch: int, profile: ShapeProfile | None = None) -> None:
        self.device = torch.device(device)
        self.max_batch = int(max_batch)
        self.profile = profile

    @abc.abstractmethod
    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """The backend's own forward on device inputs that passed `check_inputs`."""

    def __call__(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        self.check_inputs(images, caption_feats, caption_mask, class_embeds)
        inputs = (images, caption_feats, caption_mask, class_embeds)
        moved = [t.to(self.device, non_blocking=True) for t in inputs]
        return self.forward(*moved).float()

    def supports(self, height: int, width: int, caption_length: int, num_classes: int) -> bool:
        """True if this backend can run inputs of these shapes (always, for shape-agnostic ones)."""
        p = self.profile
        if p is None:
            return True
        return (p.height, p.width, p.caption_length, p.num_classes) == (
            height,
            width,
            caption_length,
            num_classes,
        )

    def check_inputs(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> None:
        """ValueError naming the problem for inputs this backend cannot run."""
        b, _, h, w = images.shape
        if not 1 <= b <= self.max_batch:
            raise ValueError(f"{self.name}: batch {b} is outside [1, {self.max_batch}]")
        if caption_feats.shape[:2] != caption_mask.shape or caption_feats.shape[0] != b:
            raise ValueError(
                f"{self.name}: caption feats {tuple(caption_feats.shape)} / mask "
                f"{tuple(caption_mask.shape)} do not match batch {b}"
            )
        if not self.supports(h, w, caption_feats.shape[1], class_embeds.shape[0]):
            raise ValueError(
                f"{self.name}: built for {self.profile}, got H={h} W={w} L={caption_feats.shape[1]} "
                f"K={class_embeds.shape[0]}"
            )

    @property
    def streamable(self) -> bool:
        """Whether one-thread CPU streams (serving/compute.py) can run it side by side (`for_streams`
        says with what): on the CPU, concurrent calls allowed, and its threads are torch's, which a
        stream sets to one."""
        return self.device.type == "cpu" and self.thread_safe and self.torch_threads

    def for_streams(self) -> Backend | None:
        """The backend the one-thread CPU streams call, or None when they cannot run this one:
        itself when its threads are torch's (each stream runs it on its own one thread)."""
        return self if self.streamable else None

    def describe(self) -> dict[str, Any]:
        """What the service reports as its backend (JSON-serialisable)."""
        return {
            "name": self.name,
            "precision": self.precision,
            "device": str(self.device),
            "max_batch": self.max_batch,
            "profile": self.profile.to_dict() if self.profile else None,
            "thread_safe": self.thread_safe,
            "torch_threads": self.torch_threads,
        }
