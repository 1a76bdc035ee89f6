"""The label-update benchmark runs end to end on a tiny model and rejects bad arguments with exit status 2."""

import json

import pytest
import torch

from auxseg.tools.bench_label_update import PHASES, main


def test_benchmark_tiny_writes_every_phase(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    assert main(["--backbone", "tiny", "--height", "64", "--width", "80", "--images", "1", "--warmup", "0",
                 "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the thread setting is restored
    result = json.loads(out.read_text())
    assert set(result["phases"]) == set(PHASES)
    for phase in PHASES:
        figures = result["phases"][phase]
        assert figures["median_ms"] > 0 and figures["min_ms"] > 0 and len(figures["ms"]) == 1, phase
    assert result["total_median_ms"] > 0 and result["images_per_s"] > 0
    assert result["affinity"]["n"] == 8 * 10 and result["affinity"]["materialised"]
    assert result["peak_rss_mb"] > 0 and result["torch_version"] == torch.__version__
    printed = capsys.readouterr().out
    assert all(phase in printed for phase in PHASES) and "N = 80" in printed


@pytest.mark.parametrize(
    "argv",
    [["--backbone", "no_such_backbone"], ["--height", "0"], ["--width", "-5"], ["--images", "0"],
     ["--present", "21"]],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert "error:" in capsys.readouterr().err
