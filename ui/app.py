"""Gradio demo: caption-guided semantic segmentation of driving scenes.

    python -m ui.app [--checkpoint PATH] [--port 7860]      # http://127.0.0.1:7860

Upload a driving scene (or pick one of the project's own synthetic example scenes), check or edit
the caption, choose a class set or type custom class prompts, and press Segment. The page shows
the colour overlay (its opacity re-blends the last result without re-running the model), a legend
in the Cityscapes palette, a hover view of each class, a table of per-class area and mean
confidence, the latency of every stage, the backend and the checkpoint, and PNG downloads of the
label map (train ids, or Cityscapes label ids) and of the overlay.

Everything goes through the shared `serving.predictor.Predictor`: uploads reach it as the raw
bytes of the uploaded file, so its limits (body size, pixels, formats) apply, and a bad upload
gets its message, never a stack trace. Public functions:

- `segment_scene(predictor, image, ...) -> SceneOutputs`: one segmentation, every output (pure
  apart from writing three PNGs into `out_dir`; ServingError becomes `SceneOutputs.error`);
- `reblend_overlay(state, alpha) -> path`: a new overlay PNG from the last result;
- `legend_html`, `banner_html`, `model_info_markdown`: the HTML/Markdown pieces;
- `build_demo(predictor) -> gr.Blocks`, `build_ui_asgi(predictor) -> FastAPI` (to mount the UI
  in the BentoML service at /ui), `main()` (the CLI).

`predictor` may be a Predictor or a zero-argument callable returning one (or None while it is
still loading): the BentoML service builds its predictor after the UI app is created.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import logging
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
import pandas as pd
from fastapi import FastAPI
from gradio import component_meta

from model.class_sets import CLASS_SETS, ClassSet, custom_class_set
from serving.decode import Limits, check_body_size, read_limited
from serving.encode import label_png, labelid_png, overlay_png
from serving.errors import InvalidImage, InvalidParameter, ServiceUnavailable, ServingError
from serving.loading import trained_on_line
from serving.logs import configure_logging
from serving.params import parse_alpha
from serving.prediction import SOURCE_FAILED, SOURCE_NONE, Prediction, per_class_stats
from serving.predictor import Predictor
from ui.examples import EXAMPLES_DIR, load_examples

logger = logging.getLogger("semidavil.ui")

PredictorSource = Predictor | Callable[[], Predictor | None]
ProgressFn = Callable[..., object]

TITLE = "SemiDAViL: driving-scene segmentation"
DEFAULT_ALPHA = 0.5
ANNOTATION_MAX_SIDE = 1024  # the hover view is drawn at display size (at most this long side)
TABLE_HEADERS = ["class", "area (%)", "mean confidence"]
# Stage timings shown after a run: the predictor's stages, its total, then the UI's own PNG work.
TIMING_LABELS = {
    "decode": "decode",
    "preprocess": "preprocess",
    "caption": "caption",
    "text": "text",
    "forward": "forward",
    "postprocess": "postprocess",
    "total": "predictor total",
    "encode (UI)": "PNG + views (UI)",
}
CLASS_SET_CHOICES = [("Cityscapes (19 classes)", "cityscapes"), ("SYNTHIA (16 classes)", "synthia16")]
KEEP_OUTPUT_DIRS = 32


# ------------------------------------------------------------------------------------------------
# Results


@dataclass
class SceneState:
    """What the opacity slider needs to re-blend without the model: kept in gr.State per session."""

    rgb: np.ndarray
    label_map: np.ndarray
    palette: tuple[tuple[int, int, int], ...]
    stem: str
    out_dir: Path


@dataclass
class SceneOutputs:
    """Everything one segmentation shows. `error` is set (and the rest empty) for a bad request.

    overlay_path / label_train_path / label_id_path: PNG files in `out_dir` (label_id_path is None
    for custom class sets, which have no Cityscapes label ids); annotated: (display-size image,
    [(mask, class name)]) for gr.AnnotatedImage with `color_map`; table: rows of TABLE_HEADERS,
    sorted by area; legend_classes: the predicted classes in class order.
    """

    error: str | None = None
    overlay_path: str | None = None
    annotated: tuple[np.ndarray, list[tuple[np.ndarray, str]]] | None = None
    color_map: dict[str, str] = field(default_factory=dict)
    legend_html: str = ""
    legend_classes: list[str] = field(default_factory=list)
    table: list[list[Any]] = field(default_factory=list)
    caption: str = ""
    caption_source: str = ""
    status: str = ""
    info: str = ""
    label_train_path: str | None = None
    label_id_path: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    state: SceneState | None = None

    @classmethod
    def failed(cls, err: ServingError, caption: str = "") -> SceneOutputs:
        message = f"{err.message} (HTTP {err.status}, {err.code})"
        return cls(error=message, caption=caption, status=f"**Cannot segment this upload:** {message}")


def hex_colour(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def legend_html(class_set: ClassSet, indices: Sequence[int]) -> str:
    """HTML swatches (class colour + name) for the given class indices, in the order given."""
    items = []
    for index in indices:
        name = html.escape(class_set.names[index], quote=True)
        colour = hex_colour(class_set.palette[index])
        items.append(
            f'<span class="sd-legend-item" data-class="{name}" style="display:inline-flex;'
            f'align-items:center;margin:2px 12px 2px 0;white-space:nowrap">'
            f'<span style="display:inline-block;width:16px;height:16px;border-radius:3px;'
            f'border:1px solid rgba(0,0,0,.35);margin-right:5px;background:{colour}"></span>{name}</span>'
        )
    return f'<div class="sd-legend" style="line-height:1.9">{"".join(items)}</div>'


def banner_html(predictor: Predictor | None) -> str:
    """A visible warning for random weights (no trained checkpoint) or zero-shot towers; else an empty string."""
    if predictor is None:
        return _banner("The model is still loading; segmentation will be available in a moment.")
    if predictor.zero_shot:
        return _banner(
            f"Zero-shot mode: <code>{html.escape(predictor.served.name)}</code> CLIP towers only, no trained "
            "segmentation decoder. Labels come from class prompts scored against dense CLIP features "
            "(MaskCLIP), far coarser than a trained model's."
        )
    if not predictor.random_weights:
        return ""
    return _banner(
        f"No trained checkpoint found: this demo serves RANDOM <code>{html.escape(predictor.served.name)}</code> "
        "weights, so its segmentations are meaningless. Start it with <code>--checkpoint PATH</code> "
        "(the service: <code>SEMIDAVIL_CHECKPOINT=PATH</code>), or put the default checkpoint in "
        "<code>serving/default_checkpoint.safetensors</code>."
    )


def _banner(text: str) -> str:
    return (
        '<div class="sd-warning" role="alert" style="background:#fff3cd;color:#5c4400;'
        'border:1px solid #e0b100;border-radius:8px;padding:10px 14px;font-weight:600">'
        f"&#9888; {text}</div>"
    )


def checkpoint_text(predictor: Predictor) -> str:
    sha = predictor.served.checkpoint_sha256[:12]
    if predictor.random_weights:
        return f"none, random `{predictor.served.name}` weights (sha256 `{sha}`)"
    path = predictor.served.checkpoint_path
    return f"`{path.name if path else 'embedded default'}` (sha256 `{sha}`)"


def predictor_captioner_missing(error: str | None) -> bool:
    """True for the captioner-missing error, which the header states once instead of every status."""
    return error is not None and error.startswith("CaptionerUnavailable")


def model_info_markdown(predictor: Predictor | None, prediction: Prediction | None = None) -> str:
    """Backend, device, model, checkpoint and working size; plus the stage timings of `prediction`."""
    if predictor is None:
        return "Model: loading..."
    backend = prediction.backend if prediction else predictor.backend.name
    precision = prediction.precision if prediction else predictor.backend.precision
    h, w = predictor.working_size
    captioner = (
        f"`{getattr(predictor.captioner, 'kind', None) or ('none' if predictor.captioner is None else '?')}`"
    )
    status = predictor.captioner_status()
    if status["name"] != "none" and not status["available"]:
        captioner += f" unavailable: {status['reason']}; segmenting without captions"
    lines = [
        f"**Backend** `{backend}` ({precision}, {predictor.device}) · **model** `{predictor.served.name}` · "
        f"**checkpoint** {checkpoint_text(predictor)} · **working size** {h}×{w} · **captioner** {captioner}",
        "",
        f"**Trained on** {trained_on_line(predictor.served)}",
    ]
    if prediction is not None:
        timings = prediction.timings_ms
        parts = [
            f"**{TIMING_LABELS[s]} {timings[s]:.1f}**"
            if s == "total"
            else f"{TIMING_LABELS[s]} {timings[s]:.1f}"
            for s in TIMING_LABELS
            if s in timings
        ]
        lines += ["", "**Latency (ms)**: " + " · ".join(parts)]
        if prediction.backend_note:
            lines += ["", f"Note: {prediction.backend_note}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The segmentation itself


def _stem(image: Any) -> str:
    if isinstance(image, (str, Path)):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(image).stem).strip("._")[:80]
        return stem or "scene"
    return "scene"


def read_upload(image: Any, limits: Limits) -> bytes:
    """The uploaded file's bytes, refusing (413) before reading more than the body limit."""
    if image is None:
        raise InvalidParameter("no image: upload a driving scene or pick an example first", "missing_image")
    if isinstance(image, (bytes, bytearray, memoryview)):
        check_body_size(len(image), limits)
        return bytes(image)
    if isinstance(image, (str, Path)):
        try:
            return read_limited(image, limits)
        except (FileNotFoundError, IsADirectoryError) as err:
            raise InvalidImage("the uploaded file is no longer available; upload it again") from err
    raise InvalidParameter(f"unsupported image value of type {type(image).__name__}")


def _classes_arg(class_set: str | None, custom_classes: str | None) -> str:
    if custom_classes and custom_classes.strip():
        return custom_classes.strip()
    name = (class_set or "cityscapes").strip()
    if name not in CLASS_SETS:
        raise InvalidParameter(f"unknown class set {name!r}; choose one of {sorted(CLASS_SETS)}")
    return name


def _annotation(prediction: Prediction, indices: Sequence[int]) -> tuple[np.ndarray, list]:
    """(display-size image, [(0/1 mask, class name)]) for gr.AnnotatedImage."""
    h, w = prediction.input_size
    scale = min(1.0, ANNOTATION_MAX_SIDE / max(h, w))
    base, labels = prediction.rgb, prediction.label_map
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        base = cv2.resize(base, size, interpolation=cv2.INTER_AREA)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    names = prediction.class_names
    return base, [((labels == i).astype(np.float32), names[i]) for i in indices]


def _write_outputs(
    prediction: Prediction, out_dir: Path, stem: str, alpha: float
) -> tuple[str, str, str | None]:
    train_path = out_dir / f"{stem}_trainids.png"
    train_path.write_bytes(label_png(prediction.label_map))
    label_id_path: str | None = None
    if prediction.class_set.train_ids is not None:  # custom class sets have no Cityscapes label ids
        label_id_path = str(out_dir / f"{stem}_labelids.png")
        Path(label_id_path).write_bytes(labelid_png(prediction.label_map, prediction.class_set))
    overlay_path = out_dir / f"{stem}_overlay.png"
    overlay_path.write_bytes(overlay_png(prediction.rgb, prediction.label_map, prediction.palette, alpha))
    return str(overlay_path), str(train_path), label_id_path


def _status(prediction: Prediction, n_present: int, label_ids: bool) -> str:
    h, w = prediction.input_size
    cap = prediction.caption
    parts = [
        f"Segmented a {w}×{h} {prediction.image_format} image: {n_present} of "
        f"{len(prediction.class_set)} classes (`{prediction.class_set.name}`) found. "
        f"Caption source: **{cap.source}**."
    ]
    if cap.source == SOURCE_FAILED and predictor_captioner_missing(cap.error):
        parts.append("Segmented without a caption (the captioner is unavailable, see the header).")
    elif cap.source == SOURCE_FAILED:
        parts.append(f"The captioner failed ({cap.error}); the scene was segmented without a caption.")
    if not label_ids:
        parts.append("Cityscapes label ids exist only for the Cityscapes and SYNTHIA class sets.")
    parts += [f"**Warning:** {w}" for w in prediction.warnings]
    return " ".join(parts)


def segment_scene(
    predictor: Predictor,
    image: str | Path | bytes | None,
    caption: str | None = "",
    no_caption: bool = False,
    class_set: str | None = "cityscapes",
    custom_classes: str | None = "",
    alpha: float = DEFAULT_ALPHA,
    out_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> SceneOutputs:
    """Segment one uploaded scene and build every output of the page.

    image: the uploaded file's path (or its bytes); caption: used as given when not blank (source
    "caller"), blank lets the predictor's captioner write one; no_caption: segment without any
    caption (source "none"); custom_classes: comma-separated prompts that replace `class_set`;
    alpha: overlay opacity in [0, 1]; out_dir: where the PNGs go (a new temp folder if None).
    A ServingError (bad upload, bad parameter) comes back as `SceneOutputs.error`, not raised.
    """
    try:
        return _segment(
            predictor, image, caption, no_caption, class_set, custom_classes, alpha, out_dir, progress
        )
    except ServingError as err:
        return SceneOutputs.failed(err, caption or "")


def _segment(
    predictor: Predictor,
    image: Any,
    caption: str | None,
    no_caption: bool,
    class_set: str | None,
    custom_classes: str | None,
    alpha: float,
    out_dir: str | Path | None,
    progress: ProgressFn | None,
) -> SceneOutputs:
    report = progress or (lambda *_a, **_k: None)
    alpha = parse_alpha(alpha)
    report(0.05, desc="reading the upload")
    data = read_upload(image, predictor.limits)
    classes = _classes_arg(class_set, custom_classes)
    text = None if no_caption or not (caption or "").strip() else caption
    report(0.2, desc="segmenting")
    prediction = predictor.predict(data, caption=text, classes=classes, use_captioner=not no_caption)
    report(0.8, desc="drawing the overlay")
    start = time.perf_counter()
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="semidavil-ui-"))
    folder.mkdir(parents=True, exist_ok=True)
    stem = _stem(image)
    overlay_path, train_path, label_id_path = _write_outputs(prediction, folder, stem, alpha)
    stats = per_class_stats(prediction)
    indices = [s["index"] for s in stats]
    annotated = _annotation(prediction, indices)
    prediction.timings_ms["encode (UI)"] = round((time.perf_counter() - start) * 1000.0, 3)
    rows = [
        [s["class"], round(100.0 * s["pixel_fraction"], 2), round(float(s["mean_confidence"]), 3)]
        for s in sorted(stats, key=lambda s: -s["pixel_fraction"])
    ]
    used = prediction.caption
    return SceneOutputs(
        overlay_path=overlay_path,
        annotated=annotated,
        color_map={n: hex_colour(c) for n, c in zip(prediction.class_names, prediction.palette)},
        legend_html=legend_html(prediction.class_set, indices),
        legend_classes=[prediction.class_names[i] for i in indices],
        table=rows,
        caption=used.text if used.source not in (SOURCE_NONE, SOURCE_FAILED) else (caption or ""),
        caption_source=used.source,
        status=_status(prediction, len(indices), label_id_path is not None),
        info=model_info_markdown(predictor, prediction),
        label_train_path=train_path,
        label_id_path=label_id_path,
        timings_ms=dict(prediction.timings_ms),
        state=SceneState(prediction.rgb, prediction.label_map, prediction.palette, stem, folder),
    )


def reblend_overlay(state: SceneState, alpha: float) -> str:
    """A new overlay PNG of the last result at opacity `alpha` (no model call); its path."""
    alpha = parse_alpha(alpha)
    path = state.out_dir / f"{state.stem}_overlay.png"
    path.write_bytes(overlay_png(state.rgb, state.label_map, state.palette, alpha))
    return str(path)


# ------------------------------------------------------------------------------------------------
# Gradio wiring


@contextlib.contextmanager
def _no_pyi_stub() -> Iterator[None]:
    """Gradio's ComponentMeta writes a .pyi stub next to the source file of every Component
    subclass, which would put ui/app.pyi into the source tree; switched off while ours is defined."""
    original = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *_args, **_kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = original


with _no_pyi_stub():

    class SceneImage(gr.Image):
        """gr.Image that hands the handler the uploaded file's path with its bytes untouched.

        Plain gr.Image(type="filepath") opens the file with PIL first, so a non-image upload fails
        inside Gradio with a generic error; here the predictor decodes it and explains what is wrong.
        `is_template` makes Gradio use the ordinary Image front end.
        """

        is_template = True

        def preprocess(self, payload: Any) -> Any:
            if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
                return str(payload.path)
            return super().preprocess(payload)


class _OutputFolders:
    """One temp folder per app, a sub-folder per request; only the newest KEEP_OUTPUT_DIRS are kept
    (Gradio copies returned files into its own cache, which `delete_cache` cleans)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="semidavil-ui-"))
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            old = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            for stale in old[: max(0, len(old) - KEEP_OUTPUT_DIRS + 1)]:
                shutil.rmtree(stale, ignore_errors=True)
            folder = self.root / uuid.uuid4().hex[:12]
            folder.mkdir()
            return folder


def _resolve(source: PredictorSource) -> Predictor | None:
    if isinstance(source, Predictor):
        return source
    try:
        return source()
    except (KeyError, AttributeError):
        return None


def _segment_handler(source: PredictorSource, folders: _OutputFolders) -> Callable[..., tuple]:
    def segment(image, caption, no_caption, class_set, custom_classes, alpha, progress=gr.Progress()):  # noqa: B008
        predictor = _resolve(source)
        if predictor is None:
            out = SceneOutputs.failed(ServiceUnavailable("the model is still loading; try again"), caption)
        else:
            try:
                out = segment_scene(
                    predictor,
                    image,
                    caption,
                    no_caption,
                    class_set,
                    custom_classes,
                    alpha,
                    folders.new(),
                    progress,
                )
            except Exception:  # a bug, not bad input: log it, show one sentence, never a trace
                logger.exception("segmentation failed")
                out = SceneOutputs(error="internal error", caption=caption or "")
                out.status = "**Segmentation failed** because of an internal error; see the server log."
        if out.error:
            gr.Warning(out.status.replace("**", ""))
        table = pd.DataFrame(out.table, columns=TABLE_HEADERS)
        info = out.info or model_info_markdown(predictor)
        return (
            *(out.overlay_path, out.annotated, out.legend_html, table, out.caption, out.caption_source),
            *(out.status, info, out.label_train_path, out.label_id_path, out.overlay_path, out.state),
        )

    return segment


def _reblend_handler(state: SceneState | None, alpha: float) -> tuple[str | None, str | None]:
    if state is None:  # nothing segmented yet (or the last upload was refused)
        return None, None
    try:
        path = reblend_overlay(state, alpha)
    except ServingError as err:
        gr.Warning(err.message)
        return None, None
    return path, path


def colour_map_for(class_set: str | None, custom_classes: str | None) -> dict[str, str]:
    """Class name -> colour of the classes a request will use ({} if the class list is invalid)."""
    try:
        classes = _classes_arg(class_set, custom_classes)
        chosen = CLASS_SETS[classes] if classes in CLASS_SETS else _custom_set(classes)
    except (ServingError, ValueError):
        return {}
    return {n: hex_colour(c) for n, c in zip(chosen.names, chosen.palette)}


def _custom_set(text: str) -> ClassSet:
    return custom_class_set([p.strip() for p in text.split(",") if p.strip()])


def _colour_handler(class_set: str | None, custom_classes: str | None) -> Any:
    # AnnotatedImage bakes its colour map into the mask PNGs when a result is shown, so the map
    # is set (privately, no model call) just before the segment event runs.
    return gr.AnnotatedImage(color_map=colour_map_for(class_set, custom_classes) or None)


def _page_handler(source: PredictorSource) -> Callable[[], tuple[str, str]]:
    def on_load() -> tuple[str, str]:
        predictor = _resolve(source)
        return banner_html(predictor), model_info_markdown(predictor)

    return on_load


@dataclass
class _InputPanel:
    """The left column: the scene, its caption, the classes, the opacity and the Segment button."""

    image: gr.Image
    caption: gr.Textbox
    caption_source: gr.Textbox
    no_caption: gr.Checkbox
    class_set: gr.Radio
    custom: gr.Textbox
    alpha: gr.Slider
    run: gr.Button


@dataclass
class _OutputPanel:
    """The right column: status, overlay, hover view, legend, table, downloads and model info."""

    status: gr.Markdown
    overlay: gr.Image
    annotated: gr.AnnotatedImage
    legend: gr.HTML
    table: gr.Dataframe
    downloads: list[gr.DownloadButton]  # train ids, Cityscapes label ids, overlay
    info: gr.Markdown


def _input_panel(examples: Sequence[tuple[str, str]]) -> _InputPanel:
    with gr.Column(scale=2, min_width=320):
        image = SceneImage(
            label="Driving scene (JPEG, PNG or WebP)",
            type="filepath",
            image_mode=None,
            sources=["upload", "clipboard"],
            format="png",
            elem_id="sd-input",
        )
        caption = gr.Textbox(
            label="Caption (editable)",
            lines=2,
            placeholder="Leave blank to let the captioner describe the scene",
            elem_id="sd-caption",
        )
        caption_source = gr.Textbox(
            label="Caption source (caller, captioner, cache, none, captioner_failed)",
            interactive=False,
            max_lines=1,
        )
        no_caption = gr.Checkbox(label="No caption (segment without any caption)", value=False)
        class_set = gr.Radio(CLASS_SET_CHOICES, value="cityscapes", label="Class set")
        custom = gr.Textbox(
            label="Custom class prompts (comma separated; replace the class set)",
            placeholder="e.g. road, car, tree|hedge, sky",
            max_lines=2,
        )
        alpha = gr.Slider(0.0, 1.0, value=DEFAULT_ALPHA, step=0.05, label="Overlay opacity")
        run = gr.Button("Segment", variant="primary", elem_id="sd-segment")
        if examples:
            gr.Examples(
                examples=[[path, cap] for path, cap in examples],
                inputs=[image, caption],
                label="Example scenes (generated by the project's synthetic scene renderer)",
                example_labels=[Path(p).stem.replace("_", " ") for p, _ in examples],
                cache_examples=False,
            )
    return _InputPanel(image, caption, caption_source, no_caption, class_set, custom, alpha, run)


def _output_panel(ready: Predictor | None) -> _OutputPanel:
    with gr.Column(scale=3, min_width=400):
        status = gr.Markdown("", elem_id="sd-status")
        with gr.Tabs():
            with gr.Tab("Overlay"):
                overlay = gr.Image(
                    label="Overlay",
                    type="filepath",
                    format="png",
                    interactive=False,
                    elem_id="sd-overlay",
                )
            with gr.Tab("Hover a class"):
                annotated = gr.AnnotatedImage(
                    label="Classes (hover to highlight)",
                    format="png",
                    color_map=colour_map_for("cityscapes", ""),
                    elem_id="sd-annotated",
                )
        legend = gr.HTML("", elem_id="sd-legend")
        table = gr.Dataframe(
            headers=TABLE_HEADERS,
            datatype=["str", "number", "number"],
            label="Per-class area and mean confidence",
            interactive=False,
            elem_id="sd-table",
        )
        with gr.Row():
            dl_train = gr.DownloadButton("Label map PNG (train ids)", size="sm")
            dl_labelid = gr.DownloadButton("Label map PNG (Cityscapes label ids)", size="sm")
            dl_overlay = gr.DownloadButton("Overlay PNG", size="sm")
        info = gr.Markdown(model_info_markdown(ready) if ready else "", elem_id="sd-info")
    return _OutputPanel(status, overlay, annotated, legend, table, [dl_train, dl_labelid, dl_overlay], info)


def _wire(
    demo: gr.Blocks,
    predictor: PredictorSource,
    folders: _OutputFolders,
    banner: gr.HTML,
    inp: _InputPanel,
    out: _OutputPanel,
) -> None:
    """The events: clearing the caption on a new image, Segment, re-blending, the page load."""
    state = gr.State(None, time_to_live=1800)
    inp.image.upload(lambda: "", None, inp.caption, api_visibility="private")
    inp.image.clear(lambda: "", None, inp.caption, api_visibility="private")
    inp.no_caption.change(
        lambda off: gr.Textbox(interactive=not off), inp.no_caption, inp.caption, api_visibility="private"
    )
    inp.run.click(
        _colour_handler, [inp.class_set, inp.custom], out.annotated, queue=False, api_visibility="private"
    ).then(
        _segment_handler(predictor, folders),
        [inp.image, inp.caption, inp.no_caption, inp.class_set, inp.custom, inp.alpha],
        [
            out.overlay, out.annotated, out.legend, out.table, inp.caption, inp.caption_source,
            out.status, out.info, *out.downloads, state,
        ],
        api_name="segment",
    )  # fmt: skip
    inp.alpha.change(
        _reblend_handler,
        [state, inp.alpha],
        [out.overlay, out.downloads[2]],
        api_name="reblend",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    demo.load(_page_handler(predictor), None, [banner, out.info], api_visibility="private")


def build_demo(
    predictor: PredictorSource,
    examples: Sequence[tuple[str, str]] | None = None,
    out_root: str | Path | None = None,
) -> gr.Blocks:
    """The Blocks app. predictor: a Predictor or a callable returning one (None while loading);
    examples: [(png path, caption)], default the generated scenes in ui/examples."""
    examples = load_examples() if examples is None else list(examples)
    folders = _OutputFolders(out_root)
    ready = predictor if isinstance(predictor, Predictor) else None
    with gr.Blocks(title=TITLE, delete_cache=(1800, 3600)) as demo:
        banner = gr.HTML(banner_html(ready) if ready else "", elem_id="sd-banner")
        gr.Markdown(
            f"# {TITLE}\nCaption-guided semantic segmentation (SemiDAViL). Upload a street scene or pick "
            "an example, check the caption, then press **Segment**."
        )
        with gr.Row():
            inputs = _input_panel(examples)
            outputs = _output_panel(ready)
        _wire(demo, predictor, folders, banner, inputs, outputs)
    return demo


def app_kwargs(predictor: PredictorSource, max_file_size: int | None = None) -> dict[str, Any]:
    """Settings shared by `launch` and `mount_gradio_app`: upload cap = the predictor's body limit,
    the examples folder readable, no SSR, no run history."""
    if max_file_size is None:
        limits = predictor.limits if isinstance(predictor, Predictor) else Limits()
        max_file_size = limits.max_body_bytes
    return {
        "allowed_paths": [str(EXAMPLES_DIR)],
        "max_file_size": max_file_size,
        "ssr_mode": False,  # no Node server
        "footer_links": ["api", "settings"],
        "run_history": False,  # keep no history of other people's uploads
    }


def build_ui_asgi(
    predictor: PredictorSource, max_file_size: int | None = None, root_path: str | None = None
) -> FastAPI:
    """The demo as an ASGI app serving at its own root, for `@bentoml.asgi_app(app, path="/ui")`.

    (`bentoml.gradio.mount_gradio_app` gives a 500 on GET /ui/ with Gradio 6; this is the verified
    workaround.) `predictor` may be a callable returning the service's predictor, or None while it
    loads. `root_path`: the path the app is mounted at ("/ui"), which Gradio must put in front of
    the URLs it hands the browser (example files, uploads, downloads); without it they pointed at
    /gradio_api/file=... on the API server and 404ed.
    """
    demo = build_demo(predictor)
    kwargs = app_kwargs(predictor, max_file_size)
    return gr.mount_gradio_app(FastAPI(), demo, path="/", root_path=root_path, **kwargs)


# ------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ui.app",
        description="Gradio demo of SemiDAViL driving-scene segmentation (serves on 127.0.0.1).",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint .safetensors (default: serving/default_checkpoint.safetensors, else random "
        "semidavil-tiny weights, flagged by a warning banner)",
    )
    parser.add_argument(
        "--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860; 0: any free port)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; anything else exposes the demo)",
    )
    parser.add_argument("--backend", default="auto", help="serving backend name, or auto (default)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument(
        "--captioner",
        default="none",
        choices=["none", "blip", "blip2"],
        help="captioner for blank captions (default none: type a caption or use an example's)",
    )
    parser.add_argument(
        "--captioner-model", default=None, help="hub id or local folder of the captioner weights"
    )
    return parser


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        backend=args.backend,
        device=args.device,
        captioner=args.captioner,
        captioner_model=args.captioner_model,
    )
    if predictor.random_weights:
        logger.warning(
            "no checkpoint: serving random %s weights (outputs are meaningless)", predictor.served.name
        )
    predictor.probe_captioner()  # a missing captioner is logged there, once
    demo = build_demo(predictor)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=args.host,
        server_port=args.port or free_port(args.host),
        share=False,
        **app_kwargs(predictor),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
