"""Client-facing errors of the serving layer: one class per HTTP status, a stable `code` per cause.

The BentoML service maps any `ServingError` to its `status` with the JSON body `to_dict()`; anything
else that escapes is a bug (a 500). Bad input must always end up here, never as a crash.
"""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """An error the client caused or must be told about.

    status: HTTP status code; code: stable machine-readable cause; message: one human sentence.
    """

    status: int = 400
    default_code: str = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def to_dict(self) -> dict[str, Any]:
        """JSON body for the HTTP response."""
        return {"error": {"status": self.status, "code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class PayloadTooLarge(ServingError):
    """413: the request body, or the decoded image (code `image_too_large`), is over a limit."""

    status = 413
    default_code = "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    """413: the image header declares more pixels than allowed (refused before decoding)."""

    default_code = "image_too_large"


class UnsupportedMediaType(ServingError):
    """415: the bytes are not an image format on the allow-list (or not an image at all)."""

    status = 415
    default_code = "unsupported_media_type"


class InvalidImage(ServingError):
    """422: an allowed format whose data is empty, truncated or corrupt."""

    status = 422
    default_code = "invalid_image"


class InvalidParameter(ServingError):
    """422: a request parameter is out of range or inconsistent (class list, output kind, alpha...)."""

    status = 422
    default_code = "invalid_parameter"


class NotFound(ServingError):
    """A path this deployment does not serve (e.g. /ui with SEMIDAVIL_UI=off)."""

    status = 404
    default_code = "not_found"


class ServiceUnavailable(ServingError):
    """503: the service cannot serve now (not ready, overloaded queue, backend down)."""

    status = 503
    default_code = "unavailable"
