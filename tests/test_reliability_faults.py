"""Faults: a captioner that raises or hangs, a backend that fails one batch, a bad checkpoint at
start-up, a checkpoint write that runs out of disk.

Server faults are switched on by the operator-only SEMIDAVIL_FAULTS (serving/faults.py). A killed
training run that resumes to the same weights, and a failed training-state write, are covered by
tests/test_training.py (test_kill_9_at_random_points_then_resume_ends_with_the_same_weights,
test_failed_state_write_leaves_previous_state_intact).
"""

from __future__ import annotations

import errno
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import (
    HEADER_KEY,
    CheckpointError,
    load_model,
    model_tensors,
    read_header,
    save_checkpoint,
)
from model.class_sets import CITYSCAPES_CLASSES
from model.factory import create_model
from reliability.cases import noise, png
from serving.captioning import CaptionerTimeout, DeadlineCaptioner
from serving.faults import (
    SLOW_FORWARD_S,
    Faults,
    FaultyCaptioner,
    InjectedFault,
    check_forward,
    parse_faults,
)
from serving.loading import verify_checkpoint
from serving.prediction import PredictRequest
from testkit import launcher
from tests.server import (
    API_ONLY,
    ROOT,
    Server,
    assert_error,
    decode_png,
    free_port,
    metric_total,
    multipart,
    running_server,
    server_env,
    slow_stream,
)

CAPTIONER_TIMEOUT_S = 1.0
TRIGGER = "fault-injection: fail this batch"
SLOW = "fault-injection: slow batch"
# The request deadline of the fault server: above the captioner deadline plus a small request's
# work (the hanging captioner degrades to a 200), below the injected slow forward (that is a 504).
DEADLINE_S = 3  # whole seconds: SEMIDAVIL_TIMEOUT_S is an integer
assert CAPTIONER_TIMEOUT_S + 1 < DEADLINE_S < SLOW_FORWARD_S
START_TIMEOUT_S = 120


class SlowCaptioner:
    """Answers after `delay_s`, or when released."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.release = threading.Event()

    def caption(self, images: list) -> list[str]:
        self.release.wait(self.delay_s)
        return ["a street"] * len(images)


# ------------------------------------------------------------------------------------------------
# In-process: the deadline and the fault switches


def test_deadline_captioner_passes_results_and_errors_through() -> None:
    assert DeadlineCaptioner(SlowCaptioner(0.0), 5.0).caption([None]) == ["a street"]
    with pytest.raises(InjectedFault, match="raise"):
        DeadlineCaptioner(FaultyCaptioner("raise"), 5.0).caption([None])


def test_deadline_captioner_gives_up_on_a_hang_and_recovers_when_it_returns() -> None:
    slow = SlowCaptioner(60.0)
    timed = DeadlineCaptioner(slow, 0.3)
    start = time.monotonic()
    with pytest.raises(CaptionerTimeout, match="within 0.3 s"):
        timed.caption([None])
    assert time.monotonic() - start < 2.0
    start = time.monotonic()
    with pytest.raises(CaptionerTimeout, match="still busy"):  # no queueing behind the stuck call
        timed.caption([None])
    assert time.monotonic() - start < 0.2
    slow.release.set()
    time.sleep(0.1)
    slow.release.clear()
    slow.delay_s = 0.0
    assert timed.caption([None]) == ["a street"]


class ThreadRecordingCaptioner:
    """Records the thread of every caption call; `gate` holds calls until released."""

    def __init__(self) -> None:
        self.threads: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def caption(self, images: list) -> list[str]:
        self.gate.wait(10.0)
        self.threads.append(threading.get_ident())
        return ["a street"] * len(images)


def test_captions_from_many_threads_run_on_the_captioners_one_thread() -> None:
    """One OpenMP team for the captioner, not one per request thread (serving/captioning.py)."""
    recorder = ThreadRecordingCaptioner()
    captioner = DeadlineCaptioner(recorder, None)
    callers = [threading.Thread(target=captioner.caption, args=([None],)) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(10.0)
    assert captioner.caption([None]) == ["a street"]
    assert len(recorder.threads) == 5
    assert set(recorder.threads) == {captioner.thread.ident}
    assert captioner.thread.ident not in {t.ident for t in callers} | {threading.get_ident()}
    captioner.close()
    captioner.thread.join(5.0)
    assert not captioner.thread.is_alive()


def test_a_call_whose_deadline_passes_in_the_queue_is_never_run() -> None:
    recorder = ThreadRecordingCaptioner()
    recorder.gate.clear()
    captioner = DeadlineCaptioner(recorder, 0.2)
    errors: list[BaseException] = []

    def first_call() -> None:
        try:
            captioner.caption([None])
        except CaptionerTimeout as err:
            errors.append(err)

    first = threading.Thread(target=first_call)
    first.start()
    time.sleep(0.05)  # the first call is running (held at the gate); the next one queues behind it
    with pytest.raises(CaptionerTimeout):
        captioner.caption([None])
    first.join(5.0)
    assert len(errors) == 1 and "within 0.2 s" in str(errors[0])
    recorder.gate.set()
    time.sleep(0.2)
    assert len(recorder.threads) == 1  # only the call that was running when it timed out


def test_fault_spec_parsing() -> None:
    assert parse_faults("") == Faults() and not Faults().active
    faults = parse_faults(f"captioner=hang, forward_error={TRIGGER}")
    assert faults == Faults("hang", TRIGGER) and faults.active
    for bad in ("captioner=slow", "backend=raise", "forward_error", "captioner="):
        with pytest.raises(ValueError, match="SEMIDAVIL_FAULTS"):
            parse_faults(bad)
    check_forward(faults, [PredictRequest(b"", caption="other"), PredictRequest(b"", caption=None)])
    with pytest.raises(InjectedFault):
        check_forward(faults, [PredictRequest(b"", caption="x"), PredictRequest(b"", caption=TRIGGER)])


def test_raising_captioner_degrades_the_prediction_and_says_why() -> None:
    """In process, what the service does with SEMIDAVIL_FAULTS=captioner=raise (over HTTP: -m slow;
    the hanging captioner below checks the same degraded response over HTTP by default)."""
    from serving.faults import faulty_captioner
    from serving.predictor import Predictor

    predictor = Predictor.from_checkpoint(None, backend="eager-fp32", captioner="none")
    predictor.set_captioner(faulty_captioner(Faults("raise")))
    for _ in range(2):
        caption = predictor.predict(noise(64, 48)).caption
        assert caption.text == "" and caption.source == "captioner_failed", caption
        assert "InjectedFault: injected captioner fault (raise)" in (caption.error or ""), caption


# ------------------------------------------------------------------------------------------------
# Over HTTP: degraded responses and one failing batch


def _segment(http: httpx.Client, image: bytes | None = None, **fields: str) -> httpx.Response:
    """POST /segment with `image` (default: a 64x48 noise PNG) and form `fields`."""
    files = {"image": ("a.png", image if image is not None else png(noise(64, 48)), "image/png")}
    return http.post("/segment", files=files, data=fields, timeout=60)


@pytest.fixture(scope="module")  # shared by the fault classes and the deadline class
def hanging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "SEMIDAVIL_FAULTS": f"captioner=hang,forward_error={TRIGGER},slow_forward={SLOW}",
        "SEMIDAVIL_CAPTIONER_TIMEOUT_S": str(CAPTIONER_TIMEOUT_S),
        "SEMIDAVIL_TIMEOUT_S": str(DEADLINE_S),
        **API_ONLY,
    }
    with running_server(tmp_path_factory.mktemp("hang"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def hanging(hanging_server: Server) -> Iterator[httpx.Client]:
    with _client(hanging_server) as client:
        yield client


@pytest.fixture(scope="class")
def raising(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {"SEMIDAVIL_FAULTS": "captioner=raise", **API_ONLY}
    with running_server(tmp_path_factory.mktemp("raise"), env) as srv, _client(srv) as client:
        yield client


def _client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60)


def _assert_degraded(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 200, response.text
    caption = response.json()["caption"]
    assert caption["text"] == "" and caption["source"] == "captioner_failed", caption
    assert reason in caption["error"], caption


class TestHangingCaptionerAndFailingBackend:
    def test_hanging_captioner_degrades_within_the_timeout(self, hanging: httpx.Client) -> None:
        start = time.monotonic()
        _assert_degraded(_segment(hanging), f"did not answer within {CAPTIONER_TIMEOUT_S:g} s")
        assert time.monotonic() - start < CAPTIONER_TIMEOUT_S + 5
        start = time.monotonic()
        _assert_degraded(_segment(hanging), "still busy")  # the stuck call is not waited for again
        assert time.monotonic() - start < CAPTIONER_TIMEOUT_S + 5
        label = _segment(hanging, output="label_png")
        assert label.status_code == 200 and label.headers["x-caption-source"] == "captioner_failed"
        files = {"image": ("a.png", png(noise(64, 48)), "image/png")}
        alone = hanging.post("/caption", files=files).json()
        assert alone["source"] == "captioner_failed" and alone["caption"] == ""

    def test_a_caller_caption_needs_no_captioner(self, hanging: httpx.Client) -> None:
        caption = _segment(hanging, caption="a road").json()["caption"]
        assert caption == {"text": "a road", "source": "caller", "error": None}

    def test_a_failing_forward_gets_a_500_with_an_id_and_the_next_requests_succeed(
        self, hanging: httpx.Client, hanging_server: Server
    ) -> None:
        failed = _segment(hanging, caption=TRIGGER)
        error = assert_error(failed, 500, "internal_error")
        assert error["id"] and failed.headers["x-error-id"] == error["id"]
        assert f"internal error {error['id']}: InjectedFault" in hanging_server.log_tail(400)
        assert "Traceback" not in failed.text and "InjectedFault" not in failed.text
        for _ in range(3):
            assert _segment(hanging, caption="a road").status_code == 200
        assert hanging.get("/readyz").status_code == 200
        metrics = hanging.get("/metrics").text
        assert metric_total(metrics, "bentoml_service_request_total", http_response_code="500") == 1


@pytest.fixture(scope="module")
def reference(hanging: httpx.Client) -> tuple[bytes, np.ndarray]:
    """A quick request (well within the deadline) and its label map, taken before any 504."""
    image = png(noise(96, 64, seed=11))
    start = time.monotonic()
    response = _segment(hanging, image, output="label_png", caption="a road")
    assert time.monotonic() - start < DEADLINE_S
    assert response.status_code == 200, response.text
    return image, decode_png(response.content)


def _served_again(http: httpx.Client, reference: tuple[bytes, np.ndarray]) -> None:
    """Bounded wait until the work left over from a 504 is done, then the same map as before."""
    image, expected = reference
    deadline = time.monotonic() + 90
    while True:
        response = _segment(http, image, output="label_png", caption="a road")
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        assert_error(response, 504, "timeout")
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(decode_png(response.content), expected)
    assert http.get("/readyz", timeout=60).status_code == 200


class TestRequestDeadline:
    """SEMIDAVIL_TIMEOUT_S on the same fault server: 504 for a slow upload and for a slow forward,
    then the same answer as before."""

    def test_quick_request_is_served(self, reference: tuple[bytes, np.ndarray]) -> None:
        assert reference[1].shape == (64, 96)

    def test_slow_upload_gets_504(self, hanging: httpx.Client, reference: tuple[bytes, np.ndarray]) -> None:
        body, headers = multipart(reference[0], {"output": "label_png", "caption": "a road"})
        start = time.monotonic()
        response = hanging.post("/segment", content=slow_stream(body, DEADLINE_S + 1.5), headers=headers)
        assert_error(response, 504, "timeout")
        assert time.monotonic() - start < 30
        _served_again(hanging, reference)

    def test_slow_forward_gets_504(self, hanging: httpx.Client, reference: tuple[bytes, np.ndarray]) -> None:
        start = time.monotonic()
        assert_error(_segment(hanging, reference[0], output="json", caption=SLOW), 504, "timeout")
        assert time.monotonic() - start < SLOW_FORWARD_S  # answered at the deadline, not after the work
        _served_again(hanging, reference)
        text = hanging.get("/metrics").text
        assert (
            metric_total(text, "bentoml_service_request_total", endpoint="/segment", http_response_code="504")
            >= 2
        )


def test_slow_forward_fault_sleeps_only_for_its_caption() -> None:
    faults = parse_faults(f"slow_forward={SLOW}")
    slept: list[float] = []
    check_forward(faults, [PredictRequest(b"", caption=None), PredictRequest(b"", caption="x")], slept.append)
    assert slept == []
    check_forward(faults, [PredictRequest(b"", caption=SLOW)], slept.append)
    assert slept == [SLOW_FORWARD_S]


@pytest.mark.slow  # a server of its own for what the in-process test and the hanging server show
class TestRaisingCaptioner:
    def test_raising_captioner_degrades_and_says_why(self, raising: httpx.Client) -> None:
        for _ in range(2):
            _assert_degraded(_segment(raising), "InjectedFault: injected captioner fault (raise)")
        assert raising.get("/readyz").status_code == 200


# ------------------------------------------------------------------------------------------------
# A bad checkpoint at start-up: `bentoml serve` exits non-zero with one line


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "good.safetensors"
    save_checkpoint(path, create_model("semidavil-tiny"), CITYSCAPES_CLASSES)
    return path


def _truncated(good: Path, target: Path) -> Path:
    target.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return target


def _mismatched(good: Path, target: Path) -> Path:
    """Valid file and digest, but the header claims a decoder the weights do not fit."""
    header = read_header(good)
    header["model_config"]["decoder"]["channels"] = 48
    model, _ = load_model(good)
    save_file(model_tensors(model), target, metadata={HEADER_KEY: json.dumps(header)})
    return target


def serve_once(tmp_path: Path, checkpoint: Path) -> subprocess.CompletedProcess[str]:
    """Run `bentoml serve` with SEMIDAVIL_CHECKPOINT=checkpoint until it exits (bounded)."""
    env = server_env(tmp_path / "home", {"SEMIDAVIL_CHECKPOINT": str(checkpoint)})
    return subprocess.run(
        launcher.bentoml_command(free_port()),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


BAD_CHECKPOINTS = [
    ("missing", "checkpoint file not found"),
    ("truncated", "not a readable safetensors file (truncated or corrupt)"),
    ("mismatched", "weights do not match the model config"),
]


@pytest.mark.parametrize(("kind", "problem"), BAD_CHECKPOINTS)
def test_verify_checkpoint_names_the_file_and_the_problem(
    tmp_path: Path, good_checkpoint: Path, kind: str, problem: str
) -> None:
    """What the arbiter checks before any worker starts, in process (one server start below)."""
    target = _bad_checkpoint(kind, good_checkpoint, tmp_path)
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(target)
    assert str(err.value).startswith(f"{target}: {problem}"), err.value


def _bad_checkpoint(kind: str, good: Path, tmp_path: Path) -> Path:
    target = tmp_path / f"{kind}.safetensors"
    if kind == "truncated":
        _truncated(good, target)
    elif kind == "mismatched":
        _mismatched(good, target)
    return target


# The exit path (code 2, one line, no worker) is the same for every problem: one server start in
# the default suite, the other two with -m slow.
@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        pytest.param(*case, marks=[] if case[0] == "truncated" else [pytest.mark.slow])
        for case in BAD_CHECKPOINTS
    ],
)
def test_bad_checkpoint_stops_the_server_with_one_line(
    tmp_path: Path, good_checkpoint: Path, kind: str, problem: str
) -> None:
    target = _bad_checkpoint(kind, good_checkpoint, tmp_path)
    result = serve_once(tmp_path, target)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"semidavil: cannot start: {target}: {problem}"), lines
    assert not result.stdout.strip(), result.stdout[-2000:]


# ------------------------------------------------------------------------------------------------
# A checkpoint write that fails (disk full) leaves the previous checkpoint intact


def test_disk_full_during_checkpoint_write_keeps_the_previous_file(
    tmp_path: Path, good_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(good_checkpoint.read_bytes())
    before = path.read_bytes()

    def disk_full(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 4096)  # part of the data reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("model.checkpoint.save_file", disk_full)
    torch.manual_seed(1)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, create_model("semidavil-tiny"), CITYSCAPES_CLASSES)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file left
    model, header = load_model(path)
    expected, _ = load_model(good_checkpoint)
    for key, value in model_tensors(expected).items():
        assert torch.equal(model_tensors(model)[key], value), key
    assert header["tensors_sha256"] == read_header(good_checkpoint)["tensors_sha256"]
