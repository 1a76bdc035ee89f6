"""The label-update benchmark runs end to end on a tiny model and rejects bad arguments with exit status 2."""

import json

import pytest
import torch

from auxseg.tools.bench_label_update import PHASES, main


def test_benchmark_tiny_writes_every_phase_in_both_precisions(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    assert main(["--backbone", "tiny", "--height", "64", "--width", "80", "--images", "1", "--warmup", "0",
                 "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the thread setting is restored
    result = json.loads(out.read_text())
    assert result["config"]["precision"] == ["fp32", "bf16"]
    for mode in ("fp32", "bf16"):
        figures = result["modes"][mode]
        assert set(figures["phases"]) == set(PHASES)
        for phase in PHASES:
            phase_figures = figures["phases"][phase]
            assert phase_figures["median_ms"] > 0 and phase_figures["min_ms"] > 0 and len(phase_figures["ms"]) == 1
        assert figures["total_median_ms"] > 0 and figures["images_per_s"] > 0
    comparison = result["comparison"]
    assert comparison["total_ratio_min"] > 0 and 0.0 <= comparison["label_disagreement_mean"] <= 1.0
    assert result["affinity"]["n"] == 8 * 10 and result["affinity"]["materialised"]
    assert result["peak_rss_mb"] > 0 and result["torch_version"] == torch.__version__
    printed = capsys.readouterr().out
    assert all(phase in printed for phase in PHASES) and "N = 80" in printed
    assert "[fp32]" in printed and "[bf16]" in printed and "fp32 / bf16 per-image total" in printed


def test_benchmark_one_precision_has_no_comparison(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--backbone", "tiny", "--height", "32", "--width", "40", "--images", "1", "--warmup", "0",
                 "--precision", "fp32", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["modes"]) == ["fp32"] and "comparison" not in result


@pytest.mark.parametrize(
    "argv",
    [["--backbone", "no_such_backbone"], ["--height", "0"], ["--width", "-5"], ["--images", "0"],
     ["--present", "21"], ["--precision", "fp16"]],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bench_train_step_prints_one_row_per_setting(capsys):
    from auxseg.tools.bench_train_step import main

    assert main(["--backbone", "tiny", "--output-strides", "8", "16", "--crops", "48", "--batch-size", "2",
                 "--classes", "3", "--branch-channels", "8", "--repeats", "1", "--threads", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().split()[:1] in (["8"], ["16"])]
    assert [(row[0], row[1], row[2]) for row in rows] == [("8", "48", "36"), ("16", "48", "9")]  # N = ceil(48/os)^2
    for row in rows:
        backbone, step, branches = map(float, row[4:7])
        assert 0 < backbone and 0 < step and abs(step - backbone - branches) < 0.011 or branches == 0.0
