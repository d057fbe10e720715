"""Security properties that can be checked without a server: no pickle, no file access from request
parameters, loopback by default, no public Gradio share, telemetry and hub access off by default,
limits before decoding.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from serving.decode import Limits, decode_image
from serving.errors import ImageTooLarge

# Raised inside BentoML (pathspec, pydantic) when the service is imported, and by PIL for the header.
pytestmark = [
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The `__get_pydantic_core_schema__` method:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "serving", "training", "ui", "bench")


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """(dotted name, call node) of every call in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            found.append((ast.unparse(node.func), node))
    return found


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_no_pickle_loading_in_the_package() -> None:
    """safetensors only: no pickle/joblib/dill loads; torch.load only with weights_only=True."""
    offenders = []
    for path in _sources():
        for name, call in _calls(path):
            where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
            if re.fullmatch(r"(pickle|cPickle|joblib|dill|cloudpickle)\.loads?|pd\.read_pickle", name):
                offenders.append(where)
            elif name == "torch.load":
                flag = _keyword(call, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    offenders.append(where + " without weights_only=True")
            elif name in ("np.load", "numpy.load"):
                flag = _keyword(call, "allow_pickle")
                if isinstance(flag, ast.Constant) and flag.value is True:
                    offenders.append(where + " with allow_pickle=True")
    assert not offenders, offenders


def test_gradio_never_shares_publicly() -> None:
    for path in _sources():
        for name, call in _calls(path):
            if name.endswith(".launch") or name == "launch":
                share = _keyword(call, "share")
                assert isinstance(share, ast.Constant) and share.value is False, f"{path}:{call.lineno}"


def test_servers_bind_loopback_by_default() -> None:
    from deploy.service import DEFAULT_HOST, SemiDAViLService
    from ui.app import build_parser

    assert DEFAULT_HOST == "127.0.0.1"
    assert str(SemiDAViLService.config["http"]["host"]) == "127.0.0.1"
    assert build_parser().parse_args([]).host == "127.0.0.1"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"bentoml serve \S+ --host 127\.0\.0\.1", makefile)
    assert "0.0.0.0" not in makefile
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.lstrip().startswith("bentoml serve")]
    assert commands, "the README shows no serve command"
    for line in commands:  # the commands people copy, not the prose about --host
        assert "--host" not in line or "--host 127.0.0.1" in line, line


def test_telemetry_and_hub_access_are_off_by_default() -> None:
    """In a fresh interpreter with none of the variables set, importing `model` switches them off."""
    from model._env import OFFLINE_DEFAULTS

    assert OFFLINE_DEFAULTS == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_DEFAULTS and k != "SEMIDAVIL_ONLINE"}
    keys = sorted(OFFLINE_DEFAULTS)
    code = f"import os, json, model; print(json.dumps({{k: os.environ.get(k) for k in {keys!r}}}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == OFFLINE_DEFAULTS


def test_request_parameters_never_reach_the_file_system() -> None:
    """The service opens no file for a request: the upload stays in memory (serving/upload.py,
    BentoML writes no temporary file for it), no parameter is used as a path, and neither the
    service module nor the upload type does file I/O."""
    service = (ROOT / "deploy" / "service.py").read_text()
    http = (ROOT / "serving" / "http.py").read_text()
    upload = (ROOT / "serving" / "upload.py").read_text()
    for text in (service, http, upload):
        assert not re.search(r"\bopen\(|\.read_bytes\(|\.read_text\(|\.write_|os\.remove|shutil\.", text)
    assert "image: Upload," in service and "return image.data" in service
    fs_calls = {"open", "Path", "os.path.join", "shutil.copy"}
    for name, call in _calls(ROOT / "deploy" / "service.py"):
        assert name not in fs_calls, f"deploy/service.py:{call.lineno} {name}"


def test_pixel_limits_are_enforced_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A header declaring 50000x50000 is refused without any pixel data being decoded."""
    import struct
    import zlib

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00")
    data = b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(data, Limits())
