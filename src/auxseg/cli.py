"""The ``auxseg`` command (:func:`main`: ``predict``, ``show``, ``stats``, ``rounds``, ``profile``, ``top5``, ``ablate-labels``,
``convert-resnet38``, ``bench label-update|crf|forward|bf16-labels|train-step``) and the shared entry point of the stage scripts in ``stages/``
(:func:`run_stage`: parse params, run one step, report errors cleanly)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from typing import Any, Callable, Sequence

from auxseg.io import DataError
from auxseg.params import ParamError, check_identifier, load_stage_params
from auxseg.tools.args import int_at_least


def run_stage(step: Callable[..., Any], sections: Sequence[str], argv: Sequence[str] | None = None,
              *, per_round: bool = False) -> int:
    """Parse ``sections`` of params.yaml (the declared view under DVC) and call ``step(**sections)``.

    With ``per_round`` the script takes ``--round NAME``; the step also gets ``round_name`` and ``round_params``
    (the entry ``rounds.NAME``, which the stage must declare). Bad params or bad data print one ``error: ...``
    line naming the key or file and exit with status 2.
    """
    parser = argparse.ArgumentParser(description=step.__module__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if per_round:
        parser.add_argument("--round", required=True, help="round name, a key of 'rounds' in params.yaml (or r0)")
    args = parser.parse_args(argv)
    try:
        names = list(sections)
        wants_round_params = per_round and "round_params" in inspect.signature(step).parameters
        if wants_round_params:
            names.append("rounds")
        params = load_stage_params(names, args.params)
        if per_round:
            params["round_name"] = check_identifier(args.round, "--round")
        if wants_round_params:
            rounds = params.pop("rounds")
            if args.round not in rounds:
                raise ParamError(f"rounds.{args.round}: no such round in params")
            params["round_params"] = rounds[args.round]
        step(**params)
    except (ParamError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


# name → (module whose main(argv, prog) runs it, one-line help); their own parsers give `auxseg NAME --help`
TOOLS = {
    "stats": ("auxseg.data.stats", "statistics of a synthetic VOC-style dataset (also: auxseg-dataset-stats)"),
    "rounds": ("auxseg.tools.set_rounds", "set the chain of rounds in params.yaml to r1..rN (rounds N)"),
    "profile": ("auxseg.tools.apply_profile", "merge a named params profile (e.g. tiny) into params.yaml"),
    "convert-resnet38": ("auxseg.tools.convert_resnet38", "convert MXNet ResNet-38 ImageNet weights to a .pth"),
    "top5": ("auxseg.tools.imagenet_top5", "ImageNet top-5 classes of a few photos: check a backbone's weights"),
    "ablate-labels": ("auxseg.tools.label_ablation",
                      "a round's label update with A_CT propagation / saliency refinement switched off, scored"),
    "supervised-ceiling": ("auxseg.tools.supervised_ceiling",
                           "the params' DeepLab trained on the ground-truth train masks, scored on val"),
}
BENCHMARKS = {
    "label-update": ("auxseg.tools.bench_label_update", "time the phases of AuxSegNet's pseudo-label update"),
    "crf": ("auxseg.tools.bench_crf", "time the dense CRF over all classes vs the present ones"),
    "forward": ("auxseg.tools.bench_forward", "forward of every inference stage in fp32 and bf16, side by side"),
    "bf16-labels": ("auxseg.tools.compare_bf16_labels", "a round's label update in fp32 and bf16: label changes, mIoU"),
    "train-step": ("auxseg.tools.bench_train_step", "where an AuxSegNet training step's time goes per output stride"),
}


def _delegate(module: str, argv: Sequence[str], prog: str) -> int:
    return int(importlib.import_module(module).main(list(argv), prog=prog) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The ``auxseg`` parser: ``predict`` and ``show`` parse here; the other subcommands hand their arguments to
    their module's own parser (listed here for ``auxseg --help``)."""
    from auxseg.tools import predict, show

    parser = argparse.ArgumentParser(
        prog="auxseg",
        description="auxseg: weakly supervised semantic segmentation (AuxSegNet, AA/LR losses) with DVC. "
        "The pipeline itself runs with `dvc repro`; these are the tools around it.",
        epilog="`auxseg COMMAND --help` describes each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    predict_parser = commands.add_parser("predict", help="segment new images with a trained model file",
                                         description=predict.__doc__.split("\n\n")[0])
    predict.add_arguments(predict_parser)
    predict_parser.set_defaults(func=predict.run_from_args)
    show_parser = commands.add_parser("show", help="print a run's metrics (rK, final, cams, classifier, ...) as a table",
                                      description=show.__doc__.split("\n\n")[0])
    show.add_arguments(show_parser)
    show_parser.set_defaults(func=show.run_from_args)
    for name, (module, text) in TOOLS.items():
        commands.add_parser(name, help=text, add_help=False)
    bench = commands.add_parser("bench", help="CPU benchmarks: " + ", ".join(BENCHMARKS))
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module, text) in BENCHMARKS.items():
        benchmarks.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``auxseg COMMAND ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return _delegate(TOOLS[argv[0]][0], argv[1:], f"auxseg {argv[0]}")
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in BENCHMARKS:
        return _delegate(BENCHMARKS[argv[1]][0], argv[2:], f"auxseg bench {argv[1]}")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


__all__ = ["build_parser", "int_at_least", "main", "run_stage"]


if __name__ == "__main__":
    sys.exit(main())
