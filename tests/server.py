"""The real BentoML server for tests: `bentoml serve` on a free loopback port, torn down by PID.

Process handling lives in testkit/launcher.py (shared with the HTTP benchmark); this module adds the
test defaults.

    with running_server(tmp_path, {"SEMIDAVIL_MAX_PIXELS": "100000"}) as server:
        httpx.get(server.url + "/readyz")

The server runs from the repository root with a private BENTOML_HOME, telemetry off, one OpenMP
thread (the test machine is shared), the eager fp32 backend and no captioner unless `env` says
otherwise. Its log goes to a file; a server that exits or is not ready by the deadline raises
`ServerError` with the log tail. BentoML runs the service in a worker process that has its own
session, so teardown signals the arbiter's and every worker's process group, then kills what is
left after a grace period.

Also the request helpers the service tests share: images, exact-size multipart bodies, the error
contract ({"error": {"status", "code", "message"}}) and Prometheus sample sums.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

# The image and multipart builders are shared with the bad-input table; re-exported for the tests.
from reliability.cases import encode, multipart_overhead, multipart_request, pad_png  # noqa: F401
from reliability.cases import noise as noise_image  # noqa: F401
from reliability.cases import png as png_bytes  # noqa: F401
from testkit import launcher
from testkit.launcher import ROOT, SERVICE, Server, ServerError, free_port, stop_server  # noqa: F401

DEFAULT_ENV = {
    "BENTOML_DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "SEMIDAVIL_BACKEND": "eager-fp32",
    "SEMIDAVIL_CAPTIONER": "none",
}
READY_TIMEOUT_S = launcher.READY_TIMEOUT_S
# For servers whose tests do not touch the demo: no Gradio build at start (seconds per server);
# the demo mounted in the real server is tested by test_service.py and test_ui.py.
API_ONLY = {"SEMIDAVIL_UI": "off"}


def server_env(home: Path, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server: ours, minus inherited SEMIDAVIL_* settings, plus overrides."""
    return launcher.server_env(home, overrides, DEFAULT_ENV)


@contextlib.contextmanager
def running_server(
    workdir: Path, env: Mapping[str, str] | None = None, ready_timeout_s: float = READY_TIMEOUT_S
) -> Iterator[Server]:
    """Start `bentoml serve` for the service on a free loopback port; yield once /readyz is 200.

    workdir: a temporary folder for BENTOML_HOME and the log (`server.log`); env: extra variables
    (SEMIDAVIL_* settings) over the test defaults above (testkit/launcher.py does the work).
    """
    with launcher.running_server(workdir, env, ready_timeout_s, defaults=DEFAULT_ENV) as server:
        yield server


# ------------------------------------------------------------------------------------------------
# Talking to it: images, hand-built multipart bodies and the error contract


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> array (mode L: [H, W] uint8, P: the palette indices, RGB: [H, W, 3])."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        assert img.format == "PNG"
        return np.array(img)


def multipart(
    image: bytes | None,
    fields: Mapping[str, str] | None = None,
    filename: str = "image.png",
    content_type: str = "image/png",
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand (exact size known) and its Content-Type header."""
    request = multipart_request(image, fields, filename=filename.encode(), media_type=content_type)
    return request.content or b"", dict(request.headers)


def slow_stream(body: bytes, seconds: float, pieces: int = 10) -> Iterator[bytes]:
    """`body` in `pieces` chunks spread over `seconds` (no Content-Length: chunked encoding)."""
    step = math.ceil(len(body) / pieces)
    for i in range(pieces):
        yield body[i * step : (i + 1) * step]
        time.sleep(seconds / pieces)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The documented error: HTTP `status`, JSON {"error": {"status", "code", "message"}}."""
    assert response.status_code == status, f"{response.status_code} != {status}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples `name{...}` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
