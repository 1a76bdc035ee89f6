"""DVC stage: Score one round's pseudo labels (--round NAME)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import eval_round

if __name__ == "__main__":
    sys.exit(run_stage(eval_round.run, ['dataset', 'pseudo_labels'], per_round=True))
