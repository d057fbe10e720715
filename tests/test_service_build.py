"""`bentoml build` of bentofile.yaml works offline and packs the service, not the training code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.server import ROOT, server_env

BUILD_TIMEOUT_S = 300
# Any HTTP(S) client that honours proxies (pip, uv, httpx, requests) fails at once: the build must
# not need the network (bentofile.yaml: lock_packages false).
NO_NETWORK = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "PIP_NO_INDEX": "1",
}


def bentoml_cli() -> list[str]:
    cli = Path(sys.executable).with_name("bentoml")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "bentoml"]


def test_bentoml_build_offline_packs_the_service(tmp_path: Path) -> None:
    home = tmp_path / "bentoml_home"
    result = subprocess.run(
        [*bentoml_cli(), "build", "-f", "bentofile.yaml", ".", "--output", "tag"],
        cwd=ROOT,
        env=server_env(home, NO_NETWORK),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    assert name == "semidavil"
    bento = home / "bentos" / name / version
    src = bento / "src"
    assert (bento / "bento.yaml").is_file()
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "deploy.service:SemiDAViLService"
    assert (src / "deploy" / "service.py").is_file()
    assert (src / "serving" / "http.py").is_file()
    assert (src / "model" / "__init__.py").is_file()
    configs = sorted(p.name for p in (src / "model" / "configs").glob("*.json"))
    assert configs == sorted(p.name for p in (ROOT / "model" / "configs").glob("*.json"))
    assert configs
    for excluded in ("tests", "training", "bench", "data", "runs"):
        assert not (src / excluded).exists(), f"{excluded}/ is in the bento"
    assert not list(src.rglob("__pycache__"))
    assert (bento / "env" / "python" / "requirements.txt").is_file()
