"""The predictor: one object that owns decoding, limits, resizing, captions, caches, batching,
backend choice and post-processing; the BentoML service and the Gradio demo both call it.

    predictor = Predictor.from_checkpoint(None)            # embedded default, else random tiny
    pred = predictor.predict(png_bytes, caption=None, classes="cityscapes")
    pred.label_map, pred.confidence, pred.caption_source, pred.timings_ms

Steps per image: decode (limits checked before decoding) -> resize to the working size (bilinear,
the model's fixed shape profile, so images of any size batch together) -> caption (the caller's
wins; else the captioner, whose failure or timeout degrades to "" with source "captioner_failed") -> class
embeddings (cached per class set) and caption features (cached per caption) padded to the
profile's caption length L -> backend forward -> logits upsampled bilinearly to the input size,
then argmax and max softmax (the reference behaviour).

Post-processing (`serving.postprocess`): the labels of "upsample every class's logits, then
argmax", computed by the cell method (identical labels on the fixture frames; several times
faster at 2048x1024, BENCHMARKS.md "request-path"); the confidence only when first read. The
service runs a batch's forward and post-processing together (`run_prepared`) on one lane.

Threads: building, warm-up, every forward and every post-processing run on the predictor's one
compute thread (`self.compute`, serving/compute.py: one OpenMP team instead of one per calling
thread, each of which slowed every forward), or on one of its one-thread CPU streams
(`self.streams`, lanes 1..n of `run_prepared`: the service's batcher uses them when several requests
wait); decoding (`prepare`) runs on the caller's thread, so that requests still overlap; a
captioner runs on its own thread (serving/captioning.py: a second OpenMP team, but one, not one per
request). Caches are locked LRUs.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from model.captioner import CaptionerUnavailable, create_captioner
from model.class_sets import CLASS_SETS, ClassSet, custom_class_set
from model.hardware import resolve_device
from model.lru import LRUCache
from model.preprocess import numpy_to_model_input
from model.text import TextEmbedder
from serving.agreement import default_margin
from serving.artifacts import obtain_backend
from serving.backend_probe import BackendChoice, resolve_auto
from serving.backends.base import Backend, ShapeProfile
from serving.backends.factory import create_backend, default_backend_name
from serving.captioning import DeadlineCaptioner
from serving.compute import ComputeThread, make_streams, stream_count
from serving.decode import DecodedImage, Limits, decode_array, decode_image, decode_pil
from serving.errors import InvalidParameter, ServingError
from serving.gate_inputs import agreement_inputs
from serving.loading import (
    ServingModel,
    check_working_size,
    default_class_set,
    load_serving_model,
    trained_on_line,
    working_size_for,
)
from serving.options import PredictorOptions
from serving.postprocess import Upsampled, upsample
from serving.prediction import (
    SOURCE_CALLER,
    SOURCE_FAILED,
    SOURCE_NONE,
    CaptionerLike,
    CaptionInfo,
    ImageInput,
    Prediction,
    PredictRequest,
    per_class_stats,
)

__all__ = ["CaptionInfo", "ForwardResult", "PredictRequest", "Prediction", "Predictor", "per_class_stats"]

logger = logging.getLogger(__name__)

MAX_CAPTION_CHARS = 2000


@dataclass
class PreparedRequest:
    request: PredictRequest
    decoded: DecodedImage
    resized: np.ndarray
    caption: CaptionInfo
    class_set: ClassSet
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ForwardResult:
    """One request after the batched forward, before post-processing: its logits [K, h, w] at the
    working size and what ran them. `Predictor.finish` turns it into a Prediction."""

    member: PreparedRequest
    logits: torch.Tensor
    timings: dict[str, float]
    backend: Backend
    note: str | None
    batch_size: int


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


OPEN_VOCABULARY_WARNING = (
    "open_vocabulary is false: this checkpoint's text tower was never pre-trained (random CLIP text "
    "weights), so custom class prompts do not carry their meaning; expect arbitrary labels. Use the "
    "Cityscapes classes, or a checkpoint trained from pre-trained towers (model.pretrained)."
)


class Predictor:
    """Segmentation with caches and a backend; see the module docstring. Build with `from_checkpoint`."""

    def __init__(
        self,
        served: ServingModel,
        backend: Backend,
        working_size: tuple[int, int],
        caption_length: int = 77,
        captioner: CaptionerLike | None = None,
        limits: Limits | None = None,
        class_set: ClassSet | None = None,
        embedder: TextEmbedder | None = None,
        captioner_timeout_s: float | None = None,
        compute: ComputeThread | None = None,
        streams: tuple[ComputeThread, ...] = (),
        stream_backend: Backend | None = None,
    ) -> None:
        check_working_size(working_size, served.model.seg.visual.patch_size)
        self.served = served
        self.backend = backend
        self.device = next(served.model.parameters()).device
        self.working_size = working_size
        self.caption_length = caption_length
        self.captioner_timeout_s = captioner_timeout_s
        self._captioner_call: DeadlineCaptioner | None = None
        self.set_captioner(captioner)
        self.limits = limits or Limits()
        self.default_class_set = class_set or default_class_set(served.class_names)
        self.embedder = embedder or TextEmbedder(served.model.text)
        self._fallback: Backend | None = None
        self._class_sets: LRUCache[tuple[str, ...], ClassSet] = LRUCache(256)
        self._lock = threading.Lock()
        self._forward_lock = threading.Lock()
        # how `backend` was chosen (from_checkpoint sets it; GET /model reports it)
        self.backend_choice = BackendChoice(backend.name, "explicit", "passed to the Predictor")
        # every forward and post-processing runs on this one thread (serving/compute.py: why)
        self.compute = compute or ComputeThread()
        # one-thread CPU streams (serving/compute.py: why): lanes 1..n of `run_prepared`, which run
        # `stream_backend` (the backend's `for_streams`)
        if streams and stream_backend is None:
            raise ValueError(f"{backend.name} cannot run in CPU streams (for_streams() is None)")
        self.streams = streams
        self.stream_backend = stream_backend if streams else None

    @classmethod
    def from_checkpoint(
        cls, path: str | None = None, options: PredictorOptions | None = None, **overrides: Any
    ) -> Predictor:
        """Load a checkpoint (None: the embedded default, else random semidavil-tiny weights, flagged)
        and build its backend: `options` (serving.options.PredictorOptions) with `overrides`, its
        field names, on top, e.g. `from_checkpoint(None, backend="eager-fp32")`.

        Compiled backends are re-loaded from `artifacts_dir` when a matching artefact exists, else
        built and gated against eager fp32 (AgreementError if refused); backend "auto" resolves
        through serving.backend_probe (GET /model `backend_choice` says how).
        """
        o = replace(options or PredictorOptions(), **overrides)
        compute = ComputeThread()  # the model is built and warmed on the thread that will run it
        return compute.run(cls._build, path, o, compute)

    @classmethod
    def _build(cls, path: str | None, o: PredictorOptions, compute: ComputeThread) -> Predictor:
        served = load_serving_model(path)
        torch_device = resolve_device(o.device)
        served.model.to(torch_device).eval()
        size = o.working_size or working_size_for(served)
        class_set = default_class_set(served.class_names)
        profile = ShapeProfile(size[0], size[1], o.caption_length, o.max_batch, len(class_set))
        embedder = TextEmbedder(served.model.text)
        margin = default_margin(served.random_weights) if o.agreement_margin is None else o.agreement_margin

        @functools.cache  # built once: the probe gates and times several candidates on them
        def inputs_fn() -> list:
            return agreement_inputs(served.model, profile, class_set, embedder=embedder)

        def build(name: str) -> Backend:
            return obtain_backend(
                served.model.seg,
                name,
                profile,
                torch_device,
                inputs_fn,
                artifacts_dir=o.artifacts_dir,
                checkpoint_sha256=served.checkpoint_sha256,
                model_name=served.name,
                threshold=o.agreement_threshold,
                margin=margin,
            )

        if o.backend == "auto":
            choice, backend_obj = resolve_auto(
                torch_device,
                served.name,
                served.checkpoint_sha256,
                profile,
                build,
                lambda: inputs_fn()[0],
                o.probe_dir,
                full=o.probe_full,
                streams=stream_count(o.cpu_streams, torch_device.type, True) >= 2,
            )
        else:
            choice, backend_obj = BackendChoice(o.backend, "explicit", "the backend setting names it"), None
        backend_obj = backend_obj or build(choice.name)
        captioner = o.captioner
        if isinstance(captioner, str):
            captioner = create_captioner(captioner, o.captioner_model, device=str(torch_device))
        streams = make_streams(
            stream_count(o.cpu_streams, torch_device.type, backend_obj.streamable), compute
        )
        predictor = cls(
            served,
            backend_obj,
            size,
            o.caption_length,
            captioner,
            o.limits,
            class_set,
            embedder,
            o.captioner_timeout_s,
            compute,
            streams,
            backend_obj.for_streams() if streams else None,
        )
        predictor.backend_choice = choice
        return predictor

    # ----------------------------------------------------------------------------------------
    # Public API

    @property
    def random_weights(self) -> bool:
        return self.served.random_weights

    @property
    def zero_shot(self) -> bool:
        """True when serving CLIP towers only (dense zero-shot, no trained decoder)."""
        return self.served.zero_shot

    def predict(
        self,
        image: ImageInput,
        caption: str | None = None,
        classes: str | Sequence[str] | None = None,
        use_captioner: bool = True,
    ) -> Prediction:
        """Segment one image (bytes, uint8 array, PIL image or DecodedImage); ServingError for bad input."""
        result = self.predict_batch([PredictRequest(image, caption, classes, use_captioner)])[0]
        assert isinstance(result, Prediction)
        return result

    def predict_batch(
        self, requests: Sequence[PredictRequest], return_errors: bool = False
    ) -> list[Prediction | ServingError]:
        """Segment many requests with as few backend calls as possible (one per class set and chunk).

        Each PredictRequest carries its own image, caption, classes and captioner switch. With
        `return_errors`, a bad request yields its ServingError in place (the others still run);
        otherwise the first error is raised. (The service batches across HTTP requests with
        `prepare` / `run_prepared` instead, so that decoding stays in each request's
        thread.) Runs on the predictor's compute thread, whichever thread calls.
        """
        return self.compute.run(self._predict_batch, requests, return_errors)

    def _predict_batch(
        self, requests: Sequence[PredictRequest], return_errors: bool
    ) -> list[Prediction | ServingError]:
        results: list[Prediction | ServingError | None] = [None] * len(requests)
        groups: dict[tuple[str, ...], list[tuple[int, PreparedRequest]]] = defaultdict(list)
        for index, request in enumerate(requests):
            try:
                prepared = self.prepare(request)
            except ServingError as err:
                if not return_errors:
                    raise
                results[index] = err
                continue
            groups[self._class_key(prepared.class_set)].append((index, prepared))
        for members in groups.values():
            for (index, _), result in zip(members, self._run_group([p for _, p in members])):
                results[index] = self.finish(result)
        return [r for r in results if r is not None]

    @property
    def lanes(self) -> int:
        """How many lanes `run_prepared` takes: 1 (the compute thread) + the CPU streams."""
        return 1 + len(self.streams)

    def run_prepared(self, prepared: Sequence[PreparedRequest], lane: int = 0) -> list[Prediction]:
        """Forward and post-processing of prepared requests on one lane: 0 is the compute thread
        (every core), 1..n the one-thread CPU streams. The confidence, when first read, is computed
        on the compute thread."""
        thread = self.compute if lane == 0 else self.streams[lane - 1]
        return thread.run(lambda: [self._finish(r, lane) for r in self._forward_prepared(prepared, lane)])

    def _forward_prepared(self, prepared: Sequence[PreparedRequest], lane: int = 0) -> list[ForwardResult]:
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for index, request in enumerate(prepared):
            groups[self._class_key(request.class_set)].append(index)
        results: list[ForwardResult | None] = [None] * len(prepared)
        for indices in groups.values():
            for index, result in zip(indices, self._run_group([prepared[i] for i in indices], lane)):
                results[index] = result
        return [r for r in results if r is not None]

    def finish(self, result: ForwardResult) -> Prediction:
        """Post-processing of one forward result: labels at the input size (their confidence is
        computed when first used, on the compute thread too)."""
        return self.compute.run(self._finish, result)

    def _finish(self, result: ForwardResult, lane: int = 0) -> Prediction:
        start = time.perf_counter()
        eager = upsample(result.logits, result.member.decoded.rgb.shape[:2])
        upsampled = Upsampled(eager.labels, lambda: self.compute.run(lambda: eager.confidence))
        timings = {**result.timings, "postprocess": _ms(start)}
        timings["total"] = sum(timings.values())
        return self._prediction(
            result.member, upsampled, timings, result.backend, result.note, result.batch_size, lane
        )

    def caption(self, image: ImageInput) -> CaptionInfo:
        """Caption one image with the predictor's captioner (degrades like `predict` does)."""
        decoded = self._decode(image)
        return self._caption_from_captioner(self._resize(decoded.rgb))

    def set_captioner(self, captioner: CaptionerLike | None) -> None:
        """Use `captioner` from now on (under the predictor's captioner deadline, if it has one)."""
        self.captioner = captioner
        self._captioner_reasons: set[str] = set()
        self._captioner_unavailable: str | None = None
        if self._captioner_call is not None:
            self._captioner_call.close()  # its thread ends once its queued calls are done
        self._captioner_call = (
            None if captioner is None else DeadlineCaptioner(captioner, self.captioner_timeout_s)
        )

    def resolve_classes(self, classes: str | Sequence[str] | None) -> ClassSet:
        """None -> the default set; a known set name; "a, b, c" or a list -> a custom set (422 if invalid).

        A custom set needs at least two classes, so a single unknown name is refused as an unknown set.
        """
        if classes is None:
            return self.default_class_set
        if isinstance(classes, str):
            if classes.strip() in CLASS_SETS:
                return CLASS_SETS[classes.strip()]
            if "," not in classes:
                raise InvalidParameter(
                    f"unknown class set {classes.strip()[:80]!r}; choose one of "
                    f"{', '.join(sorted(CLASS_SETS))} or give at least two comma-separated class names"
                )
            prompts = tuple(p.strip() for p in classes.split(",") if p.strip())
        else:
            if not all(isinstance(p, str) for p in classes):
                raise InvalidParameter("class prompts must be strings")
            prompts = tuple(p.strip() for p in classes)
        return self._custom_class_set(prompts)

    def warmup(self, all_lanes: bool = True) -> float:
        """One forward of a fixed input through the serving backend, on every lane or on lane 0
        only (the readiness check: a one-thread stream's forward of a large model takes seconds);
        seconds taken."""
        start = time.perf_counter()
        h, w = self.working_size
        # already decoded: the request limits (which may be below the working size) do not apply
        blank = DecodedImage(np.zeros((h, w, 3), dtype=np.uint8), "RGB", "warmup", w, h)
        prepared = self.prepare(PredictRequest(blank, "", None, False))
        for lane in range(self.lanes if all_lanes else 1):
            self.run_prepared([prepared], lane)
        return time.perf_counter() - start

    def info(self) -> dict[str, Any]:
        """Model, checkpoint, classes, backend and limits, for the model-info endpoint."""
        cfg = self.served.model.config
        return {
            "model": cfg.name,
            "model_config": cfg.to_dict(),
            "checkpoint": str(self.served.checkpoint_path) if self.served.checkpoint_path else None,
            "checkpoint_sha256": self.served.checkpoint_sha256,
            "random_weights": self.random_weights,
            "zero_shot": self.zero_shot,
            "open_vocabulary": self.served.open_vocabulary,
            "metrics": self.served.metrics,
            "trained_on": trained_on_line(self.served),
            "classes": list(self.default_class_set.names),
            "class_sets": sorted(CLASS_SETS),
            "working_size": list(self.working_size),
            "caption_length": self.caption_length,
            "captioner": getattr(self.captioner, "identity", type(self.captioner).__name__),
            "captioner_status": self.captioner_status(),
            "backend": self.backend.describe(),
            "backend_choice": self.backend_choice.describe(),
            "cpu_streams": len(self.streams),
            "device": str(self.device),
            "limits": {
                "max_body_bytes": self.limits.max_body_bytes,
                "max_pixels": self.limits.max_pixels,
                "max_side": self.limits.max_side,
                "formats": list(self.limits.allowed_formats),
            },
        }

    def text_cache_stats(self) -> dict[str, int]:
        return self.embedder.cache_stats()

    # ----------------------------------------------------------------------------------------
    # Preparation (per image)

    def _decode(self, image: ImageInput) -> DecodedImage:
        if isinstance(image, DecodedImage):
            return image
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image), self.limits)
        if isinstance(image, np.ndarray):
            return decode_array(image, self.limits)
        if isinstance(image, Image.Image):
            return decode_pil(image, self.limits)
        raise TypeError(f"unsupported image input {type(image).__name__}")

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        h, w = self.working_size
        if rgb.shape[:2] == (h, w):
            return rgb
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)

    def prepare(self, request: PredictRequest) -> PreparedRequest:
        """Decode, resize, resolve classes and caption one request (the per-request work before the
        batched forward; a service runs it in the request's own thread). Raises ServingError."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        decoded = self._decode(request.image)
        timings["decode"] = _ms(start)
        start = time.perf_counter()
        resized = self._resize(decoded.rgb)
        timings["preprocess"] = _ms(start)
        class_set = self.resolve_classes(request.classes)
        start = time.perf_counter()
        caption = self._caption_for(request, resized)
        timings["caption"] = _ms(start)
        return PreparedRequest(request, decoded, resized, caption, class_set, timings)

    def _caption_for(self, request: PredictRequest, resized: np.ndarray) -> CaptionInfo:
        if request.caption is not None:
            if not isinstance(request.caption, str):
                raise InvalidParameter("caption must be a string")
            if len(request.caption) > MAX_CAPTION_CHARS:
                raise InvalidParameter(f"caption longer than {MAX_CAPTION_CHARS} characters")
            return CaptionInfo(request.caption, SOURCE_CALLER)
        if not request.use_captioner:
            return CaptionInfo("", SOURCE_NONE)
        return self._caption_from_captioner(resized)

    def _caption_from_captioner(self, rgb: np.ndarray) -> CaptionInfo:
        if self._captioner_call is None:
            return CaptionInfo("", SOURCE_NONE)
        try:
            result = self._captioner_call.caption([Image.fromarray(rgb)])[0]
        except Exception as err:  # any captioner failure degrades to no caption; the response says why
            reason = f"{type(err).__name__}: {err}"
            self._note_captioner_problem(reason, unavailable=isinstance(err, CaptionerUnavailable))
            return CaptionInfo("", SOURCE_FAILED, reason)
        return CaptionInfo(result.text, result.source)

    def _note_captioner_problem(self, reason: str, unavailable: bool) -> None:
        """Log a captioner problem the first time it is seen (not once per request); remember a
        missing captioner for `captioner_status`."""
        with self._lock:
            first = reason not in self._captioner_reasons
            self._captioner_reasons.add(reason)
            if unavailable:
                self._captioner_unavailable = reason
        if first:
            logger.warning("captioner failed: %s; segmenting without captions (said once per reason)", reason)

    def probe_captioner(self) -> dict[str, Any]:
        """Load the captioner now (a missing one fails fast): -> `captioner_status()`.

        Called once at service start, so a missing captioner is reported at start, not found by
        the first request.
        """
        load = getattr(self.captioner, "load", None)
        if load is not None and self._captioner_call is not None:
            try:
                self._captioner_call.run(load)  # on the captioner's thread, like its captions
            except CaptionerUnavailable as err:
                self._note_captioner_problem(f"{type(err).__name__}: {err}", unavailable=True)
        return self.captioner_status()

    def captioner_status(self) -> dict[str, Any]:
        """{"name", "available": bool, "reason": why not (None when available)} of the captioner."""
        name = getattr(self.captioner, "kind", type(self.captioner).__name__)
        if self.captioner is None or name == "none":
            return {"name": "none", "available": False, "reason": "no captioner configured"}
        reason = self._captioner_unavailable
        return {"name": name, "available": reason is None, "reason": reason}

    def _custom_class_set(self, prompts: tuple[str, ...]) -> ClassSet:
        if len(prompts) == 1:  # one class: every pixel gets it; nothing to segment
            raise InvalidParameter(f"a custom class list needs at least two classes, got {list(prompts)!r}")
        cached = self._class_sets.get(prompts)
        if cached is not None:
            return cached
        try:
            class_set = custom_class_set(list(prompts))
        except ValueError as err:
            raise InvalidParameter(f"invalid class list: {err}") from err
        self._class_sets.put(prompts, class_set)
        return class_set

    @staticmethod
    def _class_key(class_set: ClassSet) -> tuple[str, ...]:
        return (class_set.name, *("|".join(c) for c in class_set.concepts))

    # ----------------------------------------------------------------------------------------
    # Running a group (same class set)

    def _backend_for(self, num_classes: int, lane: int = 0) -> tuple[Backend, str | None]:
        """The backend for a group on `lane` (a stream's: `stream_backend`), or the eager fallback
        for a class count a fixed-shape backend was not built for."""
        h, w = self.working_size
        backend = self.stream_backend if lane and self.stream_backend is not None else self.backend
        if backend.supports(h, w, self.caption_length, num_classes):
            return backend, None
        with self._lock:
            if self._fallback is None:
                name = default_backend_name(self.device)
                name = name if name.startswith("eager") else "eager-bf16"
                self._fallback = create_backend(
                    name, self.served.model.seg, self.backend.profile, self.device
                )
        note = f"{self.backend.name} is built for {self.backend.profile}; {num_classes} classes ran on {self._fallback.name}"
        return self._fallback, note

    def _forward(self, backend: Backend, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        images, feats, mask, embeds = inputs
        outputs = []
        for s in range(0, images.shape[0], backend.max_batch):
            chunk = slice(s, s + backend.max_batch)
            if not backend.thread_safe:  # (one lane at a time on a CPU without streams anyway)
                with self._forward_lock:
                    outputs.append(backend(images[chunk], feats[chunk], mask[chunk], embeds))
            else:
                outputs.append(backend(images[chunk], feats[chunk], mask[chunk], embeds))
        return torch.cat(outputs)

    def _run_group(self, members: list[PreparedRequest], lane: int = 0) -> list[ForwardResult]:
        class_set = members[0].class_set
        start = time.perf_counter()
        class_embeds = self.embedder.class_embeddings(class_set.prompts())
        captions, length = [m.caption.text for m in members], self.caption_length
        feats, mask = self.embedder.caption_features(captions, min_length=length, max_length=length)
        text_ms = _ms(start)
        start = time.perf_counter()
        images = numpy_to_model_input([m.resized for m in members], self.device)
        batch_pre_ms = _ms(start)
        backend, note = self._backend_for(len(class_set), lane)
        start = time.perf_counter()
        logits = self._forward(backend, (images, feats, mask, class_embeds))
        forward_ms = _ms(start)
        results = []
        for member, member_logits in zip(members, logits):
            timings = {**member.timings, "text": text_ms, "forward": forward_ms}
            timings["preprocess"] += batch_pre_ms
            results.append(ForwardResult(member, member_logits, timings, backend, note, len(members)))
        return results

    def _prediction(
        self,
        member: PreparedRequest,
        upsampled: Upsampled,
        timings: dict[str, float],
        backend: Backend,
        note: str | None,
        batch_size: int,
        lane: int = 0,
    ) -> Prediction:
        return Prediction(
            upsampled=upsampled,
            class_set=member.class_set,
            caption=member.caption,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            backend=backend.name,
            precision=backend.precision,
            model_name=self.served.name,
            checkpoint_sha256=self.served.checkpoint_sha256,
            random_weights=self.random_weights,
            rgb=member.decoded.rgb,
            image_format=member.decoded.format,
            original_mode=member.decoded.original_mode,
            working_size=self.working_size,
            batch_size=batch_size,
            lane=lane,
            backend_note=note,
            zero_shot=self.zero_shot,
            open_vocabulary=self.served.open_vocabulary,
            warnings=self._class_warnings(member.class_set),
        )

    def _class_warnings(self, class_set: ClassSet) -> tuple[str, ...]:
        """A warning for custom prompts on a model whose text tower never learned language."""
        if class_set.train_ids is not None or self.served.open_vocabulary:
            return ()
        return (OPEN_VOCABULARY_WARNING,)
