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


# ------------------------------------------------------------------------------------------------ AA/LR and single stage
def _tiny_params(**overrides) -> dict:
    """The committed params.yaml with the tiny profile merged in, then ``overrides`` (dotted keys)."""
    from auxseg.tools.apply_profile import load_profile, merge, profile_leaves

    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), profile_leaves(load_profile("tiny")))
    params["synthetic"].update(n_train=8, n_val=4)
    for dotted, value in overrides.items():
        node = params
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        node[last] = value
    return params


OVERRIDE = {"mean": [0.45, 0.4, 0.35], "std": [0.25, 0.2, 0.3]}
"""A non-ImageNet normalisation the tests set in params or record in model files, to see it travel."""

AALR_ON = {"aa_weight": 1.0, "aa_dilation": 1, "aa_margin": 3.0, "aa_confidence": "labels", "lr_weight": 0.5,
           "lr_variant": "correction", "lr_tau": 0.1, "lr_warmup": 0.15, "lr_embed_dim": 8}


@pytest.fixture(scope="module")
def single_stage_project(tmp_path_factory):
    """synthesize → prepare_data → train/infer/eval_single_stage with AA and LR on, on the tiny profile."""
    root = tmp_path_factory.mktemp("single_stage")
    params = _tiny_params(**{"single_stage.aux_losses": AALR_ON, "single_stage.network.mean": OVERRIDE["mean"],
                             "single_stage.network.std": OVERRIDE["std"]})
    for script in ("synthesize.py", "prepare_data.py", "train_single_stage.py", "infer_single_stage.py",
                   "eval_single_stage.py"):
        result = _run_stage(script, params, root)
        assert result.returncode == 0, f"{script}:\n{result.stderr[-3000:]}"
    return root, params


@pytest.mark.slow
def test_single_stage_stages_on_the_tiny_profile(single_stage_project):
    from auxseg.steps.train_single_stage import load_single_stage

    root, params = single_stage_project
    metrics = yaml.safe_load((root / "metrics/single_stage.json").read_text())
    for key in ("single_stage_miou", "single_stage_miou_crf", "pseudo_miou", "pseudo_precision", "pseudo_recall",
                "pseudo_labelled_fraction"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["num_images"] == 4 and metrics["num_train_images"] == 8
    # per-class values live in the details file, not in the DVC metrics file
    assert not [key for key in metrics if "per_class" in key]
    details = yaml.safe_load((root / "metrics/details/single_stage.json").read_text())
    assert set(details["single_stage_per_class_iou_crf"]) == set(details["pseudo_per_class_iou"])
    assert 0.0 <= details["pseudo_pixel_accuracy"] <= 1.0
    out = root / "data/single_stage"
    assert len(list((out / "val/plain").glob("*.png"))) == len(list((out / "val/crf").glob("*.png"))) == 4
    assert len(list((out / "train/seg").glob("*.png"))) == len(list((out / "train/conf").glob("*.png"))) == 8
    model, meta = load_single_stage(root / "models/single_stage.pt")
    assert meta["normalization"] == OVERRIDE  # the params' override, recorded in the model file
    assert meta["embedding_dim"] == 8 and model.embed is not None and meta["widths"]["decoder"] == 32
    curves = root / "dvclive/single_stage/plots/metrics/train"
    assert {"loss.tsv", "cls.tsv", "seg.tsv", "aa.tsv", "lr_loss.tsv", "lr_switched.tsv"} <= {p.name for p in curves.iterdir()}


@pytest.mark.slow
def test_deeplab_and_a_round_train_with_aa_and_lr_on_round_style_labels(single_stage_project, tmp_path):
    """train_deeplab and train_round (+ update_labels) with AA and LR, on the single-stage train labels (round layout)."""
    from auxseg.normalization import Normalization
    from auxseg.steps.common import build_classifier, load_auxsegnet, save_model
    from auxseg.steps.train_deeplab import load_deeplab
    from auxseg.config import DeepLabParams
    from auxseg.io import load_label_png, save_gray_png
    from auxseg.params import parse_section

    root, _ = single_stage_project
    for name in ("data", "params.yaml"):
        source = root / name
        shutil.copytree(source, tmp_path / name) if source.is_dir() else shutil.copy(source, tmp_path / name)
    labels = tmp_path / "data/single_stage/train"
    r0 = tmp_path / "data/rounds/r0"
    shutil.copytree(labels / "seg", r0 / "seg")
    shutil.copytree(labels / "conf", r0 / "conf")
    for path in sorted((r0 / "seg").glob("*.png")):
        seg = load_label_png(path)
        save_gray_png(r0 / "sal" / path.name, ((seg > 0) & (seg < 255)).astype("float32"))
    shutil.copytree(r0 / "sal", tmp_path / "data/saliency")  # the saliency prior update_labels fuses with
    classifier = build_classifier(parse_section(DeepLabParams, {}, "deeplab").network, 6)
    recorded = Normalization(OVERRIDE["mean"], OVERRIDE["std"])  # not the tiny backbone's ImageNet statistics
    for path in ("models/rounds/r0.pt", "models/classifier.pt"):  # deeplab.init_from_classifier reads the latter
        save_model(tmp_path / path, classifier, normalization=recorded, kind="classifier",
                   backbone="tiny", output_stride=8, num_classes_fg=6)
    params = _tiny_params(**{
        "deeplab.aux_losses": AALR_ON, "deeplab.seed": 3, "auxsegnet.aux_losses": {**AALR_ON, "lr_variant": "prototype"},
        "rounds": {"r1": {"prev": "r0"}}, "final_round": "r1",
    })
    for script, args in (("train_round.py", ["--round", "r1"]), ("update_labels.py", ["--round", "r1"])):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        result = subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{script}:\n{result.stderr[-3000:]}"
    model, meta = load_auxsegnet(tmp_path / "models/rounds/r1.pt")
    assert meta["normalization"] == OVERRIDE  # read from the previous round's file, recorded again
    assert meta["embedding_dim"] == 8 and model.seg_embed is not None
    assert len(list((tmp_path / "data/rounds/r1/conf").glob("*.png"))) == 8
    assert (tmp_path / "dvclive/rounds/r1/plots/metrics/train/aa.tsv").is_file()
    # The same label update in fp32 and under bf16 autocast: fp32 reproduces the stage's labels exactly.
    compare = subprocess.run([sys.executable, "-m", "auxseg.tools.compare_bf16_labels", "--round", "r1", "--json",
                              "compare.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert compare.returncode == 0, compare.stderr[-3000:]
    figures = yaml.safe_load((tmp_path / "compare.json").read_text())
    assert figures["fp32_equals_stage_labels"] is True and figures["images"] == 8
    assert 0.0 <= figures["pixel_disagreement"] <= 1.0 and figures["modes"]["bf16"]["forward_s"] > 0
    # The same label update with A_CT propagation and the saliency refinement switched off in turn.
    ablation = subprocess.run([sys.executable, "-m", "auxseg.tools.label_ablation", "--round", "r1", "--json",
                               "ablation.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ablation.returncode == 0, ablation.stderr[-3000:]
    figures = yaml.safe_load((tmp_path / "ablation.json").read_text())
    assert figures["published_equals_stage_labels"] is True and figures["images"] == 8
    assert set(figures["variants"]) == {"published", "no_propagation", "prior_saliency", "neither"}
    assert all(0.0 <= v["miou"] <= 1.0 for v in figures["variants"].values())
    assert 0.0 < figures["affinity_uniform_mass"] <= 1.0 and 0.0 < figures["affinity_own_class_mass"] <= 1.0
    assert "published" in ablation.stdout and "A_CT row mass" in ablation.stdout
    result = _run_stage("train_deeplab.py", params, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    model, meta = load_deeplab(tmp_path / "models/deeplab.pt")
    assert meta["normalization"] == OVERRIDE  # init_from_classifier: the classifier file's
    assert meta["embedding_dim"] == 8 and model.embed is not None
    assert (tmp_path / "dvclive/deeplab/plots/metrics/train/lr_switched.tsv").is_file()
    live = yaml.safe_load((tmp_path / "dvclive/deeplab/params.yaml").read_text())
    assert live["seed"] == 3


@pytest.mark.slow
def test_classifier_records_the_params_normalization_and_make_cams_reads_the_file(single_stage_project, tmp_path):
    """train_classifier records network.mean/std; make_cams uses the file's normalisation, not the params'."""
    import numpy as np
    import torch

    from auxseg.cam import load_cams
    from auxseg.steps.common import load_model_file, save_model

    root, _ = single_stage_project
    shutil.copytree(root / "data", tmp_path / "data")
    network = {"backbone": "tiny", "weights": None, "sha256": None, "output_stride": 8, **OVERRIDE}
    params = _tiny_params(**{"classifier.network": network, "classifier.optim.epochs": 1})
    result = _run_stage("train_classifier.py", params, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = load_model_file(tmp_path / "models/classifier.pt")
    assert payload["meta"]["normalization"] == OVERRIDE

    params["classifier"]["network"] = {**network, "mean": None, "std": None}  # params no longer say it
    assert _run_stage("make_cams.py", params, tmp_path).returncode == 0
    first = {p.name: load_cams(p)[0] for p in sorted((tmp_path / "data/cams").glob("*.npz"))}
    # the same weights recorded with ImageNet statistics give other CAMs: make_cams read the file's normalisation
    from auxseg.normalization import IMAGENET
    from auxseg.steps.common import build_classifier
    from auxseg.config import ClassifierParams
    from auxseg.params import parse_section

    model = build_classifier(parse_section(ClassifierParams, params["classifier"], "classifier").network,
                             payload["meta"]["num_classes_fg"])
    model.load_state_dict(payload["state_dict"])
    meta = {k: v for k, v in payload["meta"].items() if k != "normalization"}
    save_model(tmp_path / "models/classifier.pt", model, normalization=IMAGENET, **meta)
    assert _run_stage("make_cams.py", params, tmp_path).returncode == 0
    second = {p.name: load_cams(p)[0] for p in sorted((tmp_path / "data/cams").glob("*.npz"))}
    assert first.keys() == second.keys()
    assert any(not np.allclose(first[k], second[k]) for k in first)

    # a model file without the record is refused, naming it
    torch.save({"meta": meta, "state_dict": payload["state_dict"]}, tmp_path / "models/classifier.pt")
    result = _run_stage("make_cams.py", params, tmp_path)
    assert result.returncode != 0 and "models/classifier.pt" in result.stderr and "normalization" in result.stderr
