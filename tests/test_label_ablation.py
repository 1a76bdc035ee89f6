"""``auxseg ablate-labels``: the A_CT class-selectivity measure (the tool end to end is in tests/test_stages.py)."""

import numpy as np
import pytest
import torch

from auxseg.tools.label_ablation import affinity_selectivity, main

MASK = np.array([[0, 0, 1], [1, 2, 255]])  # 6 positions, one ignored


def test_an_identity_affinity_keeps_all_mass_on_the_own_class():
    own, uniform = affinity_selectivity(torch.eye(6), MASK)
    assert own == pytest.approx(1.0)
    # kept labels 0, 0, 1, 1, 2: a uniform row puts (2/5 + 2/5 + 2/5 + 2/5 + 1/5) / 5 on its own class
    assert uniform == pytest.approx(0.36)


def test_a_uniform_affinity_is_no_better_than_uniform_and_ignored_columns_do_not_count():
    affinity = torch.full((6, 6), 1 / 6)
    affinity[:, 5] = 10.0  # all mass on the ignored position: left out, rows renormalised over the rest
    own, uniform = affinity_selectivity(affinity, MASK)
    assert own == pytest.approx(uniform) == pytest.approx(0.36)


def test_a_mask_without_labelled_positions_gives_none():
    assert affinity_selectivity(torch.eye(2), np.array([[255, 255]])) is None


def test_an_unknown_round_and_bad_arguments_exit_non_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--round", "r1", "--images", "-1"])
    assert exit_info.value.code == 2 and "--images" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    assert main(["--round", "r1", "--params", str(missing)]) == 2
    assert f"error: {missing}: params file not found" in capsys.readouterr().err
    params = tmp_path / "params.yaml"
    params.write_text("rounds:\n  r1: {prev: r0}\nfinal_round: r1\n")
    assert main(["--round", "r9", "--params", str(params)]) == 2
    assert "error: --round 'r9' is not a round of" in capsys.readouterr().err
