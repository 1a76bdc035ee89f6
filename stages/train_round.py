"""DVC stage: Train AuxSegNet for one round (--round NAME)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import train_round

if __name__ == "__main__":
    sys.exit(run_stage(train_round.run, ['seed', 'dataset', 'auxsegnet', 'pseudo_labels', 'runtime'], per_round=True))
