"""`torch.export` of the segmentation graph: the input of Torch-TensorRT's dynamo path and ONNX.

Fixed H, W (the positional embedding is resized once per shape) and caption length L (captions are
padded to L with the key mask, which does not change the result); the batch is dynamic.
"""

from __future__ import annotations

import torch
from torch.export import Dim, ExportedProgram

from model.segmentor import SegmentationGraph


def example_inputs(
    graph: SegmentationGraph, batch: int, height: int, width: int, num_classes: int, caption_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero-filled example inputs of the graph's signature (one real token per caption)."""
    c = graph.visual.embed_dim
    device = next(graph.parameters()).device
    mask = torch.zeros(batch, caption_length, dtype=torch.bool, device=device)
    mask[:, 0] = True
    return (
        torch.zeros(batch, 3, height, width, device=device),
        torch.zeros(batch, caption_length, c, device=device),
        mask,
        torch.nn.functional.normalize(torch.ones(num_classes, c, device=device), dim=-1),
    )


def export_graph(
    graph: SegmentationGraph,
    height: int,
    width: int,
    num_classes: int,
    caption_length: int = 77,
    max_batch: int = 16,
    example_batch: int = 2,
) -> ExportedProgram:
    """Export `graph` (in eval mode) with a dynamic batch in [1, max_batch].

    The example batch is 2 (not 1) so the exporter does not specialise the batch to a constant.
    Raises whatever `torch.export` raises on a graph break: the graph has none by design.
    """
    graph = graph.eval()
    inputs = example_inputs(graph, example_batch, height, width, num_classes, caption_length)
    batch = Dim("batch", min=1, max=max_batch)
    dynamic = ({0: batch}, {0: batch}, {0: batch}, None)
    with torch.no_grad():
        return torch.export.export(graph, inputs, dynamic_shapes=dynamic, strict=False)
