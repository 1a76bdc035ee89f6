"""Stage scripts: bad params exit non-zero naming the key and write nothing; the round chain is validated."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from auxseg.config import RoundParams, round_chain
from auxseg.params import ParamError, validate_params_file

ROOT = Path(__file__).resolve().parents[1]


def _run_stage(script: str, params: dict, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / script)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "params, message",
    [
        ({"synthetic": {"n_trian": 4}}, "synthetic.n_trian: unknown key"),
        ({"synthetic": {"n_train": -1}}, "synthetic.n_train: -1 is out of range"),
        ({"synthetic": {"num_classes": "six"}}, "synthetic.num_classes: expected an integer"),
        ({"synthtic": {}}, "synthtic: unknown top-level key"),
    ],
)
def test_bad_params_exit_non_zero_naming_the_key_and_write_nothing(tmp_path, params, message):
    result = _run_stage("synthesize.py", {**params}, tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_synthesize_then_prepare_data_on_a_tiny_profile(tmp_path):
    params = {
        "synthetic": {"n_train": 4, "n_val": 2, "min_side": 48, "max_side": 64, "out_dir": "data/synthetic"},
        "dataset": {"root": "data/synthetic"},
        "prepare_data": {"out_dir": "data/prepared", "workers": 1},
    }
    assert _run_stage("synthesize.py", params, tmp_path).returncode == 0
    result = _run_stage("prepare_data.py", params, tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load((tmp_path / "data/prepared/train.json").read_text())
    assert manifest["num_images"] == 4 and manifest["class_names"][0] == "background"
    # a broken image: prepare_data names it and leaves no manifest behind
    shutil.rmtree(tmp_path / "data/prepared")
    broken = sorted((tmp_path / "data/synthetic/JPEGImages").glob("syn_val_*.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:100])
    result = _run_stage("prepare_data.py", params, tmp_path)
    assert result.returncode == 2 and broken.name in result.stderr
    assert not (tmp_path / "data/prepared").exists()


def test_round_chain_of_the_committed_params():
    parsed = validate_params_file(ROOT / "params.yaml")
    chain = round_chain(parsed["rounds"], parsed["final_round"])
    assert chain[0] == "r0" and chain[-1] == parsed["final_round"]


@pytest.mark.parametrize(
    "rounds, final, message",
    [
        ({"r1": "r0", "r2": "r9"}, "r2", "rounds.r2.prev: 'r9' is neither r0 nor a round"),
        ({"r1": "r0", "r2": "r1"}, "r1", "final_round: 'r1' is not the last round"),
        ({"r1": "r0", "r2": "r3", "r3": "r2"}, "r1", "not reachable from r0"),
        ({"r1": "r0", "r2": "r0"}, "r2", "is already refined by"),
        ({"r1": "r0"}, "r5", "final_round: 'r5' is not a round"),
    ],
)
def test_round_chain_errors(rounds, final, message):
    with pytest.raises(ParamError, match=message):
        round_chain({name: RoundParams(prev=prev) for name, prev in rounds.items()}, final)


def test_round_chain_order():
    rounds = {"b": RoundParams(prev="a"), "a": RoundParams(prev="r0"), "c": RoundParams(prev="b")}
    assert round_chain(rounds, "c") == ["r0", "a", "b", "c"]
