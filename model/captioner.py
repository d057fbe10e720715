"""Image captioners (BLIP-2, BLIP, or none) with a content-hash caption cache.

The captioner is a separate component from the segmentation graph (design §4): it turns images
into captions, which are then encoded by the text tower outside the compiled graph.

- Construction loads nothing. The first `caption` (or `load`) call loads the processor and model
  with transformers' `from_pretrained`, under a lock, from a hub id or a `save_pretrained` folder.
- Offline by default (`model._env` sets `HF_HUB_OFFLINE=1`): weights missing from the local cache
  raise `CaptionerUnavailable` at once, with a one-line hint on how to provide them. A failed load
  is remembered, so later calls fail equally fast without touching disk or network again.
- Captions are cached by image content (`image_hash`) plus the captioner identity, so a repeated
  image never reaches the model twice. The cache is an LRU with optional JSON persistence.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from model._env import hub_is_offline
from model.lru import LRUCache

logger = logging.getLogger(__name__)

CAPTIONER_KINDS: tuple[str, ...] = ("blip2", "blip", "none")
DEFAULT_MODELS: dict[str, str] = {
    "blip2": "Salesforce/blip2-opt-2.7b",
    "blip": "Salesforce/blip-image-captioning-base",
}
SOURCE_CAPTIONER = "captioner"
SOURCE_CACHE = "cache"
SOURCE_NONE = "none"


class CaptionerUnavailable(RuntimeError):
    """The captioner's weights cannot be found or loaded (callers degrade to an empty caption)."""


@dataclass(frozen=True)
class CaptionResult:
    """One caption and where it came from: "captioner" (generated), "cache" or "none"."""

    text: str
    source: str


# --------------------------------------------------------------------------------------------
# Image hashing and the caption cache


def _to_rgb(img: Image.Image) -> Image.Image:
    """The image as RGB (the same object when it already is)."""
    return img if img.mode == "RGB" else img.convert("RGB")


def image_hash(img: Image.Image) -> str:
    """SHA-256 hex digest of the RGB-converted image: mode, size and raw pixel bytes.

    Two images with the same pixels hash the same whatever their file format or object identity.
    """
    rgb = _to_rgb(img)
    digest = hashlib.sha256()
    digest.update(f"{rgb.mode}|{rgb.width}x{rgb.height}|".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


class CaptionerLike(Protocol):
    """What the predictor and the caption pre-computation need of a captioner (`Captioner`, or a
    stub in tests)."""

    def caption(self, images: Sequence[Image.Image]) -> list[CaptionResult]: ...


class CaptionCache:
    """Thread-safe in-memory LRU of caption texts (model/lru.py); `max_entries=0` disables it.

    Keys are opaque strings (a `Captioner` uses its identity plus `image_hash`), so one cache can be
    shared by several captioners. Captions of a whole dataset are made offline into a captions file
    instead (training/captions.py).
    """

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: LRUCache[str, str] = LRUCache(max_entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: str) -> str | None:
        """The cached text for `key` (marking it most recently used), or None."""
        return self._entries.get(key)

    def put(self, key: str, text: str) -> None:
        """Store one entry (see `put_many`)."""
        self.put_many([(key, text)])

    def put_many(self, items: Iterable[tuple[str, str]]) -> None:
        """Store entries, evicting the least recently used beyond `max_entries`."""
        self._entries.put_many(items)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()


# --------------------------------------------------------------------------------------------
# Model source resolution and loading


def _transformers_classes(kind: str) -> tuple[Any, Any]:
    """(processor class, model class) for a captioner kind; imports transformers lazily.

    Typed Any: `type` would hide their `from_pretrained`, and naming them needs the import."""
    if kind == "blip2":
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        return Blip2Processor, Blip2ForConditionalGeneration
    from transformers import BlipForConditionalGeneration, BlipProcessor

    return BlipProcessor, BlipForConditionalGeneration


def _looks_like_local_path(model: str) -> bool:
    """True for strings that can only be a filesystem path (a hub id is `name` or `owner/name`)."""
    return (
        os.path.isabs(model)
        or model.startswith((".", "~"))
        or "\\" in model
        or model.count("/") > 1
        or Path(model).expanduser().exists()
    )


def _missing_weights_message(kind: str, model: str, local: bool, offline: bool) -> str:
    """The one-line error text for weights that cannot be found."""
    if local:
        return (
            f"{kind} captioner weights not found in local directory '{model}': expected a "
            f"save_pretrained layout (config.json, model weights, processor and tokenizer files); "
            f"pass an existing directory or a hub id"
        )
    where = "in the local Hugging Face cache (hub is offline)" if offline else "on the Hugging Face hub"
    return (
        f"{kind} captioner weights for '{model}' not found {where}: download them on a connected "
        f"machine (`hf download {model}`) and copy the HF cache here, or pass a local save_pretrained "
        f"directory as the model; set SEMIDAVIL_ONLINE=1 to allow downloads"
    )


def _default_dtype(device: str) -> torch.dtype:
    """fp16 on CUDA (BLIP-2 OPT-2.7b is ~7 GiB in fp16), fp32 elsewhere."""
    return torch.float16 if str(device).startswith("cuda") else torch.float32


def _load_pretrained(kind: str, model: str, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load (model, processor) with `from_pretrained`; CaptionerUnavailable if they are missing."""
    from huggingface_hub.errors import HFValidationError

    local = _looks_like_local_path(model)
    source = str(Path(model).expanduser()) if local else model
    offline = hub_is_offline()
    if local and not Path(source).is_dir():
        raise CaptionerUnavailable(_missing_weights_message(kind, model, local=True, offline=offline))
    processor_cls, model_cls = _transformers_classes(kind)
    try:
        processor = processor_cls.from_pretrained(source, local_files_only=offline)
        net = model_cls.from_pretrained(source, dtype=dtype, local_files_only=offline)
    except (OSError, HFValidationError) as exc:
        message = _missing_weights_message(kind, model, local=local, offline=offline)
        raise CaptionerUnavailable(message) from exc
    except Exception as exc:  # a broken or mismatched checkpoint: still "unavailable" to callers
        detail = " ".join(str(exc).split())
        raise CaptionerUnavailable(
            f"{kind} captioner '{model}' failed to load: {type(exc).__name__}: {detail}"
        ) from exc
    return net.to(device).eval(), processor


def _clean_caption(text: str) -> str:
    """Strip and collapse whitespace in a decoded caption."""
    return " ".join(text.split())


def _model_device(net: Any) -> str:
    """The device of a model's first parameter ("cpu" for parameterless objects)."""
    try:
        return str(next(net.parameters()).device)
    except (AttributeError, StopIteration):
        return "cpu"


# --------------------------------------------------------------------------------------------
# The captioner


class Captioner:
    """Unconditional image captioner (greedy decoding) with a content-hash cache.

    Thread-safe: loading is guarded by one lock and generation by another (the model runs one
    batch at a time). Use `create_captioner` for hub ids or directories and
    `from_pretrained_objects` for an already-built (model, processor) pair.

    Attributes:
        generate_calls: number of `generate` calls made (one per chunk of `batch_size` misses).
        images_generated: number of images the model has captioned.
    """

    def __init__(
        self,
        kind: str = "blip2",
        model: str | None = None,
        *,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        max_new_tokens: int = 30,
        batch_size: int = 8,
        cache: CaptionCache | None = None,
    ) -> None:
        if kind not in CAPTIONER_KINDS:
            raise ValueError(f"unknown captioner kind {kind!r}; expected one of {CAPTIONER_KINDS}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.kind = kind
        self.model_id = "" if kind == "none" else (model or DEFAULT_MODELS[kind])
        self.device = str(device)
        self.dtype = dtype if dtype is not None else _default_dtype(self.device)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.cache = cache if cache is not None else CaptionCache()
        self.generate_calls = 0
        self.images_generated = 0
        self._model: Any = None
        self._processor: Any = None
        self._load_error: CaptionerUnavailable | None = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()

    @classmethod
    def from_pretrained_objects(
        cls,
        kind: str,
        model_obj: Any,
        processor: Any,
        *,
        name: str | None = None,
        max_new_tokens: int = 30,
        batch_size: int = 8,
        cache: CaptionCache | None = None,
    ) -> Captioner:
        """A captioner around an already-built (model, processor) pair; nothing is loaded.

        The model is used as given (device and dtype are read from its parameters). `name` is the
        model identity used in cache keys; by default it is unique to this model object.
        """
        if kind == "none":
            raise ValueError("kind 'none' takes no model; use create_captioner('none')")
        net_device = _model_device(model_obj)
        captioner = cls(
            kind,
            name or f"<in-memory {type(model_obj).__name__} {id(model_obj):x}>",
            device=net_device,
            dtype=getattr(model_obj, "dtype", None),
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            cache=cache,
        )
        captioner._model = model_obj.eval()
        captioner._processor = processor
        return captioner

    @property
    def identity(self) -> str:
        """What makes two captioners' outputs interchangeable: kind, model and max_new_tokens."""
        return f"{self.kind}|{self.model_id}|{self.max_new_tokens}"

    @property
    def is_loaded(self) -> bool:
        """True once the model and processor are in memory (always False for kind "none")."""
        return self._model is not None

    def cache_key(self, img: Image.Image) -> str:
        """The cache key of an image for this captioner."""
        return f"{self.identity}|{image_hash(img)}"

    def load(self) -> None:
        """Load processor and model now (idempotent); raises CaptionerUnavailable if impossible.

        A failed load is remembered and re-raised at once on later calls.
        """
        if self.kind == "none" or self._model is not None:
            return
        with self._load_lock:
            if self._load_error is not None:
                # A fresh exception each time: re-raising one object would grow its traceback forever.
                raise CaptionerUnavailable(str(self._load_error)) from self._load_error.__cause__
            if self._model is not None:
                return
            start = time.perf_counter()
            try:
                net, processor = _load_pretrained(self.kind, self.model_id, self.device, self.dtype)
            except CaptionerUnavailable as exc:
                self._load_error = exc
                raise
            self._processor = processor
            self._model = net
            logger.info(
                "loaded %s captioner %s on %s (%s) in %.2f s",
                self.kind,
                self.model_id,
                self.device,
                self.dtype,
                time.perf_counter() - start,
            )

    def caption(self, images: Sequence[Image.Image]) -> list[CaptionResult]:
        """Caption images, in input order; cached images are not passed to the model again.

        Raises CaptionerUnavailable when captions must be generated but the model cannot load.
        """
        checked = [_check_image(img) for img in images]
        if self.kind == "none":
            return [CaptionResult("", SOURCE_NONE) for _ in checked]
        rgb = [_to_rgb(img) for img in checked]
        keys = [self.cache_key(img) for img in rgb]
        cached = {key: text for key in dict.fromkeys(keys) if (text := self.cache.get(key)) is not None}
        misses: dict[str, int] = {}  # first index of each missing key, in first-seen order
        for i, key in enumerate(keys):
            if key not in cached:
                misses.setdefault(key, i)
        generated: dict[str, str] = {}
        if misses:
            texts = self._generate([rgb[i] for i in misses.values()])
            generated = dict(zip(misses, texts, strict=True))
            self.cache.put_many(generated.items())
        return [
            CaptionResult(generated[key], SOURCE_CAPTIONER)
            if key in generated
            else CaptionResult(cached[key], SOURCE_CACHE)
            for key in keys
        ]

    def _generate(self, images: list[Image.Image]) -> list[str]:
        """Generate captions for RGB images in chunks of `batch_size` (loads the model if needed)."""
        self.load()
        texts: list[str] = []
        for start in range(0, len(images), self.batch_size):
            texts.extend(self._generate_chunk(images[start : start + self.batch_size]))
        return texts

    def _generate_chunk(self, images: list[Image.Image]) -> list[str]:
        """One greedy, prompt-free `generate` call. No `input_ids`: BLIP's `generate` drops the last
        token of a given prompt (meant to be [SEP]), so `[[bos]]` becomes an empty sequence and fails."""
        inputs = self._processor(images=images, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
        with self._generate_lock, torch.inference_mode():
            out = self._model.generate(
                pixel_values=pixel_values,
                do_sample=False,
                num_beams=1,
                max_new_tokens=self.max_new_tokens,
            )
            self.generate_calls += 1
            self.images_generated += len(images)
        decoded = self._processor.batch_decode(out, skip_special_tokens=True)
        return [_clean_caption(text) for text in decoded]


def _check_image(img: object) -> Image.Image:
    """The argument if it is a PIL image, else TypeError."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected PIL.Image.Image, got {type(img).__name__}")
    return img


def create_captioner(
    kind: str = "blip2",
    model: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    max_new_tokens: int = 30,
    batch_size: int = 8,
    cache: CaptionCache | None = None,
) -> Captioner:
    """A lazily loaded captioner.

    Args:
        kind: "blip2" (default, Salesforce/blip2-opt-2.7b), "blip" (lighter,
            Salesforce/blip-image-captioning-base) or "none" (empty captions, loads nothing).
        model: hub id or local `save_pretrained` directory; None means the kind's default.
        device: torch device the model runs on.
        dtype: model dtype; None means fp16 on CUDA and fp32 elsewhere.
        max_new_tokens: generation length limit (greedy decoding, no prompt).
        batch_size: images per `generate` call.
        cache: caption cache to use (shareable between captioners); None makes a private one.

    Raises:
        ValueError: unknown kind or bad sizes. Missing weights raise CaptionerUnavailable only
        when a caption is first generated (or on `load()`).
    """
    return Captioner(
        kind,
        model,
        device=device,
        dtype=dtype,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        cache=cache,
    )
