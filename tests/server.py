"""The real BentoML server for tests: `bentoml serve` on a free loopback port, torn down by PID.

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
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "serving.service:SemiDAViLService"
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
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


class ServerError(RuntimeError):
    """The server exited or did not become ready; the message carries the log tail."""


@dataclass
class Server:
    """A running server: base URL, the arbiter process, its log file and its worker PIDs."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    workers: list[int] = field(default_factory=list)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as err:
            return f"(no log: {err})"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self, timeout_s: float = 10.0) -> bool:
        """GET /readyz answered 200 within `timeout_s`."""
        try:
            return httpx.get(self.url + "/readyz", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(home: Path, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server: ours, minus inherited SEMIDAVIL_* settings, plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMIDAVIL_")}
    env.update(DEFAULT_ENV)
    env["BENTOML_HOME"] = str(home)
    env.update(overrides or {})
    return env


def _bentoml_command(port: int) -> list[str]:
    cli = Path(sys.executable).with_name("bentoml")
    prefix = [str(cli)] if cli.exists() else [sys.executable, "-m", "bentoml"]
    return [*prefix, "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)]


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _wait_ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(f"server exited with {server.process.returncode}:\n{server.log_tail()}")
        if server.ready(timeout_s=5.0):
            return
        time.sleep(0.3)
    raise ServerError(f"server not ready after {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def _signal_groups(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), sig)
        except (ProcessLookupError, PermissionError):
            continue


def stop_server(server: Server) -> None:
    """SIGTERM the arbiter's and the workers' process groups; SIGKILL what is left after a grace."""
    pids = list(dict.fromkeys([server.process.pid, *server.workers, *_descendants(server.process.pid)]))
    _signal_groups(pids, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        server.process.poll()  # reaps the arbiter once it exits
        if not any(_is_running(p) for p in pids):
            break
        time.sleep(0.1)
    _signal_groups([p for p in pids if _is_running(p)], signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=10)


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextlib.contextmanager
def running_server(
    workdir: Path, env: Mapping[str, str] | None = None, ready_timeout_s: float = READY_TIMEOUT_S
) -> Iterator[Server]:
    """Start `bentoml serve` for the service on a free loopback port; yield once /readyz is 200.

    workdir: a temporary folder for BENTOML_HOME and the log (`server.log`); env: extra variables
    (SEMIDAVIL_* settings) over the defaults above.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _bentoml_command(port),
            cwd=ROOT,
            env=server_env(workdir / "bentoml_home", env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server, time.monotonic() + ready_timeout_s)
        server.workers = _descendants(process.pid)
        yield server
    finally:
        stop_server(server)


# ------------------------------------------------------------------------------------------------
# Talking to it: images, hand-built multipart bodies and the error contract


def png_bytes(img: Image.Image, compress_level: int = 1) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> array (mode L: [H, W] uint8, P: the palette indices, RGB: [H, W, 3])."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        assert img.format == "PNG"
        return np.array(img)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Uniform RGB noise: incompressible, so the PNG size is about 3 * width * height bytes."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def pad_png(data: bytes, size: int) -> bytes:
    """A PNG of exactly `size` bytes: `data` with a tEXt chunk of filler after IHDR (still valid)."""
    header_end = 8 + 25  # signature + IHDR chunk
    extra = size - len(data)
    if extra < 12 + 8:
        raise ValueError(f"cannot pad a {len(data)}-byte PNG to {size} bytes")
    payload = b"Comment\x00" + b"x" * (extra - 12 - 8)
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF)
    padded = data[:header_end] + chunk + data[header_end:]
    assert len(padded) == size
    return padded


BOUNDARY = "semidavil-test-boundary"


def multipart(
    image: bytes | None,
    fields: Mapping[str, str] | None = None,
    filename: str = "image.png",
    content_type: str = "image/png",
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand (exact size known) and its Content-Type header."""
    parts = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    if image is not None:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart_overhead(fields: Mapping[str, str] | None = None) -> int:
    """Bytes of a `multipart` body that are not the image."""
    return len(multipart(b"", fields)[0])


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
