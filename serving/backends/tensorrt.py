"""Torch-TensorRT 2.13 (dynamo, ahead of time): engines for fixed shape profiles, saved and re-loaded.

Pipeline (read from the 2.13 wheel's code and docs; it runs on a CUDA GPU only):
1. `export_for_tensorrt(graph, profile)`: `torch.export` of the graph with a dynamic batch; pure
   PyTorch, runs (and is tested) on CPU.
2. `torch_tensorrt.dynamo.compile(ep, arg_inputs=[Input(min, opt, max, dtype)...], ...)` on CUDA.
   TensorRT 11 builds strongly typed networks only (`enabled_precisions` is ignored in 2.13), so
   fp16/bf16 come from `enable_autocast=True, autocast_low_precision_type=...`; LayerNorm,
   GroupNorm and the L2 norms of F.normalize stay fp32 (`autocast_excluded_ops`; squared features
   of 512 channels overflow fp16), and so does the whole DLG block
   (`autocast_excluded_nodes`): its masked softmax fills with float32's minimum, which overflows to
   -inf in fp16 and would turn an empty caption into NaNs. `attn_bias_is_causal=False` because the
   default rewrites square attention biases to causal ones. `use_fp32_acc=True` for fp16 matmuls.
3. `torch_tensorrt.save(..., output_format="exported_program")`, re-loaded with
   `torch_tensorrt.load(path).module()`.
Keyword arguments are checked against the installed `torch_tensorrt.dynamo.compile` signature and
any it does not know are dropped with a warning (the GPU host may carry an older release); the
dropped names are reported by `describe()`.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim, ExportedProgram

from model.export import example_inputs, export_graph
from model.segmentor import SegmentationGraph
from serving.backends.base import Backend, BackendUnavailable, ShapeProfile

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}
ARG_NAMES = ("images", "caption_feats", "caption_mask", "class_embeds")


def import_torch_tensorrt() -> Any:
    """`torch_tensorrt`, or BackendUnavailable saying why it cannot be used here."""
    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT backends need an NVIDIA GPU with CUDA; none is available")
    try:
        import torch_tensorrt
    except ImportError as err:
        raise BackendUnavailable(
            f"torch_tensorrt is not importable ({err}); install the extra: pip install .[tensorrt]"
        ) from err
    return torch_tensorrt


def export_for_tensorrt(graph: SegmentationGraph, profile: ShapeProfile) -> ExportedProgram:
    """The exact ExportedProgram TensorRT compiles: fixed H, W, L, K; batch dynamic in [1, max_batch].

    Runs on the graph's device (CPU in tests). The exported batch range is at least [1, 2] so the
    exporter never specialises the batch to a constant; the backend enforces `profile.max_batch`.
    """
    return export_graph(
        graph.eval(),
        profile.height,
        profile.width,
        profile.num_classes,
        caption_length=profile.caption_length,
        max_batch=max(profile.max_batch, 2),
    )


def trt_inputs(trt: Any, graph: SegmentationGraph, profile: ShapeProfile) -> list[Any]:
    """torch_tensorrt.Input specs: batch min 1 / opt / max; H, W, L, K fixed; IO stays fp32/bool."""
    c = graph.visual.embed_dim
    h, w, length, k = profile.height, profile.width, profile.caption_length, profile.num_classes

    def batched(*rest: int, dtype: torch.dtype) -> Any:
        shapes = [(b, *rest) for b in (1, profile.optimal_batch, profile.max_batch)]
        return trt.Input(min_shape=shapes[0], opt_shape=shapes[1], max_shape=shapes[2], dtype=dtype)

    return [
        batched(3, h, w, dtype=torch.float32),
        batched(length, c, dtype=torch.float32),
        batched(length, dtype=torch.bool),
        trt.Input(min_shape=(k, c), opt_shape=(k, c), max_shape=(k, c), dtype=torch.float32),
    ]


def compile_settings(precision: str) -> dict[str, Any]:
    """Keyword arguments of `torch_tensorrt.dynamo.compile` (2.13 names) for fp16 or bf16 engines."""
    aten = torch.ops.aten
    return {
        "min_block_size": 1,
        "enable_autocast": True,
        "autocast_low_precision_type": PRECISIONS[precision],
        "autocast_excluded_ops": {
            aten.layer_norm.default,
            aten.native_layer_norm.default,
            aten.group_norm.default,
            aten.native_group_norm.default,
            aten.linalg_vector_norm.default,  # F.normalize: a sum of squares overflows fp16 (65504)
        },
        "autocast_excluded_nodes": {r"\bdlg\b"},
        "attn_bias_is_causal": False,
        "use_fp32_acc": precision == "fp16",
        "optimization_level": 3,
    }


def supported_kwargs(fn: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split kwargs into those `fn` declares and the names it does not know.

    If the signature cannot be read (a wrapper hiding it: no `arg_inputs` parameter), nothing is dropped.
    """
    params = inspect.signature(fn).parameters
    if "arg_inputs" not in params:
        return dict(kwargs), []
    kept = {k: v for k, v in kwargs.items() if k in params}
    return kept, sorted(set(kwargs) - set(kept))


def _dynamic_shapes(profile: ShapeProfile) -> dict[str, Any]:
    batch = Dim("batch", min=1, max=max(profile.max_batch, 2))
    return {
        "images": {0: batch},
        "caption_feats": {0: batch},
        "caption_mask": {0: batch},
        "class_embeds": None,
    }


class TensorRTBackend(Backend):
    """A Torch-TensorRT engine module (from `build` or `load`) for one shape profile, on CUDA."""

    thread_safe = False
    artifact_suffix = ".ep"

    @classmethod
    def create(
        cls,
        graph: SegmentationGraph,
        profile: ShapeProfile | None,
        precision: str,
        device: torch.device,
        artifact: Path | None,
    ) -> TensorRTBackend:
        cls.check_device(device)
        assert profile is not None
        return cls.build(graph, profile, precision, artifact)

    @classmethod
    def check_device(cls, device: torch.device) -> None:
        if device.type != "cuda":
            raise BackendUnavailable(f"TensorRT runs on CUDA only, not on {device}")

    @classmethod
    def reload(
        cls,
        artifact: Path | None,
        profile: ShapeProfile,
        precision: str,
        device: torch.device,
        graph: SegmentationGraph | None,
        manifest: dict[str, Any],
    ) -> TensorRTBackend:
        assert artifact is not None
        return cls.load(artifact, profile, precision)

    def __init__(self, module: Any, profile: ShapeProfile, precision: str, path: Path | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"TensorRT precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        super().__init__(torch.device("cuda"), profile.max_batch, profile)
        self.module = module
        self.precision = precision
        self.name = f"tensorrt-{precision}"
        self.path = path
        self.dropped_settings: list[str] = []

    @classmethod
    def build(
        cls,
        graph: SegmentationGraph,
        profile: ShapeProfile,
        precision: str,
        path: str | os.PathLike[str] | None,
    ) -> TensorRTBackend:
        """Export on CUDA, compile the engines, and save them to `path` (if given)."""
        trt = import_torch_tensorrt()
        graph = graph.eval().cuda()
        program = export_for_tensorrt(graph, profile)
        settings, dropped = supported_kwargs(trt.dynamo.compile, compile_settings(precision))
        if dropped:
            logger.warning("torch_tensorrt %s does not know %s; not passed", trt.__version__, dropped)
        with torch.no_grad():
            module = trt.dynamo.compile(program, arg_inputs=trt_inputs(trt, graph, profile), **settings)
        backend = cls(module, profile, precision, Path(path) if path else None)
        backend.dropped_settings = dropped
        if path is not None:
            backend.save(graph, path)
        return backend

    def save(self, graph: SegmentationGraph, path: str | os.PathLike[str]) -> None:
        """torch_tensorrt.save as an ExportedProgram (.ep) with the shared dynamic batch dimension."""
        trt = import_torch_tensorrt()
        p = self.profile
        assert p is not None
        args = example_inputs(graph, min(2, p.max_batch), p.height, p.width, p.num_classes, p.caption_length)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        trt.save(
            self.module,
            str(path),
            output_format="exported_program",
            arg_inputs=list(args),
            dynamic_shapes=_dynamic_shapes(p),
            retrace=True,
        )
        self.path = Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], profile: ShapeProfile, precision: str) -> TensorRTBackend:
        """Re-load a saved engine program: `torch_tensorrt.load(path).module()`."""
        trt = import_torch_tensorrt()
        module = trt.load(str(path)).module()
        return cls(module, profile, precision, Path(path))

    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        with torch.no_grad():
            return self.module(images, caption_feats, caption_mask, class_embeds)

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "kind": "torch_tensorrt", "file": str(self.path) if self.path else None}
        try:
            import torch_tensorrt

            info["torch_tensorrt_version"] = torch_tensorrt.__version__
        except ImportError:
            pass
        info["dropped_settings"] = self.dropped_settings
        return info
