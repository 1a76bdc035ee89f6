"""DVC stage: Val predictions (with and without CRF) and train pseudo labels of the single-stage model."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import infer_single_stage

if __name__ == "__main__":
    sys.exit(run_stage(infer_single_stage.run, ['dataset', 'single_stage', 'runtime']))
