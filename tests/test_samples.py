"""The composite sample pictures, the offline ``dvc plots`` page template and the dvc.yaml declarations of both."""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from auxseg.steps.samples import GAP, compose_row

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("background", "cat", "dog")


def _inputs(height=40, width=60):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    gt = np.zeros((height, width), np.uint8)
    gt[5:20, 10:30] = 1
    seeds = np.zeros_like(gt)
    seeds[8:15, 12:20] = 2
    r0 = gt.copy()
    r0[30:, :] = 255
    return image, gt, seeds, r0


def _cells_in_row(picture: Image.Image, y: int) -> int:
    """Number of non-white runs along row ``y`` (cells are separated by white gaps)."""
    row = np.asarray(picture)[y]
    filled = (row != 255).any(axis=1)
    return int(np.count_nonzero(filled[1:] & ~filled[:-1]) + filled[0])


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("with_gt", [True, False])
def test_composite_has_one_cell_per_column_and_deterministic_bytes(with_gt):
    image, gt, seeds, r0 = _inputs()
    columns = ([("ground truth", gt)] if with_gt else []) + [("CAM seeds", seeds), ("r0", r0), ("DeepLab", gt)]
    first = compose_row(image, columns, NAMES, title="img_1", cell_height=48)
    second = compose_row(image.copy(), [(h, l.copy()) for h, l in columns], NAMES, title="img_1", cell_height=48)
    # image + label columns, read off a row through the middle of the cells (below the header line)
    middle = GAP + 12 + GAP + 24
    assert _cells_in_row(first, middle) == 1 + len(columns) == (5 if with_gt else 4)
    assert first.mode == "RGB" and first.height > 48
    assert _png(first) == _png(second)
    # the label cells are drawn in the VOC palette: cat (1) dark red, dog (2) green, background black
    colours = {tuple(c) for c in np.asarray(first).reshape(-1, 3).tolist()}
    assert {(128, 0, 0), (0, 128, 0), (0, 0, 0)} <= colours


def test_composite_legend_lists_the_classes_shown():
    image, gt, seeds, r0 = _inputs()
    with_ignore = compose_row(image, [("r0", r0)], NAMES, cell_height=48)
    without_ignore = compose_row(image, [("r0", gt)], NAMES, cell_height=48)
    colours = {tuple(c) for c in np.asarray(with_ignore).reshape(-1, 3).tolist()}
    assert (224, 224, 192) in colours  # the swatch / pixels of 'unlabelled' (255)
    assert with_ignore.width >= without_ignore.width and with_ignore.size != (0, 0)


def test_composite_rejects_a_label_map_of_another_size_or_an_unknown_class():
    image, gt, _, _ = _inputs()
    with pytest.raises(ValueError, match="column 'r1'.*does not match"):
        compose_row(image, [("r1", gt[:-1])], NAMES)
    bad = gt.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="column 'r1'.*label value 7"):
        compose_row(image, [("r1", bad)], NAMES)


class _Resources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.external: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for key in ("src", "href"):
            if attributes.get(key):
                self.external.append(f"<{tag} {key}={attributes[key]}>")
        if tag == "script" and not attributes.get("src"):
            self.inline_scripts += 1


def test_plots_page_template_loads_nothing_remote(tmp_path):
    from auxseg.tools.plots_page import main, page_template

    text = page_template()
    assert "{plot_divs}" in text and "{refresh_tag}" in text
    assert "{scripts}" not in text  # DVC would put its CDN <script src=...> tags there
    parser = _Resources()
    parser.feed(text)
    assert parser.external == [] and parser.inline_scripts == 3
    out = tmp_path / "page.html"
    assert main(["--out", str(out)]) == 0
    assert out.read_bytes() == text.encode("utf-8")


def test_plots_page_error_names_the_missing_package(monkeypatch, capsys, tmp_path):
    import importlib.metadata

    from auxseg.tools import plots_page

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(plots_page.importlib.metadata, "distribution", missing)
    out = tmp_path / "page.html"
    assert plots_page.main(["--out", str(out)]) == 2
    assert "datasette-vega-dashboards" in capsys.readouterr().err and not out.exists()


def _stages(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())["stages"]


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def test_dvc_yaml_declares_the_sample_plots_the_page_template_and_only_headline_metrics():
    import configparser

    from auxseg.tools.plots_page import DEFAULT_OUT

    stages = _stages("dvc.yaml")
    samples = stages["samples"]
    assert _paths(samples["plots"]) == ["${samples.out_dir}"] and samples["plots"][0]["${samples.out_dir}"]["cache"] is False
    # every section the stage script reads is declared (whole or in part)
    declared = {p.split(".")[0] for p in samples["params"]}
    assert {"dataset", "cams", "pseudo_labels", "rounds", "final_round", "deeplab", "evaluate", "runtime",
            "samples"} == declared
    assert "python -m auxseg.tools.plots_page" in stages["plots_page"]["cmd"]
    assert _paths(stages["plots_page"]["outs"]) == [DEFAULT_OUT]
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    assert config["plots"]["html_template"] == f"../{DEFAULT_OUT}"  # relative to .dvc/
    # per-class values are versioned outputs (cache: false), never DVC metrics; no per-round overlays any more
    single = _stages("stages/single_stage/dvc.yaml")["eval_single_stage"]
    for stage in (stages["eval_classifier"], stages["eval_cams"], stages["eval_round0"], stages["eval_round"]["do"],
                  stages["evaluate"], single):
        details = [p for p in _paths(stage["outs"]) if "details" in p]
        assert len(details) == 1, stage
        assert not [p for p in _paths(stage.get("metrics")) if "details" in p]
        assert "plots" not in stage or "overlay" not in str(stage["plots"])


def test_top_level_plots_point_at_files_the_pipelines_write():
    """Each file a top-level plot reads is an output of a stage of one of the two pipelines (no missing-plot warning)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    outputs: set[str] = set()
    for path in ("dvc.yaml", "stages/single_stage/dvc.yaml"):
        for stage in _stages(path).values():
            body = stage.get("do", stage)
            for key in ("outs", "metrics", "plots"):
                for entry in _paths(body.get(key)):
                    for section, values in params.items():
                        if isinstance(values, dict):
                            for name, value in values.items():
                                entry = entry.replace("${%s.%s}" % (section, name), str(value))
                    outputs.add(entry)
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    for plot in plots:
        (definition,) = plot.values()
        for file in definition["y"]:
            assert any(file == out or file.startswith(out.rstrip("/") + "/") for out in outputs), file
