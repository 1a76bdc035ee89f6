"""DVC stage: Score the CAM seeds with a swept background threshold."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import eval_cams

if __name__ == "__main__":
    sys.exit(run_stage(eval_cams.run, ['dataset', 'cams']))
