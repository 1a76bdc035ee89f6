"""DVC stage: Train the single-stage model (1-Stage + AA/LR) from image-level labels."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import train_single_stage

if __name__ == "__main__":
    sys.exit(run_stage(train_single_stage.run, ['seed', 'dataset', 'single_stage', 'runtime']))
