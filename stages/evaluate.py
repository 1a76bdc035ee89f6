"""DVC stage: Val mIoU of DeepLab and AuxSegNet with and without CRF."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import evaluate

if __name__ == "__main__":
    sys.exit(run_stage(evaluate.run, ['final_round', 'dataset', 'deeplab', 'pseudo_labels', 'evaluate', 'runtime']))
