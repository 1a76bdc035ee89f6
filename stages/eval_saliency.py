"""DVC stage: Score the saliency prior (MAE, max-F)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import eval_saliency

if __name__ == "__main__":
    sys.exit(run_stage(eval_saliency.run, ['dataset', 'saliency']))
