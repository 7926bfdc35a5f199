"""The model profiler: stage attribution, FLOPs vs the analytic count, JSON schema, CLI, table.

One CLI run on the ``tiny`` preset (two variants, three timed iterations) feeds most
tests. Budget: ~20 s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from cogvla.cli import main as cogvla_main
from cogvla.config import get_preset
from cogvla.flops import DEFAULT_PROMPT_TOKENS, count_flops
from eval.profile.efficiency_table import ProfileResultError, efficiency_rows, format_table, load_result
from eval.profile.latency import SUMMARY_KEYS, EmptySampleError, summarize
from eval.profile.model_profile import STAGES, ModelProfileConfig, ProfileConfigError
from eval.profile.stage_timer import TOTAL, StageTimer

PRESET = "tiny"
VARIANTS = ("cogvla", "dense")


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("profile") / "model.json"
    argv = ["profile", "model", "--preset", PRESET, "--variants", ",".join(VARIANTS), "--iters", "3"]
    argv += ["--warmup", "1", "--threads", "1", "--json", str(out)]
    assert cogvla_main(argv) == 0
    return json.loads(out.read_text()), out


def _is_summary(value: object) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == set(SUMMARY_KEYS)
        and all(isinstance(value[key], float) and math.isfinite(value[key]) for key in SUMMARY_KEYS)
    )


def test_json_has_documented_schema(profiled: tuple[dict, Path]) -> None:
    result, path = profiled
    assert result["preset"] == PRESET and isinstance(result["device"], str)
    assert list(result["variants"]) == list(VARIANTS)
    assert set(result["loadavg"]) == {"before", "after"} and len(result["loadavg"]["before"]) == 3
    for name, info in result["variants"].items():
        config = get_preset(PRESET, name)
        assert isinstance(info["tflops"], float) and info["tflops"] > 0
        assert _is_summary(info["total"])
        assert set(info["stages"]) == set(STAGES)
        assert all(_is_summary(info["stages"][stage]) for stage in STAGES)
        assert isinstance(info["llm_tokens"], int)
        assert (
            info["llm_tokens"]
            == 1 + config.num_vision_tokens + 1 + DEFAULT_PROMPT_TOKENS + config.num_action_tokens + 1
        )
        assert info["kept_per_layer"] == config.kept_vision_tokens()
        assert all(isinstance(k, int) for k in info["kept_per_layer"])
        assert isinstance(info["peak_mem_mb"], float) and info["peak_mem_mb"] >= 0
    assert path.with_suffix(".png").stat().st_size > 0


def test_stage_times_add_up_to_total(profiled: tuple[dict, Path]) -> None:
    result, _ = profiled
    for name, info in result["variants"].items():
        stages = sum(info["stages"][stage]["mean_ms"] for stage in STAGES)
        total = info["total"]["mean_ms"]
        assert stages <= total * 1.0001, name
        assert stages >= 0.9 * total, f"{name}: stages {stages:.1f} ms of a {total:.1f} ms forward"


def test_reported_flops_equal_analytic_and_measured(profiled: tuple[dict, Path]) -> None:
    result, _ = profiled
    for name, info in result["variants"].items():
        analytic = count_flops(get_preset(PRESET, name), prompt_tokens=DEFAULT_PROMPT_TOKENS)
        assert info["tflops"] == pytest.approx(analytic.total / 1e12, rel=1e-12)
        assert info["measured_tflops"] == pytest.approx(info["tflops"], rel=1e-6)
        assert sum(info["stage_tflops"].values()) == pytest.approx(info["tflops"], rel=1e-9)


def test_efficiency_table_lists_every_variant_with_ratios(profiled: tuple[dict, Path]) -> None:
    result, path = profiled
    rows = {row["variant"]: row for row in efficiency_rows(load_result(path))}
    dense, cogvla = result["variants"]["dense"], result["variants"]["cogvla"]
    assert rows["dense"]["latency_speedup"] == pytest.approx(1.0)
    assert rows["cogvla"]["flops_reduction"] == pytest.approx(dense["tflops"] / cogvla["tflops"])
    assert rows["cogvla"]["throughput_hz"] == pytest.approx(8 * 1000.0 / cogvla["total"]["p50_ms"])
    table = format_table(result)
    assert table.count("\n| cogvla |") == 1 and "| dense |" in table
    assert "dense/cogvla: latency ratio" in table


def test_table_cli_prints_markdown(profiled: tuple[dict, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, path = profiled
    assert cogvla_main(["profile", "table", "--json", str(path)]) == 0
    assert capsys.readouterr().out.startswith("| Variant | Latency p50 (ms)")


def test_table_rejects_a_result_without_variants(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"variants": {"cogvla": {"tflops": 1.0}}}))
    with pytest.raises(ProfileResultError, match=r"variants.cogvla is missing \['total'"):
        load_result(bad)
    with pytest.raises(ProfileResultError, match="no such file"):
        load_result(tmp_path / "missing.json")


def test_summarize_percentiles_and_empty_sample() -> None:
    summary = summarize([float(v) for v in range(1, 101)])
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p90_ms"] == pytest.approx(90.1)
    assert summary["mean_ms"] == pytest.approx(50.5)
    with pytest.raises(EmptySampleError, match="latency: expected a non-empty"):
        summarize([], "latency")


def test_config_rejects_unknown_variant_and_bad_counts() -> None:
    with pytest.raises(ProfileConfigError, match="got unknown \\['sparse'\\]"):
        ModelProfileConfig(preset=PRESET, variants=("cogvla", "sparse"))
    with pytest.raises(ProfileConfigError, match="iters: expected an int >= 1, got 0"):
        ModelProfileConfig(preset=PRESET, iters=0)


class _TwoStage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x) + self.first(x))


def test_stage_timer_reads_each_stage_and_removes_its_hooks() -> None:
    model = _TwoStage()
    stages = {"a": [model.first], "b": [model.second], "never": [model.unused]}
    with StageTimer(stages, "cpu") as timer:
        with pytest.raises(RuntimeError, match="before a start"):
            timer.read()
        timer.start()
        model(torch.ones(1, 4))
        timer.stop()
        times = timer.read()
    assert set(times) == {"a", "b", "never", TOTAL}
    assert times["never"] == 0.0
    assert 0 < times["a"] + times["b"] <= times[TOTAL]
    assert not model.first._forward_hooks and not model.first._forward_pre_hooks
    with pytest.raises(ValueError, match="'total' is reserved"):
        StageTimer({TOTAL: [model.first]}, "cpu")
