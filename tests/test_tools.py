"""The params-editing tools: ``auxseg.tools.apply_profile`` (named profiles) and ``auxseg.tools.set_rounds``."""

import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from auxseg.config import round_chain
from auxseg.params import ParamError, validate_params_file
from auxseg.tools import apply_profile, set_rounds

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    return path


def _tool(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"auxseg.tools.{module}", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def _comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]


def _leaf(data, path):
    for key in path:
        data = data[key]
    return data


def test_the_tiny_profile_ships_as_package_data_and_names_only_existing_keys(params_file):
    assert "tiny" in apply_profile.available_profiles()
    assert resources.files("auxseg.profiles").joinpath("tiny.yaml").is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "[tool.setuptools.package-data]" in pyproject and "profiles/*.yaml" in pyproject
    leaves = apply_profile.profile_leaves(apply_profile.load_profile("tiny"))
    apply_profile.merge(yaml.safe_load(params_file.read_text()), leaves)  # raises on a key params.yaml lacks
    assert {path[0] for path, _ in leaves} >= {"synthetic", "classifier", "auxsegnet", "deeplab", "cams", "evaluate"}


def test_apply_profile_merges_the_profile_keeping_comments_and_everything_else(params_file):
    before = params_file.read_text()
    result = _tool("apply_profile", "tiny", cwd=params_file.parent)
    assert result.returncode == 0, result.stderr
    after = params_file.read_text()
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    leaves = apply_profile.profile_leaves(apply_profile.load_profile("tiny"))
    assert new == apply_profile.merge(old, leaves)
    for path, value in leaves:
        assert _leaf(new, path) == value
    assert _comments(after) == _comments(before)
    assert len(after.splitlines()) == len(before.splitlines())  # values replaced in place, flow mappings kept
    parsed = validate_params_file(params_file)
    assert parsed["synthetic"].n_train == new["synthetic"]["n_train"]
    # applying it again changes nothing
    assert _tool("apply_profile", "tiny", cwd=params_file.parent).returncode == 0
    assert params_file.read_text() == after


def test_apply_profile_errors_name_the_problem_and_leave_the_file_untouched(params_file):
    before = params_file.read_text()
    result = _tool("apply_profile", "huge", cwd=params_file.parent)
    assert result.returncode == 2 and "profile 'huge': no such profile (available: " in result.stderr
    assert params_file.read_text() == before
    # a key that the params file lacks
    params_file.write_text(before.replace("  workers: 1\n", "").replace("  workers: 2\n", ""))
    lacking = params_file.read_text()
    result = _tool("apply_profile", "tiny", cwd=params_file.parent)
    assert result.returncode == 2
    assert "prepare_data.workers: not in params.yaml" in result.stderr
    assert params_file.read_text() == lacking


def test_the_merged_file_is_validated_before_it_replaces_the_original(params_file):
    leaves = [(("synthetic", "n_train"), 0)]  # out of range
    text = params_file.read_text()
    merged = apply_profile.merge(yaml.safe_load(text), leaves)
    from auxseg.params_file import write_params_text

    with pytest.raises(ParamError, match=r"synthetic\.n_train: 0 is out of range"):
        write_params_text(params_file, apply_profile.splice(text, leaves), merged)
    assert params_file.read_text() == text
    assert sorted(p.name for p in params_file.parent.iterdir()) == ["params.yaml"]


def test_print_set_args_lists_the_profile_as_exp_run_overrides(params_file):
    result = _tool("apply_profile", "tiny", "--print-set-args", cwd=params_file.parent)
    assert result.returncode == 0, result.stderr
    args = shlex.split(result.stdout)
    assert args[::2] == ["-S"] * (len(args) // 2)
    overrides = dict(arg.split("=", 1) for arg in args[1::2])
    leaves = apply_profile.profile_leaves(apply_profile.load_profile("tiny"))
    assert list(overrides) == [".".join(path) for path, _ in leaves]
    for path, value in leaves:  # Hydra's override values read back as YAML give the profile's values
        assert yaml.safe_load(overrides[".".join(path)].replace(",", ", ")) == value
    assert overrides["cams.scales"] == "[1.0]"


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_set_rounds_writes_a_valid_chain_and_keeps_the_rest(params_file, n):
    before = params_file.read_text()
    result = _tool("set_rounds", str(n), cwd=params_file.parent)
    assert result.returncode == 0, result.stderr
    after = params_file.read_text()
    parsed = validate_params_file(params_file)
    assert round_chain(parsed["rounds"], parsed["final_round"]) == [f"r{k}" for k in range(n + 1)]
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    assert {k: v for k, v in new.items() if k not in ("rounds", "final_round")} == {
        k: v for k, v in old.items() if k not in ("rounds", "final_round")
    }
    # every comment survives, except those on the lines of rounds that were removed (r2's note when n = 1)
    removed = [
        line for line in before.splitlines() if line.startswith("  r") and line.split(":")[0].strip() not in new["rounds"]
    ]
    assert _comments(after) == [c for c in _comments(before) if c not in _comments("\n".join(removed))]
    outside = [line for line in before.splitlines() if not line.startswith(("  r", "final_round:"))]
    assert [line for line in after.splitlines() if not line.startswith(("  r", "final_round:"))] == outside


def test_set_rounds_keeps_per_round_overrides_and_comments_inside_the_block(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "seed: 0\n"
        "rounds:   # the chain\n"
        "  # first round\n"
        "  r1: {prev: r0}\n"
        "  r2:\n"
        "    prev: r1\n"
        "    # r2 trusts saliency less\n"
        "    loss_weights: {cls: 1.0, sal: 0.5, seg: 1.0}\n"
        "  r3: {prev: r2, epochs: 2}  # a third round\n"
        "final_round: r3   # the last round\n"
        "\n"
        "deeplab: {}\n"
    )
    assert set_rounds.set_rounds(2, path) == ["r3"]
    assert path.read_text() == (
        "seed: 0\n"
        "rounds:   # the chain\n"
        "  # first round\n"
        "  r1: {prev: r0}\n"
        "  r2:\n"
        "    prev: r1\n"
        "    # r2 trusts saliency less\n"
        "    loss_weights: {cls: 1.0, sal: 0.5, seg: 1.0}\n"
        "final_round: r2   # the last round\n"
        "\n"
        "deeplab: {}\n"
    )
    assert set_rounds.set_rounds(4, path) == []
    data = yaml.safe_load(path.read_text())
    assert data["rounds"]["r2"] == {"prev": "r1", "loss_weights": {"cls": 1.0, "sal": 0.5, "seg": 1.0}}
    assert data["rounds"]["r4"] == {"prev": "r3"} and data["final_round"] == "r4"
    # a flow-style block, a broken chain and a missing final_round are rewritten
    path.write_text("rounds: {r1: {prev: r0}, r2: {prev: r0, epochs: 3}}\n")
    set_rounds.set_rounds(3, path)
    assert path.read_text() == (
        "rounds:\n  r1: {prev: r0}\n  r2: {prev: r1, epochs: 3}\n  r3: {prev: r2}\nfinal_round: r3\n"
    )
    # a column-0 comment inside the block stays with its entry; the block ends at the next top-level key
    path.write_text("rounds:\n  r1: {prev: r0}\n# about r2\n  r2: {prev: r1}\n\n# the end\nfinal_round: r2\n")
    set_rounds.set_rounds(3, path)
    assert path.read_text() == (
        "rounds:\n  r1: {prev: r0}\n# about r2\n  r2: {prev: r1}\n  r3: {prev: r2}\n\n# the end\nfinal_round: r3\n"
    )


@pytest.mark.parametrize("arg", ["0", "-1"])
def test_set_rounds_below_one_is_an_error_and_leaves_the_file_untouched(params_file, arg):
    before = params_file.read_text()
    result = _tool("set_rounds", "--", arg, cwd=params_file.parent)
    assert result.returncode == 2 and "must be an integer >= 1" in result.stderr
    assert params_file.read_text() == before


def test_the_set_args_give_dvc_the_same_params_as_apply_profile(tmp_path, params_file):
    hydra = pytest.importorskip("dvc.utils.hydra")  # what `dvc exp run -S` applies the overrides with
    by_dvc = tmp_path / "by_dvc" / "params.yaml"
    by_dvc.parent.mkdir()
    by_dvc.write_text(params_file.read_text())
    hydra.apply_overrides(by_dvc, apply_profile.set_args("tiny", by_dvc)[1::2])
    apply_profile.apply_profile("tiny", params_file)
    # Compared as the stages read them: DVC writes YAML 1.2, where a string "off" needs no quotes, which PyYAML
    # (YAML 1.1) then reads as false; runtime.cpu_bf16 takes both as off.
    assert validate_params_file(by_dvc) == validate_params_file(params_file)


def test_bench_crf_reports_both_variants_and_rejects_bad_arguments(tmp_path, capsys):
    import json

    from auxseg.tools import bench_crf

    out = tmp_path / "crf.json"
    assert bench_crf.main(["--height", "40", "--width", "48", "--images", "1", "--iterations", "2", "--json",
                           str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["all_classes_ms_median"] > 0 and report["present_classes_ms_median"] > 0
    assert 0.0 <= report["argmax_agreement_mean"] <= 1.0
    assert "speed-up" in capsys.readouterr().out
    assert bench_crf.main(["--present", "21"]) == 2
    assert "--present" in capsys.readouterr().err
