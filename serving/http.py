"""HTTP pieces of the service that are not BentoML's: error bodies, body limit, middlewares, and
the JSON/PNG responses built from a `Prediction` (request parameters: serving/params.py)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, ClassVar

from starlette.responses import JSONResponse, Response

from serving.encode import color_png, label_png, labelid_png, overlay_png, to_base64
from serving.errors import InvalidParameter, PayloadTooLarge, ServingError, UnsupportedMediaType
from serving.prediction import Prediction

logger = logging.getLogger("semidavil.service")


def error_response(err: ServingError) -> JSONResponse:
    """The JSON body and status of a client-facing error."""
    return JSONResponse(err.to_dict(), status_code=err.status)


def internal_error_response(err: BaseException) -> JSONResponse:
    """500 with an id to find the traceback in the server log (no internals leak to the client)."""
    error_id = uuid.uuid4().hex[:12]
    logger.error("internal error %s: %s: %s", error_id, type(err).__name__, err)
    body = {"error": {"status": 500, "code": "internal_error", "id": error_id,
                      "message": f"internal error {error_id}; see the server log"}}  # fmt: skip
    return JSONResponse(body, status_code=500, headers={"X-Error-Id": error_id})


def prediction_json(pred: Prediction, include_label_png: bool = True) -> dict[str, Any]:
    """The JSON body of /segment: label map as base64 PNG, classes, palette, stats, caption, timings."""
    body: dict[str, Any] = {
        "width": pred.input_size[1],
        "height": pred.input_size[0],
        "classes": list(pred.class_names),
        "class_set": pred.class_set.name,
        "palette": [list(c) for c in pred.palette],
        "train_ids": list(pred.class_set.train_ids) if pred.class_set.train_ids else None,
        "stats": pred.stats(),
        "caption": {"text": pred.caption.text, "source": pred.caption.source, "error": pred.caption.error},
        "timings_ms": {k: round(v, 3) for k, v in pred.timings_ms.items()},
        "model": pred.model_name,
        "checkpoint_sha256": pred.checkpoint_sha256,
        "random_weights": pred.random_weights,
        "zero_shot": pred.zero_shot,
        "open_vocabulary": pred.open_vocabulary,
        "warnings": list(pred.warnings),
        "backend": pred.backend,
        "precision": pred.precision,
        "backend_note": pred.backend_note,
        "batch_size": pred.batch_size,
        "lane": pred.lane,
    }
    if include_label_png:
        body["label_png"] = to_base64(label_png(pred.label_map))
    return body


def prediction_response(pred: Prediction, output: str, alpha: float) -> Response:
    """Encode a prediction as the requested output; PNG outputs carry metadata in X- headers."""
    headers = {
        "X-Caption-Source": pred.caption.source,
        "X-Backend": pred.backend,
        "X-Random-Weights": str(pred.random_weights).lower(),
        "X-Zero-Shot": str(pred.zero_shot).lower(),
        "X-Classes": json.dumps(list(pred.class_names)),
        "X-Batch-Size": str(pred.batch_size),
        "X-Lane": str(pred.lane),
        "X-Total-Ms": f"{pred.timings_ms.get('total', 0.0):.1f}",
    }
    if output == "json":
        flags = {k: headers[k] for k in ("X-Random-Weights", "X-Zero-Shot")}
        return JSONResponse(prediction_json(pred), headers=flags)
    if output == "label_png":
        data = label_png(pred.label_map)
    elif output == "labelid_png":
        if not pred.class_set.train_ids:
            raise InvalidParameter("labelid_png needs a Cityscapes class set, not custom classes")
        data = labelid_png(pred.label_map, pred.class_set)
    elif output == "color_png":
        data = color_png(pred.label_map, pred.palette)
    else:
        data = overlay_png(pred.rgb, pred.label_map, pred.palette, alpha)
    return Response(data, media_type="image/png", headers=headers)


class BodyLimitMiddleware:
    """ASGI middleware: 413 JSON before the body is read when Content-Length is over the limit, and
    as soon as a streamed (chunked) body passes it. Health and metrics paths are not limited."""

    EXEMPT = ("/livez", "/readyz", "/healthz", "/metrics")

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> JSONResponse:
        return error_response(PayloadTooLarge(f"request body larger than {self.max_body_bytes} bytes"))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._too_large()(scope, receive, send)
        seen = 0
        responded = False

        async def guarded_send(message: dict) -> None:
            if not responded:  # after our 413, whatever the app still sends is dropped
                await send(message)

        async def limited_receive() -> dict:
            nonlocal seen, responded
            if responded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    await self._too_large()(scope, receive, send)
                    responded = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, guarded_send)


class MultipartOnlyMiddleware:
    """ASGI middleware: a POST to an endpoint that takes an image file must be multipart/form-data.

    Anything else (a raw image body, JSON) gets 415 saying what to send, instead of BentoML's
    "Invalid JSON" for a body it tried to read as JSON.
    """

    def __init__(self, app: Any, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
            if not content_type.lower().startswith("multipart/form-data"):
                got = content_type.split(";")[0].strip() or "no content type"
                err = UnsupportedMediaType(
                    f"send multipart/form-data with the image as the file field 'image' (got {got}), "
                    f"e.g. curl -F image=@street.png {scope['path']}"
                )
                return await error_response(err)(scope, receive, send)
        await self.app(scope, receive, send)


class ErrorShapeMiddleware:
    """ASGI middleware giving every error one JSON shape: {"error": {status, code, message}}.

    BentoML answers request-validation failures with 400 and its own body, over-capacity with 429
    and timeouts with 504; those are rewritten here (validation -> 422 invalid_parameter) so clients
    see one format and bad parameters are 422 as documented. Our own JSON errors pass unchanged.
    """

    CODES: ClassVar[dict[int, tuple[int, str]]] = {
        400: (422, "invalid_parameter"),
        405: (405, "method_not_allowed"),
        422: (422, "invalid_parameter"),
        429: (429, "over_capacity"),
        504: (504, "timeout"),
    }

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def shaping_send(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] in self.CODES:
                start = message
                return
            if start is None:
                return await send(message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_shaped(start, b"".join(chunks), send)

        await self.app(scope, receive, shaping_send)

    async def _send_shaped(self, start: dict, body: bytes, send: Any) -> None:
        try:
            payload = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = {}
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):  # already ours
            status, data = start["status"], body
        else:
            status, code = self.CODES[start["status"]]
            message = _bentoml_message(payload)
            data = json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def _bentoml_message(payload: Any) -> str:
    """A readable sentence from BentoML's error bodies ({"error": str, "detail": [pydantic errors]})."""
    if isinstance(payload, (list, tuple)) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return "invalid request"
    details = payload.get("detail")
    if isinstance(details, list) and details:
        parts = [f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg', '')}" for d in details[:5]]
        return "invalid request parameters: " + "; ".join(parts)
    return str(payload.get("error") or "invalid request")


def keep_uploads_in_memory(max_body_bytes: int) -> None:
    """Let Starlette's multipart parser hold an upload of up to `max_body_bytes` in memory.

    Its default spools every part over 1 MB to a temporary file on disk, which BentoML then reads
    back whole to write its own temporary file for a `Path` parameter: a disk round trip of the
    whole upload on the event loop for every photo-sized image. The body limit
    (BodyLimitMiddleware, 413 before the body is read) and the concurrency limit bound the memory
    this holds.
    """
    from starlette.formparsers import MultiPartParser

    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_body_bytes)


def refuse_remote_files() -> None:
    """Make BentoML's multipart parser refuse file fields given as text (it would fetch them as URLs),
    and refuse (422) binary parts under names that are not file parameters.

    No request parameter may make the server open a connection or a file: an image must be uploaded
    as a file part. BentoML reads a part under any other name as text and JSON-decodes it; binary
    data there (an image sent as `file` instead of `image`) raised UnicodeDecodeError, a 500. Both
    refusals are 422s through BentoML's exception handling.
    """
    from http import HTTPStatus

    from _bentoml_impl import serde
    from bentoml.exceptions import BentoMLException
    from starlette.datastructures import UploadFile

    async def ensure_file(obj: Any) -> Any:
        if isinstance(obj, UploadFile):
            return obj
        raise BentoMLException(
            "file fields must be uploaded as files (multipart file part), not as text or URLs",
            error_code=HTTPStatus.UNPROCESSABLE_ENTITY,
        )

    serde.MultipartSerde.ensure_file = staticmethod(ensure_file)
    parse_request = serde.MultipartSerde.parse_request
    if getattr(parse_request, "_semidavil", False):
        return

    async def text_checked_parse_request(self: Any, request: Any, cls: Any) -> Any:
        try:
            return await parse_request(self, request, cls)
        except UnicodeDecodeError:
            raise BentoMLException(
                "binary data in a text field: send the image as the multipart file field 'image'",
                error_code=HTTPStatus.UNPROCESSABLE_ENTITY,
            ) from None

    text_checked_parse_request._semidavil = True  # type: ignore[attr-defined]
    serde.MultipartSerde.parse_request = text_checked_parse_request


class PathAliasMiddleware:
    """ASGI middleware serving a mounted app's root at its bare path (`GET /model`), which
    Starlette otherwise answers with a 307 redirect to `/model/`."""

    def __init__(self, app: Any, aliases: dict[str, str]) -> None:
        self.app = app
        self.aliases = aliases

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        target = self.aliases.get(scope["path"]) if scope["type"] == "http" else None
        if target is not None:
            scope = {**scope, "path": target, "raw_path": target.encode()}
        await self.app(scope, receive, send)
