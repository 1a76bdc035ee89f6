"""DVC stage: Update the pseudo labels with one round's AuxSegNet (--round NAME)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import update_labels

if __name__ == "__main__":
    sys.exit(run_stage(update_labels.run, ['dataset', 'saliency', 'pseudo_labels', 'runtime'], per_round=True))
