"""ONNX Runtime on CPU (or CUDA): the graph exported to ONNX with a dynamic batch axis.

Export: `torch.export` via `model.export.export_graph` (the same program Torch-TensorRT compiles),
then `torch.onnx.export(..., dynamo=True)`; if the dynamo exporter fails, the TorchScript exporter
(`dynamo=False`, `dynamic_axes`) is tried, and the manifest records which one produced the file.
H, W, L and K are fixed per file: the predictor pads captions to L with the key mask (the DLG
ignores padded tokens, so the result does not change).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.export import example_inputs, export_graph
from model.segmentor import SegmentationGraph
from serving.backends.base import Backend, BackendUnavailable, ShapeProfile

logger = logging.getLogger(__name__)

INPUT_NAMES = ("images", "caption_feats", "caption_mask", "class_embeds")
OUTPUT_NAME = "logits"
TORCHSCRIPT_OPSET = 17


def _export_dynamo(graph: SegmentationGraph, profile: ShapeProfile, path: Path) -> None:
    program = export_graph(
        graph,
        profile.height,
        profile.width,
        profile.num_classes,
        caption_length=profile.caption_length,
        max_batch=max(profile.max_batch, 2),
    )
    args = example_inputs(
        graph, 2, profile.height, profile.width, profile.num_classes, profile.caption_length
    )
    torch.onnx.export(
        program, args, str(path), dynamo=True, external_data=False, output_names=[OUTPUT_NAME], verbose=False
    )


def _export_torchscript(graph: SegmentationGraph, profile: ShapeProfile, path: Path) -> None:
    args = example_inputs(
        graph, 2, profile.height, profile.width, profile.num_classes, profile.caption_length
    )
    axes = {name: {0: "batch"} for name in INPUT_NAMES[:3]} | {OUTPUT_NAME: {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            graph,
            args,
            str(path),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=TORCHSCRIPT_OPSET,
        )


def export_onnx(graph: SegmentationGraph, profile: ShapeProfile, path: str | os.PathLike[str]) -> str:
    """Write the graph (on CPU, eval mode) as one ONNX file; returns the exporter used.

    "dynamo" when `torch.onnx.export(dynamo=True)` worked, "torchscript" when the fallback did.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = graph.eval()
    try:
        _export_dynamo(graph, profile, path)
        return "dynamo"
    except Exception as err:  # the exporter raises many types; the fallback is the remedy
        logger.warning(
            "dynamo ONNX export failed (%s: %s); trying the TorchScript exporter", type(err).__name__, err
        )
    _export_torchscript(graph, profile, path)
    return "torchscript"


def _session(path: Path, device: torch.device, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BackendUnavailable("onnxruntime is not installed (pip install .[serve])") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable(
                "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
            )
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


class ONNXRuntimeBackend(Backend):
    """An ONNX file run by onnxruntime (intra-op threads = torch's thread count by default)."""

    name = "onnxruntime"
    precision = "fp32"
    thread_safe = True  # InferenceSession.run is thread-safe
    artifact_suffix = ".onnx"

    @classmethod
    def create(
        cls,
        graph: SegmentationGraph,
        profile: ShapeProfile | None,
        precision: str,
        device: torch.device,
        artifact: Path | None,
    ) -> ONNXRuntimeBackend:
        assert profile is not None and artifact is not None  # create_backend passes both
        return cls.build(graph, profile, artifact, device)

    @classmethod
    def reload(
        cls,
        artifact: Path | None,
        profile: ShapeProfile,
        precision: str,
        device: torch.device,
        graph: SegmentationGraph | None,
        manifest: dict[str, Any],
    ) -> ONNXRuntimeBackend:
        assert artifact is not None
        return cls(artifact, profile, device, exporter=manifest.get("exporter"))

    def __init__(
        self,
        path: str | os.PathLike[str],
        profile: ShapeProfile,
        device: str | torch.device = "cpu",
        threads: int | None = None,
        exporter: str | None = None,
    ) -> None:
        super().__init__(torch.device(device), profile.max_batch, profile)
        self.path = Path(path)
        self.exporter = exporter
        self.session = _session(self.path, self.device, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        if len(self.input_names) != len(INPUT_NAMES):
            raise ValueError(f"{self.path}: expected inputs {INPUT_NAMES}, found {self.input_names}")

    @classmethod
    def build(
        cls,
        graph: SegmentationGraph,
        profile: ShapeProfile,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> ONNXRuntimeBackend:
        """Export `graph` (moved to CPU for the export) to `path` and open a session on it."""
        graph_device = next(graph.parameters()).device
        exporter = export_onnx(graph.cpu(), profile, path)
        graph.to(graph_device)
        return cls(path, profile, device, threads, exporter)

    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        arrays = [t.detach().cpu().numpy() for t in (images, caption_feats, caption_mask, class_embeds)]
        feeds = {name: np.ascontiguousarray(a) for name, a in zip(self.input_names, arrays)}
        (logits,) = self.session.run(None, feeds)
        return torch.from_numpy(logits)

    @property
    def streamable(self) -> bool:
        return self.device.type == "cpu"

    def for_streams(self) -> ONNXRuntimeBackend | None:
        """A second session on the same file with one intra-op thread: ONNX Runtime keeps its own
        thread pool, which a stream's torch setting does not reach; with one thread a run executes
        on the calling thread, so the streams run it side by side (`run` is thread-safe)."""
        if not self.streamable:
            return None
        assert self.profile is not None  # always built with one
        return ONNXRuntimeBackend(self.path, self.profile, self.device, threads=1, exporter=self.exporter)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "kind": "onnxruntime",
            "file": str(self.path),
            "exporter": self.exporter,
            "providers": self.session.get_providers(),
        }
