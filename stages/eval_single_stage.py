"""DVC stage: Val mIoU and train pseudo-label quality of the single-stage model."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import eval_single_stage

if __name__ == "__main__":
    sys.exit(run_stage(eval_single_stage.run, ['dataset', 'single_stage']))
