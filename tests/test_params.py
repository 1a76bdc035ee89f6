"""Typed params: unknown keys, wrong types and out-of-range values fail with the key's name."""

from pathlib import Path

import pytest
import yaml

from auxseg.config import SyntheticParams
from auxseg.params import ParamError, load_stage_params, parse_section, validate_params_file

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_params_file_is_valid():
    parsed = validate_params_file(ROOT / "params.yaml")
    assert parsed["synthetic"].num_classes >= 2
    assert parsed["dataset"].name == "synthetic"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"n_trian": 3}, r"synthetic\.n_trian: unknown key"),
        ({"n_train": "many"}, r"synthetic\.n_train: expected an integer"),
        ({"n_train": 2.5}, r"synthetic\.n_train: expected an integer"),
        ({"n_train": True}, r"synthetic\.n_train: expected an integer"),
        ({"n_train": 0}, r"synthetic\.n_train: 0 is out of range \(must be >= 1\)"),
        ({"distractor_rate": 1.5}, r"synthetic\.distractor_rate: 1.5 is out of range"),
        ({"min_side": 200, "max_side": 100}, r"synthetic\.min_side: 200 is larger than synthetic\.max_side"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ParamError, match=message):
        parse_section(SyntheticParams, data, "synthetic")


def test_literal_and_optional_types():
    from auxseg.config import DatasetParams

    with pytest.raises(ParamError, match=r"dataset\.name: 'pascal' is not one of"):
        parse_section(DatasetParams, {"name": "pascal"}, "dataset")
    assert parse_section(DatasetParams, {"image_labels": None}, "dataset").image_labels is None
    with pytest.raises(ParamError, match=r"dataset\.image_labels: expected a string"):
        parse_section(DatasetParams, {"image_labels": 3}, "dataset")


def test_ints_are_accepted_for_floats():
    assert parse_section(SyntheticParams, {"distractor_rate": 1}, "synthetic").distractor_rate == 1.0


def test_unknown_top_level_key_and_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 0, "synthetc": {"n_train": 3}}))
    with pytest.raises(ParamError, match="synthetc: unknown top-level key"):
        load_stage_params(["synthetic"], path)
    path.write_text(yaml.safe_dump({"seed": "zero"}))
    with pytest.raises(ParamError, match="seed: expected an integer"):
        validate_params_file(path)


def test_missing_sections_take_defaults_outside_dvc(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"synthetic": {"n_train": 5}}))
    params = load_stage_params(["synthetic", "seed"], path)
    assert params["synthetic"].n_train == 5 and params["synthetic"].n_val == SyntheticParams().n_val
    assert params["seed"] == 0


def test_the_committed_rounds_chain_is_linear_and_ends_at_final_round():
    from auxseg.config import INITIAL_ROUND, round_chain

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    rounds, final = data["rounds"], data["final_round"]
    # checked by hand, independently of round_chain: every predecessor exists, each is refined once, no cycle
    prevs = [spec["prev"] for spec in rounds.values()]
    assert all(prev == INITIAL_ROUND or prev in rounds for prev in prevs)
    assert len(set(prevs)) == len(prevs) and INITIAL_ROUND not in rounds
    chain, child = [INITIAL_ROUND], {spec["prev"]: name for name, spec in rounds.items()}
    while chain[-1] in child and len(chain) <= len(rounds):
        chain.append(child[chain[-1]])
    assert sorted(chain[1:]) == sorted(rounds), "a round is not reachable from r0 (cycle)"
    assert chain[-1] == final
    parsed = validate_params_file(ROOT / "params.yaml")
    assert round_chain(parsed["rounds"], parsed["final_round"]) == chain


@pytest.mark.parametrize(
    "rounds, final, message",
    [
        ({"r1": "r1"}, "r1", r"rounds\.r1\.prev: 'r1' is neither r0|rounds\.r1\.prev: a round cannot refine itself"),
        ({"r0": "r0", "r1": "r0"}, "r1", r"rounds\.r0: reserved"),
        ({"r1": "r0", "r2": "r1", "r3": "r2"}, "r2", r"final_round: 'r2' is not the last round of the chain \(r3\)"),
        ({"r1": "r0", "a": "b", "b": "a"}, "r1", r"rounds\.(a|b): not reachable from r0"),
    ],
)
def test_round_chain_rejects_broken_chains(rounds, final, message):
    from auxseg.config import RoundParams, round_chain

    with pytest.raises(ParamError, match=message):
        round_chain({name: RoundParams(prev=prev) for name, prev in rounds.items()}, final)


def test_a_duplicate_key_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nsynthetic:\n  n_train: 5\n  n_val: 3\n  n_train: 7\n")
    with pytest.raises(ParamError, match=r"params\.yaml: duplicate key 'n_train' \(line 5\)"):
        load_stage_params(["synthetic"], path)
    path.write_text("seed: 0\nclassifier:\n  optim: {epochs: 2, lr: 0.1, epochs: 3}\n")
    with pytest.raises(ParamError, match=r"duplicate key 'epochs'"):
        validate_params_file(path)


def test_params_are_frozen_and_constructing_them_validates():
    params = SyntheticParams(n_train=5)
    with pytest.raises(Exception):
        params.n_train = 6  # frozen
    assert parse_section(SyntheticParams, {"n_train": 5}, "synthetic") == params
    with pytest.raises(ParamError, match=r"^n_train: 0 is out of range \(must be >= 1\)"):
        SyntheticParams(n_train=0)
    with pytest.raises(ParamError, match=r"^min_side: 200 is larger than max_side"):
        SyntheticParams(min_side=200, max_side=100)


@pytest.mark.parametrize("scales, message", [([], r"evaluate\.scales: must not be empty"),
                                             ([1.0, 0.0], r"evaluate\.scales: 0\.0 is out of range \(must be > 0\.0\)")])
def test_evaluate_scales_are_bounded_like_the_single_stage_ones(scales, message):
    from auxseg.config import EvaluateParams

    with pytest.raises(ParamError, match=message):
        parse_section(EvaluateParams, {"scales": scales}, "evaluate")
