"""Start the real BentoML server (`bentoml serve`) on a free loopback port and stop it by PID.

Shared by the service tests (tests/server.py adds the test defaults) and the HTTP benchmark; no
pytest needed.

    with running_server(workdir, {"SEMIDAVIL_BACKEND": "eager-fp32"}) as server:
        httpx.get(server.url + "/readyz")

The server runs from the repository root with a private BENTOML_HOME and telemetry off, binds
127.0.0.1 only, and logs to `workdir/server.log`; a server that exits or is not ready by the
deadline raises `ServerError` with the log tail. BentoML runs the service in a worker process with
its own session, so teardown signals the arbiter's and every worker's process group (by PID), then
kills what is left after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "deploy.service:SemiDAViLService"
BASE_ENV = {
    "BENTOML_DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0
GRACEFUL_SHUTDOWN = ("--timeout-graceful-shutdown", "2")  # seconds; the Makefile's `serve` too


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


def server_env(
    home: Path, overrides: Mapping[str, str] | None = None, defaults: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Our environment minus inherited SEMIDAVIL_* settings, plus BASE_ENV, `defaults`, `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMIDAVIL_")}
    env.update(BASE_ENV)
    env.update(defaults or {})
    env["BENTOML_HOME"] = str(home)
    env.update(overrides or {})
    return env


def bentoml_command(port: int) -> list[str]:
    cli = Path(sys.executable).with_name("bentoml")
    prefix = [str(cli)] if cli.exists() else [sys.executable, "-m", "bentoml"]
    # A bounded graceful shutdown: without it uvicorn waits for every open connection, and a
    # browser's Gradio event stream never closes, so a stop took the whole grace period plus a kill.
    return [*prefix, "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port), *GRACEFUL_SHUTDOWN]


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _wait_ready(server: Server, deadline: float, timeout_s: float) -> None:
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(f"server exited with {server.process.returncode}:\n{server.log_tail()}")
        if server.ready(timeout_s=5.0):
            return
        time.sleep(0.3)
    raise ServerError(f"server not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


def _signal_groups(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), sig)
        except (ProcessLookupError, PermissionError):
            continue


def _is_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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


@contextlib.contextmanager
def running_server(
    workdir: Path,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    defaults: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Start `bentoml serve` for the service on a free loopback port; yield once /readyz is 200.

    workdir: a folder for BENTOML_HOME and the log (`server.log`); defaults, then env: variables
    over BASE_ENV (SEMIDAVIL_* settings, thread counts).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            bentoml_command(port),
            cwd=ROOT,
            env=server_env(workdir / "bentoml_home", env, defaults),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server, time.monotonic() + ready_timeout_s, ready_timeout_s)
        server.workers = _descendants(process.pid)
        yield server
    finally:
        stop_server(server)
