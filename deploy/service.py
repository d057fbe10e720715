"""The BentoML service: segmentation and captioning of driving scenes over HTTP.

    bentoml serve deploy.service:SemiDAViLService --host 127.0.0.1 --port 3000

POST /segment (multipart: image, caption?, classes?, output?, alpha?, use_captioner?),
POST /caption (image), POST /info and GET /model (model info), GET /livez, /readyz (a real
forward of a fixed input), /metrics (Prometheus). Bad input gets a JSON error with its status
(413, 415, 422, 429, 504), never a 500; a request whose forward fails gets a 500 with an id.
Settings come from environment variables (serving/settings.py).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import bentoml
from bentoml._internal.server.http.traffic import MaxConcurrencyMiddleware, TimeoutMiddleware
from pydantic import BeforeValidator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import model  # noqa: F401  (offline env defaults and the torchvision shim first)
from serving.batching import GreedyBatcher
from serving.decode import check_body_size
from serving.errors import InvalidImage, NotFound, ServiceUnavailable, ServingError
from serving.faults import Faults, check_forward, faulty_captioner, parse_faults
from serving.http import (
    BodyLimitMiddleware,
    ErrorShapeMiddleware,
    MultipartOnlyMiddleware,
    PathAliasMiddleware,
    error_response,
    internal_error_response,
    keep_uploads_in_memory,
    prediction_response,
    refuse_remote_files,
)
from serving.loading import verify_checkpoint
from serving.logs import quiet_libraries
from serving.memory import MemoryTrimmer
from serving.metrics import record_prediction, record_request
from serving.params import form_text, parse_alpha, parse_bool, parse_classes, parse_output
from serving.prediction import SOURCE_FAILED, SOURCE_NONE, Prediction, PredictRequest
from serving.settings import ServiceSettings
from serving.upload import Upload

if TYPE_CHECKING:  # imported by the worker only (SemiDAViLService.__init__): see there
    from serving.predictor import Predictor, PreparedRequest

logger = logging.getLogger("semidavil.service")
# Loopback unless the operator passes --host (or BENTOML_HOST): the service never listens beyond
# localhost by default.
DEFAULT_HOST = "127.0.0.1"
_INSTANCE: dict[str, Any] = {}
# A text form parameter: BentoML JSON-decodes multipart text fields; form_text gives the text back.
FormText = Annotated[str | None, BeforeValidator(form_text)]
# BentoML's own timeout is only a backstop: the service adds the real limits (SEMIDAVIL_TIMEOUT_S,
# SEMIDAVIL_MAX_CONCURRENCY) as its own middlewares, inside ErrorShapeMiddleware, so that their
# 504 and 429 get the service's JSON error shape (BentoML's run outside every service middleware).
TIMEOUT_BACKSTOP_S = 30
START_FAILURE_EXIT_CODE = 2
quiet_libraries()  # the ONNX exporter's per-pass INFO lines, were a backend exported at start
IMAGE_ENDPOINTS = ("/segment", "/caption")  # take the image as a multipart file field
UI_PATH = "/ui"  # where the demo is mounted


def _refuse_to_start(problem: str) -> NoReturn:
    """One clear line on stderr, then exit non-zero (before BentoML starts any worker)."""
    print(f"semidavil: cannot start: {problem}", file=sys.stderr, flush=True)
    raise SystemExit(START_FAILURE_EXIT_CODE)


def _in_bentoml_worker() -> bool:
    """True in a BentoML worker process (which loads the model itself), False in the arbiter."""
    from bentoml._internal.context import server_context

    return server_context.worker_index is not None


def _startup_checks() -> tuple[ServiceSettings, Faults]:
    """Settings, faults and (in the arbiter) the checkpoint, checked once at import.

    In the worker a bad checkpoint would only fail the application start-up, and BentoML restarts
    the worker forever; checked here, `bentoml serve` exits with code 2 and one line naming the file
    and the problem (missing, truncated, corrupt or not matching its config).
    """
    from model.checkpoint import CheckpointError

    try:
        settings = ServiceSettings.from_env()
        faults = parse_faults(settings.faults)
    except ValueError as err:
        _refuse_to_start(f"bad setting: {err}")
    if not _in_bentoml_worker():
        try:
            verify_checkpoint(settings.checkpoint)
        except CheckpointError as err:
            _refuse_to_start(str(err))
    return settings, faults


SETTINGS, FAULTS = _startup_checks()


async def _model_info(_: Request) -> Response:
    service = _INSTANCE.get("service")
    if service is None:
        return error_response(ServiceUnavailable("starting"))
    return JSONResponse(service.predictor.info())


model_app = Starlette(routes=[Route("/", _model_info, methods=["GET"])])


def _ui_predictor() -> Predictor | None:
    """The running service's predictor for the mounted demo (None while the model loads)."""
    service = _INSTANCE.get("service")
    return service.predictor if service is not None else None


async def _demo_off(_: Request) -> Response:
    return error_response(NotFound("the demo is not mounted in this deployment (SEMIDAVIL_UI=off)"))


def _ui_app() -> Any:
    """The Gradio demo mounted at /ui (one process serves API and UI); skipped without Gradio or
    with SEMIDAVIL_UI=off (then /ui answers 404 in the JSON error shape)."""
    if not SETTINGS.ui:
        logger.info("demo not mounted (SEMIDAVIL_UI=off)")
        return Starlette(routes=[Route("/{path:path}", _demo_off, methods=["GET", "POST"])])
    if not _in_bentoml_worker():
        # The arbiter (and `bentoml build`) only read the service's definition and serve nothing;
        # the worker that serves /ui builds the demo (importing and building Gradio takes seconds).
        return Starlette()
    try:
        from ui.app import build_ui_asgi
    except ImportError as err:  # a serving image built without the UI extra
        logger.warning("Gradio UI not mounted: %s", err)
        return Starlette()
    return build_ui_asgi(_ui_predictor, max_file_size=SETTINGS.limits.max_body_bytes, root_path=UI_PATH)


@bentoml.asgi_app(_ui_app(), path=UI_PATH)
@bentoml.asgi_app(model_app, path="/model")
@bentoml.service(
    name="semidavil",
    workers=1,
    http={"host": DEFAULT_HOST},
    traffic={"timeout": SETTINGS.timeout_s + TIMEOUT_BACKSTOP_S, "max_concurrency": None},
    envs=[
        {"name": "BENTOML_DO_NOT_TRACK", "value": "true"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "GRADIO_ANALYTICS_ENABLED", "value": "False"},
        # No OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads that sleep at once must be woken for every
        # parallel region, which made the default model's forward clearly slower, with no gain in
        # throughput at concurrency 8 (measured side by side: issue 17's closing note).
    ],
)
class SemiDAViLService:
    """One predictor per worker; the segmentation forward is batched adaptively across requests."""

    def __init__(self) -> None:
        # Imported here, in the worker: the predictor pulls in open_clip (with transformers,
        # torchvision and torch._dynamo: seconds), which the arbiter, importing this module only to
        # read the service's definition before it starts the worker, does not need.
        from serving.predictor import Predictor

        start = time.perf_counter()
        self.settings = SETTINGS
        self.predictor = Predictor.from_checkpoint(SETTINGS.checkpoint, SETTINGS.predictor_options())
        if FAULTS.active:
            logger.warning("SEMIDAVIL_FAULTS=%r: fault injection is on (tests only)", SETTINGS.faults)
            if FAULTS.captioner:
                self.predictor.set_captioner(faulty_captioner(FAULTS))
        self.predictor.probe_captioner()  # a missing captioner is logged there, once
        self.predictor.warmup()
        self._trimmer = MemoryTrimmer(SETTINGS.trim_slack_mb << 20)
        # Adaptive batching in-process (serving/batching.py: the next batch is whatever queued
        # while a lane was busy, no waiting to fill it), so that decoding, captioning and encoding
        # stay per request, without copying images between processes. Under load the batches go
        # to the predictor's one-thread CPU streams side by side (serving/compute.py: why).
        self._batched: GreedyBatcher[PreparedRequest, Prediction] = GreedyBatcher(
            self._run_batch, SETTINGS.max_batch, streams=len(self.predictor.streams)
        )
        _INSTANCE["service"] = self
        logger.info(
            "service ready in %.1f s: %s", time.perf_counter() - start, self.predictor.backend.describe()
        )

    def _run_batch(self, lane: int, requests: tuple[PreparedRequest, ...]) -> list[Any]:
        """One backend call for many requests on `lane`, and their post-processing; each gets its
        Prediction or the batch's error. Encoding is left to each request's thread (`segment`)."""
        try:
            check_forward(FAULTS, requests)
            return self.predictor.run_prepared(list(requests), lane)
        except Exception as err:  # a backend failure fails this batch only, with an id each
            logger.exception("forward failed for a batch of %d", len(requests))
            return [err] * len(requests)
        finally:
            # Keep the resident set flat across image sizes (serving/memory.py): checked per batch,
            # not periodically (trimming at most once a second let the soak's resident set creep), and
            # trimmed only past a slack (trimming every batch slowed large requests; see memory.py).
            self._trimmer.after_batch()

    def __is_ready__(self) -> bool:
        """Readiness = a real forward of a fixed input through the serving backend."""
        try:
            self.predictor.warmup(all_lanes=False)  # every lane was warmed at start
        except Exception:
            logger.exception("readiness forward failed")
            return False
        return True

    async def _segment(self, request: PreparedRequest) -> Any:
        """The batched forward; a failed forward (logged with its batch) becomes this request's 500.

        The batcher raises an exception that `_run_batch` returned for a request; a ServingError
        (bad input) goes on to its own status, anything else gets a 500 with an id.
        """
        try:
            return await self._batched(request)
        except ServingError:
            raise
        except Exception as err:
            return internal_error_response(err)

    @bentoml.api(route="/segment")
    async def segment(
        self,
        image: Upload,
        caption: FormText = None,
        classes: FormText = None,
        output: FormText = None,
        alpha: FormText = None,
        use_captioner: FormText = None,
    ):  # returns a starlette Response (JSON or PNG); BentoML passes it through
        """Segment a driving scene. image: JPEG/PNG/WebP upload; caption: used instead of the
        captioner; classes: 'cityscapes', 'synthia16', 'a, b, c' or a JSON list of prompts
        ('road|street' = one class with two prompts); output: json, label_png, labelid_png,
        overlay_png or color_png; alpha: overlay opacity in [0, 1]."""
        out = "unknown"
        try:
            out, opacity = parse_output(output), parse_alpha(alpha)
            data = _read_upload(image, self.settings)
            req = PredictRequest(
                data, caption, parse_classes(classes), parse_bool(use_captioner, "use_captioner")
            )
            # Decode, resize and caption run in this request's worker thread, off the event loop, so
            # that requests overlap with the batched forward; upsampling and argmax follow on the
            # batch's lane (all torch work runs on the predictor's lanes: serving/compute.py), and
            # the response (PNG and JSON encoding) back in the request's thread.
            with self._batched.preparing():
                prepared = await _to_thread(self.predictor.prepare, req)
            prediction = await self._segment(prepared)
            if isinstance(prediction, Response):  # a 500 from a failed forward
                record_request(out, prediction.status_code)
                return prediction
            response = await _to_thread(prediction_response, prediction, out, opacity)
            record_prediction(prediction)
            record_request(out, response.status_code)
            return response
        except ServingError as err:
            record_request(out, err.status)
            return error_response(err)

    @bentoml.api(route="/caption")
    async def caption(self, image: Upload):  # a JSON starlette Response
        """The caption of an image, its source (captioner, cache, captioner_failed, none) and time."""
        try:
            data = _read_upload(image, self.settings)
            start = time.perf_counter()
            info = await _to_thread(self.predictor.caption, data)
            elapsed = (time.perf_counter() - start) * 1000
            status = self.predictor.captioner_status()
            if info.source == SOURCE_NONE or (info.source == SOURCE_FAILED and not status["available"]):
                raise ServiceUnavailable(f"cannot caption: {status['reason']} (SEMIDAVIL_CAPTIONER)")
            return JSONResponse(
                {"caption": info.text, "source": info.source, "error": info.error, "ms": elapsed}
            )
        except ServingError as err:
            return error_response(err)
        except Exception as err:  # a bug, not bad input: a 500 with an id, the traceback in the log
            logger.exception("caption failed")
            return internal_error_response(err)

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """Model config, checkpoint hash and metrics, classes, backend, precision and limits."""
        return self.predictor.info()


def _read_upload(image: Upload | None, settings: ServiceSettings) -> bytes:
    """The uploaded bytes (kept in memory: serving/upload.py), within the body limit."""
    if image is None:
        raise InvalidImage("no image: send the image file as the multipart field 'image'", "missing_image")
    check_body_size(len(image.data), settings.limits)
    return image.data


async def _to_thread(fn: Any, *args: Any) -> Any:
    import anyio

    return await anyio.to_thread.run_sync(fn, *args)


refuse_remote_files()
keep_uploads_in_memory(SETTINGS.limits.max_body_bytes)


# Outermost first: body limit, error shape, then the traffic limits whose errors it reshapes.
class ApiConcurrencyMiddleware(MaxConcurrencyMiddleware):
    """BentoML's concurrency limit (429) for the API only: each open demo tab holds a long-lived
    Gradio connection under /ui/, which must not use up the API's slots."""

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and str(scope.get("path", "")).startswith("/ui"):
            return await self.app(scope, receive, send)
        return await super().__call__(scope, receive, send)


# What the decorators made of the class (a bentoml.Service); their stubs lose that type.
SERVICE = cast("bentoml.Service[SemiDAViLService]", SemiDAViLService)
SERVICE.add_asgi_middleware(PathAliasMiddleware, aliases={"/model": "/model/"})
SERVICE.add_asgi_middleware(BodyLimitMiddleware, max_body_bytes=SETTINGS.limits.max_body_bytes)
SERVICE.add_asgi_middleware(ErrorShapeMiddleware)
SERVICE.add_asgi_middleware(MultipartOnlyMiddleware, paths=IMAGE_ENDPOINTS)
SERVICE.add_asgi_middleware(ApiConcurrencyMiddleware, max_concurrency=SETTINGS.max_concurrency)
SERVICE.add_asgi_middleware(TimeoutMiddleware, timeout=SETTINGS.timeout_s)
