"""bench/model_profile.py in quick mode: BENCHMARKS.md section, stage rows, FLOP scaling, parameter totals."""

from __future__ import annotations

import pytest
import torch

from bench import common, model_profile
from model import create_model

BEGIN, END = "<!-- BEGIN model_profile -->", "<!-- END model_profile -->"
TINY = "semidavil-tiny"
SIZES = ((512, 512), (512, 1024))
STAGE_LABELS = ("backbone", "DLG", "decoder", "final upsample")


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    # 5 classes and no warm-up keep this quick; the checks do not depend on K.
    argv = ["--quick", "--sizes", "512x512,512x1024", "--classes", "5", "--warmup", "0"]
    result = model_profile.main([*argv, "--output", str(output)])
    return output, result


def _runs(result):
    (res,) = result["results"]
    assert res["config"] == TINY
    return res, {tuple(run["size"]): run for run in res["runs"]}


def _section(text: str) -> str:
    return text[text.index(BEGIN) : text.index(END)]


def test_quick_mode_writes_one_section_with_a_row_per_stage(profile):
    output, _ = profile
    text = output.read_text()
    assert text.startswith(common.BENCHMARKS_TITLE)
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index(BEGIN) < text.index(END)
    section = _section(text)
    assert "Quick mode" in section
    assert "python -m bench.model_profile --quick --sizes 512x512,512x1024 --classes 5" in section
    assert "CPU:" in section and "torch threads:" in section
    lines = section.splitlines()
    for height, width in SIZES:
        for label in STAGE_LABELS:
            row = f"| {TINY} | {height}x{width} | {label} |"
            assert sum(line.startswith(row) for line in lines) == 1, row
    for label in (*STAGE_LABELS, "text tower (frozen)", "**model total**"):
        assert any(line.startswith(f"| {TINY} | {label} |") for line in lines), label
    target_rows = [line for line in lines if line.startswith(f"| {TINY} | 512x1024 |") and "target" in line]
    assert len(target_rows) == 1
    assert "the target is for the paper model" in target_rows[0]  # the verdict is vitb16's alone


def test_gflops_positive_and_backbone_scales_with_resolution(profile):
    _, result = profile
    _, runs = _runs(result)
    for run in runs.values():
        flops = run["flops"]
        for stage in ("backbone", "dlg", "decoder"):
            assert flops[stage]["flops"] > 0, stage
        assert flops["upsample"]["flops"] == 0  # bilinear resampling is not counted (documented)
        assert run["whole_flops"]["flops"] == sum(flops[s]["flops"] for s in model_profile.STAGES)
        # SDPA is not counted natively on CPU: the script's formula must match 4*N^2*D per ViT block.
        assert flops["backbone"]["attention_flops"] == run["expected_backbone_attention_flops"] > 0
        assert flops["decoder"]["attention_flops"] > 0
        for stage in model_profile.STAGES:
            assert run["times"][stage]["n"] == 1 and run["times"][stage]["median"] > 0

    small, large = (runs[s]["flops"]["backbone"] for s in SIZES)
    # Linear layers and convolutions scale with the token count: ~2x for twice the pixels.
    dense_ratio = (large["flops"] - large["attention_flops"]) / (small["flops"] - small["attention_flops"])
    assert 1.7 <= dense_ratio <= 2.6
    # Self-attention is quadratic in tokens. The tiny ViT (width 96) is attention-dominated at 512x512,
    # so its total backbone ratio is ~3x (ViT-B/16 would be ~2.4x); bounded by the pure cases 2x..4x.
    attention_ratio = large["attention_flops"] / small["attention_flops"]
    assert 3.9 <= attention_ratio <= 4.0
    assert 1.7 <= large["flops"] / small["flops"] <= 4.0


def test_parameter_totals_match_the_model(profile):
    _, result = profile
    res, _ = _runs(result)
    torch.manual_seed(0)
    net = create_model(TINY)
    params = res["params"]
    assert params["model"]["all"] == sum(p.numel() for p in net.parameters())
    assert params["model"]["trainable"] == sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert params["seg"]["all"] == sum(p.numel() for p in net.seg.parameters())
    assert params["text"]["all"] == sum(p.numel() for p in net.text.parameters())
    assert params["text"]["trainable"] == 0
    stages = sum(params[s]["all"] for s in model_profile.STAGES)
    assert stages == params["seg"]["all"] and params["seg_other"]["all"] == 0
    backbone = [net.seg.visual] + ([net.seg.conv_skip] if net.seg.conv_skip is not None else [])
    assert params["backbone"]["all"] == sum(p.numel() for m in backbone for p in m.parameters())
    assert 0 < params["backbone"]["trainable"] < params["backbone"]["all"]  # spatial fine-tuning
    assert f"| {params['model']['all']:,} |" in result["markdown"]


def test_rerun_replaces_the_section_and_keeps_the_others(profile):
    output, _ = profile
    other = "<!-- BEGIN other_bench -->\nsomeone else's numbers\n<!-- END other_bench -->\n"
    output.write_text(output.read_text() + "\n" + other)
    result = model_profile.main(["--quick", "--sizes", "64x64", "--warmup", "0", "--output", str(output)])
    text = output.read_text()
    assert result["output"] == output
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.count(common.BENCHMARKS_TITLE) == 1
    assert other in text
    section = _section(text)
    assert "| 64x64 | backbone |" in section
    assert "| 512x1024 |" not in section  # the old section is gone, not appended to
    assert "not measured" in section  # no verdict without the target size


def test_no_write_leaves_the_file_alone(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    argv = ["--quick", "--sizes", "64x64", "--warmup", "0", "--no-write", "--output", str(output)]
    result = model_profile.main(argv)
    assert result["output"] is None and not output.exists()
    assert "| 64x64 | backbone |" in result["markdown"]


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        model_profile.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--configs",
        "--sizes",
        "--repeats",
        "--warmup",
        "--classes",
        "--caption-length",
        "--quick",
        "--output",
        "--no-write",
        "--threads",
        "--seed",
    ):
        assert option in text, option
    with pytest.raises(SystemExit):
        model_profile.parse_args(["--sizes", "500x512"])


def test_write_section_refuses_malformed_markers(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n<!-- BEGIN model_profile -->\nhalf a section\n")
    with pytest.raises(ValueError, match="malformed"):
        common.write_section(path, "model_profile", "new")
    fresh = common.write_section(tmp_path / "sub" / "new.md", "x", "body")
    assert (
        fresh.read_text().startswith("# Benchmarks")
        and "<!-- BEGIN x -->\nbody\n<!-- END x -->" in fresh.read_text()
    )


def test_median_time_statistics():
    calls = []
    stats = common.median_time(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and stats["n"] == 4
    assert stats["min"] <= stats["p25"] <= stats["median"] <= stats["p75"] <= stats["max"]
    assert common.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    with pytest.raises(ValueError):
        common.median_time(lambda: None, repeats=0)
